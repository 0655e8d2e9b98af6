"""Bad input to the library's selection side: select_tokens, CoverageTarget, tome_merge, the
coverage measures and the shared validation module. One case per row of docs/bad_input.md
("Library: selection, coverage, merging"); the case id is the row's test name."""
import math

import numpy as np
import pytest
import torch

import evtp
from fixtures.grids import grid
from evtp.coverage import covering_radius, mean_nearest_distance, normalized_positions, spatial_coverage
from evtp.selection import validation

X = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
P = grid(2, 5)
KEPT = torch.tensor([0, 3])


def nan_at(t, i):
    t = t.clone()
    t[i] = math.nan
    return t


ERRORS = {
    # select_tokens: features
    "features_not_a_tensor": (lambda: evtp.select_tokens(X.numpy(), P), TypeError, "features must be a torch.Tensor"),
    "features_integer": (lambda: evtp.select_tokens(X.long(), P), TypeError, "floating-point"),
    "features_1d": (lambda: evtp.select_tokens(X[:, 0], P), ValueError, "expected (N, D) or (B, N, D)"),
    "features_d0": (lambda: evtp.select_tokens(torch.randn(10, 0), P), ValueError, "D = 0"),
    "features_n0": (lambda: evtp.select_tokens(torch.randn(0, 4), grid(0, 0)), ValueError, "N = 0"),
    "features_n0_batched": (lambda: evtp.select_tokens(torch.randn(2, 0, 4)), ValueError, "N = 0"),
    "features_nan": (lambda: evtp.select_tokens(nan_at(X, 3), P), ValueError, "sample 0, token 3"),
    "features_inf": (lambda: evtp.select_tokens(X.index_fill(0, torch.tensor([5]), math.inf), P), ValueError,
                     "NaN or inf"),
    # positions
    "positions_float": (lambda: evtp.select_tokens(X, P.float()), TypeError, "integer grid coordinates"),
    "positions_bool": (lambda: evtp.select_tokens(X, P.bool()), TypeError, "integer"),
    "positions_wrong_n": (lambda: evtp.select_tokens(X, grid(3, 3)), ValueError, "(N, P)"),
    "positions_wrong_b": (lambda: evtp.select_tokens(X[None].expand(2, 10, 4), P[None]), ValueError, "(B, N, P)"),
    "positions_p4": (lambda: evtp.select_tokens(X, torch.zeros(10, 4, dtype=torch.long)), ValueError, "P = 4"),
    "positions_not_a_tensor": (lambda: evtp.select_tokens(X, P.tolist()), TypeError, "positions must be a torch.Tensor"),
    "positions_missing_for_evtp": (lambda: evtp.select_tokens(X, None, 0.3, "evtp"), ValueError, "needs positions"),
    # mask / scores
    "mask_not_bool": (lambda: evtp.select_tokens(X, P, mask=torch.ones(10)), TypeError, "bool tensor"),
    "mask_wrong_shape": (lambda: evtp.select_tokens(X, P, mask=torch.ones(9, dtype=torch.bool)), ValueError, "mask"),
    "mask_empty_sample": (lambda: evtp.select_tokens(X[None].expand(2, 10, 4), P[None].expand(2, 10, 2),
                                                     mask=torch.tensor([[True] * 10, [False] * 10])),
                          ValueError, "no tokens at all (sample 1)"),
    "scores_wrong_shape": (lambda: evtp.select_tokens(X, P, 0.3, "attention", scores=torch.ones(9)), ValueError,
                           "scores"),
    "scores_nan": (lambda: evtp.select_tokens(X, P, 0.3, "attention", scores=nan_at(torch.ones(10), 2)), ValueError,
                   "scores contain NaN"),
    "scores_missing": (lambda: evtp.select_tokens(X, P, 0.3, "attention"), ValueError, "needs scores"),
    # keep, method, options, generator
    "keep_zero": (lambda: evtp.select_tokens(X, P, 0), ValueError, "at least 1"),
    "keep_more_than_n": (lambda: evtp.select_tokens(X, P, 11), ValueError, "larger than the number of tokens (10)"),
    "keep_ratio_out_of_range": (lambda: evtp.select_tokens(X, P, 1.5), ValueError, "(0, 1]"),
    "keep_string": (lambda: evtp.select_tokens(X, P, "0.2"), TypeError, "keep must be"),
    "method_unknown": (lambda: evtp.select_tokens(X, P, 0.3, "divprune2"), ValueError, "known methods"),
    "option_unknown": (lambda: evtp.select_tokens(X, P, 0.3, "evtp", bogus=1), TypeError, "bogus"),
    "generator_string": (lambda: evtp.select_tokens(X, P, 0.3, "random", generator="cpu"), TypeError,
                         "generator must be a torch.Generator"),
    "loop_unknown": (lambda: evtp.select_tokens(X, P, 0.3, "kcenter", loop="graph"), ValueError, "loop="),
    # CoverageTarget
    "coverage_target_min_above_max": (lambda: evtp.CoverageTarget(radius=0.5, min_keep=50, max_keep=10), ValueError,
                                      "min_keep=50, max_keep=10"),
    "coverage_target_no_radius": (lambda: evtp.CoverageTarget(), ValueError, "exactly one"),
    "coverage_target_negative": (lambda: evtp.CoverageTarget(relative_radius=-1.0), ValueError, "relative_radius"),
    "coverage_target_min_above_n": (lambda: evtp.select_tokens(X, P, evtp.CoverageTarget(radius=0.5, min_keep=11)),
                                    ValueError, "min_keep=11 is larger than the number of tokens (10)"),
    "coverage_target_ratio_below_min": (lambda: evtp.select_tokens(
        X, P, evtp.CoverageTarget(radius=0.5, min_keep=5, max_keep=0.2)), ValueError, "allows at most 2"),
    "coverage_target_not_adaptive": (lambda: evtp.select_tokens(X, P, evtp.CoverageTarget(radius=0.5), "dpp"),
                                     ValueError, "no adaptive budget"),
    # tome_merge
    "tome_sizes_zero": (lambda: evtp.tome_merge(X, 3, sizes=torch.zeros(10)), ValueError, "sizes"),
    "tome_sizes_wrong_shape": (lambda: evtp.tome_merge(X, 3, sizes=torch.ones(9)), ValueError, "sizes"),
    "tome_features_nan": (lambda: evtp.tome_merge(nan_at(X, 1), 3), ValueError, "NaN"),
    "tome_keep_more_than_n": (lambda: evtp.tome_merge(X, 11), ValueError, "larger than the number of tokens"),
    "tome_d0": (lambda: evtp.tome_merge(torch.randn(10, 0), 3), ValueError, "D = 0"),
    # coverage measures
    "coverage_kept_out_of_range": (lambda: covering_radius(X, torch.tensor([0, 10])), ValueError, "outside [0, 10)"),
    "coverage_kept_float": (lambda: covering_radius(X, KEPT.float()), TypeError, "integer token indices"),
    "coverage_kept_none_real": (lambda: covering_radius(X, torch.tensor([-1, -1])), ValueError, "no kept token"),
    "coverage_kept_padded": (lambda: covering_radius(X, KEPT, mask=torch.arange(10) != 3), ValueError, "padded"),
    "coverage_metric_unknown": (lambda: covering_radius(X, KEPT, P, metric="cosine"), ValueError, "metric="),
    "coverage_positions_missing": (lambda: covering_radius(X, KEPT, metric="combined"), ValueError, "needs positions"),
    "coverage_features_nan": (lambda: mean_nearest_distance(nan_at(X, 4), KEPT), ValueError, "NaN"),
    "coverage_positions_nan": (lambda: covering_radius(X, KEPT, nan_at(P.float(), 2), metric="spatial"), ValueError,
                               "positions contain NaN"),
    "coverage_d0": (lambda: covering_radius(torch.randn(10, 0), KEPT), ValueError, "D = 0"),
    "coverage_n0": (lambda: covering_radius(torch.randn(0, 4), KEPT), ValueError, "N = 0"),
    "spatial_coverage_float_positions": (lambda: spatial_coverage(P.float(), KEPT), TypeError, "integer"),
    "normalized_positions_p4": (lambda: normalized_positions(torch.zeros(5, 4)), ValueError, "P = 4"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_input_is_refused_with_a_clear_error(case):
    fn, exc, words = ERRORS[case]
    with pytest.raises(exc) as info:
        fn()
    assert words.lower() in str(info.value).lower(), str(info.value)


def test_empty_batch_gives_empty_results():
    """B = 0 is well formed everywhere: an empty result of the right rank, not an error."""
    x, pos = torch.randn(0, 10, 4), grid(2, 5)[None][:0]
    assert evtp.select_tokens(x, pos, 0.3, "evtp").shape == (0, 0)
    merged, sizes, kept = evtp.tome_merge(x, 0.5)
    assert merged.shape == (0, 0, 4) and sizes.shape == (0, 0) and kept.shape == (0, 0)
    assert covering_radius(x, torch.zeros(0, 2, dtype=torch.long)).shape == (0,)
    assert evtp.select_tokens(x, pos, evtp.CoverageTarget(relative_radius=0.5), "kcenter").shape == (0, 0)


def test_nan_in_padding_and_features_that_require_grad_are_fine():
    mask = torch.arange(10) < 7
    dirty = X.clone()
    dirty[~mask] = math.nan
    assert torch.equal(evtp.select_tokens(dirty, P, 0.5, mask=mask), evtp.select_tokens(X, P, 0.5, mask=mask))
    xg = X.clone().requires_grad_(True)
    assert torch.equal(evtp.select_tokens(xg, P, 0.5, "dpp"), evtp.select_tokens(X, P, 0.5, "dpp"))
    # merging and coverage stay differentiable (ToMe merges inside training; a radius can be a loss)
    merged, sizes, _ = evtp.tome_merge(xg, 0.5)
    (merged * sizes.unsqueeze(-1)).sum().backward()  # = the sum of all tokens: gradient 1 each
    assert xg.grad is not None and torch.allclose(xg.grad, torch.ones_like(X))
    r = covering_radius(xg, KEPT)
    assert r.requires_grad


def test_validation_module_shapes_and_messages():
    """The shared validation path (evtp.selection.validation) that integrations call too."""
    inp = validation.validate_tokens(X, P, mask=torch.ones(10, dtype=torch.bool), scores=torch.rand(10))
    assert (inp.B, inp.N, inp.batched) == (1, 10, False)
    assert inp.features.shape == (1, 10, 4) and inp.positions.shape == (1, 10, 2) and inp.scores.dtype == torch.float32
    assert validation.validate_tokens(X[None]).batched
    assert validation.validate_tokens(None, P).features is None
    assert validation.check_mask(None, 2, 3, True).shape == (2, 3)
    assert validation.check_per_token(None, 1, 3, False, "x") is None
    with pytest.raises(ValueError, match=r"expected \(B, N\) = \(2, 3\)"):
        validation.check_per_token(torch.ones(2, 4), 2, 3, True, "weights")
    with pytest.raises(TypeError, match="text must be a torch.Tensor"):
        validation.check_tensor_option(np.zeros((3, 4)), "text", batched_dims=3, B=2, device="cpu")
    shared = validation.check_tensor_option(torch.ones(3, 4), "text", batched_dims=3, B=2, device="cpu")
    assert shared.shape == (2, 3, 4)
    validation.check_generator(None)
    validation.check_generator(torch.Generator())
    assert validation.resolve_keep(0.5, torch.tensor([3, 10])).tolist() == [2, 5]  # half rounds up
    validation.check_finite(torch.tensor([[1.0, math.nan]]), torch.tensor([[True, False]]), "x")  # padded NaN ok
    with pytest.raises(ValueError, match="first at sample 0, token 1"):
        validation.check_finite(torch.tensor([[1.0, math.inf]]), None, "x")
