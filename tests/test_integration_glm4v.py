"""GLM-4.1V specifics the family suite does not reach: image and video tokens told apart by
``mm_token_type_ids`` only, one budget per video across its frame runs, original M-RoPE ids."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
import transformers as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import evtp
from evtp.integrations.families.glm4v import TOKEN_TYPES, Glm4v
from evtp.testing import families as tiny
from evtp.testing.families import glm
from evtp.testing.tiny import text_id
from evtp.integrations.grids import split_by_token_type

torch.set_num_threads(1)
VIDEO = ("video", (2, 4, 4))  # 2 frame runs of 4 tokens
IMAGE = ("image", (16, 24))  # 4 x 6 patches of 4 px: 6 tokens


@pytest.fixture(scope="module")
def model():
    return tiny.build("glm4v")


def lm_position_ids(model, inputs):
    """The position ids the language model receives (after evtp's hook)."""
    seen = {}

    def grab(module, args, kwargs):
        seen["pos"] = kwargs["position_ids"]

    h = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**inputs)
    finally:
        h.remove()
    return seen["pos"]


@torch.no_grad()
def test_one_budget_per_video_across_its_frames(model):
    """keep=1 (a count) keeps 1 token per video, not 1 per frame run — in forward and in generate,
    where the frames are regrouped from mm_encoder_outputs."""
    inp = tiny.make_inputs("glm4v", [[5, VIDEO, 6, 6], [5, VIDEO, 7]])
    with evtp.TokenPruner("evtp", keep=1)(model):
        model(**inp)
        forward = evtp.TokenPruner.last_pruning(model)
        assert forward.visual_total.tolist() == [8, 8] and forward.visual_kept.tolist() == [1, 1]
        model.generate(**inp, max_new_tokens=1, do_sample=False, pad_token_id=0)
        assert torch.equal(evtp.TokenPruner.last_pruning(model).kept_indices, forward.kept_indices)


@torch.no_grad()
def test_video_frames_use_the_image_placeholder_and_are_selected_as_video(model):
    inp = tiny.make_inputs("glm4v", [[5, VIDEO, 6]])
    assert not bool((inp["input_ids"] == model.config.video_token_id).any())
    fam = Glm4v()
    core = model.model
    masks = {"image": inp["input_ids"] == glm.IMAGE, "video": inp["input_ids"] == glm.VIDEO}
    stash = {"video_grid_thw": inp["video_grid_thw"], "mm_token_type_ids": inp["mm_token_type_ids"]}
    (mod,) = fam.grid(core, masks, stash, None)
    assert mod.name == "video" and int(mod.mask.sum()) == 8
    # (frame, row, col): frame 0 then frame 1, 2 x 2 each; one group for the whole video
    assert mod.grid[mod.mask].tolist() == [[f, r, c] for f in range(2) for r in range(2) for c in range(2)]
    assert mod.groups[mod.mask].unique().tolist() == [0]
    # without the token types, a call carrying only video_grid_thw is all video
    (alone,) = fam.grid(core, masks, {"video_grid_thw": inp["video_grid_thw"]}, None)
    assert alone.name == "video" and torch.equal(alone.mask, mod.mask)


@torch.no_grad()
def test_original_positions_are_get_rope_index_ids_of_the_kept_tokens(model):
    inp = tiny.make_inputs("glm4v", [[5, 6, IMAGE, 7, 8], [5, IMAGE, 9]])
    full, _ = model.model.get_rope_index(inp["input_ids"], inp["mm_token_type_ids"], inp["image_grid_thw"], None,
                                         attention_mask=inp["attention_mask"])
    with evtp.TokenPruner("evtp", keep=0.25)(model):
        pos = lm_position_ids(model, inp)
        lp = evtp.TokenPruner.last_pruning(model)
    kept = lp.kept_indices
    assert int((kept >= 0).sum()) < int(inp["attention_mask"].sum())
    pos = pos[-3:]  # 4 rows when transformers prepends the text row
    want = full.gather(2, kept.clamp(min=0).unsqueeze(0).expand(3, -1, -1))
    assert torch.equal(pos[:, kept >= 0], want[:, kept >= 0])


@torch.no_grad()
def test_placeholders_without_a_modality_type_are_refused(model):
    inp = tiny.make_inputs("glm4v", [[5, IMAGE, 6]])
    # explicit M-RoPE ids, so that transformers' own get_rope_index does not trip over the types first
    inp["position_ids"], _ = model.model.get_rope_index(inp["input_ids"], inp["mm_token_type_ids"],
                                                        inp["image_grid_thw"], None)
    types = inp["mm_token_type_ids"].clone()
    types[0, types[0].nonzero()[0]] = 0  # one image placeholder marked as text
    inp["mm_token_type_ids"] = types
    with evtp.TokenPruner("evtp", keep=0.5)(model), pytest.raises(ValueError, match="marks 5 of the 6 placeholder"):
        model(**inp)


