"""Vectorised helpers that turn a family's own description of its visual tokens into grids.

Every function works on a whole padded batch at once; visual tokens are numbered batch-major
(row 0's tokens first, in sequence order), which is the order transformers scatters features in.
"""
from __future__ import annotations

import torch


def scatter_rows(mask: torch.Tensor, values: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """Write per-visual-token rows (V, ...) into a (B, L, ...) tensor at ``mask`` (batch-major)."""
    out = values.new_full((*mask.shape, *values.shape[1:]), fill)
    out[mask] = values
    return out


def runs(mask: torch.Tensor):
    """Contiguous runs of True in every row of ``mask`` (B, L) bool.

    Returns:
        run: (B, L) long run id (batch-major, 0..R-1) at run positions, -1 elsewhere.
        local: (B, L) long index of the position inside its run, 0 elsewhere.
        lengths: (R,) long run lengths.
    """
    prev = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], 1)
    start = (mask & ~prev).flatten()
    flat = mask.flatten()
    run = torch.cumsum(start.long(), 0) - 1
    rank = torch.cumsum(flat.long(), 0) - 1
    run_start = torch.zeros(int(start.sum()), dtype=torch.long, device=mask.device)
    run_start[run[start]] = rank[start]
    local = torch.zeros_like(rank)
    local[flat] = rank[flat] - run_start[run[flat]]
    lengths = torch.bincount(run[flat], minlength=run_start.numel())
    run = torch.where(flat, run, torch.full_like(run, -1))
    return run.view(mask.shape), local.view(mask.shape), lengths


