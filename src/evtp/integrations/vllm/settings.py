"""`EvtpSettings`: what ``hf_overrides={"evtp": {...}}`` asks for, validated on construction.

This module imports neither vLLM nor transformers: the checks run in vLLM's front-end process when
the engine is configured, before any model is loaded, so that a bad setting fails with a message
naming it instead of silently serving the stock model.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Any

import torch

from evtp.pruning import PruningSettings
from evtp.selection import METHODS, CoverageTarget
from evtp.selection.api import resolve_keep

CONFIG_KEY = "evtp"
# keys of the "evtp" dict that configure the plugin itself; every other key is a method option
PLUGIN_KEYS = tuple(f.name for f in fields(PruningSettings) if f.name != "options")
_WHERE = f'hf_overrides["{CONFIG_KEY}"]'


@dataclass(frozen=True)
class EvtpSettings(PruningSettings):
    """Visual-token pruning for one vLLM engine: `evtp.PruningSettings` with vLLM's limits.

    Attributes (as in `PruningSettings`, restricted):
        method: a key of `evtp.METHODS` that needs no attention scores.
        keep: ratio of every image's / video's visual tokens to keep, in (0, 1]. vLLM sizes the
            prompt's placeholders before the vision tower runs, so the kept count may depend only
            on the grid and ``keep``: k = max(1, round(keep * N)) per image, per Qwen2.5-VL video
            and per Qwen3-VL video frame. Counts, 0 and adaptive budgets (`evtp.CoverageTarget`)
            are therefore not accepted.
        position_mode: "original" (kept tokens keep their M-RoPE positions in the full grid; the
            text after a media item keeps the position it has in the unpruned model) or
            "contiguous" (the pruned prompt is numbered 0, 1, 2, ... like text).
        seed: seed of the generator handed to random methods, the same for every item, so that
            one image always keeps the same tokens (the prefix and encoder caches rely on it);
            an int (None is refused).
        options: the method's options (checked by ``evtp.METHODS[method].options_type``).
    """

    keep: float = 0.25

    def __post_init__(self):
        if isinstance(self.keep, (dict, CoverageTarget)):
            raise ValueError(f'{_WHERE}["keep"]={self.keep!r}: an adaptive budget (CoverageTarget) cannot be '
                             f"used in vLLM, which sizes the prompt's placeholders before the vision tower "
                             f"runs; pass a ratio in (0, 1]")
        if isinstance(self.keep, (bool, str)) or not isinstance(self.keep, numbers.Real) \
                or not (0.0 < float(self.keep) <= 1.0):
            raise ValueError(f'{_WHERE}["keep"]={self.keep!r}: must be a ratio in (0, 1] (the share of each '
                             f"image's / video's visual tokens to keep)")
        if self.seed is None or isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f'{_WHERE}["seed"] must be an int, got {type(self.seed).__name__}')
        object.__setattr__(self, "keep", float(self.keep))  # a ratio, also when written 1
        try:
            super().__post_init__()
        except (TypeError, ValueError) as err:
            raise type(err)(f"{_WHERE}: {err}") from None
        if METHODS[self.method].wants_scores(self.options):
            free = sorted(n for n, sp in METHODS.items() if not sp.needs_scores)
            raise ValueError(f'{_WHERE}: method {self.method!r} with options {dict(self.options)} needs per-token '
                             f"attention scores, which vLLM's vision towers do not expose; methods that "
                             f"need none: {', '.join(free)}")

    @classmethod
    def from_dict(cls, value: Any) -> "EvtpSettings":
        """Parse the ``evtp`` dict: plugin keys (`PLUGIN_KEYS`), everything else a method option."""
        if not isinstance(value, dict):
            raise TypeError(f'{_WHERE} must be a dict such as {{"method": "evtp", '
                            f'"keep": 0.25}}, got {type(value).__name__}')
        plugin = {k: value[k] for k in PLUGIN_KEYS if k in value}
        options = {k: v for k, v in value.items() if k not in PLUGIN_KEYS}
        return cls(**plugin, options=options)

    @classmethod
    def from_hf_config(cls, hf_config) -> "EvtpSettings | None":
        """The settings of a model whose config carries the ``evtp`` key, None without it."""
        value = getattr(hf_config, CONFIG_KEY, None)
        return None if value is None else cls.from_dict(value)

    def kept(self, n: int) -> int:
        """Tokens kept out of ``n``: the same rounding as `evtp.select_tokens` (half up, >= 1)."""
        return int(resolve_keep(self.keep, torch.tensor([n]))[0])
