"""The reference model's `seg` readout: the [SEG]-prompted promptable decoder, its two training
stages (ground-truth prompts, then frozen while the LM learns the prompt) and its readout checks."""
import json
import types

import numpy as np
import pytest
import torch

from evtp.cli.train import main as cli_train
from evtp.data.synthetic import make_sample
from evtp.models.reference import ReferenceConfig, ReferenceIVS, frames_to_tensor, load_pretrained, train
from evtp.models.reference import seg_training
from evtp.models.reference.prompt_decoder import prompt_geometry

# the seg config's code-path values (the defaults + configs/reference_seg.json: role head,
# alignment, readouts seg + dense, two two-way blocks) at a tiny width
TINY = dict(vit_dim=32, vit_layers=1, vit_heads=2, vit_mlp=64, lm_dim=32, lm_layers=2, lm_heads=2, lm_mlp=64,
            dec_dim=8, role_layer=1, align_layers=[0, 1], readouts=["seg", "dense"], seg_dim=16, seg_heads=2,
            seg_layers=2)


def tiny(**kw) -> ReferenceIVS:
    torch.manual_seed(0)
    return ReferenceIVS(ReferenceConfig.from_json({**ReferenceConfig().to_json(), **TINY, **kw})).eval()


@pytest.fixture(scope="module")
def model():
    return tiny()


def _batch_inputs(model, samples):
    frames = torch.cat([frames_to_tensor(s.frames, 256) for s in samples])
    return frames, [model.tok.encode(s.instruction) for s in samples]


def test_seg_readout_shapes_on_a_batch_and_at_keep_0(model):
    samples = [make_sample("val", i, "image") for i in (0, 1)]  # instructions of different lengths
    frames, text = _batch_inputs(model, samples)
    assert len(text[0]) != len(text[1])
    for keep in (1.0, 0.2, 0):
        out = model.run(frames, text, keep=keep, method="uniform")
        assert out["readout"] == "seg" and out["masks"].shape == (2, 1, 256, 256) and out["masks"].dtype == torch.bool
        assert out["seg_prompt"].shape == (2, 16) and "token_logits" not in out and "point" not in out
        alone = model.run(frames[1:], text[1:], keep=keep, method="uniform")  # no batch-size-1 indexing
        assert torch.allclose(out["seg_prompt"][1:], alone["seg_prompt"], atol=1e-5)
    v = make_sample("val", 0, "video")
    pred = model.predict(v, keep=0.2)
    assert pred.extra["readout"] == "seg" and pred.masks.shape == v.gt_masks.shape and pred.masks.dtype == bool


def test_no_per_token_logit_reaches_the_seg_mask():
    """Scrambling every per-visual-token head (the token head, the role head, the dense decoder's
    pointer and heat) leaves the seg masks unchanged and the token head is never called; changing
    only the projection of the [SEG] state changes the decoder's mask logits."""
    s = make_sample("val", 3, "video")
    a, b = tiny(), tiny()
    calls = []
    b.token_aux.register_forward_hook(lambda mod, inp, out: calls.append(1) or out + 100 * torch.randn_like(out))
    with torch.no_grad():
        for mod in (b.token_aux, b.decoder, b.role_aux):
            for p in mod.parameters():
                p.add_(torch.randn_like(p))
    logits = {}
    for name, m in (("a", a), ("b", b)):
        m.seg_decoder.register_forward_hook(lambda mod, inp, out, name=name: logits.setdefault(name, []).append(out))
    pa, pb = a.predict(s, keep=0.3, method="uniform"), b.predict(s, keep=0.3, method="uniform")
    assert np.array_equal(pa.masks, pb.masks) and not calls
    assert all(torch.equal(x, y) for x, y in zip(logits["a"], logits["b"]))
    with torch.no_grad():
        for p in b.seg_proj.parameters():
            p.add_(torch.randn_like(p))
    logits.clear()
    a.predict(s, keep=0.3, method="uniform"), b.predict(s, keep=0.3, method="uniform")
    assert (logits["a"][0] - logits["b"][0]).abs().max() > 1e-3


def test_geometry_prompt_is_the_targets_inner_point_and_box():
    s = make_sample("train", 0, "image")
    m = s.gt_masks[0]
    px, py, x0, y0, x1, y1 = prompt_geometry(s.gt_masks[:1])[0].tolist()
    ys, xs = np.nonzero(m)
    assert m[int(py * 256), int(px * 256)]
    assert (x0, y0, x1, y1) == pytest.approx((xs.min() / 256, ys.min() / 256, (xs.max() + 1) / 256, (ys.max() + 1) / 256))


