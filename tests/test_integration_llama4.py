"""Llama 4 specifics the family suite does not reach: tiles + global view in one budget per image,
separators always kept, the chunked-attention mask path under pruning, labels refused."""
from __future__ import annotations

import re

import pytest
import torch
import transformers as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import evtp
from evtp.integrations.families.llama4 import Llama4
from evtp.testing import families as tiny
from evtp.testing.families.llama4 import BOI, EOI, GLOBAL, IMAGE, TILE_X, TILE_Y

torch.set_num_threads(1)
SPECS = ("image", (2, 2)), ("image", (1, 1))  # 4 tiles + global = 20 tokens; global only = 4 tokens


@pytest.fixture(scope="module")
def model():
    return tiny.build("llama4")


def test_grid_is_tile_row_col_with_one_group_per_image(model):
    inp = tiny.make_inputs("llama4", [[5, SPECS[0], 6, SPECS[1], 7]])
    masks = {"image": inp["input_ids"] == IMAGE}
    embeds = model.get_input_embeddings()(inp["input_ids"])
    (mod,) = Llama4().grid(model, masks, {"input_ids": inp["input_ids"]}, embeds)
    got = mod.grid[mod.mask].tolist()
    want = [[t, r, c] for t in range(5) for r in range(2) for c in range(2)] + [[0, r, c] for r in range(2)
                                                                                 for c in range(2)]
    assert got == want
    assert mod.groups[mod.mask].tolist() == [0] * 20 + [1] * 4
    # inputs_embeds only: the <|image_start|> rows are found by their embedding, same groups
    (alone,) = Llama4().grid(model, masks, {}, embeds)
    assert torch.equal(alone.groups, mod.groups) and torch.equal(alone.grid, mod.grid)


@torch.no_grad()
def test_one_budget_per_image_and_separators_always_stay(model):
    batch = [[5, SPECS[0], 6, SPECS[1], 7], [8, SPECS[0], 9]]
    inp = tiny.make_inputs("llama4", batch)
    kept_text = (inp["input_ids"] != IMAGE) & inp["attention_mask"].bool()
    with evtp.TokenPruner("evtp", keep=1)(model):  # a count: 1 token per image, not 1 per tile
        model(**inp)
        lp = evtp.TokenPruner.last_pruning(model)
    assert lp.visual_total.tolist() == [24, 20] and lp.visual_kept.tolist() == [2, 1]
    assert bool(lp.keep_mask[kept_text].all())
    ids = inp["input_ids"].gather(1, lp.kept_indices.clamp(min=0))[lp.kept_indices >= 0]
    for special in (TILE_X, TILE_Y, GLOBAL, BOI, EOI):
        assert int((ids == special).sum()) == int((inp["input_ids"] == special).sum()) > 0


