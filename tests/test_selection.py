"""Properties of the selection API and of the k-center methods (`kcenter`, `evtp`)."""
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import evtp
from fixtures.grids import grid
from evtp.coverage import one_center_radius, relative_covering_radius
from evtp.selection.positions import normalized_positions
from evtp.selection.divprune_reference import divprune_select
from evtp.selection.helpers import split_budget

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def image_inputs(draw, max_side=6, max_d=8):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(2, max_side))
    d = draw(st.integers(2, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    x = torch.randn(h * w, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()
    k = draw(st.integers(1, h * w))
    return x, grid(h, w), k


def metric(x, pos, method, lam=1.0, tw=1.0):
    """The declared selection metric in float64: sqrt(2 d) with d as in kcenter.py."""
    u = x.double() / x.double().norm(dim=-1, keepdim=True)
    d = 1 - u @ u.T
    if method == "evtp":
        p = normalized_positions(pos, temporal_weight=tw).double()
        d = d + 0.5 * lam**2 * torch.cdist(p, p) ** 2
    return torch.sqrt((2 * d).clamp(min=0))


def greedy_order(x, pos, k, method, **opts):
    """Recover the pick order through the adaptive radius trace: run keep=1..k."""
    return [set(evtp.select_tokens(x, pos, j, method, **opts).tolist()) for j in range(1, k + 1)]


# ---------------------------------------------------------------- core algorithm properties
@SETTINGS
@given(image_inputs(), st.sampled_from(["kcenter", "evtp"]))
def test_greedy_invariant(inp, method):
    """Each pick maximises the distance to the already kept set in the declared metric."""
    x, pos, k = inp
    dm = metric(x, pos, method)
    sets = greedy_order(x, pos, k, method)
    for prev, cur in zip(sets, sets[1:]):
        (new,) = cur - prev
        d_to_set = dm[:, sorted(prev)].min(dim=1).values
        assert d_to_set[new] >= d_to_set.max() - 1e-5


@SETTINGS
@given(image_inputs(max_side=3, max_d=4), st.sampled_from(["kcenter", "evtp"]))
def test_two_approximation(inp, method):
    """Greedy covering radius <= 2 x the brute-force optimal k-center radius."""
    x, pos, k = inp
    k = min(k, 3)
    dm = metric(x, pos, method)
    kept = evtp.select_tokens(x, pos, k, method)
    greedy_r = dm[:, kept].min(dim=1).values.max().item()
    n = x.shape[0]
    opt = min(dm[:, list(c)].min(dim=1).values.max().item() for c in itertools.combinations(range(n), k))
    assert greedy_r <= 2 * opt + 1e-5


@SETTINGS
@given(st.integers(0, 10_000), st.integers(2, 4), st.sampled_from(["kcenter", "evtp"]),
       st.floats(0.05, 1.0))
def test_batch_equals_per_sample_with_padding(seed, B, method, ratio):
    g = torch.Generator().manual_seed(seed)
    N, D = 30, 6
    x = torch.randn(B, N, D, generator=g)
    pos = grid(5, 6).expand(B, N, 2)
    n_valid = torch.randint(1, N + 1, (B,), generator=g)
    mask = torch.arange(N)[None] < n_valid[:, None]
    x = x.masked_fill(~mask[..., None], float("nan"))  # garbage in padding must not matter
    out = evtp.select_tokens(x, pos, ratio, method, mask=mask)
    for b in range(B):
        n = int(n_valid[b])
        single = evtp.select_tokens(x[b, :n], pos[b, :n], ratio, method)
        row = out[b][out[b] >= 0]
        assert torch.equal(row, single)
        assert bool(mask[b, row].all())  # padded tokens never selected
    assert torch.equal(evtp.kept_counts(out), torch.floor(n_valid * ratio + 0.5).long().clamp(min=1))


@SETTINGS
@given(image_inputs(), st.sampled_from(["kcenter", "evtp"]))
def test_indices_sorted_unique_in_range_and_deterministic(inp, method):
    x, pos, k = inp
    a = evtp.select_tokens(x, pos, k, method)
    b = evtp.select_tokens(x.clone(), pos.clone(), k, method)
    assert torch.equal(a, b)
    assert a.shape == (k,) and a.dtype == torch.long
    assert bool((a[1:] > a[:-1]).all()) and int(a.min()) >= 0 and int(a.max()) < x.shape[0]


@SETTINGS
@given(image_inputs())
def test_lambda_zero_is_kcenter(inp):
    x, pos, k = inp
    assert torch.equal(evtp.select_tokens(x, pos, k, "evtp", spatial_weight=0.0),
                       evtp.select_tokens(x, pos, k, "kcenter"))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 200), st.integers(2, 64), st.floats(0.01, 1.0))
def test_kcenter_equals_divprune_procedure(seed, N, D, ratio):
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(seed))
    k = max(1, math.floor(ratio * N + 0.5))
    ours = evtp.select_tokens(x, keep=ratio, method="kcenter")
    ref = divprune_select(x, k)
    # DivPrune never masks chosen tokens; with near-duplicate tokens (low D, high ratio) its
    # procedure can pick one twice. Only compare where it is well defined (see the test below).
    assume(ref.unique().numel() == k)
    assert torch.equal(ours, ref.sort().values)


