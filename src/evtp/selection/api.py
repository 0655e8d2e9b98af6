"""`select_tokens`: the one public entry point for every selection method."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from evtp.selection.options import MethodOptions
from evtp.selection.registry import METHODS, MethodSpec
from evtp.selection.validation import (check_features, check_generator, check_keep_value,  # noqa: F401
                                      normalize_keep, resolve_keep, validate_tokens)


@dataclass(frozen=True, kw_only=True)
class CoverageTarget:
    """Adaptive budget: keep adding tokens until every token is within a radius of a kept token.

    Give exactly one of:

    * ``relative_radius`` (the scale to pick from): a fraction of the set's own spread, the
      covering radius of its best single token (its 1-centre radius), both measured as Euclidean
      distances in the method's embedding (for `kcenter` the chord sqrt(2 (1 - cos)) of the unit
      features, for `evtp` the augmented distance). 1 keeps about one token, 0 keeps every
      distinct token; the same number gives about the same share of tokens for every method and
      metric (measured table in docs/selection.md).
    * ``radius``: an absolute radius in the method's own unit (1 - cos for `kcenter`, the
      Euclidean augmented distance for `evtp`; see the method's docs).

    ``min_keep`` and ``max_keep`` bound the count; ``max_keep`` is an int or a ratio in (0, 1].
    Every argument is a keyword (``CoverageTarget(relative_radius=0.6)``), so a bare number is
    never read as the wrong radius.
    """

    radius: float | None = None
    min_keep: int = 1
    max_keep: int | float = 1.0
    relative_radius: float | None = None

    def __post_init__(self):
        if (self.radius is None) == (self.relative_radius is None):
            raise ValueError("CoverageTarget needs exactly one of radius=... (absolute, in the method's "
                             "metric) or relative_radius=... (a fraction of the set's 1-centre radius), got "
                             f"radius={self.radius!r}, relative_radius={self.relative_radius!r}")
        for name in ("radius", "relative_radius"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or v < 0):
                raise ValueError(f"CoverageTarget.{name} must be a finite number >= 0, got {v!r}")
        if isinstance(self.min_keep, (bool, np.bool_)) or not isinstance(self.min_keep, numbers.Integral) \
                or self.min_keep < 1:
            raise ValueError(f"CoverageTarget.min_keep must be an int >= 1, got {self.min_keep!r}")
        object.__setattr__(self, "min_keep", int(self.min_keep))
        object.__setattr__(self, "max_keep", normalize_keep(self.max_keep, "CoverageTarget.max_keep"))
        if isinstance(self.max_keep, int) and self.max_keep < self.min_keep:
            raise ValueError(f"CoverageTarget(min_keep={self.min_keep}, max_keep={self.max_keep}): min_keep "
                             f"must be <= max_keep; lower min_keep or raise max_keep")

    def bounds(self, n_valid: torch.Tensor) -> torch.Tensor:
        """(B,) long upper bound per sample (``max_keep`` resolved), after checking that every
        sample can keep ``min_keep`` tokens within it."""
        hi = resolve_keep(self.max_keep, n_valid, name="CoverageTarget.max_keep")
        short = n_valid < self.min_keep
        if bool(short.any()):
            n = int(n_valid[short].min())
            raise ValueError(f"CoverageTarget.min_keep={self.min_keep} is larger than the number of "
                             f"tokens ({n}); pass min_keep <= {n}")
        low = hi < self.min_keep
        if bool(low.any()):
            i = int(torch.nonzero(low)[0])
            raise ValueError(f"CoverageTarget(min_keep={self.min_keep}, max_keep={self.max_keep}) allows "
                             f"at most {int(hi[i])} of a sample's {int(n_valid[i])} tokens, fewer than "
                             f"min_keep; lower min_keep or raise max_keep")
        return hi

    def options(self) -> dict:
        """The adaptive method options this target sets."""
        if self.relative_radius is not None:
            return {"relative_radius": float(self.relative_radius), "min_keep": self.min_keep}
        return {"radius": float(self.radius), "min_keep": self.min_keep}


def check_request(method: str, keep, options: dict | None = None) -> MethodSpec:
    """The checks of a selection request that need no tensors: a known method, options it
    declares with values its options class accepts (`MethodSpec.make_options`), and a valid
    ``keep`` (a `CoverageTarget` only for adaptive methods). Model adapters and settings call it
    when they are configured, so that a bad setting fails before the first forward.
    Returns the method's spec."""
    return checked_request(method, keep, options)[0]


