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
    options:   every field of the method's options class (`MethodOptions`), as keywords,
               already checked and defaulted by it

`select_tokens` sorts the result, checks it and trims it; methods stay small and pure. It calls
the method under `torch.no_grad()` on detached inputs (indices are not differentiable), and never
for an empty batch (B = 0). `tests/test_method_contract.py` runs every registered method through
the contract, so a new method is tested without being listed anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from evtp.selection.options import MethodOptions, NoOptions, options_class_from_defaults

MethodFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MethodSpec:
    """Plain-data description of a registered selection method.

    ``options_type`` is the method's options class (`evtp.selection.options.MethodOptions`): the
    one declaration of its options' names, types, ranges and defaults; ``options`` maps each
    name to its default (for docs and listings)."""

    name: str
    fn: MethodFn
    needs_scores: bool = False  # raise if `scores` is missing
    uses_positions: bool = False  # informational: whether positions change the result
    adaptive: bool = False  # accepts `keep=CoverageTarget(...)`
    summary: str = ""
    options_type: type = NoOptions
    score_options: tuple = ()  # options that, when set (non-zero / true), make the method use `scores`
    uses_generator: bool = False  # draws random numbers from `generator` with its default options

    @property
    def options(self) -> dict:
        """Option name -> default."""
        return self.options_type.defaults()

    def make_options(self, options: Mapping | None = None) -> MethodOptions:
        """The method's options with ``options`` set, every value checked (TypeError for an
        unknown name or a wrong type, ValueError for a value out of range)."""
        return self.options_type.from_dict(options)

    def wants_scores(self, options: Mapping | None = None) -> bool:
        """Whether a call with these options needs `scores`: always for score-based methods,
        and for others when one of their ``score_options`` is set (e.g. evtp's saliency_weight)."""
        opts = {**self.options, **dict(options or {})}
        return self.needs_scores or any(bool(opts.get(o)) for o in self.score_options)


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, *, needs_scores: bool = False, uses_positions: bool = False,
                    adaptive: bool = False, summary: str = "",
                    options: type[MethodOptions] | Mapping | None = None,
                    score_options: tuple = (), uses_generator: bool = False):
    """Decorator that adds a selection function to `METHODS` under ``name``.

    ``options``: the method's `MethodOptions` subclass (every option typed, ranged and defaulted
    once; `select_tokens` passes each one to the function as a keyword), or a plain
    ``{option: default}`` dict (names checked, values not), or None (no options)."""

    def deco(fn: MethodFn) -> MethodFn:
        if name in METHODS:
            raise ValueError(f"selection method {name!r} is already registered")
        if options is None:
            cls = options_class_from_defaults(name, {})
        elif isinstance(options, type) and issubclass(options, MethodOptions):
            cls = options
        elif isinstance(options, Mapping):
            cls = options_class_from_defaults(name, options)
        else:
            raise TypeError(f"register_method({name!r}, options=...) takes a MethodOptions subclass or a "
                            f"dict of defaults, got {type(options).__name__}")
        cls.method = name
        METHODS[name] = MethodSpec(name, fn, needs_scores, uses_positions, adaptive,
                                   summary or (fn.__doc__ or "").strip().split("\n")[0],
                                   cls, tuple(score_options), bool(uses_generator))
        return fn

    return deco
