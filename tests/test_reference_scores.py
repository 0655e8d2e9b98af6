"""Score sources of the reference model's score-based methods (`evtp.models.reference.scores`):
the FastV-style LM scores against an independent eager forward, the noisy control, option checks,
and what `evtp bench reference` records."""
import json

import numpy as np
import pytest
import torch

from evtp.data.synthetic import make_sample
from evtp.models.reference import ReferenceIVS, frames_to_tensor
from evtp.models.reference.model import ReferencePredictOptions
from evtp.models.reference.scores import lm_attention_scores, noisy_scores
from evtp.selection.options import OptionError
from evtp.testing.reference import tiny_reference


def tiny(**kw) -> ReferenceIVS:
    """A tiny random model (the shipped code path) with a 3-layer LM."""
    return tiny_reference(**{"lm_layers": 3, **kw})


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def batch(model):
    """Two test images whose instructions differ in length (the shorter row is left-padded):
    (frames (2, 1, 3, S, S), text ids, visual tokens (2, 256, Dl))."""
    samples = [make_sample("test", i, "image") for i in range(6)]
    texts = [model.tok.encode(s.instruction) for s in samples]
    a = 0
    b = next(i for i, t in enumerate(texts) if len(t) != len(texts[a]))
    frames = torch.cat([frames_to_tensor(samples[i].frames, model.cfg.image_size) for i in (a, b)])
    with torch.no_grad():
        visual = model.visual_tokens(model.encode_frames(frames)[0])
    return frames, [texts[a], texts[b]], visual


def independent_scores(model, visual, text_ids, layer: int, query: int) -> torch.Tensor:
    """The same scores from a full-depth eager forward of the LM with ``output_attentions``, the
    prefix-LM mask written out here: every real token attends to every real token, padding to
    itself."""
    inputs = model.build_inputs(visual, None, text_ids, append_seg=False)
    real = inputs.attention_mask.bool()
    L = real.shape[1]
    allowed = (real[:, None, :] & real[:, :, None]) | torch.eye(L, dtype=torch.bool)[None]
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
    impl = model.lm.config._attn_implementation
    model.lm.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = model.lm(inputs_embeds=inputs.embeds, position_ids=inputs.position_ids,
                           attention_mask=additive, output_attentions=True)
    finally:
        model.lm.config._attn_implementation = impl
    assert len(out.attentions) == model.cfg.lm_layers
    vs, n = inputs.visual_start, visual.shape[1]
    assert bool(real[:, query].all()) and (~real[:, :vs]).any()  # a real query; a padded row
    return out.attentions[layer - 1][:, :, query, vs:vs + n].mean(1)


def test_lm_scores_equal_an_independent_eager_forward_with_padding(model, batch):
    frames, texts, visual = batch
    vs = model.build_inputs(visual, None, texts, append_seg=False).visual_start
    for layer in (1, 2):
        scores = lm_attention_scores(model, visual, texts, layer)
        assert scores.shape == (2, 256) and scores.dtype == torch.float32
        expected = independent_scores(model, visual, texts, layer, query=vs - 1)
        torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-7)
        # a share of the last word's attention: positive, at most 1 per row, ranked as the weights
        assert (scores > 0).all() and (scores.sum(1) <= 1 + 1e-5).all()
        assert torch.equal(scores.argsort(dim=1, stable=True), expected.argsort(dim=1, stable=True)), (scores - expected).abs().max()
    assert len(model.lm.layers) == 3 and model.lm.config._attn_implementation == "sdpa"  # untouched
    # the padded row's scores are its own: the same alone in a batch of one
    padded = int((model.build_inputs(visual, None, texts, append_seg=False).attention_mask == 0).any(1).nonzero()[0])
    alone = lm_attention_scores(model, visual[padded:padded + 1], texts[padded:padded + 1], 2)
    torch.testing.assert_close(alone[0], lm_attention_scores(model, visual, texts, 2)[padded], rtol=1e-4, atol=1e-7)


