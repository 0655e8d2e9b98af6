"""evtp: fast visual-token pruning for instructed visual segmentation (EVTP-IV and baselines)."""
from evtp.selection import (METHODS, CoverageTarget, MethodSpec, kept_counts, register_method,
                            select_tokens)

__version__ = "0.1.0"
__all__ = ["METHODS", "CoverageTarget", "MethodSpec", "kept_counts", "register_method",
           "select_tokens", "__version__"]
