"""`EvtpSettings`: what ``hf_overrides={"evtp": {...}}`` asks for, validated on construction.

This module imports neither vLLM nor transformers: the checks run in vLLM's front-end process when
the engine is configured, before any model is loaded, so that a bad setting fails with a message
naming it instead of silently serving the stock model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from evtp.selection import METHODS
from evtp.selection.api import check_request, resolve_keep

CONFIG_KEY = "evtp"
POSITION_MODES = ("original", "contiguous")
# keys of the "evtp" dict that configure the plugin itself; every other key is a method option
PLUGIN_KEYS = ("method", "keep", "position_mode", "seed")


@dataclass(frozen=True)
class EvtpSettings:
    """Visual-token pruning for one vLLM engine.

    Attributes:
        method: a key of `evtp.METHODS` that needs no attention scores.
        keep: ratio of every image's / video's visual tokens to keep, in (0, 1]. vLLM sizes the
            prompt's placeholders before the vision tower runs, so the kept count may depend only
            on the grid and ``keep``: k = max(1, round(keep * N)) per image, per Qwen2.5-VL video
            and per Qwen3-VL video frame. Counts and adaptive budgets (`evtp.CoverageTarget`)
            are therefore not accepted.
        position_mode: "original" (kept tokens keep their M-RoPE positions in the full grid; the
            text after a media item keeps the position it has in the unpruned model) or
            "contiguous" (the pruned prompt is numbered 0, 1, 2, ... like text).
        seed: seed of the generator handed to random methods, the same for every item, so that
            one image always keeps the same tokens (the prefix and encoder caches rely on it).
        options: the method's options (validated against ``evtp.METHODS[method].options``).
    """

    method: str = "evtp"
    keep: float = 0.25
    position_mode: str = "original"
    seed: int = 0
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        where = f'hf_overrides["{CONFIG_KEY}"]'
        if not isinstance(self.method, str):
            raise TypeError(f'{where}["method"] must be a string, got {type(self.method).__name__}')
        if isinstance(self.keep, dict) or hasattr(self.keep, "radius"):
            raise ValueError(f'{where}["keep"]={self.keep!r}: an adaptive budget (CoverageTarget) cannot be '
                             f"used in vLLM, which sizes the prompt's placeholders before the vision tower "
                             f"runs; pass a ratio in (0, 1]")
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float)) \
                or not (math.isfinite(self.keep) and 0.0 < self.keep <= 1.0):
            raise ValueError(f'{where}["keep"]={self.keep!r}: must be a ratio in (0, 1] (the share of each '
                             f"image's / video's visual tokens to keep)")
        object.__setattr__(self, "keep", float(self.keep))
        try:
            spec = check_request(self.method, self.keep, dict(self.options))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}: {err}") from None
        if spec.wants_scores(self.options):
            free = sorted(n for n, s in METHODS.items() if not s.needs_scores)
            raise ValueError(f'{where}: method {self.method!r} with options {dict(self.options)} needs per-token '
                             f"attention scores, which vLLM's vision towers do not expose; methods that "
                             f"need none: {', '.join(free)}")
        if self.position_mode not in POSITION_MODES:
            raise ValueError(f'{where}["position_mode"]={self.position_mode!r}; expected one of {POSITION_MODES}')
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f'{where}["seed"] must be an int, got {type(self.seed).__name__}')

    @classmethod
    def from_dict(cls, value: Any) -> "EvtpSettings":
        """Parse the ``evtp`` dict: plugin keys (`PLUGIN_KEYS`), everything else a method option."""
        if not isinstance(value, dict):
            raise TypeError(f'hf_overrides["{CONFIG_KEY}"] must be a dict such as {{"method": "evtp", '
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