def test_kcenter_never_repeats_where_divprune_procedure_does():
    x = torch.randn(115, 2, generator=torch.Generator().manual_seed(0))
    ref = divprune_select(x, 115)
    ours = evtp.select_tokens(x, keep=1.0, method="kcenter")
    assert ref.unique().numel() < 115  # the published procedure's pitfall
    assert torch.equal(ours, torch.arange(115))


def test_kcenter_equals_divprune_batched_realistic_size():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 576, 64, generator=g)
    out = evtp.select_tokens(x, keep=0.2, method="kcenter")
    for b in range(3):
        assert torch.equal(out[b], divprune_select(x[b], out.shape[1]).sort().values)


# ---------------------------------------------------------------- spatial and video behaviour
def test_spatial_weight_spreads_selection_over_the_grid():
    """The spatial term shrinks the spatial covering radius (grid cells) of the kept set."""
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    pos = grid(16, 16)

    def spatial_radius(kept):
        return torch.cdist(pos.float(), pos[kept].float()).min(dim=1).values.max().item()

    r0 = spatial_radius(evtp.select_tokens(x, pos, 16, "evtp", spatial_weight=0.0))
    r_big = spatial_radius(evtp.select_tokens(x, pos, 16, "evtp", spatial_weight=10.0))
    assert r_big < r0 and r_big <= 4.0  # 16 points can cover a 16 x 16 grid within ~3 cells


@SETTINGS
@given(image_inputs(), st.integers(0, 10_000), st.floats(1.0, 50.0))
def test_center_features_ignores_a_shared_component(inp, seed, scale):
    """With center_features, adding one vector to every token does not change the selection
    (it is the mean-free cosine); without it a large shared component changes the metric."""
    x, pos, k = inp
    shift = scale * torch.randn(x.shape[1], generator=torch.Generator().manual_seed(seed))
    a = evtp.select_tokens(x, pos, k, "evtp", center_features=True)
    b = evtp.select_tokens(x + shift, pos, k, "evtp", center_features=True)
    if not torch.equal(a, b):  # only a float near-tie in a greedy step may flip a pick
        dm = metric(x - x.mean(0), pos, "evtp")
        ra, rb = (dm[:, kept].min(dim=1).values.max() for kept in (a, b))
        assert torch.isclose(ra, rb, rtol=1e-4)


def test_center_features_is_checked():
    x, pos = torch.randn(16, 4), grid(4, 4)
    with pytest.raises(ValueError, match="center_features"):
        evtp.select_tokens(x, pos, 4, "evtp", center_features="yes")


@SETTINGS
@given(image_inputs(), st.integers(0, 10_000), st.floats(0.25, 4.0))
def test_saliency_weighted_greedy_invariant(inp, seed, alpha):
    """With saliency_weight = alpha each pick maximises w_i * (distance to the kept set), where
    w = (SALIENCY_FLOOR + r)^alpha and r are the min-max normalised scores."""
    from evtp.selection.methods.evtp import SALIENCY_FLOOR

    x, pos, k = inp
    scores = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(seed))
    r = (scores - scores.min()) / (scores.max() - scores.min()).clamp_min(1e-30)
    w = (SALIENCY_FLOOR + r.double()) ** alpha
    dm = metric(x, pos, "evtp") ** 2 / 2  # the half-squared distance the loop compares
    sets = greedy_order(x, pos, k, "evtp", saliency_weight=alpha, scores=scores)
    for prev, cur in zip(sets, sets[1:]):
        (new,) = cur - prev
        gain = w * dm[:, sorted(prev)].min(dim=1).values
        assert gain[new] >= gain.max() - 1e-5 * max(1.0, float(gain.max()))