def test_split_by_token_type_errors():
    ph = torch.tensor([[False, True, True, False]])
    with pytest.raises(ValueError, match="no mm_token_type_ids was passed"):
        split_by_token_type(ph, None, TOKEN_TYPES)
    with pytest.raises(ValueError, match=r"shape \(1, 3\) but the sequence \(1, 4\)"):
        split_by_token_type(ph, torch.zeros(1, 3, dtype=torch.long), TOKEN_TYPES)
    out = split_by_token_type(ph, torch.tensor([[0, 1, 2, 0]]), TOKEN_TYPES)
    assert out["image"].tolist() == [[False, True, False, False]]
    assert out["video"].tolist() == [[False, False, True, False]]


@torch.no_grad()
def test_attention_scores_come_from_the_full_prompt_with_m_rope():
    """method="attention" keeps, per video, the tokens the last real token attends to most in decoder
    layer 1 of the unpatched model on the full prompt (with its get_rope_index positions)."""
    model = tiny.build("glm4v", attn_implementation="eager")
    inp = tiny.make_inputs("glm4v", [[5, VIDEO, 6, 6], [5, VIDEO, 7]])
    scores = model(**inp, output_attentions=True).attentions[1].float().mean(1)[:, -1]  # (B, L)
    with evtp.TokenPruner("attention", keep=0.5, score_layer=2)(model):
        model(**inp)
        lp = evtp.TokenPruner.last_pruning(model)
    for b in range(2):
        cols = (inp["mm_token_type_ids"][b] == 2).nonzero()[:, 0]
        want = set(cols[scores[b, cols].topk(4).indices].tolist())
        assert set(cols[lp.keep_mask[b, cols]].tolist()) == want


@torch.no_grad()
def test_images_and_videos_in_one_call_fail_in_transformers_itself(model):
    """transformers 5.23 scatters image features into every image-id placeholder, video frames
    included, so a call with both fails with or without evtp (why the tiny case sets
    video_with_images=False)."""
    inp = tiny.make_inputs("glm4v", [[5, VIDEO, 6, IMAGE, 7]])
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        model(**inp)
    with evtp.TokenPruner("evtp", keep=0.5)(model), \
            pytest.raises(ValueError, match="Image features and image tokens do not match"):
        model(**inp)


def test_both_grids_without_token_types_are_refused(model):
    inp = tiny.make_inputs("glm4v", [[5, VIDEO, 6], [5, IMAGE, 6]])
    masks = {"image": inp["input_ids"] == glm.IMAGE, "video": inp["input_ids"] == glm.VIDEO}
    stash = {"image_grid_thw": torch.tensor([[1, 4, 6]]), "video_grid_thw": inp["video_grid_thw"]}
    with pytest.raises(ValueError, match="no mm_token_type_ids was passed"):
        Glm4v().grid(model.model, masks, stash, None)



@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_split_by_token_type_partitions_the_placeholders(types, rnd):
    """Typed placeholders split into disjoint masks whose union is every placeholder; a placeholder
    typed 0 (text) is refused with both counts."""
    token_types = torch.tensor([types])
    placeholders = torch.tensor([[t > 0 or rnd.random() < 0.3 for t in types]])
    untyped = int((placeholders & (token_types == 0)).sum())
    if untyped:
        with pytest.raises(ValueError, match=f"marks {int(placeholders.sum()) - untyped} of the "
                                             f"{int(placeholders.sum())} placeholder tokens"):
            split_by_token_type(placeholders, token_types, TOKEN_TYPES)
        return
    out = split_by_token_type(placeholders, token_types, TOKEN_TYPES)
    assert not bool((out["image"] & out["video"]).any())
    assert torch.equal(out["image"] | out["video"], placeholders)
    assert torch.equal(out["video"], placeholders & (token_types == 2))


def test_tiny_layout_and_token_types_are_the_processors():
    """Frames as Glm4vProcessor.replace_frame_token_id writes them, and mm_token_type_ids as its
    create_mm_token_type_ids computes them from the ids (image 1, inside <|begin_of_video|> 2)."""
    proc = SimpleNamespace(image_token="<|image|>", image_token_id=glm.IMAGE, video_start_id=glm.BOV,
                           video_end_id=glm.EOV)
    frame = tf.Glm4vProcessor.replace_frame_token_id(proc, 0, num_image_tokens=4)
    names = {"<|begin_of_image|>": glm.BOI, "<|image|>": glm.IMAGE, "<|end_of_image|>": glm.EOI}
    frame_ids = [names[t] for t in re.findall(r"<\|[a-z_]+\|>", frame)] + [text_id(glm.TIMESTAMP)]  # "0" seconds
    inp = tiny.make_inputs("glm4v", [[5, VIDEO, 6, 6, 6], [5, IMAGE, 7]])
    row = inp["input_ids"][0].tolist()
    assert row[1:2 + 2 * len(frame_ids)] == [glm.BOV] + frame_ids * 2
    real = inp["attention_mask"].bool()
    for b in range(2):
        ids = inp["input_ids"][b][real[b]].tolist()
        (types,) = tf.Glm4vProcessor.create_mm_token_type_ids(proc, [ids])
        assert inp["mm_token_type_ids"][b][real[b]].tolist() == types