def tiled_runs(mask: torch.Tensor, side_rows: int, side_cols: int | None = None, *, what: str = "image"):
    """(tile, row, col) of visual tokens laid out as runs of whole ``side_rows x side_cols`` tiles.

    Every contiguous run of ``mask`` is one image (its tiles one after another, row-major inside a
    tile) — InternVL, Gemma3, PaliGemma, Sa2VA's InternVL models.
    Returns:
        grid (B, L, 3) long (zero outside ``mask``), groups (B, L) long run ids (-1 outside).
    Raises:
        ValueError if a run is not a whole number of tiles (both numbers in the message).
    """
    side_cols = side_rows if side_cols is None else side_cols
    per = side_rows * side_cols
    run, local, lengths = runs(mask)
    bad = lengths % per != 0
    if bool(bad.any()):
        raise ValueError(f"an {what}-token run of {int(lengths[bad][0])} tokens is not a whole number of "
                         f"{side_rows}x{side_cols} = {per}-token tiles; the prompt's placeholder count does "
                         f"not match the model's grid")
    rem = local % per
    grid = torch.stack([local // per, rem // side_cols, rem % side_cols], -1) * mask.unsqueeze(-1)
    return grid, run


def thw_layout(thw: torch.Tensor, merge: int):
    """Per-token (item, frame, row, col) of Qwen-VL style items listed as (t, h, w) patch grids.

    Args:
        thw: (n, 3) long grids in patches, h and w divisible by ``merge``.
    Returns:
        item, frame, row, col: (V,) long each, V = sum(t * h/merge * w/merge), in token order.
    """
    t, h, w = thw[:, 0].long(), thw[:, 1].long() // merge, thw[:, 2].long() // merge
    counts = t * h * w
    item = torch.repeat_interleave(torch.arange(thw.shape[0], device=thw.device), counts)
    local = torch.arange(item.numel(), device=thw.device) - (torch.cumsum(counts, 0) - counts)[item]
    hw = (h * w)[item]
    rem = local % hw
    return item, local // hw, rem // w[item], rem % w[item]


def grid_from_mrope(mask: torch.Tensor, pos: torch.Tensor, P: int, item_of_run: torch.Tensor | None = None):
    """(frame, row, col) of Qwen-VL visual tokens from their M-RoPE ids (used inside `generate`,
    which drops ``image_grid_thw``).

    Each run of visual tokens is one image / video frame set; its ids are (t0 + f * step, h0 + row,
    w0 + col). With ``item_of_run`` several runs form one item (Qwen3-VL puts a timestamp between
    the frames of a video): their frame index counts on across the runs.
    Args:
        mask: (B, L) bool visual tokens of one modality; pos: (3, B, L) M-RoPE ids.
        item_of_run: (R,) long item id of every run (batch-major), or None (one item per run).
    Returns:
        grid (B, L, P) long, groups (B, L) long (item ids, -1 elsewhere).
    """
    run, _, lengths = runs(mask)
    R = lengths.numel()
    item = torch.arange(R, device=mask.device) if item_of_run is None else item_of_run.to(mask.device)
    sel = run[mask]  # (V,)
    p = pos[:, mask].long()  # (3, V)
    big = torch.iinfo(torch.long).max
    lo = torch.full((3, R), big, dtype=torch.long, device=mask.device)
    lo = lo.scatter_reduce(1, sel.unsqueeze(0).expand(3, -1), p, reduce="amin")
    local = p - lo[:, sel]
    # frame = dense rank of the temporal id inside its run (Qwen2.5-VL spaces frames by an interval)
    key = sel * (int(local[0].max()) + 1) + local[0]
    _, inv = torch.unique(key, return_inverse=True)
    first = torch.full((R,), big, dtype=torch.long, device=mask.device)
    first = first.scatter_reduce(0, sel, inv, reduce="amin")
    frame_in_run = inv - first[sel]
    # runs of one item: frames count on from the frames of the item's earlier runs
    frames_per_run = torch.zeros(R, dtype=torch.long, device=mask.device).scatter_reduce(
        0, sel, frame_in_run + 1, reduce="amax")
    same = torch.cat([torch.zeros(1, dtype=torch.bool, device=mask.device), item[1:] == item[:-1]])
    csum = torch.cumsum(frames_per_run, 0) - frames_per_run  # frames before each run, all items
    item_start = torch.where(same, torch.zeros_like(csum), csum)  # csum never decreases, so
    item_start = torch.cummax(item_start, 0).values if R else item_start  # the latest item start
    offset = csum - item_start
    coords = torch.stack([frame_in_run + offset[sel], local[1], local[2]], -1)[:, 3 - P:]
    return scatter_rows(mask, coords), scatter_rows(mask, item[sel], -1)


def split_by_token_type(placeholders: torch.Tensor, token_types: torch.Tensor | None, types: dict,
                        *, key: str = "mm_token_type_ids") -> dict:
    """Modality masks of a family whose modalities share one placeholder id, told apart only by a
    per-token type (GLM-4.1V writes every video frame with the *image* placeholder; its processor's
    ``mm_token_type_ids`` is 1 at image and 2 at video tokens).

    Args:
        placeholders: (B, L) bool, every placeholder position (all modalities).
        token_types: (B, L) integer type of every token, or None.
        types: modality name -> type value, e.g. ``{"image": 1, "video": 2}``.
    Returns:
        name -> (B, L) bool mask (``placeholders & (token_types == value)``).
    Raises:
        ValueError if ``token_types`` is missing or not (B, L), or marks a placeholder with none
        of the ``types`` (both counts in the message).
    """
    if token_types is None:
        raise ValueError(f"the prompt holds placeholders shared by {sorted(types)} but no {key} was passed; pass "
                         f"the {key} returned by the processor ({', '.join(f'{v} = {k}' for k, v in types.items())})")
    if tuple(token_types.shape) != tuple(placeholders.shape):
        raise ValueError(f"{key} has shape {tuple(token_types.shape)} but the sequence {tuple(placeholders.shape)}")
    token_types = token_types.to(placeholders.device)
    out = {name: placeholders & (token_types == value) for name, value in types.items()}
    typed = sum(int(m.sum()) for m in out.values())
    if typed != int(placeholders.sum()):
        raise ValueError(f"{key} marks {typed} of the {int(placeholders.sum())} placeholder tokens as one of "
                         f"{types}; every placeholder needs its modality's type")
    return out
