"""The one input-validation path for token tensors and budgets.

`select_tokens`, `tome_merge`, the `evtp.coverage` measures and `evtp.prune_inputs_embeds` check
their inputs here, so the same bad input gets the same error everywhere. Every check raises
before any work is done: `TypeError` for a wrong kind of object or dtype, `ValueError` for a wrong
shape or value, the message naming the argument, what it got and what it should be.

Shapes (unbatched input is given one leading batch axis of size 1 by the checks that return
tensors; ``batched`` says which form the caller used):

    features:  (N, D) or (B, N, D) float, D >= 1
    positions: (N, P) or (B, N, P) integer grid coordinates, P = 2 (row, col) or 3 (frame, row, col)
    mask:      (N,) or (B, N) bool, True for real tokens
    scores:    (N,) or (B, N) float per-token importance

B = 0 (an empty batch) is valid everywhere and gives empty results; N = 0 with B >= 1 is not
(a sample with no tokens has nothing to select from).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TokenInputs", "check_features", "check_positions", "check_mask", "check_per_token",
           "check_scores", "check_finite", "check_generator", "check_keep_value", "normalize_keep", "resolve_keep",
           "check_tensor_option", "validate_tokens"]


def _shape_text(batched: bool, tail: str = "") -> str:
    return f"(B, N{tail})" if batched else f"(N{tail})"


def check_features(features, name: str = "features") -> bool:
    """Raise unless ``features`` is a float (N, D) or (B, N, D) tensor with D >= 1.

    Returns:
        whether it is batched (3-D).
    """
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() not in (2, 3):
        raise ValueError(f"{name} has shape {tuple(features.shape)}; expected (N, D) or (B, N, D)")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {features.dtype}")
    if features.shape[-1] == 0:
        raise ValueError(f"{name} has shape {tuple(features.shape)}: D = 0 feature channels; every "
                         f"token needs at least one feature")
    return features.dim() == 3


def check_finite(values: torch.Tensor, mask: torch.Tensor | None, name: str, *,
                 hint: str = "clean them (e.g. torch.nan_to_num) first") -> None:
    """Raise ValueError if ``values`` holds NaN or inf on a valid token.

    Args:
        values: (B, N, ...) tensor.
        mask: (B, N) bool (True = real token; padded tokens may hold anything) or None (all real).
    """
    if values.numel() == 0:
        return
    v = values.float() if values.dtype in (torch.float16, torch.bfloat16) else values
    # the row sums are a cheap first check: NaN / inf always make them non-finite
    if v.dim() > 2:
        rows = v.detach().flatten(2).sum(-1)
    else:
        rows = v.detach()
    if bool(torch.isfinite(rows).all()):
        return
    bad = ~torch.isfinite(v.detach())
    if v.dim() > 2:
        bad = bad.flatten(2).any(-1)
    if mask is not None:
        bad &= mask
    if bool(bad.any()):
        b, n = (int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f"{name} contain NaN or inf (first at sample {b}, token {n}); {hint}")


def check_positions(positions, B: int, N: int, batched: bool, *, integer: bool = True,
                    name: str = "positions", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Check grid coordinates against the token axes and batch them.

    Args:
        positions: (N, P) or (B, N, P) tensor, P in {2, 3}.
        B, N: the batch and token sizes they must match; batched: whether 3-D is expected.
        integer: require an integer dtype (selection); otherwise float coordinates are accepted
            and must be finite on valid tokens (coverage).
        mask: (B, N) bool for the finiteness check of float coordinates, or None.
    Returns:
        (B, N, P) tensor (the input's dtype and device).
    """
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(positions).__name__}")
    if positions.dtype == torch.bool or positions.is_complex():
        raise TypeError(f"{name} must be {'integer' if integer else 'integer or float'} grid "
                        f"coordinates, got {positions.dtype}")
    if integer and positions.is_floating_point():
        raise TypeError(f"{name} must be integer grid coordinates, got {positions.dtype}; "
                        f"pass e.g. positions.long()")
    want = 3 if batched else 2
    if positions.dim() != want or tuple(positions.shape[:-1]) != ((B, N) if batched else (N,)):
        raise ValueError(f"{name} has shape {tuple(positions.shape)}; expected "
                         f"{_shape_text(batched, ', P')} = {((B, N) if batched else (N,)) + ('P',)} "
                         f"to match the features' batch and token axes")
    if positions.shape[-1] not in (2, 3):
        raise ValueError(f"{name} has P = {positions.shape[-1]} coordinates; expected 2 (row, col) "
                         f"or 3 (frame, row, col)")
    p = positions if batched else positions.unsqueeze(0)
    if p.is_floating_point():
        check_finite(p, None if mask is None else mask.to(p.device), name)
    return p


