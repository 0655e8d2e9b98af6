"""The selection-method contract, checked for every method in `evtp.METHODS`.

The parametrisation reads the registry at collection time, so a newly registered method is run
through every test here without being listed anywhere.
"""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import evtp
from fixtures.batches import padded_batch
from fixtures.grids import grid
from evtp.selection import resolve_keep

SETTINGS = settings(max_examples=25, deadline=None)
ALL = sorted(evtp.METHODS)
SEEDED = [m for m in ALL if not evtp.METHODS[m].uses_generator]  # no random numbers by default
ADAPTIVE = [m for m in ALL if evtp.METHODS[m].adaptive]


def call(method, x, pos, keep, mask=None, scores=None, seed=0, **kw):
    """Every method gets everything it may use: positions, scores and a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return evtp.select_tokens(x, pos, keep, method, scores=scores, mask=mask, generator=g, **kw)


def _image(seed=0, B=2, h=4, w=6, d=8):
    g = torch.Generator().manual_seed(seed)
    pos = grid(h, w).expand(B, h * w, 2).clone()
    return torch.randn(B, h * w, d, generator=g), pos, torch.rand(B, h * w, generator=g)


@SETTINGS
@given(padded_batch(), st.sampled_from(ALL))
def test_indices_sorted_unique_in_range_never_padded(inp, method):
    x, pos, mask, scores, keep = inp
    idx = call(method, x, pos, keep, mask, scores)
    assert idx.dtype == torch.long and idx.shape[0] == x.shape[0]
    assert torch.equal(evtp.kept_counts(idx), resolve_keep(keep, mask.sum(1)))
    for b in range(x.shape[0]):
        row = idx[b][idx[b] >= 0]
        assert torch.all(row[1:] > row[:-1])  # sorted and unique
        assert bool(mask[b, row].all())  # never a padded token
        assert bool((idx[b][len(row):] == -1).all())  # -1 padding only at the end


@SETTINGS
@given(padded_batch(min_d=30, max_d=40), st.sampled_from(SEEDED))
def test_batch_equals_per_sample(inp, method):
    x, pos, mask, scores, keep = inp
    idx = call(method, x, pos, keep, mask, scores)
    for b in range(x.shape[0]):
        m = mask[b]
        alone = call(method, x[b][m], pos[b][m], keep, None, scores[b][m])
        assert torch.equal(torch.nonzero(m).squeeze(1)[alone], idx[b][idx[b] >= 0])


@SETTINGS
@given(padded_batch(), st.sampled_from(ALL))
def test_same_input_and_generator_same_result(inp, method):
    x, pos, mask, scores, keep = inp
    assert torch.equal(call(method, x, pos, keep, mask, scores), call(method, x.clone(), pos, keep, mask, scores))


@pytest.mark.parametrize("method", ALL)
def test_padded_tokens_may_hold_nan(method):
    x, pos, scores = _image(1)
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 17:] = False
    dirty = x.clone()
    dirty[~mask] = math.nan
    assert torch.equal(call(method, x, pos, 0.4, mask, scores), call(method, dirty, pos, 0.4, mask, scores))


@pytest.mark.parametrize("method", ALL)
def test_features_that_require_grad(method):
    """Indices are not differentiable: the same selection whatever requires_grad, no graph attached."""
    x, pos, scores = _image(2)
    want = call(method, x, pos, 0.3, scores=scores)
    xg, sg = x.clone().requires_grad_(True), scores.clone().requires_grad_(True)
    with torch.enable_grad():
        got = call(method, xg, pos, 0.3, scores=sg)
        assert torch.equal(got, want) and not got.requires_grad
        # a non-leaf that is part of a graph, e.g. a projector's output
        proj = torch.nn.Linear(8, 8)
        y = proj(xg)
        assert torch.equal(call(method, y, pos, 0.3, scores=sg), call(method, y.detach(), pos, 0.3, scores=scores))
    assert xg.grad is None
    with torch.inference_mode():
        assert torch.equal(call(method, x, pos, 0.3, scores=scores), want)


@pytest.mark.parametrize("method", ALL)
def test_empty_batch(method):
    x, pos, scores = _image(3)
    out = call(method, x[:0], pos[:0], 0.3, scores=scores[:0])
    assert out.shape == (0, 0) and out.dtype == torch.long
    out = call(method, x[:0], pos[:0], 5, mask=torch.ones(0, 24, dtype=torch.bool), scores=scores[:0])
    assert out.shape == (0, 0)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_select_as_their_float32_values(method, dtype):
    x, pos, scores = _image(4)
    xd = x.to(dtype)
    assert torch.equal(call(method, xd, pos, 0.3, scores=scores), call(method, xd.float(), pos, 0.3, scores=scores))


@pytest.mark.parametrize("method", ALL)
def test_keep_everything_returns_every_valid_token(method):
    x, pos, scores = _image(5)
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[0, ::3] = False
    idx = call(method, x, pos, 1.0, mask, scores)
    for b in range(2):
        assert torch.equal(idx[b][idx[b] >= 0], torch.nonzero(mask[b]).squeeze(1))


@pytest.mark.parametrize("method", [m for m in ALL if not evtp.METHODS[m].uses_positions])
def test_methods_without_positions_ignore_them(method):
    x, pos, scores = _image(6)
    assert torch.equal(call(method, x, pos, 0.3, scores=scores), call(method, x, None, 0.3, scores=scores))


@pytest.mark.parametrize("method", ALL)
def test_generator_must_be_a_torch_generator(method):
    x, pos, scores = _image(7)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        evtp.select_tokens(x, pos, 0.3, method, scores=scores, generator="cpu")


@pytest.mark.parametrize("method", ALL)
def test_adaptive_budget_accepted_only_by_adaptive_methods(method):
    x, pos, scores = _image(8)
    for target in (evtp.CoverageTarget(radius=0.5), evtp.CoverageTarget(relative_radius=0.5)):
        if method in ADAPTIVE:
            idx = call(method, x, pos, target, scores=scores)
            assert bool((evtp.kept_counts(idx) >= 1).all())
        else:
            with pytest.raises(ValueError, match="adaptive"):
                call(method, x, pos, target, scores=scores)


@pytest.mark.parametrize("method", ALL)
def test_declared_options_are_accepted_with_their_defaults(method):
    """Every option a method declares, passed at its declared default, changes nothing."""
    x, pos, scores = _image(9)
    opts = {k: v for k, v in evtp.METHODS[method].options.items() if k not in ("radius", "relative_radius")}
    assert torch.equal(call(method, x, pos, 0.3, scores=scores, **opts), call(method, x, pos, 0.3, scores=scores))
