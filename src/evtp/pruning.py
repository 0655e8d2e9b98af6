"""What to prune, said once: `PruningSettings` (method, keep, position mode, seed, method options).

`evtp.TokenPruner`, the vLLM plugin's `EvtpSettings`, the IVS models' ``predict`` and the
evaluation / benchmark commands all take this one type, checked on construction::

    settings = evtp.PruningSettings("evtp", keep=0.2, options={"spatial_weight": 0.5})
    settings.budget.keeps_none, settings.budget.keeps_all     # keep = 0 / keep = 1.0
    evtp.TokenPruner.from_settings(settings)

Two small pieces every consumer shares live here too:

* `Budget` (`resolve_budget`): ``keep`` resolved once into "none" (0: no visual token at all),
  "all" (the ratio 1.0: every token, no selection call) or a selection budget (a count, a
  ratio, a `CoverageTarget`), so no caller compares keeps itself;
* `renumber_positions`: the position ids a pruned sequence runs with, ``"original"`` (the ids
  the kept tokens had in the full sequence, gaps where tokens were dropped) or ``"contiguous"``
  (renumbered first, first + 1, ... as if every kept token were text).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import torch

from evtp.selection import METHODS, CoverageTarget
from evtp.selection.api import checked_request
from evtp.selection.options import MethodOptions
from evtp.selection.validation import normalize_keep, resolve_keep

__all__ = ["POSITION_MODES", "Budget", "resolve_budget", "check_position_mode", "renumber_positions",
           "PruningSettings"]

POSITION_MODES = ("original", "contiguous")


def check_position_mode(mode, name: str = "position_mode") -> str:
    """Return ``mode`` unless it is not one of `POSITION_MODES` (ValueError naming ``name``)."""
    if not isinstance(mode, str) or mode not in POSITION_MODES:
        raise ValueError(f"{name}={mode!r}; expected one of {POSITION_MODES} (\"original\": kept tokens keep "
                         f"their position ids; \"contiguous\": the pruned sequence is renumbered)")
    return mode


@dataclass(frozen=True)
class Budget:
    """A ``keep`` resolved once (`resolve_budget`).

    Attributes:
        keep: 0 (no visual tokens), a Python int count >= 1, a float ratio in (0, 1] or a
            `CoverageTarget`.
    """

    keep: int | float | CoverageTarget

    @property
    def keeps_none(self) -> bool:
        """keep = 0: every visual token is dropped (no selection call)."""
        return not isinstance(self.keep, CoverageTarget) and self.keep == 0

    @property
    def keeps_all(self) -> bool:
        """keep = 1.0 (the ratio): every visual token is kept (no selection call)."""
        return isinstance(self.keep, float) and self.keep == 1.0

    @property
    def trivial(self) -> bool:
        """Whether the budget decides the tokens without any method (none or all): every method
        gives the same run."""
        return self.keeps_none or self.keeps_all

    def keeps_all_of(self, n: int) -> bool:
        """Whether it keeps every one of ``n`` tokens: the ratio 1.0, or a count equal to ``n``."""
        return self.keeps_all or (isinstance(self.keep, int) and self.keep == n)

    def counts(self, n_valid: torch.Tensor) -> torch.Tensor:
        """(B,) long tokens kept per sample of (B,) ``n_valid`` real tokens (for a fixed
        budget; a `CoverageTarget` gives its upper bound)."""
        if self.keeps_none:
            return torch.zeros_like(n_valid)
        if isinstance(self.keep, CoverageTarget):
            return self.keep.bounds(n_valid)
        return resolve_keep(self.keep, n_valid)


def resolve_budget(keep, *, name: str = "keep", allow_none: bool = True) -> Budget:
    """``keep`` -> `Budget`. Accepts 0 (only with ``allow_none``), an int count >= 1 (NumPy
    integers too), a ratio in (0, 1] or a `CoverageTarget`; raises TypeError / ValueError naming
    ``name`` otherwise."""
    if isinstance(keep, CoverageTarget):
        return Budget(keep)
    is_zero = (isinstance(keep, numbers.Real) and not isinstance(keep, (bool, np.bool_))
               and not isinstance(keep, torch.Tensor) and keep == 0)
    if is_zero:
        if not allow_none:
            raise ValueError(f"{name}={keep!r}: must keep at least 1 token")
        return Budget(0)
    return Budget(normalize_keep(keep, name))


def renumber_positions(kept_positions: torch.Tensor, valid: torch.Tensor, mode: str, *,
                       start: torch.Tensor | None = None) -> torch.Tensor:
    """The position ids a pruned sequence runs with.

    Args:
        kept_positions: (R, B, L') long, the ids the kept tokens had in the full sequence, in
            sequence order (R rows: 1 for 1-D RoPE, 3 or 4 for multi-axis RoPE).
        valid: (B, L') bool, True at real kept slots (False at padding).
        mode: "original" — the ids are returned unchanged (gaps where tokens were dropped);
            "contiguous" — row b is numbered start[b], start[b] + 1, ... over its valid slots,
            every R row alike (as if every kept token were text).
        start: (B,) long first id per row; default: the smallest id of the row's kept tokens.
    Returns:
        (R, B, L') long ids; padding slots hold whatever ``kept_positions`` held ("original") or
        the next number ("contiguous").
    """
    check_position_mode(mode, "mode")
    if mode == "original":
        return kept_positions
    R, B, Lp = kept_positions.shape
    if start is None:
        big = torch.iinfo(torch.long).max
        start = kept_positions.masked_fill(~valid.unsqueeze(0), big).amin(dim=(0, 2))
        start = torch.where(valid.any(1), start, torch.zeros_like(start))
    rank = valid.long().cumsum(1) - valid.long()  # 0, 1, 2 ... over the valid slots
    return (start.to(kept_positions.device).unsqueeze(1) + rank).unsqueeze(0).expand(R, B, Lp) \
        .to(kept_positions.dtype)


def _check_seed(seed, name: str = "seed"):
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {type(seed).__name__} {seed!r}")
    return int(seed)


@dataclass(frozen=True)
class PruningSettings:
    """Visual-token pruning settings, checked on construction.

    Attributes:
        method: a key of `evtp.METHODS`.
        keep: per image / video: a ratio in (0, 1] (1.0 keeps every token, no selection), an int
            count >= 1, 0 (no visual token at all), or a `CoverageTarget` (adaptive methods).
        position_mode: "original" (kept tokens keep their position ids) or "contiguous" (the
            pruned sequence is renumbered); see `renumber_positions`.
        seed: seed of the generator handed to random methods (None: torch's global RNG).
        options: the method's options; checked by its options class (`evtp.METHODS[method]
            .options_type`), so a wrong name, type or range fails here.

    Raises:
        TypeError / ValueError naming the field, its value and what is allowed.
    """

    method: str = "evtp"
    keep: Any = 0.2
    position_mode: str = "original"
    seed: int | None = 0
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.options, Mapping):
            raise TypeError(f"options must be a dict of the method's options, got {type(self.options).__name__}")
        budget = resolve_budget(self.keep)
        # a trivial budget runs no selection, but the method and its options are still checked
        _, keep, made = checked_request(self.method, 1 if budget.trivial else budget.keep, dict(self.options))
        object.__setattr__(self, "keep", budget.keep if budget.trivial else keep)
        checked = made.values()  # the given options as their options class holds them (Python numbers)
        object.__setattr__(self, "options", {k: checked[k] for k in self.options})
        check_position_mode(self.position_mode)
        object.__setattr__(self, "seed", _check_seed(self.seed))

    @property
    def budget(self) -> Budget:
        return Budget(self.keep)

    @property
    def method_options(self) -> MethodOptions:
        """The method's options object (every option, defaults filled in)."""
        return METHODS[self.method].make_options(self.options)

    @property
    def wants_scores(self) -> bool:
        """Whether a run needs per-token attention scores (never for a trivial budget)."""
        return not self.budget.trivial and METHODS[self.method].wants_scores(self.options)

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """A fresh generator seeded with ``seed`` on ``device`` (None without a seed)."""
        return None if self.seed is None else torch.Generator(device=device).manual_seed(self.seed)

    def replace(self, **changes) -> "PruningSettings":
        """A copy with ``changes`` applied (checked again)."""
        return replace(self, **changes)

    def as_record(self) -> dict:
        """JSON-friendly summary (method, keep, position_mode, seed, options; tensors by shape)."""
        keep = self.keep
        if isinstance(keep, CoverageTarget):
            keep = {k: getattr(keep, k) for k in ("radius", "relative_radius", "min_keep", "max_keep")}
        opts = {k: (f"tensor{tuple(v.shape)}" if isinstance(v, torch.Tensor) else v) for k, v in self.options.items()}
        return {"method": self.method, "keep": keep, "position_mode": self.position_mode, "seed": self.seed,
                "options": opts}
