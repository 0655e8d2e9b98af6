"""The function-style aliases (evtp.integrations.transformers.apply / remove / last_pruning) on the
four original families; every family is covered by tests/test_integration_families.py."""
from __future__ import annotations

import pytest
import torch

from evtp.integrations import transformers as H
from evtp.testing import families as tiny
from evtp.testing.families.qwen import IMAGE, VIDEO  # the same ids in the LLaVA and InternVL cases
from evtp.testing.tiny import TEXT

torch.set_num_threads(1)

# one image-size spec per kind: (small, large) so that padded batches differ in token counts
SPECS = {"llava": ((16, 16), (24, 20)), "internvl": ((16, 16), (16, 32)), "qwen2_vl": ((16, 16), (16, 24)),
         "qwen2_5_vl": ((16, 16), (16, 24))}


def prompts(kind):
    a, b = SPECS[kind]
    return [[5, 6, ("image", b), 7, 8, 9], [5, ("image", a), 9]]


@pytest.fixture(scope="module", params=("llava", "qwen2_vl", "qwen2_5_vl", "internvl"))
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def model(kind):
    return tiny.build(kind)


@pytest.fixture
def patched(model):
    yield model
    if H.is_applied(model):
        H.remove(model)


def _capture(lm):
    """Record the kwargs the language model receives (after evtp's hook, which runs first)."""
    seen = []
    h = lm.register_forward_pre_hook(lambda m, a, k: seen.append(dict(k)), with_kwargs=True)
    return seen, h


def _real_logits(logits, mask):
    return logits[mask.bool()]


@torch.no_grad()
def test_keep_one_equals_unpatched(kind, patched):
    inp = tiny.make_inputs(kind, prompts(kind))
    ref = patched(**inp).logits
    H.apply(patched, method="evtp", keep=1.0)
    out = patched(**inp).logits
    lp = H.last_pruning(patched)
    assert torch.equal(lp.visual_kept, lp.visual_total)
    assert out.shape == ref.shape
    torch.testing.assert_close(_real_logits(out, inp["attention_mask"]),
                               _real_logits(ref, inp["attention_mask"]), atol=1e-6, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("keep", [0.5, 0.25, 1])
def test_kept_counts_per_image(kind, patched, keep):
    inp = tiny.make_inputs(kind, prompts(kind))
    ids = inp["input_ids"]
    H.apply(patched, method="evtp", keep=keep)
    out = patched(**inp)
    lp = H.last_pruning(patched)
    n_vis = ((ids == IMAGE) | (ids == VIDEO)).sum(1)
    assert torch.equal(lp.visual_total, n_vis)
    if isinstance(keep, int):
        expect = torch.full_like(n_vis, keep)
    else:
        expect = torch.clamp(torch.floor(n_vis.double() * keep + 0.5).long(), min=1)
    assert torch.equal(lp.visual_kept, expect)
    real = inp["attention_mask"].sum(1)
    assert torch.equal(lp.attention_mask.sum(1), real - n_vis + expect)
    assert out.logits.shape[1] == int((real - n_vis + expect).max())
    # kept indices point at real tokens, in order, and every text token survives
    ki = lp.kept_indices
    for b in range(ids.shape[0]):
        row = ki[b][ki[b] >= 0]
        assert bool((row[1:] > row[:-1]).all())
        text = (inp["attention_mask"][b].bool() & ~((ids[b] == IMAGE) | (ids[b] == VIDEO)))
        assert set(torch.nonzero(text).flatten().tolist()) <= set(row.tolist())


@torch.no_grad()
@pytest.mark.parametrize("mode", ["original", "contiguous"])
def test_position_ids_of_kept_tokens(kind, patched, mode):
    inp = tiny.make_inputs(kind, prompts(kind))
    lm = patched.model.language_model
    seen, h = _capture(lm)
    try:
        patched(**inp)
    finally:
        h.remove()
    full = seen[-1]["position_ids"]
    H.apply(patched, method="evtp", keep=0.5, position_mode=mode)
    seen, h = _capture(lm)  # registered after evtp's hook, so it sees the pruned inputs
    try:
        patched(**inp)
    finally:
        h.remove()
    got = seen[-1]["position_ids"]
    lp = H.last_pruning(patched)
    B, L = inp["input_ids"].shape
    if full is None:  # LLaVA forward: positions 0..L-1
        full = torch.arange(L).expand(B, L)
    if full.dim() == 2:
        full, got = full.unsqueeze(0), got.unsqueeze(0)
    ki = lp.kept_indices
    valid = ki >= 0
    if mode == "original":
        want = full.expand(-1, B, L).gather(2, ki.clamp(min=0).unsqueeze(0).expand(full.shape[0], -1, -1))
        assert torch.equal(got[:, valid], want[:, valid])
        if kind.startswith("qwen"):  # the 3-D ids of kept image tokens are their full-grid ids
            vis = (inp["input_ids"] == IMAGE).gather(1, ki.clamp(min=0)) & valid
            assert got.shape[0] == 3 and not torch.equal(got[1][vis], got[2][vis])
    else:
        for b in range(B):
            row = got[:, b][:, valid[b]]
            start = row[:, :1]
            assert torch.equal(row, start + torch.arange(row.shape[1]))


def _lm_head_logits(model, hidden):
    return model.lm_head(hidden)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["original", "contiguous"])
