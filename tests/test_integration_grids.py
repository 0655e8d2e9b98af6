"""The grid helpers the family adapters are built from (evtp.integrations.grids, llava_next)."""
from __future__ import annotations

import pytest
import torch

from evtp.integrations.families.llava_next import anyres_grid
from evtp.integrations.grids import grid_from_mrope, runs, thw_layout, tiled_runs


def test_anyres_grid_reads_rows_and_columns_back_from_the_newlines():
    # text, base 2x2, then a 2 x 3 high-res grid with a newline after each row, text
    side = 2
    layout = ["t"] + ["b"] * 4 + ["h", "h", "h", "n", "h", "h", "h", "n"] + ["t"]
    mask = torch.tensor([[c != "t" for c in layout]])
    nl = torch.tensor([[c == "n" for c in layout]])
    sel, grid, groups = anyres_grid(mask, nl, side)
    assert sel[0].tolist() == [c in "bh" for c in layout]
    got = [tuple(grid[0, i].tolist()) for i, c in enumerate(layout) if c in "bh"]
    assert got == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1),
                   (1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 1, 0), (1, 1, 1), (1, 1, 2)]
    assert set(groups[0][sel[0]].tolist()) == {0}
    with pytest.raises(ValueError, match="shorter than the 2x2 = 4-token base image"):
        anyres_grid(torch.tensor([[True, True, False]]), torch.zeros(1, 3, dtype=torch.bool), side)


def test_tiled_runs_and_runs():
    mask = torch.tensor([[False, True, True, True, True, False, True, True, True, True, True, True, True, True]])
    grid, run = tiled_runs(mask, 2)
    assert run[0].tolist() == [-1, 0, 0, 0, 0, -1] + [1] * 8
    assert grid[0, 6:].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1],
                                    [1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]]
    _, local, lengths = runs(mask)
    assert lengths.tolist() == [4, 8] and local[0, 13] == 7


def test_mrope_grid_regroups_frames_split_by_text_into_one_video():
    """Qwen3-VL: each frame its own run (a timestamp between); with the item of every run the
    frame index counts on across runs and the group is the video, as from video_grid_thw."""
    h, w = 2, 3  # tokens per frame side after merging
    frames = 3
    seq, pos = [], [[], [], []]
    t = 0
    for f in range(frames):
        seq.append(False)
        pos[0].append(t); pos[1].append(t); pos[2].append(t)
        t += 1
        for r in range(h):
            for c in range(w):
                seq.append(True)
                pos[0].append(t); pos[1].append(t + r); pos[2].append(t + c)
        t += max(h, w)
    mask = torch.tensor([seq])
    pos = torch.tensor(pos).unsqueeze(1)  # (3, 1, L)
    grid, groups = grid_from_mrope(mask, pos, 3, item_of_run=torch.zeros(frames, dtype=torch.long))
    item, frame, row, col = thw_layout(torch.tensor([[frames, 2 * h, 2 * w]]), 2)
    assert torch.equal(grid[mask], torch.stack([frame, row, col], -1))
    assert set(groups[mask].tolist()) == {0}
    # without the items, every frame is its own group with frame index 0
    grid1, groups1 = grid_from_mrope(mask, pos, 3)
    assert set(grid1[mask][:, 0].tolist()) == {0} and len(set(groups1[mask].tolist())) == frames
