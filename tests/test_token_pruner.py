"""evtp.TokenPruner: validated on construction, context manager / apply / remove, bad input."""
from __future__ import annotations

import pytest
import torch

import evtp
from evtp.integrations.transformers import is_applied
from evtp.testing import families as tiny
from evtp.testing.families import internvl as tiny_internvl
from evtp.testing.tiny import TEXT

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def llava():
    return tiny.build("llava")


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(method="nope"), ValueError, "unknown selection method"),
    (dict(keep=1.5), ValueError, "ratio"),
    (dict(keep="half"), TypeError, "keep must be"),
    (dict(keep=0), ValueError, "allow_no_visual"),
    (dict(bogus=1), TypeError, "unknown option"),
    (dict(position_mode="shifted"), ValueError, "position_mode"),
    (dict(score_layer=0), ValueError, "score_layer"),
    (dict(score_query="first"), ValueError, "score_query"),
    (dict(seed="0"), TypeError, "seed"),
    (dict(allow_no_visual=1), TypeError, "allow_no_visual"),
])
def test_validated_on_construction(kwargs, err, match):
    with pytest.raises(err, match=match):
        evtp.TokenPruner(**kwargs)


def test_dataclass_fields_and_repr():
    p = evtp.TokenPruner("kcenter", keep=4, position_mode="contiguous")
    assert (p.method, p.keep, p.position_mode, p.options) == ("kcenter", 4, "contiguous", {})
    assert p == evtp.TokenPruner("kcenter", keep=4, position_mode="contiguous")
    assert "kcenter" in repr(p)
    assert evtp.TokenPruner("evtp", keep=0.2, spatial_weight=2.0).options == {"spatial_weight": 2.0}


@torch.no_grad()
def test_context_manager_removes_hooks_on_error(llava):
    inp = tiny.make_inputs("llava", [[5, ("image", (16, 16)), 6]])
    with pytest.raises(RuntimeError, match="boom"):
        with evtp.TokenPruner(keep=0.5)(llava):
            assert is_applied(llava)
            llava(**inp)
            raise RuntimeError("boom")
    assert not is_applied(llava)
    assert not any(m._forward_pre_hooks for m in llava.modules())


@torch.no_grad()
def test_keep_zero_when_asked_for_drops_every_visual_token(llava):
    inp = tiny.make_inputs("llava", [[5, ("image", (16, 16)), 6, 7]])
    with evtp.TokenPruner(keep=0, allow_no_visual=True)(llava):
        out = llava(**inp)
        lp = evtp.TokenPruner.last_pruning(llava)
    assert lp.visual_kept.tolist() == [0] and lp.visual_total.tolist() == [16]
    assert out.logits.shape[1] == 3


def test_unsupported_model_names_families_and_the_generic_function():
    import transformers as tf

    lm = tf.LlamaForCausalLM(tf.LlamaConfig(**TEXT))
    with pytest.raises(TypeError, match="does not support LlamaForCausalLM") as e:
        evtp.TokenPruner().apply(lm)
    assert "prune_inputs_embeds" in str(e.value) and "Qwen2-VL" in str(e.value)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        evtp.TokenPruner().apply("llava")


def test_score_layer_beyond_the_model(llava):
    with pytest.raises(ValueError, match=r"score_layer=9 .* 2 decoder layers"):
        evtp.TokenPruner("attention", keep=4, score_layer=9).apply(llava)
    assert not is_applied(llava)


@torch.no_grad()
def test_placeholder_count_that_does_not_match_the_grid():
    qwen = tiny.build("qwen2_vl")
    inp = tiny.make_inputs("qwen2_vl", [[5, ("image", (16, 16)), 6]])
    inp["image_grid_thw"] = torch.tensor([[1, 4, 6]])  # describes 6 tokens, the prompt holds 4
    inp["pixel_values"] = torch.randn(24, 96)
    with evtp.TokenPruner(keep=0.5)(qwen):  # transformers' own check fires first: both numbers
        with pytest.raises(ValueError, match=r"tokens: 4, features: 6|6 image tokens .* 4 image placeholders"):
            qwen(**inp)
    internvl = tiny.build("internvl")
    inp = tiny.make_inputs("internvl", [[5, ("image", (16, 16)), 6]])  # 1 tile: 4 features
    I = tiny_internvl.IMAGE
    inp["input_ids"] = torch.tensor([[5, tiny_internvl.START] + [I] * 3 + [7] + [I] + [tiny_internvl.END, 6]])
    inp["attention_mask"] = torch.ones_like(inp["input_ids"])
    with evtp.TokenPruner(keep=0.5)(internvl):
        with pytest.raises(ValueError, match="run of 3 tokens .* 4-token tiles"):
            internvl(**inp)


@torch.no_grad()
def test_inputs_embeds_without_findable_placeholders_is_refused(llava):
    inp = tiny.make_inputs("llava", [[5, ("image", (16, 16)), 6]])
    embeds = llava.get_input_embeddings()(inp.pop("input_ids"))
    embeds = embeds + 1e-3  # the placeholder rows no longer equal the placeholder embedding
    with evtp.TokenPruner(keep=0.5)(llava):
        with pytest.raises(ValueError, match="inputs_embeds"):
            llava(inputs_embeds=embeds, **inp)


