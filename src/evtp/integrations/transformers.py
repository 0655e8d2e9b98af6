"""Function-style aliases of `evtp.TokenPruner` for transformers VLM instances.

    import evtp.integrations.transformers as evtp_hf
    evtp_hf.apply(model, method="evtp", keep=0.2)      # = evtp.TokenPruner("evtp", keep=0.2).apply(model)
    out = model.generate(**inputs, max_new_tokens=20)  # visual tokens pruned before layer 0
    evtp_hf.last_pruning(model)                        # kept indices / counts / selection time
    evtp_hf.remove(model)                              # exactly the original behaviour again

Which models: every family registered in `evtp.integrations.families` (`supported_families()`),
found through the class hierarchy of the model or of its ``.model`` chain.
"""
from __future__ import annotations

from evtp.integrations.pruner import SCORE_QUERIES, TokenPruner, is_applied, last_pruning, remove, timings_ms
from evtp.integrations.registry import find_family, supported_names

__all__ = ["apply", "remove", "is_applied", "last_pruning", "timings_ms", "supported_families",
           "find_family", "TokenPruner", "SCORE_QUERIES"]


def apply(model, method: str = "evtp", keep=0.2, *, position_mode: str = "original",
          score_layer: int = 2, score_query: str = "last", seed: int | None = 0, **options):
    """``TokenPruner(method, keep, position_mode=..., ...).apply(model)``; returns ``model``."""
    return TokenPruner(method, keep, position_mode=position_mode, score_layer=score_layer,
                       score_query=score_query, seed=seed, **options).apply(model)


def supported_families() -> list[str]:
    """Names of the registered model families."""
    return supported_names()