@SETTINGS
@given(image_inputs(), st.integers(0, 10_000))
def test_saliency_weight_zero_or_constant_scores_change_nothing(inp, seed):
    x, pos, k = inp
    plain = evtp.select_tokens(x, pos, k, "evtp")
    scores = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(seed))
    assert torch.equal(evtp.select_tokens(x, pos, k, "evtp", saliency_weight=0.0, scores=scores), plain)
    # equal scores: every weight is the same constant, so the picks are the same
    assert torch.equal(evtp.select_tokens(x, pos, k, "evtp", saliency_weight=2.0,
                                          scores=torch.ones(x.shape[0])), plain)


def test_saliency_weight_moves_picks_onto_salient_tokens():
    """Half the grid salient: a large alpha keeps (almost) only salient tokens, alpha 0 spreads."""
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(3))
    pos = grid(16, 16)
    scores = (pos[:, 1] < 8).float()  # left half salient
    on_left = lambda kept: (pos[kept, 1] < 8).float().mean().item()
    assert on_left(evtp.select_tokens(x, pos, 32, "evtp")) < 0.75
    assert on_left(evtp.select_tokens(x, pos, 32, "evtp", saliency_weight=4.0, scores=scores)) > 0.95
    video = grid(4, 4, frames=4)
    xv = torch.randn(64, 8, generator=torch.Generator().manual_seed(4))
    kept = evtp.select_tokens(xv, video, 12, "evtp", video_budget="per_frame", saliency_weight=4.0,
                              scores=(video[:, 2] < 2).float())
    # per frame only the first centre (DivPrune's rule, unweighted) may lie off the salient half
    off = video[kept][video[kept, 2] >= 2]
    assert len(kept) == 12 and torch.bincount(off[:, 0], minlength=4).max() <= 1


def test_saliency_weight_is_checked_and_asks_for_scores():
    x, pos = torch.randn(16, 4), grid(4, 4)
    with pytest.raises(ValueError, match="needs scores"):
        evtp.select_tokens(x, pos, 4, "evtp", saliency_weight=1.0)
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="saliency_weight"):
            evtp.select_tokens(x, pos, 4, "evtp", saliency_weight=bad, scores=torch.rand(16))
    spec = evtp.METHODS["evtp"]
    assert not spec.wants_scores() and spec.wants_scores({"saliency_weight": 1.0})
    assert evtp.METHODS["attention"].wants_scores() and not evtp.METHODS["kcenter"].wants_scores({})


def test_per_frame_budget_splits_by_frame():
    x = torch.randn(4 * 16, 8, generator=torch.Generator().manual_seed(2))
    pos = grid(4, 4, frames=4)
    kept = evtp.select_tokens(x, pos, 10, "evtp", video_budget="per_frame")
    per_frame = torch.bincount(pos[kept, 0], minlength=4)
    assert sorted(per_frame.tolist()) == [2, 2, 3, 3]  # 10 tokens over 4 equal frames


@SETTINGS
@given(st.lists(st.integers(0, 20), min_size=1, max_size=6), st.integers(0, 10_000))
def test_split_budget(counts, seed):
    counts_t = torch.tensor([counts])
    total = sum(counts)
    if total == 0:
        return
    k = torch.tensor([seed % total + 1])
    out = split_budget(k, counts_t)
    assert int(out.sum()) == int(k) and bool((out <= counts_t).all()) and bool((out >= 0).all())
    quota = k.double() * counts_t.double() / total
    assert bool(((out - quota).abs() < 1 + 1e-9).all())


@pytest.mark.parametrize("first", ["divprune", "center", "norm", "random"])
def test_first_rules(first):
    x = torch.randn(2, 36, 8, generator=torch.Generator().manual_seed(3))
    pos = grid(6, 6).expand(2, 36, 2)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = evtp.select_tokens(x, pos, 1, "evtp", first=first, generator=g1)
    b = evtp.select_tokens(x, pos, 1, "evtp", first=first, generator=g2)
    assert torch.equal(a, b)
    if first == "center":
        assert set(a[:, 0].tolist()) <= {14, 15, 20, 21}  # the four centre cells of a 6x6 grid
    if first == "norm":
        assert torch.equal(a[:, 0], x.norm(dim=-1).argmax(1))


