"""The method registry: a selection method registers itself here, the core never lists them.

A method is a function with this contract (all tensors already validated and batched)::

    fn(features, positions, k, *, mask, scores, generator, **options) -> LongTensor

    features:  (B, N, D) float32, finite on valid tokens
    positions: (B, N, P) long grid coordinates (P = 2: row, col; P = 3: frame, row, col) or None
    k:         (B,) long, tokens to keep per sample, 1 <= k[b] <= mask[b].sum()
               (for an adaptive coverage budget, the upper bound; see ``CoverageTarget``)
    mask:      (B, N) bool, True for real tokens (all True without padding)
    scores:    (B, N) float32 importance or None
    generator: torch.Generator or None
    returns    (B, K) long with K >= k.max(): kept indices, any order, padded with -1.
               Padded tokens must never be returned.

`select_tokens` sorts the result, checks it and trims it; methods stay small and pure. It calls
the method under `torch.no_grad()` on detached inputs (indices are not differentiable), and never
for an empty batch (B = 0). `tests/test_method_contract.py` runs every registered method through
the contract, so a new method is tested without being listed anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

MethodFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MethodSpec:
    """Plain-data description of a registered selection method."""

    name: str
    fn: MethodFn
    needs_scores: bool = False  # raise if `scores` is missing
    uses_positions: bool = False  # informational: whether positions change the result
    adaptive: bool = False  # accepts `keep=CoverageTarget(...)`
    summary: str = ""
    options: dict = field(default_factory=dict)  # option name -> default, for docs and checks
    score_options: tuple = ()  # options that, when set (non-zero / true), make the method use `scores`
    uses_generator: bool = False  # draws random numbers from `generator` with its default options

    def wants_scores(self, options: dict | None = None) -> bool:
        """Whether a call with these options needs `scores`: always for score-based methods,
        and for others when one of their ``score_options`` is set (e.g. evtp's saliency_weight)."""
        opts = {**self.options, **(options or {})}
        return self.needs_scores or any(bool(opts.get(o)) for o in self.score_options)


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, *, needs_scores: bool = False, uses_positions: bool = False,
                    adaptive: bool = False, summary: str = "", options: dict | None = None,
                    score_options: tuple = (), uses_generator: bool = False):
    """Decorator that adds a selection function to `METHODS` under ``name``."""

    def deco(fn: MethodFn) -> MethodFn:
        if name in METHODS:
            raise ValueError(f"selection method {name!r} is already registered")
        METHODS[name] = MethodSpec(name, fn, needs_scores, uses_positions, adaptive,
                                   summary or (fn.__doc__ or "").strip().split("\n")[0],
                                   dict(options or {}), tuple(score_options), bool(uses_generator))
        return fn

    return deco
