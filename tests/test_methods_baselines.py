"""Properties of the baseline selection methods: random, uniform, attention, dpp, tome, dart.

The contract every method shares (sorted, unique, never padded, batch = per sample, NaN padding,
autograd, empty batch, ...) is in test_method_contract.py, parametrised over `evtp.METHODS`."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import evtp
from fixtures.batches import padded_batch
from fixtures.grids import grid
from evtp.selection import resolve_keep
from evtp.selection.methods.dpp import dpp_kernel
from evtp.selection.methods.tome import tome_merge, tome_rounds
from evtp.selection.helpers import relevance, split_budget
from evtp.selection.methods.uniform import strided_member

SETTINGS = settings(max_examples=30, deadline=None)


def call(method, x, pos, keep, mask, scores, **kw):
    g = torch.Generator().manual_seed(0)
    return evtp.select_tokens(x, pos, keep, method, scores=scores, mask=mask, generator=g, **kw)


def test_random_generator_seeds_and_uniformity():
    x = torch.randn(5, 3)
    runs = [evtp.select_tokens(x, None, 2, "random", generator=torch.Generator().manual_seed(s)) for s in range(2000)]
    assert torch.equal(runs[0], evtp.select_tokens(x, None, 2, "random", generator=torch.Generator().manual_seed(0)))
    assert len({tuple(r.tolist()) for r in runs}) == 10  # all C(5, 2) subsets occur
    freq = torch.bincount(torch.cat(runs), minlength=5).float() / 2000
    assert torch.allclose(freq, torch.full((5,), 0.4), atol=0.05)  # each token kept with prob k / N


# ---------------------------------------------------------------- attention
@SETTINGS
@given(padded_batch())
def test_attention_is_topk_with_lower_index_ties(inp):
    x, pos, mask, scores, keep = inp
    scores = torch.round(scores * 2) / 2  # many ties
    idx = call("attention", x, None, keep, mask, scores)
    k = resolve_keep(keep, mask.sum(1))
    for b in range(x.shape[0]):
        cand = [i for i in range(x.shape[1]) if mask[b, i]]
        want = sorted(sorted(cand, key=lambda i: (-float(scores[b, i]), i))[: int(k[b])])
        assert idx[b][idx[b] >= 0].tolist() == want


def test_attention_needs_scores():
    with pytest.raises(ValueError, match="scores"):
        evtp.select_tokens(torch.randn(6, 3), None, 2, "attention")


# ---------------------------------------------------------------- uniform
def test_uniform_without_positions_is_centred_stride():
    assert evtp.select_tokens(torch.randn(10, 3), None, 3, "uniform").tolist() == [1, 5, 8]
    assert evtp.select_tokens(torch.randn(10, 3), None, 10, "uniform").tolist() == list(range(10))
    assert evtp.select_tokens(torch.randn(10, 3), None, 1, "uniform").tolist() == [5]


def test_uniform_lattice_on_image_grid():
    pos = grid(12, 12)
    idx = evtp.select_tokens(torch.randn(144, 4), pos, 16, "uniform")
    rows, cols = pos[idx].T
    assert sorted(set(rows.tolist())) == [1, 4, 7, 10] and sorted(set(cols.tolist())) == [1, 4, 7, 10]
    # non-square budget: 29 of 12x12 -> a 5 x 6 lattice minus one point, spread over rows and columns
    idx = evtp.select_tokens(torch.randn(144, 4), pos, 29, "uniform")
    rows, cols = pos[idx].T
    assert len(set(rows.tolist())) == 5 and len(set(cols.tolist())) == 6


def test_uniform_per_frame_shares():
    pos = grid(6, 8, frames=4)
    idx = evtp.select_tokens(torch.randn(192, 4), pos, 24, "uniform")
    per_frame = torch.bincount(pos[idx, 0], minlength=4)
    assert per_frame.tolist() == [6, 6, 6, 6]
    frames = [set(map(tuple, pos[idx][pos[idx, 0] == f][:, 1:].tolist())) for f in range(4)]
    assert all(f == frames[0] for f in frames)  # the same lattice in every frame
    assert len({r for r, _ in frames[0]}) == 2 and len({c for _, c in frames[0]}) == 3
    # an odd budget is split by cumulative rounding: 10 over 4 frames -> 3, 2, 3, 2
    idx = evtp.select_tokens(torch.randn(192, 4), pos, 10, "uniform")
    assert torch.bincount(pos[idx, 0], minlength=4).tolist() == [3, 2, 3, 2]


@SETTINGS
@given(st.lists(st.integers(0, 9), min_size=1, max_size=6), st.integers(0, 10**6))
def test_split_budget(counts, seed):
    c = torch.tensor([counts])
    total = int(c.sum())
    if total == 0:
        return
    k = torch.tensor([seed % (total + 1)])
    m = split_budget(k, c)
    assert int(m.sum()) == int(k) and bool((m <= c).all()) and bool((m >= 0).all())
    assert bool(((m - k * c / total).abs() <= 1).all())


@SETTINGS
@given(st.integers(1, 60), st.data())
def test_strided_member_matches_definition(total, data):
    m = data.draw(st.integers(0, total))
    want = {math.floor((2 * t + 1) * total / (2 * m)) for t in range(m)}
    q = torch.arange(total)
    got = strided_member(q, torch.tensor(total), torch.tensor(m))
    assert set(q[got].tolist()) == want


# ---------------------------------------------------------------- dpp
def _logdet(L, S):
    if not S:
        return 0.0
    sign, v = np.linalg.slogdet(L[np.ix_(S, S)])
    return v if sign > 0 else -np.inf


@SETTINGS
@given(st.integers(2, 9), st.integers(0, 10**6), st.booleans())
def test_dpp_greedy_maximises_logdet_gain(n, seed, with_scores):
    """Each greedy pick maximises log det(L_{S+i}) over the remaining tokens (brute force, float64)."""
    g = torch.Generator().manual_seed(seed)
    d = n + 2  # full-rank kernel: the greedy gains are all well defined
    x = torch.randn(n, d, generator=g)
    s = torch.rand(n, generator=g) + 0.1 if with_scores else None
    k = n - 1
    order = evtp.METHODS["dpp"].fn(x[None], None, torch.tensor([k]), mask=torch.ones(1, n, dtype=torch.bool),
                                   scores=None if s is None else s[None], generator=None,
                                   **evtp.METHODS["dpp"].options)[0].tolist()
    L = dpp_kernel(x[None].double(), torch.ones(1, n, dtype=torch.bool),
                   None if s is None else s[None].double())[0].double().numpy()
    chosen = []
    for j in order:
        gains = {i: _logdet(L, chosen + [i]) for i in range(n) if i not in chosen}
        best = max(gains.values())
        assert gains[j] >= best - 1e-4 * max(1.0, abs(best))
        chosen.append(j)
    assert len(set(order)) == k


def test_dpp_relevance_and_sign_quirk():
    mask = torch.tensor([[True, True, True, False]])
    r = relevance(torch.tensor([[1.0, 3.0, 2.0, 100.0]]), mask)
    assert torch.allclose(r, torch.tensor([[0.0, 1.0, 0.5, 0.0]]))
    assert torch.allclose(relevance(torch.tensor([[1.0, 3.0, 2.0, 0.0]]), mask, negate=True),
                          torch.tensor([[1.0, 0.0, 0.5, 0.0]]))
    assert torch.equal(relevance(torch.ones(1, 4), mask), mask.float())  # equal scores -> r = 1
    x, s = torch.randn(20, 24), torch.randn(20)
    a = evtp.select_tokens(x, None, 6, "dpp", scores=s, negate_scores=True)
    assert torch.equal(a, evtp.select_tokens(x, None, 6, "dpp", scores=-s))
    # relevance only enters through its min-max normalisation
    assert torch.equal(evtp.select_tokens(x, None, 6, "dpp", scores=s),
                       evtp.select_tokens(x, None, 6, "dpp", scores=3 * s + 7))


def test_dpp_rank_deficient_still_returns_k_distinct():
    x = torch.randn(3, 4).repeat(10, 1)  # 30 tokens, rank 3
    idx = evtp.select_tokens(x, None, 12, "dpp")
    assert len(idx) == 12 and len(set(idx.tolist())) == 12
    first3 = evtp.select_tokens(x, None, 3, "dpp")
    assert len({tuple(x[i].tolist()) for i in first3}) == 3  # the first picks are the 3 distinct tokens


def test_dpp_prefers_diverse_tokens():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    x = torch.stack([a, a * 1.01 + 0.01 * b, b])
    assert evtp.select_tokens(x, None, 2, "dpp").tolist() == [0, 2]


# ---------------------------------------------------------------- tome
@SETTINGS
@given(padded_batch(), st.booleans())
def test_tome_merge_conserves_size_and_weighted_mean(inp, with_sizes):
    x, pos, mask, scores, keep = inp
    sizes = (torch.rand(mask.shape, generator=torch.Generator().manual_seed(1)) * 3 + 0.5) if with_sizes else None
    merged, sz, kept = tome_merge(x, keep, mask=mask, sizes=sizes)
    s_in = (torch.ones_like(scores) if sizes is None else sizes) * mask
    assert torch.allclose(sz.sum(1), s_in.sum(1), rtol=1e-5)
    assert torch.allclose((merged * sz.unsqueeze(-1)).sum(1), (x * s_in.unsqueeze(-1)).sum(1), atol=1e-4)
    if sizes is None:  # the selection merges unit sizes; other sizes change later rounds' means
        assert torch.equal(kept, evtp.select_tokens(x, None, keep, "tome", mask=mask))
    assert bool((sz[kept >= 0] > 0).all()) and bool((sz[kept < 0] == 0).all())


def test_tome_merge_owner_map_and_noop():
    torch.manual_seed(0)
    x = torch.randn(2, 11, 5)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 8:] = False
    kept, merged, sz, owner = tome_rounds(x, torch.tensor([4, 3]), mask)
    for b in range(2):
        for c in range(int((kept[b] >= 0).sum())):
            group = owner[b] == c
            assert bool(group[kept[b, c]])  # the representative is in its own group
            assert torch.allclose(merged[b, c], x[b][group].mean(0), atol=1e-6)
            assert float(sz[b, c]) == float(group.sum())
    assert bool((owner[1, 8:] == -1).all())
    m, s, k = tome_merge(x[0], 11)  # keep everything: nothing merges
    assert torch.equal(k, torch.arange(11)) and torch.allclose(m, x[0]) and bool((s == 1).all())


def test_tome_one_round_merges_best_edges():
    # A = tokens 0, 2; B = tokens 1, 3. Token 2 is almost token 3; token 0 is far from both B tokens.
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.1, 1.0], [0.0, 0.0, 1.0]])
    merged, sz, kept = tome_merge(x, 3)
    assert kept.tolist() == [0, 1, 3] and sz.tolist() == [1.0, 1.0, 2.0]
    assert torch.allclose(merged[2], (x[2] + x[3]) / 2)
    merged, sz, kept = tome_merge(x, 3, sizes=torch.tensor([1.0, 1.0, 3.0, 1.0]))
    assert torch.allclose(merged[2], (3 * x[2] + x[3]) / 4) and sz.tolist() == [1.0, 1.0, 4.0]
    assert evtp.select_tokens(x, None, 1, "tome").numel() == 1


def test_tome_merge_bad_input():
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match="sizes"):
        tome_merge(x, 3, sizes=torch.zeros(6))
    with pytest.raises(ValueError, match="sizes"):
        tome_merge(x, 3, sizes=torch.ones(5))
    with pytest.raises(ValueError, match="mask"):
        tome_merge(x, 3, mask=torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        tome_merge(x, 3, mask=torch.ones(6))
    with pytest.raises(ValueError, match="keep"):
        tome_merge(x, 0)
    with pytest.raises(ValueError, match="keep"):
        tome_merge(x, 7)
    with pytest.raises(ValueError, match="NaN"):
        tome_merge(torch.full((6, 3), math.nan), 3)
    with pytest.raises(TypeError, match="features"):
        tome_merge(np.zeros((6, 3)), 3)
    with pytest.raises(ValueError, match="option r=0: must be an int >= 1 or None"):
        evtp.select_tokens(x, None, 2, "tome", r=0)


def test_tome_round_cap_r():
    x = torch.randn(40, 6)
    a = evtp.select_tokens(x, None, 10, "tome", r=3)
    assert len(a) == 10


# ---------------------------------------------------------------- dart
def test_dart_pivots_and_least_similar():
    torch.manual_seed(0)
    x = torch.randn(30, 8)
    s = torch.randn(30)
    top = torch.sort(s, descending=True, stable=True).indices
    # k <= pivots: just the top-k by score
    assert evtp.select_tokens(x, None, 5, "dart", scores=s, pivots=8).tolist() == sorted(top[:5].tolist())
    # one pivot: the pivot plus the k - 1 tokens least cosine-similar to it
    piv = int(top[0])
    xn = x / x.norm(dim=-1, keepdim=True)
    sim = xn @ xn[piv]
    sim[piv] = math.inf
    want = sorted([piv] + torch.sort(sim, stable=True).indices[:6].tolist())
    assert evtp.select_tokens(x, None, 7, "dart", scores=s, pivots=1).tolist() == want
    # without scores, pivots are the largest feature norms (L2 by default, L1 on request)
    for p in (1, 2):
        norm_top = int(x.norm(p=p, dim=-1).argmax())
        assert norm_top in evtp.select_tokens(x, None, 7, "dart", pivots=1, pivot_norm=p).tolist()


def test_dart_two_pivots_remove_picks_from_pool():
    torch.manual_seed(1)
    x = torch.randn(25, 6)
    s = torch.arange(25.0)  # pivots 24 then 23
    idx = evtp.select_tokens(x, None, 8, "dart", scores=s, pivots=2).tolist()
    xn = x / x.norm(dim=-1, keepdim=True)
    pool = [i for i in range(23)]
    first = sorted(pool, key=lambda i: (float(xn[i] @ xn[24]), i))[:3]
    pool = [i for i in pool if i not in first]
    second = sorted(pool, key=lambda i: (float(xn[i] @ xn[23]), i))[:3]
    assert idx == sorted([23, 24] + first + second)


def test_baseline_option_errors():
    x = torch.randn(10, 4)
    for kw in ({"pivots": 0}, {"pivots": 2.5}, {"pivot_norm": 3}):
        with pytest.raises(ValueError):
            evtp.select_tokens(x, None, 3, "dart", **kw)
    with pytest.raises(TypeError, match="negate_scores"):
        evtp.select_tokens(x, None, 3, "dpp", negate_scores="yes")
    with pytest.raises(ValueError, match="eps"):
        evtp.select_tokens(x, None, 3, "dpp", eps=-1.0)
    with pytest.raises(TypeError, match="unknown option"):
        evtp.select_tokens(x, None, 3, "uniform", stride=2)
    for method in evtp.METHODS:
        with pytest.raises(ValueError):
            evtp.select_tokens(x, None, 11, method, scores=torch.randn(10))


# ---------------------------------------------------------------- tome: content, not a lattice
@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10**6), st.integers(48, 128), st.integers(1, 6), st.floats(0.05, 0.5))
def test_tome_keeps_tokens_unlike_the_rest(seed, N, m, ratio):
    """On a near-uniform background with m distinct tokens, ToMe's merging keeps the distinct ones
    (nothing is similar enough to merge them) wherever they sit, when k >= 4m; the old uncapped
    rounds merged every A token and kept exactly the odd ranks twice over (indices = 3 mod 4)."""
    g = torch.Generator().manual_seed(seed)
    D = 32
    x = (torch.randn(1, D, generator=g) + 0.02 * torch.randn(N, D, generator=g)).contiguous()
    distinct = torch.randperm(N, generator=g)[:m]
    x[distinct] = torch.randn(m, D, generator=g)
    k = max(4 * m, int(ratio * N))
    kept = evtp.select_tokens(x, None, k, "tome")
    assert set(distinct.tolist()) <= set(kept.tolist())


def test_tome_kept_set_is_not_a_lattice_on_structured_input():
    """A 16 x 16 image of a few flat regions: at keep <= 0.25 the kept indices spread over every
    residue mod 4 and follow the regions (a region boundary keeps more than a flat interior)."""
    r, c = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    region = (r >= 8).long() * 2 + (c >= 8).long()  # four quadrants
    g = torch.Generator().manual_seed(0)
    colours = torch.randn(4, 32, generator=g)
    x = colours[region.flatten()] + 0.05 * torch.randn(256, 32, generator=g)
    x[region.flatten() == 3] += 0.5 * torch.randn(64, 32, generator=g)  # one textured quadrant
    for keep in (0.25, 0.2, 0.1):
        kept = evtp.select_tokens(x, None, keep, "tome")
        residues = torch.bincount(kept % 4, minlength=4)
        assert bool((residues > 0).all()), residues.tolist()
        per_region = torch.bincount(region.flatten()[kept], minlength=4)
        assert int(per_region[3]) > int(per_region[:3].max())  # the textured quadrant keeps most


def test_tome_round_merges_at_most_floor_half():
    """ToMe's bound: a round on odd n merges at most floor(n / 2), so one A token survives it.
    Three tokens, k = 1: round 1 (A = 0, 2; B = 1) merges only token 0 (the better match) into 1;
    round 2 (A = 1, B = 2) merges 1 into 2. Merging ceil(3 / 2) = 2 at once would keep token 1."""
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    kept, merged, sz, owner = tome_rounds(x[None], torch.tensor([1]), torch.ones(1, 3, dtype=torch.bool), r=10)
    assert kept[0].tolist() == [2] and sz[0].tolist() == [3.0] and owner[0].tolist() == [0, 0, 0]
    # one round with k = 3 of 5 tokens: exactly floor(5 / 2) = 2 merges
    x5 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.1], [0.0, 0.0, 1.0]])
    kept, _, sz, _ = tome_rounds(x5[None], torch.tensor([3]), torch.ones(1, 5, dtype=torch.bool), r=10)
    assert kept[0].tolist() == [1, 3, 4] and sz[0].tolist() == [2.0, 2.0, 1.0]


def test_tome_default_cap_is_a_quarter_per_round():
    """Without ``r`` a round merges at most floor(n / 4) (at least 1): from 40 tokens to 30 is one
    round, so every group holds at most the B token plus the A tokens that matched it, and the
    survivors include 30 - 20 = 10 A tokens (even indices); with r = 20 the same k takes one
    round of 10 merges too, but k = 20 with r = 20 merges every A token (the B set)."""
    x = torch.randn(1, 40, 6, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(1, 40, dtype=torch.bool)
    kept, _, sz, _ = tome_rounds(x, torch.tensor([30]), mask)
    assert int((kept >= 0).sum()) == 30 and int((kept[0] % 2 == 0).sum()) == 10
    kept, _, _, _ = tome_rounds(x, torch.tensor([20]), mask, r=20)
    assert kept[0].tolist() == list(range(1, 40, 2))
    kept, _, _, _ = tome_rounds(x, torch.tensor([20]), mask)  # the default: 40 -> 30 -> 23 -> 20
    assert int((kept[0] % 2 == 0).sum()) > 0


# ---------------------------------------------------------------- dart: text pivots
def _dart_reference(x, k, scores, text, text_scores, pivots, text_pivots):
    """DART's rule on one sample, written out with Python lists (float64)."""
    xn = x.double() / x.double().norm(dim=-1, keepdim=True)
    N = x.shape[0]
    imp = scores if scores is not None else x.norm(dim=-1)
    order = sorted(range(N), key=lambda i: (-float(imp[i]), i))
    p = min(pivots, k)
    img_piv = order[:p]
    vecs = [xn[i] for i in img_piv]
    if text is not None:
        tn = text.double() / text.double().norm(dim=-1, keepdim=True)
        timp = text_scores if text_scores is not None else text.norm(dim=-1)
        torder = sorted(range(text.shape[0]), key=lambda i: (-float(timp[i]), i))
        vecs += [tn[i] for i in torder[:min(text_pivots, text.shape[0])]]
    rest, P = k - p, len(vecs)
    pool = [i for i in range(N) if i not in img_piv]
    kept = list(img_piv)
    for i, v in enumerate(vecs):
        share = (i + 1) * rest // P - i * rest // P
        pick = sorted(pool, key=lambda j: (float(xn[j] @ v), j))[:share]
        kept += pick
        pool = [j for j in pool if j not in pick]
    return sorted(kept)


