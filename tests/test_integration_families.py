"""One parametrised suite over every family adapter, each on a tiny config derived from a released
checkpoint's config and fed by the family's processor (`evtp.testing.families`)."""
from __future__ import annotations

import pytest
import torch

import evtp
from evtp.integrations.registry import FAMILIES, find_family
from evtp.integrations.transformers import is_applied
from evtp.testing import tiny
from evtp.testing.families import tiny_cases

torch.set_num_threads(1)
CASES = tiny_cases()
# ids that are not prompt words: generating them (a placeholder, say) is its own test
NOT_WORDS = [i for i in range(tiny.VOCAB) if not tiny.FIRST_WORD <= i < tiny.FIRST_WORD + tiny.WORDS]


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    return CASES[request.param]


@pytest.fixture(scope="module")
def model(case):
    return case.build(seed=0)


def prompts(case):
    small, large = case.image_specs
    return [[5, 6, ("image", large), 7, 8, 9], [5, ("image", small), 9]]


def several(case):
    small, large = case.image_specs
    return [[5, ("image", small), 6, ("image", large), 7], [8, ("image", large), 9, 9, 9, 9, 9, 9]]


def expected_kept(case, prompt_batch, keep):
    """Visual tokens kept per row: every image / video keeps max(1, round(keep * n)) of its n."""
    out = []
    for p in prompt_batch:
        n = [case.selectable(it[1], it[0]) for it in p if not isinstance(it, int)]
        out.append(sum(max(1, int(k * keep + 0.5)) if isinstance(keep, float) else min(keep, k) for k in n))
    return out