def test_lm_scores_cover_every_visual_token_of_a_video(model):
    s = make_sample("test", 0, "video")
    pred = model.predict(s, method="attention", keep=0.1, score_source="lm", score_layer=3)
    assert pred.tokens_total == 5 * 256 and pred.tokens_kept == 128 and pred.timings_ms["score_pass"] > 0
    scores = lm_attention_scores(model, pred.extra["visual"][None], [model.tok.encode(s.instruction)], 3)
    assert scores.shape == (1, 5 * 256) and torch.equal(torch.from_numpy(pred.extra["kept"]),
                                                       scores[0].topk(128).indices.sort().values)


def test_run_with_lm_scores_keeps_the_top_scored_tokens_and_times_the_pass(model, batch):
    frames, texts, visual = batch
    tm: dict = {}
    out = model.run(frames, texts, method="attention", keep=0.1, score_source="lm", score_layer=2, timings=tm)
    top = lm_attention_scores(model, visual, texts, 2).topk(26, dim=1).indices.sort(1).values
    assert torch.equal(out["kept"], top)
    assert 0 < tm["score_pass"] <= tm["selection"]
    tm_vit: dict = {}
    model.run(frames, texts, method="attention", keep=0.1, timings=tm_vit)
    assert "score_pass" not in tm_vit
    tm_free: dict = {}  # a method without scores runs no pass
    model.run(frames, texts, method="kcenter", keep=0.1, score_source="lm", timings=tm_free)
    assert "score_pass" not in tm_free


def test_noisy_scores_are_seeded_and_sigma_zero_is_the_vit_source(model, batch):
    frames, texts, _ = batch
    vit = model.run(frames, texts, method="attention", keep=0.1)["kept"]
    zero = model.run(frames, texts, method="attention", keep=0.1, score_source="noisy", score_noise=0.0, score_seed=3)
    assert torch.equal(zero["kept"], vit)
    a = model.run(frames, texts, method="attention", keep=0.1, score_source="noisy", score_noise=2.0, score_seed=3)
    b = model.run(frames, texts, method="attention", keep=0.1, score_source="noisy", score_noise=2.0, score_seed=3)
    c = model.run(frames, texts, method="attention", keep=0.1, score_source="noisy", score_noise=2.0, score_seed=4)
    assert torch.equal(a["kept"], b["kept"]) and not torch.equal(a["kept"], c["kept"])
    assert not torch.equal(a["kept"], vit)
    s = torch.rand(2, 4000) * torch.tensor([[1.0], [10.0]])
    assert torch.equal(noisy_scores(s, 0.0, 1), s)
    noise = noisy_scores(s, 0.5, 1) - s  # sigma * std(row) * N(0, 1), per row
    torch.testing.assert_close(noise.std(1) / s.std(1), torch.full((2,), 0.5), rtol=0.05, atol=0)


def test_predict_seeds_the_noise_per_sample(model):
    s = make_sample("test", 1, "image")
    kw = dict(method="attention", keep=0.1, score_source="noisy", score_noise=3.0)
    first = model.predict(s, generator=torch.Generator().manual_seed(7), **kw)
    again = model.predict(s, generator=torch.Generator().manual_seed(7), **kw)
    assert np.array_equal(first.extra["kept"], again.extra["kept"]) and first.extra["score_source"] == "noisy"
    assert np.array_equal(model.predict(s, **kw).extra["kept"], model.predict(s, **kw).extra["kept"])


def test_unknown_score_options_are_refused_before_any_work(model, monkeypatch):
    with pytest.raises(OptionError, match="score_source='fastv': must be one of 'vit', 'lm', 'noisy'"):
        ReferencePredictOptions(score_source="fastv")
    with pytest.raises(OptionError, match="score_noise=-1"):
        ReferencePredictOptions(score_source="noisy", score_noise=-1)
    with pytest.raises(ValueError, match="score_layer=3 is read by score_source='lm' only"):
        ReferencePredictOptions(score_layer=3)

    def no_work(*args, **kwargs):
        raise AssertionError("the ViT ran")

    monkeypatch.setattr(model, "encode_frames", no_work)
    s = make_sample("test", 0, "image")
    with pytest.raises(OptionError, match="one of 'vit', 'lm', 'noisy'"):
        model.predict(s, method="attention", score_source="fastv")
    with pytest.raises(ValueError, match="this LM has 3 layers; choose 1 .. 3"):
        model.predict(s, method="attention", score_source="lm", score_layer=4)
    from evtp.eval.run import SettingsError, check_predict_options
    from evtp.models.reference import load_pretrained

    with pytest.raises(SettingsError, match="score_source='fastv'"):
        check_predict_options(load_pretrained, "attention", {"score_source": "fastv"})


