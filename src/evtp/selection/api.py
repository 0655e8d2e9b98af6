"""`select_tokens`: the one public entry point for every selection method."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from evtp.selection.registry import METHODS, MethodSpec


@dataclass(frozen=True)
class CoverageTarget:
    """Adaptive budget: keep adding tokens until the covering radius is at most ``radius``.

    The radius is measured in the method's own selection metric (see the method's docs). ``min_keep``
    and ``max_keep`` bound the count; ``max_keep`` may be an int or a ratio in (0, 1].
    """

    radius: float
    min_keep: int = 1
    max_keep: int | float = 1.0

    def __post_init__(self):
        if not (isinstance(self.radius, (int, float)) and math.isfinite(self.radius) and self.radius >= 0):
            raise ValueError(f"CoverageTarget.radius must be a finite number >= 0, got {self.radius!r}")
        if isinstance(self.min_keep, bool) or not isinstance(self.min_keep, int) or self.min_keep < 1:
            raise ValueError(f"CoverageTarget.min_keep must be an int >= 1, got {self.min_keep!r}")


def resolve_keep(keep, n_valid: torch.Tensor, *, name: str = "keep") -> torch.Tensor:
    """Per-sample token count for ``keep`` (int count or ratio in (0, 1]).

    Args:
        keep: int >= 1, or float ratio in (0, 1] (k = max(1, round(ratio * n)), half rounds up).
        n_valid: (B,) long, real tokens per sample.
    Returns:
        (B,) long counts.
    """
    check_keep_value(keep, name)
    if isinstance(keep, int):
        too_big = n_valid < keep
        if bool(too_big.any()):
            n = int(n_valid[too_big].min())
            raise ValueError(f"{name}={keep} is larger than the number of tokens ({n}); "
                             f"pass a count <= {n} or a ratio in (0, 1]")
        return torch.full_like(n_valid, keep)
    k = torch.floor(n_valid.double() * keep + 0.5).long()
    return k.clamp(min=1).minimum(n_valid)


def check_keep_value(keep, name: str = "keep") -> None:
    """Raise unless ``keep`` is an int >= 1 or a float ratio in (0, 1] (no token count needed)."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise TypeError(f"{name} must be an int count, a float ratio in (0, 1] or a CoverageTarget, "
                        f"got {type(keep).__name__}")
    if isinstance(keep, int) and keep < 1:
        raise ValueError(f"{name}={keep}: must keep at least 1 token")
    if isinstance(keep, float) and not (math.isfinite(keep) and 0.0 < keep <= 1.0):
        raise ValueError(f"{name}={keep}: a ratio must lie in (0, 1]; pass an int for a count")


def check_request(method: str, keep, options: dict) -> MethodSpec:
    """The checks of a selection request that need no tensors: a known method, options it
    declares, and a valid ``keep`` (a `CoverageTarget` only for adaptive methods). Model adapters
    call it when they are configured, so that a bad setting fails before the first forward.
    Returns the method's spec."""
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; known methods: {', '.join(sorted(METHODS))}")
    spec = METHODS[method]
    unknown = set(options) - set(spec.options)
    if unknown:
        raise TypeError(f"method {method!r} got unknown option(s) {sorted(unknown)}; "
                        f"its options: {sorted(spec.options) or 'none'}")
    if isinstance(keep, CoverageTarget):
        if not spec.adaptive:
            raise ValueError(f"method {method!r} has no adaptive budget; CoverageTarget works with: "
                             f"{', '.join(sorted(n for n, sp in METHODS.items() if sp.adaptive))}")
    else:
        check_keep_value(keep)
    return spec