def test_generate_with_cache_equals_forward_on_pruned_input(kind, patched, mode):
    inp = tiny.make_inputs(kind, prompts(kind))
    H.apply(patched, method="evtp", keep=0.5, position_mode=mode)
    gen = patched.generate(**inp, max_new_tokens=4, do_sample=False, output_logits=True,
                           return_dict_in_generate=True, pad_token_id=0)
    lp = H.last_pruning(patched)
    H.remove(patched)
    new = gen.sequences[:, inp["input_ids"].shape[1]:]  # (B, 4)
    lm = patched.model.language_model
    emb = patched.get_input_embeddings()(new[:, :-1])
    B, n = new.shape[0], new.shape[1] - 1
    embeds = torch.cat([lp.inputs_embeds, emb], 1)
    mask = torch.cat([lp.attention_mask, torch.ones(B, n, dtype=lp.attention_mask.dtype)], 1)
    tail = lp.next_position.unsqueeze(1) + torch.arange(n)
    pos = lp.position_ids
    if pos.dim() == 3:
        tail = tail.unsqueeze(0).expand(pos.shape[0], B, n)
    pos = torch.cat([pos, tail], -1)
    hidden = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    ref = _lm_head_logits(patched, hidden[:, lp.inputs_embeds.shape[1] - 1:])  # (B, 4, V)
    got = torch.stack(gen.logits, 1)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_grid_from_generate_matches_forward(kind, patched):
    """Inside generate Qwen's grid comes from its M-RoPE ids, in forward from image_grid_thw."""
    inp = tiny.make_inputs(kind, prompts(kind))
    H.apply(patched, method="evtp", keep=0.5)
    patched(**inp)
    fwd = H.last_pruning(patched).kept_indices.clone()
    patched.generate(**inp, max_new_tokens=1, do_sample=False, pad_token_id=0)
    assert torch.equal(H.last_pruning(patched).kept_indices, fwd)


@torch.no_grad()
def test_several_images_and_padding_sides(kind, patched):
    a, b = SPECS[kind]
    ps = [[5, ("image", a), 6, ("image", b), 7], [8, ("image", b), 9, 9, 9, 9, 9, 9]]
    for side in ("left", "right"):
        inp = tiny.make_inputs(kind, ps, padding_side=side)
        ref = patched(**inp).logits
        H.apply(patched, keep=1.0)
        out = patched(**inp).logits
        torch.testing.assert_close(_real_logits(out, inp["attention_mask"]),
                                   _real_logits(ref, inp["attention_mask"]), atol=1e-6, rtol=0)
        H.apply(patched, keep=2)  # an int is a count per image
        patched(**inp)
        lp = H.last_pruning(patched)
        assert lp.visual_kept.tolist() == [4, 2]
        H.remove(patched)


@torch.no_grad()
def test_remove_restores(kind, model):
    inp = tiny.make_inputs(kind, prompts(kind))
    ref = model(**inp).logits
    n_hooks = [len(m._forward_pre_hooks) for m in model.modules()]
    H.apply(model, keep=0.25)
    assert model(**inp).logits.shape[1] < ref.shape[1]
    H.remove(model)
    assert not H.is_applied(model)
    assert [len(m._forward_pre_hooks) for m in model.modules()] == n_hooks
    assert torch.equal(model(**inp).logits, ref)
    with pytest.raises(ValueError, match="not patched"):
        H.remove(model)