@torch.no_grad()
def test_subclass_is_found_through_the_class_hierarchy():
    """UniPixel's PixelQwen2_5_VLForConditionalGeneration subclasses HF Qwen2.5-VL."""
    import transformers as tf

    from evtp.testing.families.qwen import build_qwen2_5_vl

    class PixelQwen2_5_VLForConditionalGeneration(tf.Qwen2_5_VLForConditionalGeneration):
        pass

    model = build_qwen2_5_vl(cls=PixelQwen2_5_VLForConditionalGeneration)
    inp = tiny.make_inputs("qwen2_5_vl", [[5, ("image", (16, 16)), 6]])
    with evtp.TokenPruner(keep=2)(model):
        model(**inp)
        assert evtp.TokenPruner.last_pruning(model).visual_kept.tolist() == [2]


@torch.no_grad()
def test_aliases_are_the_pruner(llava):
    from evtp.integrations import transformers as hf

    inp = tiny.make_inputs("llava", [[5, ("image", (16, 16)), 6]])
    hf.apply(llava, keep=3)
    try:
        llava(**inp)
        assert hf.last_pruning(llava).visual_kept.tolist() == [3]
    finally:
        evtp.TokenPruner.remove(llava)
    assert not hf.is_applied(llava)


@torch.no_grad()
def test_wrapper_holding_the_hf_model_as_model_is_found():
    """Sa2VA-Qwen's Sa2VAChatModelQwen holds the HF Qwen model as ``self.model``: the pruner goes on
    the wrapper and prunes the wrapped model's calls (here, its generate with hidden states)."""
    from evtp.testing.families.qwen import build_qwen2_5_vl

    class Sa2VAChatModelQwenLike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = build_qwen2_5_vl()
            self.text_hidden_fcs = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(),
                                                       torch.nn.Linear(32, 16))

        def predict_forward(self, **inputs):
            out = self.model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0,
                                      output_hidden_states=True, return_dict_in_generate=True)
            last = torch.stack([h[-1][:, -1] for h in out.hidden_states[1:]], 1)  # generated steps
            return out, self.text_hidden_fcs(last)

    wrapper = Sa2VAChatModelQwenLike().eval()
    inp = tiny.make_inputs("qwen2_5_vl", [[5, ("image", (16, 24)), 6]])
    with evtp.TokenPruner(keep=0.5)(wrapper):
        out, prompt = wrapper.predict_forward(**inp)
        lp = evtp.TokenPruner.last_pruning(wrapper)
    assert lp.visual_kept.tolist() == [3] and lp.visual_total.tolist() == [6]
    assert out.hidden_states[0][-1].shape[1] == inp["input_ids"].shape[1] - 3  # the pruned prefill
    assert prompt.shape == (1, 2, 16) and bool(torch.isfinite(prompt).all())


@torch.no_grad()
def test_nested_blocks_restore_the_outer_pruner(llava):
    inp = tiny.make_inputs("llava", [[5, ("image", (16, 16)), 6, 7]])
    outer, inner = evtp.TokenPruner("kcenter", keep=4), evtp.TokenPruner("kcenter", keep=2)
    with outer(llava):
        with inner(llava):
            llava(**inp)
            assert evtp.TokenPruner.last_pruning(llava).visual_kept.tolist() == [2]
        assert is_applied(llava)  # leaving the inner block puts the outer pruner back
        llava(**inp)
        assert evtp.TokenPruner.last_pruning(llava).visual_kept.tolist() == [4]
    assert not is_applied(llava) and not any(m._forward_pre_hooks for m in llava.modules())


@torch.no_grad()
def test_logits_cover_the_pruned_sequence_and_map_back(llava):
    inp = tiny.make_inputs("llava", [[5, ("image", (16, 16)), 6, 7]])
    L = inp["input_ids"].shape[1]
    with evtp.TokenPruner("kcenter", keep=4)(llava):
        logits = llava(**inp).logits
        lp = evtp.TokenPruner.last_pruning(llava)
    assert logits.shape[1] == L - 16 + 4 == int(lp.keep_mask.sum())
    back = lp.to_input_positions(logits, fill=float("nan"))
    assert back.shape[:2] == (1, L) and torch.equal(back[lp.keep_mask], logits[0])
    assert back[~lp.keep_mask].isnan().all()


@torch.no_grad()
def test_keep_all_runs_no_selection_and_matches_the_unpruned_model(llava):
    inp = tiny.make_inputs("llava", [[5, ("image", (16, 16)), 6, 7]])
    full = llava(**inp).logits
    with evtp.TokenPruner("dpp", keep=1.0)(llava):
        out = llava(**inp).logits
        lp = evtp.TokenPruner.last_pruning(llava)
    assert lp.visual_kept.tolist() == [16] and torch.allclose(out, full, atol=1e-5)
