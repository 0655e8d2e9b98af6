"""Coverage measures against brute force, hand-computed cases and the `evtp` selection metric."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import evtp
from fixtures.grids import grid
from evtp.coverage import (METRICS, coverage_information, covering_radius, gaussian_rate_distortion,
                           mean_nearest_distance, nearest_kept_distance, normalized_positions,
                           spatial_coverage)

SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def kept_batch(draw, max_b=3):
    """Features, positions, mask and a -1 padded kept set (kept tokens are valid)."""
    B = draw(st.integers(1, max_b))
    frames = draw(st.one_of(st.none(), st.integers(1, 3)))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pos = grid(h, w, frames)
    N = pos.shape[0]
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(B, N, draw(st.integers(1, 6)), generator=g)
    mask = torch.rand(B, N, generator=g) < draw(st.sampled_from([1.0, 0.7]))
    mask[:, -1] = True
    K = draw(st.integers(1, N))
    kept = torch.full((B, K), -1)
    for b in range(B):
        valid = mask[b].nonzero().squeeze(1)
        kb = valid[torch.randperm(len(valid), generator=g)[: draw(st.integers(1, min(K, len(valid))))]]
        kept[b, : len(kb)] = kb
    sw = draw(st.sampled_from([0.0, 0.5, 2.0]))
    tw = draw(st.sampled_from([1.0, 0.3]))
    return x, pos.expand(B, N, pos.shape[-1]).clone(), mask, kept, sw, tw


def brute_distance(x, pos, mask, metric, sw, tw, i, j):
    """One pair's distance, written out directly in float64."""
    if metric == "feature":
        a, b = x[i].double(), x[j].double()
        return 1.0 - float(a @ b / (a.norm() * b.norm()))
    if metric == "spatial":
        d = (pos[i] - pos[j]).double()
        if len(d) == 3:
            d[0] *= tw
        return float(d.norm())
    valid = pos[mask].double()
    lo, hi = valid.min(0).values, valid.max(0).values
    span = torch.clamp(hi - lo, min=1.0)
    p = (pos.double() - lo) / span
    if pos.shape[1] == 3:
        p[:, 0] *= tw
    u = x.double() / x.double().norm(dim=-1, keepdim=True)
    return float(torch.cat([u[i] - u[j], sw * (p[i] - p[j])]).norm())


@SETTINGS
@given(kept_batch(), st.sampled_from(METRICS))
def test_radius_and_mean_against_brute_force(inp, metric):
    x, pos, mask, kept, sw, tw = inp
    kw = dict(metric=metric, spatial_weight=sw, temporal_weight=tw, mask=mask)
    rad = covering_radius(x, kept, pos, **kw)
    mean = mean_nearest_distance(x, kept, pos, **kw)
    near = nearest_kept_distance(x, kept, pos, **kw)
    for b in range(x.shape[0]):
        ks = [int(j) for j in kept[b] if j >= 0]
        valid = [i for i in range(x.shape[1]) if mask[b, i]]
        nd = [min(brute_distance(x[b], pos[b], mask[b], metric, sw, tw, i, j) for j in ks) for i in valid]
        assert rad[b].item() == pytest.approx(max(nd), abs=2e-3)
        assert mean[b].item() == pytest.approx(sum(nd) / len(nd), abs=2e-3)
        assert np.allclose(near[b, valid].numpy(), nd, atol=2e-3)
        assert bool(torch.isnan(near[b, ~mask[b]]).all())


@SETTINGS
@given(kept_batch())
def test_batch_equals_per_sample_and_unbatched(inp):
    x, pos, mask, kept, sw, tw = inp
    for metric in METRICS:
        kw = dict(metric=metric, spatial_weight=sw, temporal_weight=tw)
        rad = covering_radius(x, kept, pos, mask=mask, **kw)
        for b in range(x.shape[0]):
            one = covering_radius(x[b], kept[b], pos[b], mask=mask[b], **kw)
            assert one.dim() == 0 and one.item() == pytest.approx(rad[b].item(), abs=1e-5)


def test_combined_metric_is_the_evtp_selection_metric():
    """The evtp adaptive budget stops exactly when our combined covering radius reaches its target."""
    torch.manual_seed(0)
    pos = grid(6, 7)
    x = torch.randn(42, 16)
    for lam, method, metric in ((1.0, "evtp", "combined"), (0.4, "evtp", "combined"), (0.0, "kcenter", "feature")):
        opts = {"spatial_weight": lam} if method == "evtp" else {}
        for eps in (1.2, 0.9, 0.6):
            target = eps if metric == "combined" else 0.5 * eps ** 2  # kcenter's radius is in 1 - cos
            idx = evtp.select_tokens(x, pos, evtp.CoverageTarget(radius=target), method, **opts)
            n = len(idx)
            r = covering_radius(x, idx, pos, metric=metric, spatial_weight=lam)
            assert r.item() <= target + 1e-5
            if n > 1:  # one fewer greedy pick does not reach the target
                fewer = evtp.select_tokens(x, pos, n - 1, method, **opts)
                assert set(fewer.tolist()) < set(idx.tolist())
                rf = covering_radius(x, fewer, pos, metric=metric, spatial_weight=lam)
                assert rf.item() > target - 1e-5


