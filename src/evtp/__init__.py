"""evtp: fast visual-token pruning for instructed visual segmentation (EVTP-IV and baselines)."""
from evtp.selection import (METHODS, CoverageTarget, MethodSpec, kept_counts, register_method,
                            select_tokens)
from evtp.selection.options import MethodOptions
from evtp.selection.methods.tome import tome_merge
from evtp.pruning import POSITION_MODES, Budget, PruningSettings, resolve_budget
from evtp.integrations.generic import prune_inputs_embeds
from evtp.integrations.pruner import TokenPruner
import evtp.integrations.transformers  # noqa: F401,E402  (evtp.integrations.transformers.apply after `import evtp`)

__version__ = "0.1.0"
__all__ = ["METHODS", "CoverageTarget", "MethodSpec", "MethodOptions", "kept_counts", "register_method",
           "select_tokens", "tome_merge", "POSITION_MODES", "Budget", "PruningSettings", "resolve_budget",
           "prune_inputs_embeds", "TokenPruner", "__version__"]
