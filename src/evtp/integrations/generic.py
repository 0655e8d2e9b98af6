"""Prune visual tokens from an already-embedded multimodal sequence, from any model's code.

`prune_inputs_embeds` is the one function a model that is not transformers-native (LISA, Sa2VA
remote code, your own) calls between "visual features were written into ``inputs_embeds``" and
"the first decoder layer runs". It selects visual tokens with `evtp.select_tokens`, drops the
others, and repacks the batch so that embeddings, attention mask and position ids shrink together.

It is made of two pure, vectorised steps that `evtp.integrations.transformers` reuses:

* `select_visual` — which sequence positions survive, (B, L) bool;
* `pack` — gather the survivors of every row and re-pad the batch (per-row lengths differ).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from evtp.pruning import POSITION_MODES, check_position_mode, renumber_positions  # noqa: F401
from evtp.selection import select_tokens
from evtp.selection.helpers import group_table
from evtp.selection.validation import check_features, check_per_token, check_positions, check_scores

PADDING_SIDES = ("auto", "left", "right")


@dataclass
class PrunedInputs:
    """The result of `prune_inputs_embeds` / `pack`.

    Attributes:
        inputs_embeds: (B, L', D) the kept tokens of every row, re-padded.
        attention_mask: (B, L') 1 for real tokens, 0 for padding (dtype of the input mask, long
            when none was given).
        position_ids: the input's layout with the sequence axis shortened: (B, L') for 1-D RoPE,
            (R, B, L') for multi-row ids (Qwen2-VL M-RoPE: R = 3, or 4 with the text row first).
        kept_indices: (B, L') long, for every output slot the index of its token in the input
            sequence, -1 for padding slots. Use it to map anything per-token (labels, token types).
        keep_mask: (B, L) bool over the input sequence, True where a real token survived.
        visual_kept / visual_total: (B,) long visual tokens kept / present per row.
        next_position: (B,) long, the position id the first token appended after this sequence
            should get (max kept position + 1 for ``"contiguous"``; max input position + 1 for
            ``"original"``, over the RoPE rows: with R = 4, transformers' Qwen-VL layout, row 0
            holds text-only ids for mask building and is left out). Needed when decoding with a
            KV cache.
        selection_ms: wall time of the selection step (0 when nothing was selected).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    kept_indices: torch.Tensor
    keep_mask: torch.Tensor
    visual_kept: torch.Tensor
    visual_total: torch.Tensor
    next_position: torch.Tensor
    selection_ms: float = 0.0

    def to_input_positions(self, values: torch.Tensor, fill=0) -> torch.Tensor:
        """Scatter per-position outputs of the pruned sequence back onto the input sequence.

        Args:
            values: (B, L', ...) one entry per pruned position (e.g. the logits or hidden states
                the language model returned for ``inputs_embeds``).
            fill: value at input positions that were dropped (and at padding).
        Returns:
            (B, L, ...) with ``out[b, kept_indices[b, j]] = values[b, j]``.
        """
        B, Lp = self.kept_indices.shape
        if tuple(values.shape[:2]) != (B, Lp):
            raise ValueError(f"values has shape {tuple(values.shape)}; expected (B, L', ...) = ({B}, {Lp}, ...), "
                             f"one entry per position of the pruned sequence")
        L = self.keep_mask.shape[1]
        out = values.new_full((B, L + 1, *values.shape[2:]), fill)
        idx = torch.where(self.kept_indices >= 0, self.kept_indices, torch.full_like(self.kept_indices, L))
        out[torch.arange(B, device=idx.device).unsqueeze(1), idx.to(values.device)] = values
        return out[:, :L]


def select_visual(features: torch.Tensor, visual_mask: torch.Tensor, grid_positions: torch.Tensor | None,
                  *, method: str = "evtp", keep=0.2, groups: torch.Tensor | None = None,
                  scores: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  **options) -> torch.Tensor:
    """Which sequence positions survive: every non-visual position, and the selected visual ones.

    Each group (one image, one video, one tile set ...) is selected on its own, all groups in one
    batched `evtp.select_tokens` call (-1 padded rows, per-group counts).

    Args:
        features: (B, L, D) float, the sequence embeddings (visual positions hold projector outputs).
        visual_mask: (B, L) bool, True at visual-token positions.
        grid_positions: (B, L, P) integer grid coordinates of each visual token, P = 2 (row, col)
            or 3 (frame/tile, row, col); ignored at other positions. None for methods that use none.
        method, keep, generator, **options: as in `evtp.select_tokens`; ``keep`` applies per group.
        groups: (B, L) integer id of the image / video each visual token belongs to, per row: the
            same id in two rows names two groups (each row's tokens are selected on their own);
            None: one group per row.
        scores: (B, L) float importance per position for score-based methods.
    Returns:
        (B, L) bool keep mask.
    """
    B, L = visual_mask.shape
    keep_mask = ~visual_mask
    if not bool(visual_mask.any()):
        return keep_mask
    groups = row_groups(groups, visual_mask)
    table, valid = group_table(groups, visual_mask)
    src = table.clamp(min=0)
    x = features.reshape(B * L, -1)[src]  # (G, M, D)
    pos = None
    if grid_positions is not None:
        pos = grid_positions.reshape(B * L, grid_positions.shape[-1])[src]
    s = None
    if scores is not None:
        s = scores.reshape(B * L)[src].float()
        s = torch.where(valid, s, torch.zeros_like(s))
    idx = select_tokens(x, pos, keep=keep, method=method, scores=s, mask=valid, generator=generator,
                        **options)  # (G, K), -1 padded
    kept_flat = table.gather(1, idx.clamp(min=0))[idx >= 0]
    keep_mask = keep_mask.flatten().clone()
    keep_mask[kept_flat] = True
    return keep_mask.view(B, L)


def row_groups(groups: torch.Tensor | None, visual_mask: torch.Tensor) -> torch.Tensor:
    """Batch-wide group ids from per-row ids: (row, id) pairs numbered 0, 1, ... in row-major
    order at visual positions, -1 elsewhere.

    Args:
        groups: (B, L) integer ids (only visual positions count) or None (one group per row).
        visual_mask: (B, L) bool.
    Returns:
        (B, L) long.
    """
    B, L = visual_mask.shape
    row = torch.arange(B, device=visual_mask.device).unsqueeze(1).expand(B, L)
    if groups is None:
        return row
    if groups.dtype == torch.bool or groups.is_floating_point() or groups.is_complex():
        raise TypeError(f"groups must be integer image / video ids per visual token, got {groups.dtype}; "
                        f"pass e.g. groups.long()")
    out = torch.full((B, L), -1, dtype=torch.long, device=visual_mask.device)
    if bool(visual_mask.any()):
        pairs = torch.stack([row[visual_mask], groups.to(visual_mask.device)[visual_mask].long()], 1)
        _, dense = torch.unique(pairs, dim=0, return_inverse=True)
        out[visual_mask] = dense
    return out


def _normalise_positions(position_ids, B, L, device):
    """(R, B, L) long view of any position-id layout, and a function mapping back to it."""
    if position_ids is None:
        return torch.arange(L, device=device).expand(1, B, L), lambda p: p[0]
    if not isinstance(position_ids, torch.Tensor):
        raise TypeError(f"position_ids must be a torch.Tensor or None, got {type(position_ids).__name__}")
    if position_ids.dim() == 2:
        if position_ids.shape[-1] != L or position_ids.shape[0] not in (1, B):
            raise ValueError(f"position_ids has shape {tuple(position_ids.shape)}; expected (B, L) = ({B}, {L})")
        return position_ids.expand(B, L).unsqueeze(0), lambda p: p[0]
    if position_ids.dim() == 3:
        if position_ids.shape[-1] != L or position_ids.shape[1] not in (1, B):
            raise ValueError(f"position_ids has shape {tuple(position_ids.shape)}; expected (R, B, L) "
                             f"with B = {B}, L = {L}")
        R = position_ids.shape[0]
        return position_ids.expand(R, B, L), lambda p: p
    raise ValueError(f"position_ids has shape {tuple(position_ids.shape)}; expected (B, L) or (R, B, L)")


def pack(keep_mask: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
         position_ids: torch.Tensor | None, *, visual_mask: torch.Tensor | None = None,
         position_mode: str = "original", padding_side: str = "auto") -> PrunedInputs:
    """Gather the kept real tokens of every row and re-pad the batch.

    Args:
        keep_mask: (B, L) bool, True where a token survives (padding is dropped regardless).
        inputs_embeds: (B, L, D).
        attention_mask: (B, L) 0/1 (or bool) padding mask, None for no padding.
        position_ids: None (0..L-1), (B, L) / (1, L), or (R, B, L) (multi-axis RoPE).
        visual_mask: (B, L) bool, only used for the visual_kept / visual_total counts.
        position_mode: "original" — kept tokens keep their input position ids (gaps where tokens
            were removed); "contiguous" — every row is renumbered first_position + 0, 1, 2, ...
            (all R rows alike, i.e. as if every kept token were text).
        padding_side: "left", "right", or "auto" (left when every row ends with a real token,
            which is how `generate` pads; otherwise right).
    Returns:
        `PrunedInputs` (selection_ms left at 0).
    """
    check_position_mode(position_mode)
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side={padding_side!r}; expected one of {PADDING_SIDES}")
    B, L, D = inputs_embeds.shape
    device = inputs_embeds.device
    real = torch.ones(B, L, dtype=torch.bool, device=device) if attention_mask is None \
        else attention_mask.to(device).bool()
    keep = keep_mask.to(device) & real
    n = keep.sum(1)  # (B,)
    Lp = int(n.max()) if B else 0
    if padding_side == "auto":
        padding_side = "left" if bool(real[:, -1].all()) else "right"
    # kept indices of each row in order, padded with L (sorted so kept come first, in order)
    ar = torch.arange(L, device=device).expand(B, L)
    order = torch.where(keep, ar, ar + L).sort(dim=1).values[:, :Lp]  # (B, Lp) values < L are kept
    slot = torch.arange(Lp, device=device).expand(B, Lp)
    if padding_side == "left":
        shift = (Lp - n).unsqueeze(1)  # real tokens occupy slots [Lp - n, Lp)
        src_slot = slot - shift
        valid = src_slot >= 0
        idx = torch.where(valid, order.gather(1, src_slot.clamp(min=0)), torch.full_like(order, -1))
    else:
        valid = slot < n.unsqueeze(1)
        idx = torch.where(valid, order, torch.full_like(order, -1))
    gidx = idx.clamp(min=0)
    embeds = inputs_embeds.gather(1, gidx.unsqueeze(-1).expand(B, Lp, D))
    embeds = embeds * valid.unsqueeze(-1).to(embeds.dtype) if not bool(valid.all()) else embeds
    mask_dtype = attention_mask.dtype if attention_mask is not None else torch.long
    new_mask = valid.to(mask_dtype)

    pos3, back = _normalise_positions(position_ids, B, L, device)
    R = pos3.shape[0]
    gathered = pos3.gather(2, gidx.unsqueeze(0).expand(R, B, Lp))
    real3 = real.unsqueeze(0).expand(R, B, L)
    big = torch.iinfo(torch.long).max
    if position_mode == "original":
        rope = pos3[1:] if R == 4 else pos3  # R = 4: row 0 holds text-only ids (Qwen-VL layout)
        next_pos = rope.masked_fill(~real3[: rope.shape[0]], -big).amax(dim=(0, 2)) + 1  # (B,)
        start = None
    else:
        start = pos3.masked_fill(~real3, big).amin(dim=2).amin(dim=0)  # (B,) the first real token's id
        next_pos = start + n
    new_pos = renumber_positions(gathered, valid, position_mode, start=start)
    new_pos = torch.where(valid.unsqueeze(0), new_pos, torch.ones_like(new_pos))
    new_pos = back(new_pos.to(pos3.dtype).contiguous())

    vm = visual_mask.to(device) if visual_mask is not None else torch.zeros_like(real)
    return PrunedInputs(inputs_embeds=embeds, attention_mask=new_mask, position_ids=new_pos,
                        kept_indices=idx, keep_mask=keep, visual_kept=(vm & keep).sum(1),
                        visual_total=(vm & real).sum(1), next_position=next_pos)


def prune_inputs_embeds(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
                        position_ids: torch.Tensor | None, visual_mask: torch.Tensor,
                        grid_positions: torch.Tensor | None, *, method: str = "evtp", keep=0.2,
                        groups: torch.Tensor | None = None, scores: torch.Tensor | None = None,
                        position_mode: str = "original", padding_side: str = "auto",
                        generator: torch.Generator | None = None, **options) -> PrunedInputs:
    """Select visual tokens in an embedded sequence and drop the rest, consistently.

    Call it right after the visual features are written into ``inputs_embeds`` and before the
    language model's first decoder layer; then pass the returned embeddings, attention mask and
    position ids to the language model instead of the originals.

    Args:
        inputs_embeds: (B, L, D) float sequence embeddings, visual positions holding the projected
            visual features.
        attention_mask: (B, L) padding mask (1 = real) or None.
        position_ids: None, (B, L), or (R, B, L) for multi-axis RoPE.
        visual_mask: (B, L) bool, True at visual-token positions (e.g. ``input_ids == image_token_id``).
        grid_positions: (B, L, P) integer (row, col) or (frame/tile, row, col) of every visual token
            (other positions ignored); None if the method uses no positions.
        method, keep, generator, **options: as in `evtp.select_tokens`; ``keep`` applies to each
            group (one image / video); an int is a count per group.
        groups: (B, L) integer image / video id of each visual token, per row (the same id in two
            rows names two groups; float ids are refused); None = one group per row.
        scores: (B, L) float importance, for score-based methods (e.g. ``"attention"``).
        position_mode: "original" (kept tokens keep their ids, with gaps) or "contiguous".
        padding_side: "auto", "left" or "right", for the re-padded batch.
    Returns:
        `PrunedInputs`: pruned ``inputs_embeds`` (B, L', D), ``attention_mask`` (B, L'),
        ``position_ids`` and ``kept_indices`` (B, L') (index into the input sequence, -1 = padding).

    Example (LLaVA-style code, one image of 576 tokens per prompt)::

        vis = input_ids == image_token_id
        side = 24
        grid = torch.zeros(*input_ids.shape, 2, dtype=torch.long)
        rank = vis.long().cumsum(1) - 1
        grid[..., 0], grid[..., 1] = rank // side, rank % side
        out = prune_inputs_embeds(embeds, mask, None, vis, grid, keep=0.2)
        lm(inputs_embeds=out.inputs_embeds, attention_mask=out.attention_mask,
           position_ids=out.position_ids)
    """
    if not isinstance(inputs_embeds, torch.Tensor) or inputs_embeds.dim() != 3:
        raise ValueError("inputs_embeds must be a (B, L, D) tensor, got "
                         f"{getattr(inputs_embeds, 'shape', type(inputs_embeds).__name__)}")
    # the shared per-token checks of evtp.selection.validation, with the sequence as the tokens
    check_features(inputs_embeds, "inputs_embeds")
    B, L, _ = inputs_embeds.shape
    if isinstance(visual_mask, torch.Tensor) and visual_mask.dtype != torch.bool:
        raise TypeError(f"visual_mask must be a torch.bool tensor, got {visual_mask.dtype}")
    check_per_token(visual_mask, B, L, True, "visual_mask")
    if attention_mask is not None:
        check_per_token(attention_mask, B, L, True, "attention_mask")
    if grid_positions is not None:
        check_positions(grid_positions, B, L, True, name="grid_positions", mask=visual_mask)
    if groups is not None:
        check_per_token(groups, B, L, True, "groups")
        row_groups(groups, visual_mask)  # integer ids
    if scores is not None:
        check_scores(scores, B, L, True, visual_mask, name="scores")
    check_position_mode(position_mode)
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(visual_mask)
    vis = visual_mask & real
    t0 = time.perf_counter()
    keep_mask = select_visual(inputs_embeds.detach(), vis, grid_positions, method=method, keep=keep,
                              groups=groups, scores=scores, generator=generator, **options)
    sel_ms = (time.perf_counter() - t0) * 1e3
    out = pack(keep_mask, inputs_embeds, attention_mask, position_ids, visual_mask=vis,
               position_mode=position_mode, padding_side=padding_side)
    out.selection_ms = sel_ms
    return out