def checked_request(method: str, keep, options: dict | None = None):
    """`check_request`, returning (spec, keep as a Python int / float or the CoverageTarget,
    the method's options object with the target's options merged in)."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a string naming a selection method, got {type(method).__name__}")
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; known methods: {', '.join(sorted(METHODS))}")
    spec = METHODS[method]
    opts = dict(options or {})
    made: MethodOptions = spec.make_options(opts)
    if isinstance(keep, CoverageTarget):
        if not spec.adaptive:
            raise ValueError(f"method {method!r} has no adaptive budget; CoverageTarget works with: "
                             f"{', '.join(sorted(n for n, sp in METHODS.items() if sp.adaptive))}")
        made = spec.make_options({**opts, **keep.options()})
    else:
        keep = normalize_keep(keep)
    return spec, keep, made


def select_tokens(features: torch.Tensor, positions: torch.Tensor | None = None, keep=0.2,
                  method: str = "evtp", *, scores: torch.Tensor | None = None,
                  mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  **options) -> torch.LongTensor:
    """Choose which visual tokens to keep.

    Args:
        features: (N, D) or (B, N, D) float visual-token features (after the projector).
        positions: (N, P) or (B, N, P) integer grid coordinates, P = 2 (row, col) for an image,
            P = 3 (frame, row, col) for video. Needed by spatial methods (`evtp`, `uniform`).
        keep: int count, ratio in (0, 1], or `CoverageTarget` (adaptive methods only).
        method: a key of `evtp.METHODS`.
        scores: (N,) or (B, N) per-token importance (attention, relevance) for score-based methods.
        mask: (N,) or (B, N) bool, True for real tokens; padded tokens are never selected.
        generator: torch.Generator (or None) for the methods that draw random numbers.
        **options: method options (see each method's docs).

    Returns:
        Kept indices in original token order: (k,) for unbatched input; (B, K) for batched input.
        When samples keep different counts (a padded batch with a ratio, or a `CoverageTarget`),
        K = the largest count and each row holds its sorted indices followed by -1 padding;
        ``(idx >= 0).sum(-1)`` gives the per-sample counts. An empty batch (B = 0) gives (0, 0).

    Every input is checked by `evtp.selection.validation` before any work; features that require
    grad are fine (the methods run detached, under no_grad: indices are not differentiable).
    """
    spec, keep, opts = checked_request(method, keep, options)
    check_generator(generator)
    inp = validate_tokens(features, positions, mask=mask, scores=scores)
    if inp.scores is None and spec.needs_scores:
        raise ValueError(f"method {method!r} needs scores=... (per-token importance, e.g. attention); "
                         f"methods that need none: "
                         f"{', '.join(sorted(n for n, sp in METHODS.items() if not sp.needs_scores))}")
    B, N = inp.B, inp.N
    m = inp.mask
    if isinstance(keep, CoverageTarget):
        k = keep.bounds(m.sum(-1))
    else:
        k = resolve_keep(keep, m.sum(-1))
    if B == 0:
        empty = torch.empty(0, 0, dtype=torch.long, device=m.device)
        return empty if inp.batched else empty[0]
    # Indices are not differentiable: the methods run on detached float32 inputs, without autograd.
    x = inp.features.detach()
    x = x.float() if x.dtype != torch.float32 else x
    pos = None if inp.positions is None else inp.positions.long()
    with torch.no_grad():
        idx = spec.fn(x, pos, k, mask=m, scores=inp.scores, generator=generator, **opts.values())
    idx = _finish(idx, m, N, method)
    return idx if inp.batched else idx[0]


def _finish(idx: torch.Tensor, mask: torch.Tensor, N: int, method: str) -> torch.Tensor:
    """Sort each row ascending with -1 padding last, trim all-padding columns, check validity."""
    idx = idx.long()
    out = idx.sort(dim=-1).values
    if out.shape[1] and bool((out[:, 0] >= 0).all()) and bool((out[:, -1] < N).all()):
        # every row full (a fixed budget): no padding to move to the end
        _check_picks(out, out, None, mask, method)
        return out
    big = torch.where(idx < 0, torch.full_like(idx, N), idx)
    big = big.sort(dim=-1).values
    counts = (big < N).sum(-1)
    K = int(counts.max())
    big = big[:, :K]
    valid = big < N
    out = torch.where(valid, big, torch.full_like(big, -1))
    if K and bool(valid.any()):
        _check_picks(out, big.clamp(max=N - 1), valid, mask, method)
    return out


def _check_picks(out: torch.Tensor, index: torch.Tensor, valid: torch.Tensor | None, mask: torch.Tensor,
                 method: str) -> None:
    """RuntimeError when a method picked a padded token or one token twice: out (B, K) sorted picks,
    index (B, K) the same as valid token indices, valid (B, K) bool which entries are picks (None: all)."""
    real = mask.gather(1, index)
    dup = out[:, 1:] == out[:, :-1]
    if valid is not None:
        real, dup = real[valid], dup & valid[:, 1:]
    if not bool(real.all()):
        raise RuntimeError(f"method {method!r} selected a padded token (bug in the method)")
    if bool(dup.any()):
        raise RuntimeError(f"method {method!r} selected a token twice (bug in the method)")


def kept_counts(indices: torch.Tensor) -> torch.Tensor:
    """Per-sample number of kept tokens of a `select_tokens` result: (B,) or a 0-d tensor."""
    return (indices >= 0).sum(-1)