def first_layer_lengths(model, **inputs):
    """Sequence length the first decoder layer sees."""
    core, fam = find_family(model)
    layer = fam.decoder_layers(fam.language_model(core))[0]
    seen = []

    def grab(mod, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        seen.append(h.shape[1])

    h = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        out = model(**inputs)
    finally:
        h.remove()
    return seen[0], out


def real(logits, mask):
    return logits[mask.bool()]


@torch.no_grad()
def test_keep_one_equals_unpatched(case, model):
    batch = several(case) if case.several_images else prompts(case)
    inp = case.inputs(batch)
    ref = model(**inp).logits
    with evtp.TokenPruner("evtp", keep=1.0)(model):
        out = model(**inp).logits
        lp = evtp.TokenPruner.last_pruning(model)
    assert torch.equal(lp.visual_kept, lp.visual_total)
    assert lp.visual_total.tolist() == expected_kept(case, batch, 1.0)
    torch.testing.assert_close(real(out, inp["attention_mask"]), real(ref, inp["attention_mask"]),
                               atol=1e-5, rtol=0)


@torch.no_grad()
def test_quarter_keep_shortens_the_first_layer(case, model):
    inp = case.inputs(prompts(case))
    full, _ = first_layer_lengths(model, **inp)
    with evtp.TokenPruner("evtp", keep=0.25)(model):
        got, _ = first_layer_lengths(model, **inp)
        lp = evtp.TokenPruner.last_pruning(model)
    want = expected_kept(case, prompts(case), 0.25)
    assert lp.visual_kept.tolist() == want
    n_real = inp["attention_mask"].sum(1)
    removed = lp.visual_total - lp.visual_kept
    assert got == int((n_real - removed).max()) < full


@torch.no_grad()
@pytest.mark.parametrize("mode", ["original", "contiguous"])
def test_generate_with_cache_equals_forward_on_pruned_inputs(case, model, mode):
    """Greedy generate (KV cache over the pruned prompt) gives the logits of one patched forward,
    without a cache, over the prompt plus the generated tokens (the same tokens are pruned)."""
    inp = case.inputs(prompts(case))
    n_new = 3
    with evtp.TokenPruner("evtp", keep=0.5, position_mode=mode)(model):
        gen = model.generate(**inp, max_new_tokens=n_new, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0, suppress_tokens=NOT_WORDS)
        kept = evtp.TokenPruner.last_pruning(model).kept_indices.clone()
        new = gen.sequences[:, inp["input_ids"].shape[1]:]
        full = dict(inp)
        full["input_ids"] = torch.cat([inp["input_ids"], new[:, :-1]], 1)
        ones = torch.ones(new.shape[0], n_new - 1, dtype=inp["attention_mask"].dtype)
        full["attention_mask"] = torch.cat([inp["attention_mask"], ones], 1)
        for key, value in (("mm_token_type_ids", 0), ("token_type_ids", case.generated_token_type)):
            if key in inp:
                full[key] = torch.cat([inp[key], torch.full_like(ones, value).to(inp[key].dtype)], 1)
        ref = model(**full, use_cache=False).logits[:, -n_new:]
        assert torch.equal(evtp.TokenPruner.last_pruning(model).kept_indices[:, :kept.shape[1]][kept >= 0],
                           kept[kept >= 0])
    torch.testing.assert_close(torch.stack(gen.logits, 1), ref, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_left_padded_batch_equals_each_alone(case, model):
    batch = prompts(case)
    with evtp.TokenPruner("evtp", keep=0.5)(model):
        inp = case.inputs(batch, padding_side="left")
        out = model(**inp).logits
        lp = evtp.TokenPruner.last_pruning(model)
        for b in range(len(batch)):
            o = model(**case.inputs([batch[b]])).logits  # an image has the same pixels alone
            la = evtp.TokenPruner.last_pruning(model)
            assert la.visual_kept.tolist() == [int(lp.visual_kept[b])]
            torch.testing.assert_close(out[b][lp.attention_mask[b].bool()], o[0][la.attention_mask[0].bool()],
                                       atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_remove_restores_exactly(case, model):
    inp = case.inputs(prompts(case))
    ref = model(**inp).logits
    n_hooks = [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]
    pruner = evtp.TokenPruner("evtp", keep=0.25)
    pruner.apply(model)
    assert is_applied(model)
    assert model(**inp).logits.shape[1] < ref.shape[1]
    pruner.remove(model)
    assert [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()] == n_hooks
    assert torch.equal(model(**inp).logits, ref)


@torch.no_grad()
def test_video(case, model):
    if case.video_spec is None:
        pytest.skip(f"{case.kind}: no video input")
    spec = case.video_spec
    if case.video_with_images:
        batch = [[5, ("video", spec), 6, ("image", case.image_specs[0])], [5, ("video", spec), 7]]
    else:  # the family cannot take images and videos in one call: videos alone, padded batch
        batch = [[5, ("video", spec), 6, 6, 6], [5, ("video", spec), 7]]
    inp = case.inputs(batch)
    ref = model(**inp).logits
    with evtp.TokenPruner("evtp", keep=1.0)(model):
        torch.testing.assert_close(real(model(**inp).logits, inp["attention_mask"]),
                                   real(ref, inp["attention_mask"]), atol=1e-5, rtol=0)
    with evtp.TokenPruner("evtp", keep=0.5)(model):
        model(**inp)
        lp = evtp.TokenPruner.last_pruning(model)
        assert lp.visual_kept.tolist() == expected_kept(case, batch, 0.5)
        # inside generate the grid comes from other inputs (M-RoPE ids, encoder outputs): same picks
        model.generate(**inp, max_new_tokens=1, do_sample=False, pad_token_id=0)
        assert torch.equal(evtp.TokenPruner.last_pruning(model).kept_indices, lp.kept_indices)


@torch.no_grad()
def test_inputs_embeds_are_pruned_like_input_ids(case, model):
    inp = case.inputs(prompts(case))
    with evtp.TokenPruner("evtp", keep=0.5)(model):
        a = model(**inp).logits
        kept = evtp.TokenPruner.last_pruning(model).kept_indices
        emb = dict(inp)
        emb["inputs_embeds"] = model.get_input_embeddings()(emb.pop("input_ids"))
        if not case.embeds_with_pixels:  # the tower's output instead (transformers' mm_encoder_outputs)
            emb["mm_encoder_outputs"] = {"image": model.get_image_features(pixel_values=emb.pop("pixel_values"),
                                                                           return_dict=True)}
        b = model(**emb).logits
        assert torch.equal(evtp.TokenPruner.last_pruning(model).kept_indices, kept)
    if case.rope_rows == 1:  # M-RoPE models cannot compute 3-D positions without input_ids at all
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_last_pruning_is_never_stale(case, model):
    with evtp.TokenPruner("evtp", keep=0.5)(model):
        model(**case.inputs(prompts(case)))
        assert evtp.TokenPruner.last_pruning(model) is not None
        text = case.inputs([[5, 6, 7, 8]])
        model(**text)
        assert evtp.TokenPruner.last_pruning(model) is None


class _Force:
    """A logits processor that makes greedy decoding emit ``token`` at generated step ``at``."""

    def __init__(self, token: int, at: int, prompt_len: int):
        self.token, self.at, self.prompt_len = token, at, prompt_len

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_len == self.at:
            scores = torch.full_like(scores, -1e9)
            scores[:, self.token] = 0.0
        return scores


@torch.no_grad()
def test_generated_placeholder_token_is_decoded_as_text(case, model):
    """A decode step may emit the image placeholder id (no pixels come with it): the model embeds
    it like any token, with or without pruning, and keep=1.0 matches the unpatched model."""
    from transformers import LogitsProcessorList

    core, fam = find_family(model)
    token = fam.placeholder_ids(core)["image"]
    inp = case.inputs(prompts(case))
    force = LogitsProcessorList([_Force(token, 0, inp["input_ids"].shape[1])])
    kwargs = dict(max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True,
                  pad_token_id=0, logits_processor=force)
    ref = model.generate(**inp, **kwargs)
    assert bool((ref.sequences[:, inp["input_ids"].shape[1]] == token).all())
    with evtp.TokenPruner("evtp", keep=1.0)(model):
        same = model.generate(**inp, **kwargs)
    torch.testing.assert_close(torch.stack(same.logits, 1)[:, 1:], torch.stack(ref.logits, 1)[:, 1:],
                               atol=1e-5, rtol=1e-5)
    with evtp.TokenPruner("evtp", keep=0.5)(model):
        pruned = model.generate(**inp, **kwargs)
    assert torch.isfinite(torch.stack(pruned.logits, 1)).all()


@torch.no_grad()
def test_continuing_a_pruned_cache_with_new_pixels_is_refused(case, model):
    inp = case.inputs(prompts(case))
    with evtp.TokenPruner("evtp", keep=0.5)(model):
        out = model(**inp, use_cache=True)
        with pytest.raises(ValueError, match="continues a pruned KV cache"):
            model(**inp, past_key_values=out.past_key_values)


def test_every_family_has_a_case_from_a_released_checkpoint():
    """Every registered adapter but Sa2VA-InternVL (remote code, tests/test_sa2va.py) has a tiny case
    naming the released checkpoint its config mirrors and how its inputs were made."""
    covered = set()
    for case in CASES.values():
        assert "/" in case.released and case.processor and case.keeps
        covered.add(type(find_family(case.build())[1]).__name__)
    expected = {type(f).__name__ for f in FAMILIES.values()} - {"Sa2VAInternVL"}
    assert covered == expected