def test_default_weights_follow_the_evtp_method():
    torch.manual_seed(0)
    pos, x = grid(4, 5), torch.randn(20, 8)
    kept = torch.tensor([0, 7, 19])
    opts = evtp.METHODS["evtp"].options
    a = covering_radius(x, kept, pos, metric="combined")
    b = covering_radius(x, kept, pos, metric="combined", spatial_weight=opts["spatial_weight"],
                        temporal_weight=opts["temporal_weight"])
    assert a.item() == b.item()


def test_normalized_positions_hand_cases():
    p = normalized_positions(grid(3, 5))
    assert torch.allclose(p[:, 0].unique(), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(p[:, 1].unique(), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert torch.equal(normalized_positions(grid(1, 3))[:, 0], torch.zeros(3))  # 1-cell axis stays 0
    v = normalized_positions(grid(2, 2, frames=3), temporal_weight=0.5)
    assert torch.allclose(v[:, 0].unique(), torch.tensor([0.0, 0.25, 0.5]))
    mask = torch.ones(12, dtype=torch.bool)
    mask[8:] = False  # third frame padded: the frame axis spans frames 0..1 only
    vm = normalized_positions(grid(2, 2, frames=3), mask)
    assert torch.allclose(vm[:8, 0].unique(), torch.tensor([0.0, 1.0])) and bool((vm[8:] == 0).all())
    b = normalized_positions(torch.stack([grid(3, 5), grid(3, 5) * 2]))
    assert torch.allclose(b[0], b[1])  # scale-free per sample
    with pytest.raises(ValueError, match="P = 4"):
        normalized_positions(torch.zeros(5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="temporal_weight"):
        normalized_positions(grid(2, 2), temporal_weight=-1.0)
    with pytest.raises(TypeError, match="positions"):
        normalized_positions([[0, 0]])


def test_spatial_coverage_hand_cases():
    pos = grid(5, 5)
    centre = torch.tensor([12])
    assert spatial_coverage(pos, centre, r=1).item() == pytest.approx(9 / 25)
    assert spatial_coverage(pos, centre, r=2).item() == pytest.approx(1.0)
    assert spatial_coverage(pos, centre, r=0).item() == pytest.approx(1 / 25)
    assert spatial_coverage(pos, torch.tensor([0]), r=1).item() == pytest.approx(4 / 25)  # corner
    assert spatial_coverage(pos, torch.tensor([0, 24]), r=1).item() == pytest.approx(8 / 25)
    assert spatial_coverage(pos, torch.tensor([0, 1]), r=1).item() == pytest.approx(6 / 25)  # overlap
    video = grid(3, 3, frames=2)
    assert spatial_coverage(video, torch.tensor([4]), r=1).item() == pytest.approx(0.5)  # frame 0 only
    assert spatial_coverage(video, torch.tensor([4, 13]), r=1).item() == pytest.approx(1.0)
    mask = torch.ones(25, dtype=torch.bool)
    mask[20:] = False  # bottom row padded: 20 cells
    assert spatial_coverage(pos, centre, r=1, mask=mask).item() == pytest.approx(9 / 20)
    batch = spatial_coverage(torch.stack([pos, pos]), torch.tensor([[12, -1], [0, 24]]))
    assert torch.allclose(batch, torch.tensor([9 / 25, 8 / 25]))


def test_gaussian_rate_distortion_hand_cases():
    lam = torch.tensor([[4.0, 1.0]] * 5)
    D = torch.tensor([0.5, 1.5, 3.0, 5.0, 0.0])
    R = gaussian_rate_distortion(lam, D)
    want = [0.5 * math.log(16) + 0.5 * math.log(4),  # theta = 0.25
            0.5 * math.log(4 / 0.75) + 0.5 * math.log(1 / 0.75),  # theta = 0.75
            0.5 * math.log(2.0),  # only the large component is above water: theta = 2
            0.0, math.inf]
    for got, w in zip(R.tolist(), want):
        assert got == pytest.approx(w)
    one = gaussian_rate_distortion(torch.tensor([[2.0, 0.0]]), torch.tensor([0.5]))
    assert one.item() == pytest.approx(0.5 * math.log(4))


@SETTINGS
@given(kept_batch(), st.sampled_from(METRICS))
def test_coverage_information_brute_force(inp, metric):
    x, pos, mask, kept, sw, tw = inp
    info = coverage_information(x, kept, pos, metric=metric, spatial_weight=sw, temporal_weight=tw, mask=mask)
    if metric == "spatial":
        emb = pos.double().clone()
        if pos.shape[-1] == 3:
            emb[..., 0] *= tw
    for b in range(x.shape[0]):
        valid = [i for i in range(x.shape[1]) if mask[b, i]]
        ks = [int(j) for j in kept[b] if j >= 0]
        near = []
        cell = []
        for i in valid:
            ds = [brute_distance(x[b], pos[b], mask[b], metric, sw, tw, i, j) for j in ks]
            if metric == "feature":  # the feature embedding is the unit sphere: squared = 2 (1 - cos)
                ds = [math.sqrt(max(2 * v, 0.0)) for v in ds]
            near.append(min(ds))
            cell.append(int(np.argmin(ds)))
        dist = sum(v * v for v in near) / len(valid)
        assert info.distortion[b].item() == pytest.approx(dist, abs=2e-3)
        counts = np.bincount(cell, minlength=len(ks)) / len(valid)
        h = -sum(p * math.log(p) for p in counts if p > 0)
        # ties between equidistant kept tokens may fall either way; entropy is bounded by log k
        assert info.cell_entropy[b].item() <= math.log(len(ks)) + 1e-5
        if metric != "spatial":
            assert info.cell_entropy[b].item() == pytest.approx(h, abs=1e-4)
        assert info.rate[b].item() >= 0
        if info.variance[b].item() > 1e-6:
            assert info.explained[b].item() == pytest.approx(1 - dist / info.variance[b].item(), abs=1e-3)


def test_coverage_information_extremes():
    torch.manual_seed(0)
    x = torch.randn(30, 5)
    everything = coverage_information(x, torch.arange(30))
    assert everything.distortion.item() == pytest.approx(0.0, abs=1e-5)
    assert everything.cell_entropy.item() == pytest.approx(math.log(30), abs=1e-5)
    assert everything.explained.item() == pytest.approx(1.0, abs=1e-4)
    one = coverage_information(x, torch.tensor([3]))
    assert one.cell_entropy.item() == 0.0
    # more kept tokens never increase the distortion, and the rate does not decrease
    a = coverage_information(x, torch.tensor([0, 5, 9]))
    b = coverage_information(x, torch.tensor([0, 5, 9, 17, 22]))
    assert b.distortion.item() <= a.distortion.item() + 1e-7
    assert b.rate.item() >= a.rate.item() - 1e-9


def test_more_kept_never_increases_radius():
    torch.manual_seed(0)
    x, pos = torch.randn(36, 6), grid(6, 6)
    for metric in METRICS:
        prev = math.inf
        for k in range(1, 37, 5):
            idx = evtp.select_tokens(x, pos, k, "random", generator=torch.Generator().manual_seed(0))
            idx = torch.tensor(sorted(set(idx.tolist()) | set(range(k))))
            r = covering_radius(x, idx, pos, metric=metric).item()
            assert r <= prev + 1e-6
            prev = r


def test_coverage_bad_input():
    x, pos = torch.randn(6, 3), grid(2, 3)
    ok = torch.tensor([0, 3])
    with pytest.raises(ValueError, match="metric"):
        covering_radius(x, ok, pos, metric="cosine")
    with pytest.raises(ValueError, match="positions"):
        covering_radius(x, ok, metric="combined")
    with pytest.raises(ValueError, match="positions"):
        mean_nearest_distance(x, ok, metric="spatial")
    with pytest.raises(ValueError, match="outside"):
        covering_radius(x, torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="no kept token"):
        covering_radius(x, torch.tensor([-1, -1]))
    with pytest.raises(TypeError, match="kept"):
        covering_radius(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="padded"):
        covering_radius(x, ok, mask=torch.tensor([True, True, True, False, True, True]))
    with pytest.raises(ValueError, match="mask"):
        covering_radius(x, ok, mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="positions"):
        covering_radius(x, ok, grid(3, 3), metric="spatial")
    with pytest.raises(ValueError, match="NaN"):
        covering_radius(torch.full((6, 3), math.nan), ok)
    with pytest.raises(ValueError, match="spatial_weight"):
        covering_radius(x, ok, pos, metric="combined", spatial_weight=-1.0)
    with pytest.raises(ValueError, match="r must"):
        spatial_coverage(pos, ok, r=-1)
    with pytest.raises(TypeError, match="integer"):
        spatial_coverage(pos.float(), ok)
    with pytest.raises(ValueError, match="kept"):
        spatial_coverage(pos, torch.tensor([[0, 1]]))
    # spatial metric works without features
    assert covering_radius(None, ok, pos, metric="spatial").item() == pytest.approx(2.0)  # (0, 2) to (0, 0)
    assert covering_radius(None, torch.tensor([1, 4]), pos, metric="spatial").item() == pytest.approx(1.0)


def test_padded_tokens_may_hold_nan():
    torch.manual_seed(0)
    x, pos = torch.randn(2, 12, 5), grid(3, 4).expand(2, 12, 2).clone()
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False
    dirty = x.clone()
    dirty[~mask] = math.nan
    kept = torch.tensor([[0, 5, 11], [1, 6, -1]])
    for metric in METRICS:
        for fn in (covering_radius, mean_nearest_distance):
            assert torch.allclose(fn(x, kept, pos, metric=metric, mask=mask),
                                  fn(dirty, kept, pos, metric=metric, mask=mask))
        a = coverage_information(x, kept, pos, metric=metric, mask=mask)
        b = coverage_information(dirty, kept, pos, metric=metric, mask=mask)
        assert all(torch.allclose(u, v) for u, v in zip(a, b))
