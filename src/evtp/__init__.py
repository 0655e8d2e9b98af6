"""evtp: fast visual-token pruning for instructed visual segmentation (EVTP-IV and baselines)."""
from evtp.selection import (METHODS, CoverageTarget, MethodSpec, kept_counts, register_method,
                            select_tokens)
from evtp.selection.methods.tome import tome_merge
from evtp.integrations.generic import prune_inputs_embeds
from evtp.integrations.pruner import TokenPruner

__version__ = "0.1.0"
__all__ = ["METHODS", "CoverageTarget", "MethodSpec", "kept_counts", "register_method",
           "select_tokens", "tome_merge", "prune_inputs_embeds", "TokenPruner", "__version__"]