def test_bench_records_the_score_source_and_the_lm_pass_time(tmp_path):
    from evtp.cli.bench_reference import main

    base = ["--samples", "1", "--methods", "attention,kcenter", "--keep", "0.2", "--weights", "random-tiny",
            "--repeats", "1", "--timed-samples", "1", "--overlays", "0", "--no-plots", "--threads", "1"]
    out = tmp_path / "lm.json"
    assert main(base + ["--out", str(out), "--score-source", "lm", "--score-layer", "1"]) == 0
    res = json.loads(out.read_text())
    att = res["attention"]["0.2"]
    assert att["score_source"] == "lm" and 0 < att["score_pass_ms"] <= att["timings_ms"]["selection"]
    assert res["kcenter"]["0.2"]["score_source"] == "lm" and "score_pass_ms" not in res["kcenter"]["0.2"]
    lines = [json.loads(x) for x in (tmp_path / "lm.records.jsonl").read_text().splitlines()]
    assert lines[0]["header"]["score_source"] == "lm" and lines[0]["header"]["score_layer"] == 1
    assert lines[1]["method"] == "attention" and lines[1]["timings_ms"]["score_pass"] > 0
    vit = tmp_path / "vit.json"
    assert main(base + ["--out", str(vit)]) == 0
    assert json.loads(vit.read_text())["attention"]["0.2"]["score_source"] == "vit"
    header = json.loads((tmp_path / "vit.records.jsonl").read_text().splitlines()[0])["header"]
    assert "score_source" not in header  # the header ViT-score runs always wrote: their records resume
    with pytest.raises(SystemExit):  # the random-tiny LM has one layer
        main(base + ["--out", str(tmp_path / "x.json"), "--score-source", "lm"])
    with pytest.raises(SystemExit):
        main(base + ["--out", str(tmp_path / "y.json"), "--score-noise", "0.5"])


def swapped_layers_scores(model, visual, text_ids, layer: int) -> torch.Tensor:
    """The LM scores computed on the live LM itself, changed for the pass: ``lm.layers`` cut to the
    first ``layer``, ``lm.config`` set to eager, layer ``layer``'s weights read by a forward hook,
    both restored after (the reference `lm_attention_scores` must match without changing the LM)."""
    lm, inputs = model.lm, model.build_inputs(visual, None, text_ids, append_seg=False)
    layers, impl, captured = lm.layers, lm.config._attn_implementation, []
    lm.layers, lm.config._attn_implementation = torch.nn.ModuleList(list(layers)[:layer]), "eager"
    handle = lm.layers[layer - 1].self_attn.register_forward_hook(lambda m, a, out: captured.append(out[1]))
    try:
        with torch.no_grad():
            model.lm_forward(inputs, use_cache=False)
    finally:
        handle.remove()
        lm.layers, lm.config._attn_implementation = layers, impl
    vs, n = inputs.visual_start, visual.shape[1]
    return captured[0][:, :, vs - 1, vs:vs + n].mean(1).float()


def test_lm_scores_equal_the_swapped_layers_pass_without_touching_the_live_model(model, batch):
    _, texts, visual = batch
    seen = []

    def live_state(module, args, kwargs):  # runs inside the score pass (hooks are shared with the pass)
        seen.append((len(model.lm.layers), model.lm.config._attn_implementation, module.config._attn_implementation))

    handle = model.lm.layers[0].self_attn.register_forward_pre_hook(live_state, with_kwargs=True)
    try:
        for layer in (1, 2, 3):
            seen.clear()
            scores = lm_attention_scores(model, visual, texts, layer)
            assert seen == [(3, "sdpa", "eager")]  # the pass runs eager; the live LM stays whole and sdpa
            torch.testing.assert_close(scores, swapped_layers_scores(model, visual, texts, layer), rtol=0, atol=1e-6)
    finally:
        handle.remove()
    assert len(model.lm.layers) == 3 and model.lm.config._attn_implementation == "sdpa"