# ---------------------------------------------------------------- adaptive budget
@SETTINGS
@given(image_inputs(), st.floats(0.1, 1.5), st.sampled_from(["kcenter", "evtp"]))
def test_coverage_target_stops_at_radius(inp, eps, method):
    x, pos, _ = inp
    kept = evtp.select_tokens(x, pos, evtp.CoverageTarget(radius=eps), method)
    dm = metric(x, pos, method)
    if method == "kcenter":
        dm = dm**2 / 2  # kcenter's radius is in 1 - cos
    r = dm[:, kept].min(dim=1).values.max().item()
    assert r <= eps + 1e-5
    if kept.numel() > 1:  # one fewer token would not have reached the target
        fewer = evtp.select_tokens(x, pos, kept.numel() - 1, method)
        assert dm[:, fewer].min(dim=1).values.max().item() > eps - 1e-5


def test_coverage_target_keeps_fewer_on_easy_inputs():
    g = torch.Generator().manual_seed(4)
    easy = torch.randn(3, 16, generator=g).repeat_interleave(64, 0) + 0.01 * torch.randn(192, 16, generator=g)
    hard = torch.randn(192, 16, generator=g)
    n_easy = evtp.select_tokens(easy, keep=evtp.CoverageTarget(radius=0.05), method="kcenter").numel()
    n_hard = evtp.select_tokens(hard, keep=evtp.CoverageTarget(radius=0.05), method="kcenter").numel()
    assert n_easy == 3 and n_hard > 100


@SETTINGS
@given(image_inputs(), st.floats(0.05, 1.0), st.sampled_from(["kcenter", "evtp"]))
def test_relative_radius_stops_at_its_fraction_of_the_one_center_radius(inp, eps, method):
    """CoverageTarget(relative_radius=eps) keeps the shortest greedy prefix whose covering radius
    is at most eps times the set's 1-centre radius, both measured by evtp.coverage in the
    method's metric (chord distance for kcenter, the augmented distance for evtp)."""
    x, pos, _ = inp
    metric = "feature" if method == "kcenter" else "combined"
    kept = evtp.select_tokens(x, pos, evtp.CoverageTarget(relative_radius=eps), method)
    assert relative_covering_radius(x, kept, pos, metric=metric).item() <= eps + 1e-4
    if kept.numel() > 1:
        fewer = evtp.select_tokens(x, pos, kept.numel() - 1, method)
        assert relative_covering_radius(x, fewer, pos, metric=metric).item() > eps - 1e-4


@SETTINGS
@given(image_inputs(), st.floats(0.05, 1.0), st.integers(-6, 6))
def test_relative_radius_is_free_of_the_metric_unit(inp, eps, exponent):
    """The property that makes the relative scale meaningful: it does not depend on the metric's
    unit. (1) evtp with spatial_weight = 0 and kcenter order every pair identically, but their
    absolute radii are in different units (Euclidean vs 1 - cos); with a relative radius they keep
    the same tokens. (2) Multiplying every distance by c (a power of two, so exactly) keeps the
    same tokens for the same relative radius, where an absolute radius would keep fewer or more."""
    x, pos, _ = inp
    target = evtp.CoverageTarget(relative_radius=eps)
    assert torch.equal(evtp.select_tokens(x, pos, target, "evtp", spatial_weight=0.0),
                       evtp.select_tokens(x, pos, target, "kcenter"))
    from evtp.selection.greedy import cosine_distance_matrix, first_center, greedy_kcenter, stop_distance

    mask = torch.ones(1, x.shape[0], dtype=torch.bool)
    k = torch.tensor([x.shape[0]])
    picks = []
    for c in (1.0, 2.0 ** exponent):
        dist = cosine_distance_matrix(x[None]) * c
        stop = stop_distance(dist, mask, relative_radius=eps)
        picks.append(greedy_kcenter(dist, k, mask, first_center(dist, mask, "divprune"), stop_below=stop))
    assert torch.equal(picks[0], picks[1])


def test_relative_radius_one_keeps_few_and_zero_keeps_all():
    g = torch.Generator().manual_seed(11)
    x, pos = torch.randn(48, 12, generator=g), grid(6, 8)
    for method in ("kcenter", "evtp"):
        assert evtp.select_tokens(x, pos, evtp.CoverageTarget(relative_radius=0.0), method).numel() == 48
        few = evtp.select_tokens(x, pos, evtp.CoverageTarget(relative_radius=1.0), method).numel()
        assert few <= 3
        counts = [evtp.select_tokens(x, pos, evtp.CoverageTarget(relative_radius=e), method).numel()
                  for e in (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)]
        assert counts == sorted(counts)  # a smaller radius never keeps fewer
    # the unit: coverage's one_center_radius is min_i max_j d(i, j) in the metric
    u = x / x.norm(dim=-1, keepdim=True)
    d = 1 - u @ u.T
    assert one_center_radius(x).item() == pytest.approx(d.max(1).values.min().item(), abs=1e-5)


