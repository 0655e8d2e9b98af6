"""evtp.integrations.generic: prune_inputs_embeds / select_visual / pack from any model's code."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evtp.integrations.generic import pack, prune_inputs_embeds, select_visual


def _batch(B=2, L=12, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, D, generator=g)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 10), st.sampled_from(["left", "right"]),
       st.sampled_from(["original", "contiguous"]), st.integers(0, 2**16))
def test_pack_gathers_kept_tokens(B, L, side, mode, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, 3, generator=g)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    ar = torch.arange(L)
    real = (ar >= L - lengths[:, None]) if side == "left" else (ar < lengths[:, None])
    keep = torch.rand(B, L, generator=g) < 0.6
    keep[torch.arange(B), real.float().argmax(1)] = True  # every row keeps its first real token
    pos = torch.where(real, real.long().cumsum(1) - 1, torch.zeros(B, L, dtype=torch.long))
    out = pack(keep, x, real.long(), pos, position_mode=mode)
    n = (keep & real).sum(1)
    assert out.inputs_embeds.shape == (B, int(n.max()), 3)
    assert torch.equal(out.attention_mask.sum(1), n)
    valid = out.kept_indices >= 0
    assert torch.equal(valid, out.attention_mask.bool())
    for b in range(B):
        idx = out.kept_indices[b][valid[b]]
        assert torch.equal(idx, torch.nonzero(keep[b] & real[b]).flatten())
        assert torch.equal(out.inputs_embeds[b][valid[b]], x[b, idx])
        p = out.position_ids[b][valid[b]]
        if mode == "original":
            assert torch.equal(p, pos[b, idx])
        else:
            assert torch.equal(p, torch.arange(len(idx)))
        assert int(out.next_position[b]) == (int(lengths[b]) if mode == "original" else len(idx))
    if side == "left":  # generate's layout: every row ends with a real token
        assert bool(valid[:, -1].all())


def test_multi_row_positions_and_text_row():
    x = _batch(1, 6)
    pos = torch.tensor([[[0, 1, 2, 3, 4, 5]], [[0, 1, 1, 1, 5, 6]], [[0, 1, 1, 2, 5, 6]], [[0, 1, 2, 1, 5, 6]]])
    keep = torch.tensor([[True, True, False, True, True, True]])
    out = pack(keep, x, None, pos)
    assert out.position_ids.shape == (4, 1, 5)
    assert torch.equal(out.position_ids[:, 0], pos[:, 0, [0, 1, 3, 4, 5]])
    assert int(out.next_position[0]) == 7  # over the RoPE rows 1..3; row 0 is Qwen's text row


@pytest.mark.parametrize("keep", [1.0, 0.5, 3])
def test_prune_inputs_embeds_per_group_counts(keep):
    B, L = 2, 14
    x = _batch(B, L)
    vis = torch.zeros(B, L, dtype=torch.bool)
    vis[0, 2:8] = True  # one image of 6
    vis[1, 1:5] = True  # two images of 4 and 4
    vis[1, 6:10] = True
    groups = torch.full((B, L), -1)
    groups[0, 2:8] = 0
    groups[1, 1:5], groups[1, 6:10] = 1, 2
    grid = torch.zeros(B, L, 2, dtype=torch.long)
    for b, sl, side in ((0, slice(2, 8), 3), (1, slice(1, 5), 2), (1, slice(6, 10), 2)):
        r = torch.arange(sl.stop - sl.start)
        grid[b, sl, 0], grid[b, sl, 1] = r // side, r % side
    out = prune_inputs_embeds(x, None, None, vis, grid, method="evtp", keep=keep, groups=groups)
    per = {1.0: (6, 8), 0.5: (3, 4), 3: (3, 6)}[keep]
    assert out.visual_kept.tolist() == list(per)
    assert out.visual_total.tolist() == [6, 8]
    if keep == 1.0:
        assert torch.equal(out.inputs_embeds, x) and torch.equal(out.position_ids, torch.arange(L).expand(B, L))
    # the second row's images are selected separately: each keeps its share
    k1 = out.kept_indices[1]
    kept = set(k1[k1 >= 0].tolist())
    assert len(kept & set(range(1, 5))) == len(kept & set(range(6, 10)))


def test_select_visual_keeps_all_text_and_default_groups():
    x = _batch(2, 10)
    vis = torch.zeros(2, 10, dtype=torch.bool)
    vis[:, 3:9] = True
    km = select_visual(x, vis, None, method="kcenter", keep=2)
    assert bool(km[~vis].all()) and km[vis].view(2, -1).sum(1).tolist() == [2, 2]


def test_errors():
    x = _batch(1, 5)
    vis = torch.zeros(1, 5, dtype=torch.bool)
    vis[0, 1:4] = True
    with pytest.raises(TypeError, match="visual_mask"):
        prune_inputs_embeds(x, None, None, vis.long(), None, method="kcenter")
    with pytest.raises(ValueError, match="visual_mask"):
        prune_inputs_embeds(x, None, None, vis[:, :3], None, method="kcenter")
    with pytest.raises(ValueError, match="position_mode"):
        prune_inputs_embeds(x, None, None, vis, None, method="kcenter", position_mode="gap")
    with pytest.raises(ValueError, match="inputs_embeds"):
        prune_inputs_embeds(x[0], None, None, vis, None)
    with pytest.raises(ValueError, match="unknown selection method"):
        prune_inputs_embeds(x, None, None, vis, None, method="nope")
    with pytest.raises(ValueError, match="positions"):
        prune_inputs_embeds(x, None, None, vis, None, method="evtp")  # evtp needs the grid
    with pytest.raises(ValueError, match="position_ids"):
        pack(torch.ones(1, 5, dtype=torch.bool), x, None, torch.zeros(2, 2, 5, 1))