@torch.no_grad()
def test_qwen_video(patched, kind):
    if not kind.startswith("qwen"):
        pytest.skip("video tokens: Qwen-VL only")
    inp = tiny.make_inputs(kind, [[5, ("video", (2, 4, 4)), 6, ("image", (16, 16))], [5, ("video", (4, 4, 6)), 7]])
    ref = patched(**inp).logits
    H.apply(patched, keep=1.0)
    torch.testing.assert_close(_real_logits(patched(**inp).logits, inp["attention_mask"]),
                               _real_logits(ref, inp["attention_mask"]), atol=1e-6, rtol=0)
    H.apply(patched, keep=0.5)
    patched(**inp)
    lp = H.last_pruning(patched)
    assert lp.visual_total.tolist() == [8 + 4, 24]
    assert lp.visual_kept.tolist() == [4 + 2, 12]
    g = patched.generate(**inp, max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert g.shape[1] == inp["input_ids"].shape[1] + 2


@torch.no_grad()
def test_attention_method_uses_eager_scores_and_keeps_sdpa():
    model = tiny.build("llava", attn_implementation="sdpa")
    eager = tiny.build("llava", attn_implementation="eager")
    inp = tiny.make_inputs("llava", [[5, 6, ("image", (16, 16)), 7, 8]])
    H.apply(model, method="attention", keep=4, score_layer=2)
    try:
        model(**inp)
        kept = H.last_pruning(model).kept_indices[0]
        assert model.config.text_config._attn_implementation == "sdpa"
        g = model.generate(**inp, max_new_tokens=2, do_sample=False, pad_token_id=0)
        assert g.shape[1] == inp["input_ids"].shape[1] + 2
        assert torch.equal(H.last_pruning(model).kept_indices[0], kept)
    finally:
        H.remove(model)
    # reference: head-mean attention of decoder layer 1 from the last token, top-4 image tokens
    out = eager(**inp, output_attentions=True)
    w = out.attentions[1][0].mean(0)[-1]
    vis = torch.nonzero(inp["input_ids"][0] == IMAGE).flatten()
    top = vis[w[vis].topk(4).indices].sort().values
    assert set(top.tolist()) <= set(kept.tolist())


@torch.no_grad()
def test_evtp_saliency_weight_gets_the_eager_scores():
    """evtp with saliency_weight > 0 asks the adapter for the same scores as `attention`; with a
    huge alpha its picks are the top-scored tokens."""
    model = tiny.build("llava", attn_implementation="sdpa")
    inp = tiny.make_inputs("llava", [[5, 6, ("image", (16, 16)), 7, 8]])
    kept = {}
    for name, kw in (("attention", {}), ("evtp", {"saliency_weight": 200.0})):
        H.apply(model, method="attention" if name == "attention" else "evtp", keep=4, score_layer=2, **kw)
        try:
            model(**inp)
            kept[name] = set(H.last_pruning(model).kept_indices[0].tolist())
        finally:
            H.remove(model)
    assert len(kept["evtp"] & kept["attention"]) >= 3  # the first centre follows DivPrune's rule
    assert model.config.text_config._attn_implementation == "sdpa"


def test_errors(model):
    import transformers as tf

    with pytest.raises(ValueError, match="unknown selection method"):
        H.apply(model, method="nope")
    with pytest.raises(ValueError, match="ratio"):
        H.apply(model, keep=1.5)
    with pytest.raises(ValueError, match="at least 1"):
        H.apply(model, keep=0)
    with pytest.raises(TypeError, match="keep must be"):
        H.apply(model, keep="half")
    with pytest.raises(TypeError, match="unknown option"):
        H.apply(model, method="evtp", keep=0.5, bogus=1)
    with pytest.raises(ValueError, match="position_mode"):
        H.apply(model, position_mode="shifted")
    with pytest.raises(ValueError, match="score_layer"):
        H.apply(model, method="attention", score_layer=99)
    assert not H.is_applied(model)
    lm = tf.LlamaForCausalLM(tf.LlamaConfig(**TEXT))
    with pytest.raises(TypeError, match="does not support LlamaForCausalLM"):
        H.apply(lm)
    with pytest.raises(TypeError, match="model instance"):
        H.apply("llava")


@torch.no_grad()
def test_labels_refused(kind, patched):
    inp = tiny.make_inputs(kind, prompts(kind))
    H.apply(patched, keep=0.5)
    with pytest.raises(ValueError, match="labels"):
        patched(**inp, labels=inp["input_ids"])