def test_relative_radius_with_padding_and_saliency():
    """Per-sample units in a padded batch (padding may hold NaN), and with saliency_weight the
    unit is the weighted 1-centre radius, so the same relative target still stops the weighted loop."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 30, 8, generator=g)
    pos = grid(5, 6).expand(2, 30, 2)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    dirty = x.clone()
    dirty[~mask] = math.nan
    target = evtp.CoverageTarget(relative_radius=0.6)
    both = evtp.select_tokens(dirty, pos, target, "evtp", mask=mask)
    for b in range(2):
        n = int(mask[b].sum())
        alone = evtp.select_tokens(x[b, :n], pos[b, :n], target, "evtp")
        assert torch.equal(both[b][both[b] >= 0], alone)
    s = torch.rand(2, 30, generator=g)
    w = evtp.select_tokens(x, pos, target, "evtp", scores=s, saliency_weight=2.0)
    assert bool((evtp.kept_counts(w) >= 1).all()) and bool((evtp.kept_counts(w) < 30).all())


@pytest.mark.parametrize("kwargs, words", [
    (dict(), "exactly one"),
    (dict(radius=0.5, relative_radius=0.5), "exactly one"),
    (dict(relative_radius=-0.1), "relative_radius"),
    (dict(relative_radius=float("nan")), "relative_radius"),
    (dict(radius=float("inf")), "radius"),
    (dict(radius=0.5, min_keep=50, max_keep=10), "min_keep=50, max_keep=10"),
    (dict(radius=0.5, min_keep=0), "min_keep"),
    (dict(radius=0.5, max_keep=0), "max_keep"),
    (dict(radius=0.5, max_keep=1.5), "max_keep"),
])
def test_coverage_target_checked_on_construction(kwargs, words):
    with pytest.raises((ValueError, TypeError)) as info:
        evtp.CoverageTarget(**kwargs)
    assert words.lower() in str(info.value).lower()


def test_coverage_target_bounds_checked_against_the_tokens():
    x = torch.randn(40, 4)
    with pytest.raises(ValueError, match="min_keep=50 is larger than the number of tokens"):
        evtp.select_tokens(x, keep=evtp.CoverageTarget(radius=0.1, min_keep=50), method="kcenter")
    with pytest.raises(ValueError, match=r"min_keep=10, max_keep=0.1\) allows at most 4"):
        evtp.select_tokens(x, keep=evtp.CoverageTarget(radius=0.1, min_keep=10, max_keep=0.1), method="kcenter")
    kept = evtp.select_tokens(x, keep=evtp.CoverageTarget(radius=10.0, min_keep=7, max_keep=0.5), method="kcenter")
    assert kept.numel() == 7


# ---------------------------------------------------------------- the capturable loop
def test_compiled_loop_gives_the_eager_picks():
    """loop="compiled" (torch.compile'd steps; one CUDA graph on GPU) returns exactly the eager
    loop's indices: padded batches with NaN padding, duplicated tokens (exact ties), evtp and
    kcenter, fixed and adaptive budgets. One shape throughout, so it compiles once (~10 s)."""
    g = torch.Generator().manual_seed(13)
    B, N, D, K = 3, 48, 8, 12
    x = torch.randn(B, N, D, generator=g)
    x[0, 24:] = x[0, :24]  # duplicates: ties broken by the lowest index in both loops
    pos = grid(6, 8).expand(B, N, 2)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[2, 30:] = False
    x[2, 30:] = math.nan
    cases = [("kcenter", K, {}), ("evtp", K, {}),
             ("evtp", evtp.CoverageTarget(relative_radius=0.7, max_keep=K), {}),
             ("evtp", K, {"saliency_weight": 2.0}),
             ("kcenter", evtp.CoverageTarget(radius=0.4, max_keep=K), {})]
    scores = torch.rand(B, N, generator=g)
    for method, keep, opts in cases:
        eager = evtp.select_tokens(x, pos, keep, method, mask=mask, scores=scores, **opts)
        compiled = evtp.select_tokens(x, pos, keep, method, mask=mask, scores=scores, loop="compiled", **opts)
        assert torch.equal(eager, compiled), (method, keep, opts)


def test_loop_option_is_checked():
    with pytest.raises(ValueError, match="loop"):
        evtp.select_tokens(X, P, 3, "evtp", loop="graph")


# ---------------------------------------------------------------- fast paths
@pytest.mark.parametrize("opts", [dict(precision="float16"), dict(precision="bfloat16"),
                                  dict(projection_dim=16)])
def test_fast_paths_return_valid_near_exact_cover(opts):
    x = torch.randn(400, 128, generator=torch.Generator().manual_seed(6))
    exact = evtp.select_tokens(x, keep=0.2, method="kcenter")
    fast = evtp.select_tokens(x, keep=0.2, method="kcenter", **opts)
    assert fast.shape == exact.shape and bool((fast[1:] > fast[:-1]).all())
    dm = metric(x, None, "kcenter")
    r = lambda kept: dm[:, kept].min(dim=1).values.max().item()
    assert r(fast) <= 1.25 * r(exact)


# ---------------------------------------------------------------- bad input
X = torch.randn(10, 4)
P = grid(2, 5)


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(keep=0), ValueError, "keep"),
    (dict(keep=11), ValueError, "larger than the number of tokens"),
    (dict(keep=0.0), ValueError, "(0, 1]"),
    (dict(keep=1.5), ValueError, "(0, 1]"),
    (dict(keep=-0.2), ValueError, "(0, 1]"),
    (dict(keep=float("nan")), ValueError, "(0, 1]"),
    (dict(keep="0.2"), TypeError, "keep"),
    (dict(keep=True), TypeError, "keep"),
    (dict(method="divprune2"), ValueError, "known methods"),
    (dict(features=X.numpy()), TypeError, "features"),
    (dict(features=torch.ones(10, 4, dtype=torch.long)), TypeError, "floating"),
    (dict(features=torch.randn(10)), ValueError, "features"),
    (dict(features=X.clone().index_fill_(0, torch.tensor([3]), float("nan"))), ValueError, "NaN"),
    (dict(features=X.clone().index_fill_(0, torch.tensor([3]), float("inf"))), ValueError, "inf"),
    (dict(positions=grid(3, 3)), ValueError, "positions"),
    (dict(positions=P.float()), TypeError, "positions"),
    (dict(positions=torch.zeros(10, 4, dtype=torch.long)), ValueError, "positions"),
    (dict(positions=P[None]), ValueError, "positions"),
    (dict(mask=torch.ones(9, dtype=torch.bool)), ValueError, "mask"),
    (dict(mask=torch.ones(10)), TypeError, "mask"),
    (dict(mask=torch.zeros(10, dtype=torch.bool)), ValueError, "mask"),
    (dict(scores=torch.ones(9)), ValueError, "scores"),
    (dict(scores=torch.full((10,), float("nan"))), ValueError, "scores"),
    (dict(positions=None), ValueError, "positions"),
    (dict(bogus_option=1), TypeError, "bogus_option"),
    (dict(spatial_weight=-1.0), ValueError, "spatial_weight"),
    (dict(first="middle"), ValueError, "first"),
    (dict(video_budget="frames"), ValueError, "video_budget"),
    (dict(precision="int8"), ValueError, "precision"),
    (dict(projection_dim=0), ValueError, "projection_dim"),
])
def test_bad_input(kwargs, exc, words):
    args = dict(features=X, positions=P, keep=0.3, method="evtp")
    args.update(kwargs)
    with pytest.raises(exc, match=None) as info:
        evtp.select_tokens(**args)
    assert words.lower() in str(info.value).lower()


def test_needs_scores_error_names_the_argument():
    needs = [n for n, s in evtp.METHODS.items() if s.needs_scores]
    for name in needs:
        with pytest.raises(ValueError, match="scores"):
            evtp.select_tokens(X, P, 0.5, name)


def test_coverage_target_rejected_by_non_adaptive_methods():
    with pytest.raises(ValueError, match="adaptive"):
        evtp.select_tokens(X, P, evtp.CoverageTarget(radius=0.1), "random")


def test_padded_mask_with_int_keep_larger_than_a_sample():
    x = torch.randn(2, 10, 4)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 3:] = False
    with pytest.raises(ValueError, match="larger than the number of tokens"):
        evtp.select_tokens(x, keep=5, method="kcenter", mask=mask)