@torch.no_grad()
def test_chunked_attention_mask_is_built_for_the_pruned_prompt(model):
    """Layer 0 is a RoPE + chunked-attention layer (chunks of 16), layer 1 NoPE. Under pruning the
    decoder builds the chunked mask of the pruned prompt itself: layer 0 gets a (B, 1, L', L') mask
    that blocks causal pairs across a 16-token chunk, layer 1 a plain causal one."""
    text = model.config.text_config
    assert text.layer_types == ["chunked_attention", "full_attention"] and text.no_rope_layers == [1, 0]
    inp = tiny.make_inputs("llama4", [[5, SPECS[0], 6, SPECS[0], 7], [8, SPECS[1], 9]])
    masks = []
    hooks = [layer.register_forward_pre_hook(lambda mod, a, kw: masks.append(kw["attention_mask"]), with_kwargs=True)
             for layer in model.language_model.model.layers]
    try:
        with evtp.TokenPruner("evtp", keep=0.5)(model):
            model(**inp)
            lp = evtp.TokenPruner.last_pruning(model)
    finally:
        for h in hooks:
            h.remove()
    Lp = lp.inputs_embeds.shape[1]
    assert Lp > 16
    chunked, full = (m if m.dtype == torch.bool else m == 0 for m in masks)
    assert chunked.shape[-2:] == full.shape[-2:] == (Lp, Lp)
    row = 0  # the unpadded row: real tokens in slots 0..Lp-1
    assert bool(full[row, 0, Lp - 1, :].all())  # the last token sees every earlier one
    assert not bool(chunked[row, 0, Lp - 1, : (Lp - 1) // 16 * 16].any())  # but not across its chunk
    assert bool(chunked[row, 0, Lp - 1, (Lp - 1) // 16 * 16:].all())


@torch.no_grad()
def test_labels_are_refused_on_the_top_level_core(model):
    inp = tiny.make_inputs("llama4", [[5, SPECS[1], 6]])
    with evtp.TokenPruner("evtp", keep=0.5)(model), pytest.raises(ValueError, match="labels are not supported"):
        model(**inp, labels=inp["input_ids"])
    assert model(**inp, labels=inp["input_ids"]).loss is not None


def test_a_run_that_is_not_whole_tiles_is_refused(model):
    inp = tiny.make_inputs("llama4", [[5, SPECS[1], 6]])
    ids = inp["input_ids"].clone()
    ids[0, (ids[0] == IMAGE).nonzero()[0]] = 7  # a 3-token run
    masks = {"image": ids == IMAGE}
    with pytest.raises(ValueError, match="run of 3 tokens is not a whole number of 2x2 = 4-token tiles"):
        Llama4().grid(model, masks, {"input_ids": ids}, model.get_input_embeddings()(ids))


@torch.no_grad()
def test_attention_scores_come_from_the_full_prompt_with_chunked_and_nope_layers():
    """method="attention" keeps, per image, the tokens the last real token attends to most in decoder
    layer 1 (NoPE, after the chunked layer 0) of the unpatched model on the full prompt."""
    model = tiny.build("llama4", attn_implementation="eager")
    batch = [[5, SPECS[0], 6, SPECS[1], 7], [8, SPECS[0], 9]]
    inp = tiny.make_inputs("llama4", batch)
    attn = model(**inp, output_attentions=True).attentions[1].float().mean(1)  # (B, L, L)
    scores = attn[:, -1]  # left padding: the last slot is every row's last real token
    with evtp.TokenPruner("attention", keep=0.5, score_layer=2)(model):
        model(**inp)
        lp = evtp.TokenPruner.last_pruning(model)
    (mod,) = Llama4().grid(model, {"image": inp["input_ids"] == IMAGE}, {"input_ids": inp["input_ids"]},
                           model.get_input_embeddings()(inp["input_ids"]))
    for group in mod.groups[mod.mask].unique().tolist():
        where = (mod.groups == group).nonzero()
        b = int(where[0, 0])
        cols = where[:, 1]
        k = max(1, int(0.5 * cols.numel() + 0.5))
        want = set(cols[scores[b, cols].topk(k).indices].tolist())
        assert set(cols[lp.keep_mask[b, cols]].tolist()) == want


LAYOUT = st.lists(st.lists(st.one_of(st.integers(3, 9), st.tuples(st.integers(1, 3), st.integers(1, 3))),
                           min_size=1, max_size=4), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(LAYOUT)
def test_grid_of_any_tile_layout(model, layout):
    """For any batch of prompts mixing text and images of any tile grid: one group per image
    (batch-major, in order), tiles numbered 0.. in sequence order with the global view last, and
    (row, col) the row-major cell inside the 2 x 2 tile."""
    prompts = [[("image", it) if isinstance(it, tuple) else it for it in p] for p in layout]
    inp = tiny.make_inputs("llama4", prompts)
    ids = inp["input_ids"]
    m = ids == IMAGE
    mods = Llama4().grid(model, {"image": m}, {"input_ids": ids}, model.get_input_embeddings()(ids))
    if not bool(m.any()):
        assert mods == []
        return
    (mod,) = mods
    want_grid, want_group, image = [], [], 0
    for p in prompts:
        for it in p:
            if isinstance(it, int):
                continue
            rows, cols = it[1]
            tiles = rows * cols + 1 if rows * cols > 1 else 1
            want_grid += [[t, r, c] for t in range(tiles) for r in range(2) for c in range(2)]
            want_group += [image] * 4 * tiles
            image += 1
    assert mod.grid[m].tolist() == want_grid
    assert mod.groups[m].tolist() == want_group
    assert bool((mod.groups[~m] == -1).all()) and bool((mod.grid[~m] == 0).all())


@pytest.mark.parametrize("spec", [(1, 1), (2, 2), (1, 3)])
def test_tiny_layout_is_the_processors(spec):
    """The tiny inputs lay an image out exactly as Llama4Processor._prompt_split_image writes it."""
    text = tf.Llama4Processor._prompt_split_image(None, spec, 4)
    names = {"<|image_start|>": BOI, "<|patch|>": IMAGE, "<|tile_x_separator|>": TILE_X,
             "<|tile_y_separator|>": TILE_Y, "<|image|>": GLOBAL, "<|image_end|>": EOI}
    want = [names[t] for t in re.findall(r"<\|[a-z_]+\|>", text)]
    assert tiny.make_inputs("llama4", [[("image", spec)]])["input_ids"][0].tolist() == want
