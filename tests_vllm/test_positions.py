"""Properties of the pruned prompt's M-RoPE layout (evtp.integrations.vllm.positions), against an
independent implementation of the unpruned Qwen2.5-VL layout (vLLM's get_mrope_input_positions)."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from evtp.integrations.vllm.positions import (MAX_CHANNEL_VALUE, Run, decode_channels, encode_channels,
                                              prompt_positions, write_kept_positions)

runs_strategy = st.lists(
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.sampled_from([1.0, 0.5, 2.0, 1.5]),
              st.integers(1, 4)),  # frames, rows, cols, t_factor, text tokens before the run
    min_size=1, max_size=3)


def reference_layout(runs, trailing: int):
    """Unpruned positions, written the way vLLM 0.32's Qwen2.5-VL does (text, then grid + base)."""
    parts, st_idx = [], 0
    for frames, rows, cols, tf, text_before in runs:
        parts.append(np.broadcast_to(np.arange(text_before), (3, text_before)) + st_idx)
        base = int(parts[-1].max()) + 1
        grid = np.indices((frames, rows, cols)).reshape(3, -1)
        if tf != 1.0:
            grid[0] = (grid[0] * tf).astype(np.int64)
        parts.append(grid + base)
        st_idx = int(parts[-1].max()) + 1
    parts.append(np.broadcast_to(np.arange(trailing), (3, trailing)) + st_idx)
    pos = np.concatenate(parts, 1)
    return torch.from_numpy(pos.copy()), int(pos.max()) + 1


def build(runs, trailing, kept_sets):
    """The pruned prompt: placeholder mask, run list for prompt_positions, gathered rows, and
    where each kept token sits in the reference layout."""
    is_ph, run_specs, rel_rows, idx_rows, ref_index, cursor, ref_cursor = [], [], [], [], [], 0, 0
    for (frames, rows, cols, tf, text_before), kept in zip(runs, kept_sets):
        run = Run(frames, rows, cols, tf)
        is_ph += [False] * text_before
        ref_index += list(range(ref_cursor, ref_cursor + text_before))
        cursor += text_before
        ref_cursor += text_before
        run_specs.append((cursor, len(kept), run.extent))
        is_ph += [True] * len(kept)
        ref_index += [ref_cursor + i for i in kept]
        rel_rows.append(run.relative_positions(run.grid()[torch.tensor(kept, dtype=torch.long)]))
        idx_rows.append(torch.arange(len(kept)))
        cursor += len(kept)
        ref_cursor += run.num_tokens
    is_ph += [False] * trailing
    ref_index += list(range(ref_cursor, ref_cursor + trailing))
    return (torch.tensor(is_ph), run_specs, torch.cat(rel_rows), torch.cat(idx_rows), torch.tensor(ref_index))


@st.composite
def pruned_prompts(draw):
    runs = draw(runs_strategy)
    trailing = draw(st.integers(1, 3))
    kept_sets = []
    for frames, rows, cols, _, _ in runs:
        n = frames * rows * cols
        kept_sets.append(sorted(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n))))
    return runs, trailing, kept_sets


@settings(max_examples=150, deadline=None)
@given(pruned_prompts())
def test_kept_and_text_tokens_keep_their_unpruned_positions(case):
    runs, trailing, kept_sets = case
    ref, ref_next = reference_layout(runs, trailing)
    is_ph, specs, rel, idx, ref_index = build(runs, trailing, kept_sets)
    positions, delta = prompt_positions(len(is_ph), specs)
    assert torch.equal(positions[:, ~is_ph], ref[:, ref_index[~is_ph]])  # text: final already
    full = write_kept_positions(positions, is_ph, 0, rel, idx)
    assert torch.equal(full, ref[:, ref_index])
    assert delta == ref_next - len(is_ph)  # decode continues where the unpruned model does


@settings(max_examples=100, deadline=None)
@given(pruned_prompts(), st.lists(st.integers(1, 20), min_size=1, max_size=8))
def test_chunked_writes_equal_one_write(case, chunks):
    """vLLM gathers the placeholders of each prefill chunk separately (chunked prefill, or a
    prefix-cache hit that ends inside a run)."""
    runs, trailing, kept_sets = case
    is_ph, specs, rel, idx, _ = build(runs, trailing, kept_sets)
    positions, _ = prompt_positions(len(is_ph), specs)
    whole = write_kept_positions(positions, is_ph, 0, rel, idx)
    done, row, pos = 0, 0, positions
    for size in chunks * (len(is_ph) // sum(chunks) + 1):
        if done >= len(is_ph):
            break
        end = min(done + size, len(is_ph))
        n_rows = int(is_ph[done:end].sum())
        pos = write_kept_positions(pos, is_ph, done, rel[row:row + n_rows], idx[row:row + n_rows])
        row += n_rows
        done = end
    assert torch.equal(pos, whole)


def test_prompt_ending_in_a_run_decodes_past_its_full_grid():
    positions, delta = prompt_positions(5, [(2, 3, 7)])  # 2 text tokens, a run of 3 kept, extent 7
    assert positions[0].tolist() == [0, 1, 2, 2, 2]
    assert delta == (2 + 7) - 5


def test_contiguous_numbers_everything_like_text():
    positions, delta = prompt_positions(6, [(1, 3, 9)], mode="contiguous")
    assert positions.tolist() == [list(range(6))] * 3 and delta == 0


@given(st.lists(st.integers(0, MAX_CHANNEL_VALUE), min_size=4, max_size=40).filter(lambda v: len(v) % 4 == 0),
       st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_channels_are_exact_in_every_float_dtype(values, dtype):
    v = torch.tensor(values).view(-1, 4)
    rel, idx = decode_channels(encode_channels(v[:, :3], v[:, 3], dtype))
    assert torch.equal(rel, v[:, :3]) and torch.equal(idx, v[:, 3])


def test_channels_refuse_values_they_cannot_hold():
    import pytest

    with pytest.raises(ValueError, match="does not fit the position channels"):
        encode_channels(torch.tensor([[0, 0, MAX_CHANNEL_VALUE + 1]]), torch.tensor([0]), torch.float32)