def check_per_token(values, B: int, N: int, batched: bool, name: str, *,
                    device: torch.device | str | None = None) -> torch.Tensor | None:
    """Check that ``values`` is a tensor with one entry per token and batch it.

    Args:
        values: (N,) or (B, N) tensor, or None.
        device: move the result there (None: leave it).
    Returns:
        (B, N) tensor, or None for None.
    """
    if values is None:
        return None
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(values).__name__}")
    want = (B, N) if batched else (N,)
    if tuple(values.shape) != want:
        raise ValueError(f"{name} has shape {tuple(values.shape)}; expected {_shape_text(batched)} = "
                         f"{want} (one value per token) to match the features")
    v = values if batched else values.unsqueeze(0)
    return v if device is None else v.to(device)


def check_mask(mask, B: int, N: int, batched: bool, *, device: torch.device | str | None = None,
               name: str = "mask") -> torch.Tensor:
    """The (B, N) bool padding mask (all True when ``mask`` is None).

    Raises unless ``mask`` is a bool (N,) / (B, N) tensor leaving every sample at least one token.
    """
    if mask is None:
        return torch.ones(B, N, dtype=torch.bool, device=device)
    if isinstance(mask, torch.Tensor) and mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = real token), got {mask.dtype}; "
                        f"pass e.g. {name}.bool()")
    m = check_per_token(mask, B, N, batched, name, device=device)
    empty = ~m.any(1)
    if bool(empty.any()):
        raise ValueError(f"{name} leaves a sample with no tokens at all (sample "
                         f"{int(torch.nonzero(empty)[0])}); every sample needs at least one real token")
    return m


def check_scores(scores, B: int, N: int, batched: bool, mask: torch.Tensor, *,
                 name: str = "scores") -> torch.Tensor | None:
    """(B, N) float32 per-token scores on the mask's device, finite on valid tokens, or None."""
    s = check_per_token(scores, B, N, batched, name, device=mask.device)
    if s is None:
        return None
    if s.dtype == torch.bool or s.is_complex():
        raise TypeError(f"{name} must be real numbers (per-token importance), got {s.dtype}")
    s = s.detach().float()
    check_finite(s, mask, name)
    return s


