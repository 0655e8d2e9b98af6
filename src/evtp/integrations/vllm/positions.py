"""M-RoPE positions of a pruned Qwen-VL prompt, and the position channels that carry them.

Vocabulary. A *run* is one contiguous block of visual placeholder tokens in the prompt that one
selection call fills: an image, a Qwen2.5-VL video, or one frame of a Qwen3-VL video. Its full
(unpruned) grid is ``frames x rows x cols`` merged tokens; ``t_factor`` spaces the frames on the
temporal axis (Qwen2.5-VL: seconds per temporal patch x tokens per second; 1 otherwise).

In the unpruned model a run that starts at position ``base`` (one past the text before it) gives
grid cell (f, r, c) the position ``base + (floor(f * t_factor), r, c)`` and the text after it
continues at ``base + extent``, ``extent = max(floor((frames - 1) * t_factor), rows - 1,
cols - 1) + 1``. Pruning keeps both: the text positions depend on the grids only, so they are
final when the request is added (`prompt_positions`); only a kept token's own position depends on
the selection, and it travels with its embedding (`encode_channels`) through vLLM's encoder cache,
to be written in when that embedding is gathered (`write_kept_positions`). A prefix-cache hit
therefore needs nothing recorded elsewhere: the cached tokens' positions were used when their KV
was computed, and everything after them is fixed by the grids.

Channels are exact in every float dtype: each integer is stored as two base-256 digits, which
bf16 (8-bit mantissa) represents exactly, so values up to 65535 survive.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from evtp.pruning import check_position_mode, renumber_positions

NUM_CHANNELS = 8  # (t, h, w, index in run) x (high, low) base-256 digits
_BASE = 256
MAX_CHANNEL_VALUE = _BASE * _BASE - 1


@dataclass(frozen=True)
class Run:
    """The full grid of one run of placeholders (see the module docstring)."""

    frames: int
    rows: int
    cols: int
    t_factor: float = 1.0
    video: bool = False

    @property
    def num_tokens(self) -> int:
        return self.frames * self.rows * self.cols

    @property
    def extent(self) -> int:
        """How far the text after this run is shifted: max relative position + 1."""
        return max(int((self.frames - 1) * self.t_factor), self.rows - 1, self.cols - 1) + 1

    def grid(self, device=None) -> torch.Tensor:
        """(N, 3) long (frame, row, col) of every token in the vision tower's (raster) order."""
        n = torch.arange(self.num_tokens, device=device)
        hw = self.rows * self.cols
        return torch.stack([n // hw, (n % hw) // self.cols, n % self.cols], -1)

    def relative_positions(self, grid: torch.Tensor) -> torch.Tensor:
        """(N, 3) long M-RoPE offsets from the run's base for (frame, row, col) rows of ``grid``."""
        t = (grid[:, 0].double() * self.t_factor).long() if self.t_factor != 1.0 else grid[:, 0]
        return torch.stack([t, grid[:, 1], grid[:, 2]], -1)


def encode_channels(relative: torch.Tensor, index_in_run: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Pack kept tokens' positions into `NUM_CHANNELS` float columns (exact in bf16 / fp16 / fp32).

    Args:
        relative: (k, 3) long (t, h, w) offsets from the run's base.
        index_in_run: (k,) long index of each kept token inside its run's placeholders (0..k_run-1).
    Returns:
        (k, NUM_CHANNELS) tensor of ``dtype``.
    """
    values = torch.cat([relative, index_in_run.unsqueeze(-1)], -1).long()  # (k, 4)
    if values.numel() and (int(values.min()) < 0 or int(values.max()) > MAX_CHANNEL_VALUE):
        raise ValueError(f"a position or index of {int(values.max())} does not fit the position channels "
                         f"(0..{MAX_CHANNEL_VALUE}); the media item is too large")
    digits = torch.stack([values // _BASE, values % _BASE], -1).flatten(1)  # (k, 8)
    return digits.to(dtype)


def decode_channels(channels: torch.Tensor):
    """Inverse of `encode_channels`: (k, NUM_CHANNELS) -> relative (k, 3) long, index (k,) long."""
    digits = channels.float().round().long().view(-1, 4, 2)
    values = digits[..., 0] * _BASE + digits[..., 1]
    return values[:, :3], values[:, 3]


def prompt_positions(num_tokens: int, runs: list[tuple[int, int, int]], mode: str = "original"):
    """M-RoPE positions of a pruned prompt as far as the grids fix them, and the decode delta.

    Args:
        num_tokens: L, the pruned prompt's length.
        runs: (offset, kept, extent) per run in prompt order: index of its first placeholder, its
            number of placeholders, and `Run.extent` of its full grid.
        mode: "original" or "contiguous" (everything numbered 0..L-1 like text).
    Returns:
        positions: (3, L) long. Text tokens hold their final positions; a run's placeholders hold
            the run's base (its final values come with the embeddings, `write_kept_positions`).
        delta: int, position of the token after the prompt minus L (vLLM's mrope_position_delta).
    """
    check_position_mode(mode, "mode")
    if mode == "contiguous":
        every = torch.ones(1, num_tokens, dtype=torch.bool)
        ids = renumber_positions(torch.zeros(3, 1, num_tokens, dtype=torch.long), every, mode,
                                 start=torch.zeros(1, dtype=torch.long))
        return ids[:, 0].clone(), 0
    step = torch.ones(num_tokens, dtype=torch.long)  # position of token i minus that of token i-1
    if num_tokens:
        step[0] = 0
    is_media = torch.zeros(num_tokens, dtype=torch.bool)
    for offset, kept, extent in runs:
        is_media[offset:offset + kept] = True
        step[offset + 1:offset + kept] = 0  # every placeholder holds the run's base for now
        if offset + kept < num_tokens:
            step[offset + kept] = extent  # the text after the run starts at base + extent
    positions = torch.cumsum(step, 0).expand(3, num_tokens).clone()
    if num_tokens == 0:
        return positions, 0
    last = int(positions[0, -1]) + 1
    if bool(is_media[-1]):  # a prompt ending inside a run: the next position is past its full grid
        offset, kept, extent = runs[-1]
        last = int(positions[0, offset]) + extent
    return positions, last - num_tokens


def write_kept_positions(positions: torch.Tensor, is_placeholder: torch.Tensor, num_computed: int,
                         relative: torch.Tensor, index_in_run: torch.Tensor) -> torch.Tensor:
    """Write gathered kept tokens' positions into a request's M-RoPE positions (a copy).

    vLLM hands over the embeddings of the placeholders scheduled in this step, in prompt order,
    starting at the first placeholder at or after ``num_computed``. A run's base is one past the
    text token before its first placeholder (text positions are final), or 0 at the prompt's start.

    Args:
        positions: (3, L) long, the request's positions (`prompt_positions`, partly written).
        is_placeholder: (L,) bool, True at visual placeholder tokens.
        num_computed: prompt tokens already computed before this step.
        relative, index_in_run: (R,) rows decoded from the gathered embeddings (`decode_channels`).
    Returns:
        (3, L) long positions with the R placeholders filled in.
    """
    out = positions.clone()
    R = relative.shape[0]
    if R == 0:
        return out
    L = is_placeholder.shape[0]
    after = is_placeholder & (torch.arange(L, device=is_placeholder.device) >= num_computed)
    slots = after.nonzero().squeeze(-1)[:R]
    if slots.numel() != R:
        raise RuntimeError(f"{R} gathered visual embeddings but only {slots.numel()} placeholders from "
                           f"token {num_computed} on")
    slots = slots.to(out.device)
    run_start = slots - index_in_run.to(out.device)
    prev = (run_start - 1).clamp(min=0)
    if bool((run_start < 0).any()) or bool(is_placeholder.to(out.device)[prev][run_start > 0].any()):
        raise RuntimeError("a kept token's index does not match the placeholder runs of the prompt "
                           "(runs must be separated by text)")
    base = torch.where(run_start > 0, out[0, prev] + 1, torch.zeros_like(run_start))
    out[:, slots] = (base.unsqueeze(-1) + relative.to(out.device)).T
    return out


def check_runs_separated(token_ids: Sequence[int], placeholder_ids: Sequence[int]) -> None:
    """Raise unless every media placeholder of a prompt (before vLLM expands it: one token per
    image / video) is followed by text: the kept tokens' positions are anchored on the text token
    before each run, and a prompt must end with text for its decode position to be final.

    Args:
        token_ids: the prompt's token ids as the processor receives them.
        placeholder_ids: the image and video placeholder token ids.
    """
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    if ids.numel() == 0:
        return
    is_ph = torch.isin(ids, torch.as_tensor(list(placeholder_ids), dtype=torch.long))
    if bool(is_ph[-1]):
        raise ValueError("evtp: the prompt ends with a media placeholder; follow every image / video with "
                         "text (the chat template's <|vision_end|> does)")
    touch = is_ph[1:] & is_ph[:-1]
    if bool(touch.any()):
        at = int(touch.nonzero()[0, 0]) + 1
        raise ValueError(f"evtp: two media placeholders touch at token {at}; wrap every image / video in "
                         f"<|vision_start|> ... <|vision_end|>")