@SETTINGS
@given(st.integers(0, 10**6), st.integers(2, 40), st.integers(1, 6), st.integers(1, 6), st.integers(0, 5),
       st.booleans(), st.booleans(), st.floats(0.05, 1.0))
def test_dart_text_pivots_follow_the_rule(seed, N, T, pivots, text_pivots, with_scores, with_tscores, ratio):
    g = torch.Generator().manual_seed(seed)
    D = 6
    x, text = torch.randn(N, D, generator=g), torch.randn(T, D, generator=g)
    s = torch.randn(N, generator=g) if with_scores else None
    ts = torch.randn(T, generator=g) if with_tscores else None
    k = max(1, math.floor(ratio * N + 0.5))
    got = evtp.select_tokens(x, None, k, "dart", scores=s, pivots=pivots, text_features=text,
                             text_pivots=text_pivots, text_scores=ts)
    assert got.tolist() == _dart_reference(x, k, s, text, ts, pivots, text_pivots)


def test_dart_text_pivots_steer_the_picks_and_batch():
    """A text pivot pulls in the image tokens least like it; text tokens never appear in the result;
    (T, D) text is shared by a batch, (B, T, D) is per sample, and a padded text token is ignored."""
    torch.manual_seed(0)
    x = torch.randn(2, 30, 8)
    text = torch.randn(2, 3, 8)
    both = evtp.select_tokens(x, None, 10, "dart", text_features=text)
    for b in range(2):
        alone = evtp.select_tokens(x[b], None, 10, "dart", text_features=text[b])
        assert torch.equal(both[b], alone)
    shared = evtp.select_tokens(x, None, 10, "dart", text_features=text[0])
    assert torch.equal(shared[0], both[0])
    # defaults with text: 4 image pivots (DART's), text_pivots=0 gives the text-free rule with 4 pivots
    assert torch.equal(evtp.select_tokens(x, None, 10, "dart", text_features=text, text_pivots=0),
                       evtp.select_tokens(x, None, 10, "dart", pivots=4))
    # a padded text token changes nothing; NaN there is fine
    extra = torch.cat([text, torch.full((2, 1, 8), math.nan)], 1)
    tmask = torch.tensor([[True, True, True, False]] * 2)
    assert torch.equal(evtp.select_tokens(x, None, 10, "dart", text_features=extra, text_mask=tmask), both)
    assert not torch.equal(both, evtp.select_tokens(x, None, 10, "dart", pivots=4))


@pytest.mark.parametrize("kw, exc, words", [
    (dict(text_features=torch.randn(3, 5)), ValueError, "same space"),
    (dict(text_features=torch.randn(3, 3, 4)), ValueError, "batch size"),
    (dict(text_features=torch.ones(3, 4, dtype=torch.long)), TypeError, "floating"),
    (dict(text_features=[[0.0] * 4]), TypeError, "text_features"),
    (dict(text_features=torch.full((3, 4), math.nan)), ValueError, "NaN"),
    (dict(text_scores=torch.randn(3)), ValueError, "without text_features"),
    (dict(text_features=torch.randn(3, 4), text_scores=torch.randn(2)), ValueError, "text_scores"),
    (dict(text_features=torch.randn(3, 4), text_mask=torch.ones(3)), TypeError, "bool"),
    (dict(text_features=torch.randn(3, 4), text_pivots=-1), ValueError, "text_pivots"),
])
def test_dart_text_option_errors(kw, exc, words):
    with pytest.raises(exc) as info:
        evtp.select_tokens(torch.randn(2, 10, 4), None, 5, "dart", **kw)
    assert words.lower() in str(info.value).lower()