def check_generator(generator, name: str = "generator") -> None:
    """Raise TypeError unless ``generator`` is None or a `torch.Generator`."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or "
                        f"None, got {type(generator).__name__} {generator!r}")


def normalize_keep(keep, name: str = "keep") -> int | float:
    """``keep`` as a Python int count >= 1 or float ratio in (0, 1]; NumPy / other integer
    scalars count as ints and real scalars as floats. Raises TypeError / ValueError otherwise."""
    if isinstance(keep, (bool, np.bool_)) or isinstance(keep, torch.Tensor) \
            or not isinstance(keep, numbers.Real):
        raise TypeError(f"{name} must be an int count, a float ratio in (0, 1] or a CoverageTarget, "
                        f"got {type(keep).__name__}")
    if isinstance(keep, numbers.Integral):
        keep = int(keep)
        if keep < 1:
            raise ValueError(f"{name}={keep}: must keep at least 1 token")
        return keep
    keep = float(keep)
    if not (math.isfinite(keep) and 0.0 < keep <= 1.0):
        raise ValueError(f"{name}={keep}: a ratio must lie in (0, 1]; pass an int for a count")
    return keep


def check_keep_value(keep, name: str = "keep") -> None:
    """Raise unless ``keep`` is an int >= 1 or a float ratio in (0, 1] (no token count needed)."""
    normalize_keep(keep, name)


def resolve_keep(keep, n_valid: torch.Tensor, *, name: str = "keep") -> torch.Tensor:
    """Per-sample token count for ``keep`` (int count or ratio in (0, 1]).

    Args:
        keep: int >= 1, or float ratio in (0, 1] (k = max(1, round(ratio * n)), half rounds up).
        n_valid: (B,) long, real tokens per sample.
    Returns:
        (B,) long counts.
    """
    keep = normalize_keep(keep, name)
    if isinstance(keep, int):
        too_big = n_valid < keep
        if bool(too_big.any()):
            n = int(n_valid[too_big].min())
            raise ValueError(f"{name}={keep} is larger than the number of tokens ({n}); "
                             f"pass a count <= {n} or a ratio in (0, 1]")
        return torch.full_like(n_valid, keep)
    k = torch.floor(n_valid.double() * keep + 0.5).long()
    return k.clamp(min=1).minimum(n_valid)


def check_tensor_option(value, name: str, *, batched_dims: int, B: int, device, float_: bool = True,
                        feature_dim: int | None = None) -> torch.Tensor | None:
    """A tensor-valued method option (e.g. `dart`'s ``text_features``), broadcast over the batch.

    Args:
        value: None, or a tensor with ``batched_dims`` dims (one per sample: (B, ...)) or one fewer
            (shared by every sample).
        batched_dims: dims of the per-sample form, batch axis included.
        B: batch size; device: where to put it.
        float_: require floating point (else bool).
        feature_dim: if set, the last axis must have this size.
    Returns:
        (B, ...) detached tensor on ``device`` (float32 when float_), or None.
    """
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if float_ and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if not float_ and value.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {value.dtype}")
    if value.dim() == batched_dims - 1:
        value = value.unsqueeze(0).expand(B, *value.shape)
    elif value.dim() != batched_dims or value.shape[0] != B:
        raise ValueError(f"{name} has shape {tuple(value.shape)}; expected {batched_dims - 1} dims "
                         f"(shared by every sample) or {batched_dims} with batch size {B}")
    if feature_dim is not None and value.shape[-1] != feature_dim:
        raise ValueError(f"{name} has {value.shape[-1]} channels per token but the features have "
                         f"{feature_dim}; they must live in the same space")
    value = value.detach().to(device)
    return value.float() if float_ else value


@dataclass(frozen=True)
class TokenInputs:
    """Validated, batched token inputs (what `validate_tokens` returns).

    features:  (B, N, D) float in the caller's dtype, or None (positions-only measures)
    positions: (B, N, P) on the features' device, or None
    mask:      (B, N) bool
    scores:    (B, N) float32, or None
    batched:   whether the caller passed batched (B, ...) tensors
    """

    features: torch.Tensor | None
    positions: torch.Tensor | None
    mask: torch.Tensor
    scores: torch.Tensor | None
    batched: bool

    @property
    def B(self) -> int:
        return self.mask.shape[0]

    @property
    def N(self) -> int:
        return self.mask.shape[1]


def validate_tokens(features, positions=None, *, mask=None, scores=None, integer_positions: bool = True,
                    features_name: str = "features") -> TokenInputs:
    """Validate a set of visual tokens and everything given per token, and batch them.

    Checks, in order: ``features`` (float (N, D) / (B, N, D), D >= 1; may be None when
    ``positions`` are given, for positions-only measures), N >= 1 unless B = 0, ``mask`` (bool,
    every sample keeps a token), ``positions`` (shape, dtype, P in {2, 3}), ``scores`` (shape,
    finite on real tokens), and finally that the features are finite on real tokens (padded tokens
    may hold anything, even NaN).

    Args:
        features: (N, D) or (B, N, D) float tensor, or None.
        positions: (N, P) or (B, N, P) grid coordinates or None.
        mask: (N,) or (B, N) bool or None (all real).
        scores: (N,) or (B, N) float or None.
        integer_positions: require integer coordinates (True for selection).
    Returns:
        `TokenInputs` with every tensor batched; features keep their dtype (and autograd state).
    """
    if features is None:
        if positions is None:
            raise ValueError(f"{features_name} are missing; pass (N, D) or (B, N, D) features")
        if not isinstance(positions, torch.Tensor):
            raise TypeError(f"positions must be a torch.Tensor, got {type(positions).__name__}")
        if positions.dim() not in (2, 3):
            raise ValueError(f"positions has shape {tuple(positions.shape)}; expected (N, P) or (B, N, P)")
        batched = positions.dim() == 3
        B, N = (positions.shape[0], positions.shape[1]) if batched else (1, positions.shape[0])
        device = positions.device
        x = None
    else:
        batched = check_features(features, features_name)
        x = features if batched else features.unsqueeze(0)
        B, N, _ = x.shape
        device = x.device
    if N == 0 and B > 0:
        raise ValueError(f"{features_name if x is not None else 'positions'} has no tokens (N = 0); "
                         f"every sample needs at least one token to select from")
    m = check_mask(mask, B, N, batched, device=device)
    pos = None
    if positions is not None:
        pos = check_positions(positions, B, N, batched, integer=integer_positions, mask=m).to(device)
    s = check_scores(scores, B, N, batched, m)
    if x is not None:
        check_finite(x, m, features_name)
    return TokenInputs(x, pos, m, s, batched)