def check_features(features) -> bool:
    """Raise unless `features` is a float (N, D) or (B, N, D) tensor; return whether it is batched."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() not in (2, 3):
        raise ValueError(f"features has shape {tuple(features.shape)}; expected (N, D) or (B, N, D)")
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor, got {features.dtype}")
    return features.dim() == 3


def _as_batch(t: torch.Tensor | None, ndim: int, name: str, batched: bool) -> torch.Tensor | None:
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    want = ndim + (1 if batched else 0)
    if t.dim() != want:
        shape = {1: "(N,)", 2: "(N, P)"}[ndim]
        bshape = {1: "(B, N)", 2: "(B, N, P)"}[ndim]
        raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {bshape if batched else shape} "
                         f"to match features")
    return t if batched else t.unsqueeze(0)


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
        generator: torch.Generator for the methods that draw random numbers.
        **options: method options (see each method's docs).

    Returns:
        Kept indices in original token order: (k,) for unbatched input; (B, K) for batched input.
        When samples keep different counts (a padded batch with a ratio, or a `CoverageTarget`),
        K = the largest count and each row holds its sorted indices followed by -1 padding;
        ``(idx >= 0).sum(-1)`` gives the per-sample counts.
    """
    spec = check_request(method, keep, options)
    batched = check_features(features)
    x = features if batched else features.unsqueeze(0)
    B, N, _ = x.shape
    if N == 0:
        raise ValueError("features has no tokens (N = 0)")

    pos = _as_batch(positions, 2, "positions", batched)
    if pos is not None:
        if pos.is_floating_point() or pos.is_complex() or pos.dtype == torch.bool:
            raise TypeError(f"positions must be integer grid coordinates, got {pos.dtype}")
        if pos.shape[:2] != (B, N):
            raise ValueError(f"positions has shape {tuple(positions.shape)} but features has "
                             f"{tuple(features.shape)}: they must agree on the batch and token axes")
        if pos.shape[-1] not in (2, 3):
            raise ValueError(f"positions has P = {pos.shape[-1]} coordinates; expected 2 (row, col) "
                             f"or 3 (frame, row, col)")
        pos = pos.long().to(x.device)

    m = _as_batch(mask, 1, "mask", batched)
    if m is None:
        m = torch.ones(B, N, dtype=torch.bool, device=x.device)
    else:
        if m.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {m.dtype}")
        if m.shape != (B, N):
            raise ValueError(f"mask has shape {tuple(mask.shape)} but features has "
                             f"{tuple(features.shape)}; expected {'(B, N)' if batched else '(N,)'}")
        m = m.to(x.device)
    n_valid = m.sum(-1)
    if bool((n_valid == 0).any()):
        raise ValueError("mask leaves a sample with no tokens at all")

    s = _as_batch(scores, 1, "scores", batched)
    if s is not None:
        if s.shape != (B, N):
            raise ValueError(f"scores has shape {tuple(scores.shape)} but features has "
                             f"{tuple(features.shape)}; expected {'(B, N)' if batched else '(N,)'}")
        s = s.to(device=x.device, dtype=torch.float32)
        if not bool(torch.isfinite(s[m]).all()):
            raise ValueError("scores contain NaN or inf")
    elif spec.needs_scores:
        raise ValueError(f"method {method!r} needs scores=... (per-token importance, e.g. attention); "
                         f"methods that need none: "
                         f"{', '.join(sorted(n for n, sp in METHODS.items() if not sp.needs_scores))}")

    x = x.float() if x.dtype != torch.float32 else x
    if not bool(torch.isfinite(x.sum(-1)).all()) and not bool(torch.isfinite(x[m]).all()):
        # (the row sums are a cheap first check; NaN/inf always make them non-finite)
        raise ValueError("features contain NaN or inf; clean them (e.g. torch.nan_to_num) before selecting")

    if isinstance(keep, CoverageTarget):
        k = resolve_keep(keep.max_keep, n_valid, name="CoverageTarget.max_keep")
        options = {**options, "radius": float(keep.radius), "min_keep": keep.min_keep}
    else:
        k = resolve_keep(keep, n_valid)

    idx = spec.fn(x, pos, k, mask=m, scores=s, generator=generator, **options)
    idx = _finish(idx, m, N, method)
    return idx if batched else idx[0]


def _finish(idx: torch.Tensor, mask: torch.Tensor, N: int, method: str) -> torch.Tensor:
    """Sort each row ascending with -1 padding last, trim all-padding columns, check validity."""
    idx = idx.long()
    big = torch.where(idx < 0, torch.full_like(idx, N), idx)
    big = big.sort(dim=-1).values
    counts = (big < N).sum(-1)
    K = int(counts.max())
    big = big[:, :K]
    valid = big < N
    out = torch.where(valid, big, torch.full_like(big, -1))
    if K and bool(valid.any()):
        gathered = mask.gather(1, big.clamp(max=N - 1))
        if not bool(gathered[valid].all()):
            raise RuntimeError(f"method {method!r} selected a padded token (bug in the method)")
        dup = (out[:, 1:] == out[:, :-1]) & valid[:, 1:]
        if bool(dup.any()):
            raise RuntimeError(f"method {method!r} selected a token twice (bug in the method)")
    return out


def kept_counts(indices: torch.Tensor) -> torch.Tensor:
    """Per-sample number of kept tokens of a `select_tokens` result: (B,) or a 0-d tensor."""
    return (indices >= 0).sum(-1)