def _step(model, loss):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def test_the_decoder_learns_alone_then_stays_frozen_while_the_prompt_learns():
    m = tiny().train()
    batch = train.make_batch(m, "video", 0, 2, train.family_weights("video", 1.0, 0.1))
    assert batch.geometry.shape == (2, 6)
    seg_training.set_trainable(m, "seg_decoder")
    _step(m, seg_training.decoder_losses(m, batch)["loss"])
    learnt = {n.split(".")[0] for n, p in m.named_parameters() if p.grad is not None}
    assert learnt == {"seg_decoder"}
    seg_training.set_trainable(m, "full")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ls = train.losses(m, batch)
    assert {"seg_bce", "seg_dice", "seg_prompt"} <= set(ls) and all(torch.isfinite(v) for v in ls.values())
    _step(m, ls["loss"])
    for part in ("seg_decoder", "vit"):
        assert all(p.grad is None for p in getattr(m, part).parameters()), part
    changed = {k.split(".")[0] for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert not changed & {"seg_decoder", "vit"}
    assert {"seg_proj", "lm", "projector"} <= changed


class _Clock:
    """A fake clock for `train`: every call is one second later."""

    def __init__(self):
        self.t = 0.0

    def time(self):
        self.t += 1.0
        return self.t


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny two-stage run (3 decoder steps, 3 prompt steps on the fake clock), then resumed with
    a larger budget (3 more prompt steps)."""
    tmp = tmp_path_factory.mktemp("seg")
    cfg = tmp / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp / "run"
    argv = ["--out", str(out), "--config", str(cfg), "--minutes", "0.1", "--vit-minutes", "0",
            "--seg-decoder-minutes", "0.05", "--batch", "1", "--video-batch", "1", "--video-every", "4",
            "--threads", "1", "--val-every", "3"]
    mp = pytest.MonkeyPatch()
    mp.setattr(train, "time", types.SimpleNamespace(time=_Clock().time))
    small_val = train.quick_val  # the closing validation on a few samples (the test's time budget)
    mp.setattr(train, "quick_val", lambda model, n_image, n_video: small_val(model, 1, 0))
    small_gt = seg_training.gt_prompt_val
    mp.setattr(seg_training, "gt_prompt_val", lambda model, n_image, n_video: small_gt(model, 1, 1))
    mp.setattr(train, "record_check", lambda d: None)
    try:
        assert cli_train(argv) == 0
        first = load_pretrained(out / "final")
        log1 = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        longer = argv[:argv.index("--minutes")] + ["--minutes", "0.15"] + argv[argv.index("--minutes") + 2:]
        assert cli_train(longer) == 0
    finally:
        mp.undo()
    return out, first, log1


def test_two_stage_training_resumes_with_the_decoder_frozen(trained):
    out, first, log1 = trained
    done = log1[-1]
    assert done["done"] and done["seg_decoder_steps"] == 3 and done["steps"] == 6
    assert {"val_image_ciou", "val_image_ciou_gt_prompt", "val_video_ciou_gt_prompt"} <= set(done)
    vals = [r for r in log1 if "val_seconds" in r]
    assert any("val_image_ciou_gt_prompt" in r for r in vals) and any("val_image_ciou" in r for r in vals)
    second = load_pretrained(out / "final")
    assert second.meta["steps"] == 9 and second.meta["seg_decoder_steps"] == 3
    assert [h["from_step"] for h in second.meta["history"]] == [0, 6]
    a, b = first.state_dict(), second.state_dict()
    frozen = [k for k in a if k.startswith(("seg_decoder.", "vit."))]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)  # the prompt stage leaves them alone
    assert not torch.equal(a["seg_proj.0.weight"], b["seg_proj.0.weight"])
    assert not torch.equal(a["lm.layers.0.mlp.up_proj.weight"], b["lm.layers.0.mlp.up_proj.weight"])


def test_seg_weights_run_in_the_bench_and_refuse_other_readouts(trained, tmp_path):
    from evtp.cli.bench_reference import main as bench

    out, _, _ = trained
    res = tmp_path / "r.json"
    assert bench(["--weights", str(out / "final"), "--readout", "seg", "--samples", "1", "--methods", "evtp",
                  "--keep", "1.0,0.2", "--timed-samples", "0", "--overlays", "0", "--no-plots", "--threads", "1",
                  "--out", str(res)]) == 0
    result = json.loads(res.read_text())
    assert result["evtp"]["0.2"]["readout"] == "seg" and 0 <= result["evtp"]["0.2"]["ciou"] <= 1
    s = make_sample("val", 0, "image")
    with pytest.raises(ValueError, match="trained for the 'seg' and 'dense' readout\\(s\\), not 'point'"):
        load_pretrained(out / "final").predict(s, readout="point")
    with pytest.raises(ValueError, match="trained for the 'point' and 'dense' readout\\(s\\), not 'seg'"):
        tiny(readouts=["point", "dense"]).predict(s, readout="seg")


def test_a_seg_decoder_stage_the_run_cannot_have_is_refused_before_anything_is_written(tmp_path, capsys):
    cfg, plain = tmp_path / "seg.json", tmp_path / "plain.json"
    cfg.write_text(json.dumps(TINY))
    plain.write_text(json.dumps({**TINY, "readouts": ["dense"]}))
    for config, extra, want in ((plain, ["--seg-decoder-minutes", "1"], "readouts are ['dense']"),
                                (cfg, [], "--seg-decoder-minutes > 0")):
        with pytest.raises(SystemExit) as err:
            cli_train(["--out", str(tmp_path / "run"), "--config", str(config), "--minutes", "2",
                       "--vit-minutes", "0", *extra])
        assert err.value.code == 2 and want in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
