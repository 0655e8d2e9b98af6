"""`evtp train` on a tiny config: the two stages, resuming, the losses and the schedule."""
import json

import numpy as np
import pytest
import torch

from evtp.data.synthetic import make_sample
from evtp.cli.train import main as cli_train
from evtp.models.reference import train
from evtp.models.reference import N_COLOR_CLASSES, N_SHAPE_CLASSES, ReferenceConfig, ReferenceIVS

TINY = dict(vit_dim=32, vit_layers=1, vit_heads=2, vit_mlp=64, lm_dim=32, lm_layers=1, lm_heads=2,
            lm_mlp=64, dec_dim=8, role_layer=1, align_layers=(0, 1))


def tiny_model() -> ReferenceIVS:
    torch.manual_seed(0)
    return ReferenceIVS(ReferenceConfig(**TINY))


def test_vit_stage_updates_only_the_vision_encoder():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), 1e-2)
    batch = train.make_batch(model, "image", 0, 2, train.family_weights("image", 0.0, 0.1))
    train.vit_losses(model, batch)["loss"].backward()
    opt.step()
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"vit", "vit_aux"}


def test_full_losses_are_finite_and_reach_every_part():
    model = tiny_model()
    batch = train.make_batch(model, "video", 0, 2, train.family_weights("video", 1.0, 0.1))
    ls = train.losses(model, batch)
    assert {"loss", "bce", "dice", "heat", "seg", "dense", "token", "role", "align", "point", "location"} <= set(ls)
    assert all(torch.isfinite(v) for v in ls.values())
    ls["loss"].backward()
    for part in ("vit", "projector", "lm", "decoder", "token_aux", "vit_aux", "role_aux"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), part


def test_projector_alignment_updates_only_the_projector_and_learns_motion_words():
    """Stage "align": only the projector's weights move, and on a fixed video batch its output
    (read through the word embeddings) comes to name the tokens' motion words."""
    torch.manual_seed(0)
    model = ReferenceIVS(ReferenceConfig(**{**TINY, "temporal_patch": 2, "align_motion": True}))
    batch = train.make_batch(model, "video", 0, 2, train.family_weights("video", 0.0, 0.1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    first = None
    for _ in range(100):
        ls = train.projector_align_losses(model, batch)
        first = first if first is not None else float(ls["align"].detach())
        opt.zero_grad(set_to_none=True)
        ls["loss"].backward()
        opt.step()
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"projector"}
    assert float(ls["align"].detach()) < 0.5 * first
    words = torch.tensor([model.tok.ids[w] for w in ("left", "right", "up", "down", "not")])
    with torch.no_grad():
        vit, _ = model.encode_frames(batch.frames)
        logits = model.word_logits(model.visual_tokens(vit))[..., words]
    target = batch.motion_words[batch.motion_words >= 0]
    majority = max(float((target == w).float().mean()) for w in words)  # 0.56 on this batch
    accuracy = float((words[logits.argmax(-1)][batch.motion_words >= 0] == target).float().mean())
    assert accuracy > majority + 0.2, (accuracy, majority)


def test_role_targets_mark_the_reference_set_and_the_anchor():
    model = tiny_model()
    g = model.cfg.grid
    for i in range(40):
        s = make_sample("train", i, "image", with_labels=True)
        if s.meta["anchor"] is not None:
            break
    cover = train.object_cover(s, model.cfg.patch)  # (1, O, G*G)
    roles = train.role_targets([s], [cover], [0])[0]  # (G*G, 2)
    on = cover[0] >= 0.25
    assert roles.shape == (g * g, 2)
    assert torch.equal(roles[:, 0].bool(), on[s.meta["members"]].any(0))
    assert torch.equal(roles[:, 1].bool(), on[s.meta["anchor"]])
    assert not (roles[:, 0].bool() & roles[:, 1].bool()).any()  # the anchor is outside the set
    target = torch.from_numpy(s.gt_masks[0]).float()[None, None]
    on_target = torch.nn.functional.avg_pool2d(target, model.cfg.patch).flatten() >= 0.25
    assert on_target.any() and bool(roles[on_target, 0].all())  # the target is a member


def test_role_and_align_layers_must_exist():
    with pytest.raises(ValueError, match="role_layer"):
        ReferenceConfig(**{**TINY, "role_layer": 2})
    for bad in ((0, 2), (1, 1), (-1,)):
        with pytest.raises(ValueError, match="align_layers"):
            ReferenceConfig(**{**TINY, "align_layers": bad})


def test_align_targets_name_the_colour_and_shape_word_of_the_object_under_each_token():
    from evtp.data.synthetic import COLOR_NAMES, SHAPES

    model = tiny_model()
    batch = train.make_batch(model, "video", 0, 2, train.family_weights("video", 1.0, 0.1))
    lm_ids = model.lm_frame_ids(batch.frames.shape[1])
    targets = train.align_targets(model, batch.dense, lm_ids)  # (2, B, N)
    assert targets.shape == (2, 2, len(lm_ids) * model.cfg.grid ** 2)
    dense = batch.dense[:, lm_ids].flatten(1, 2)
    on = dense[..., 0] > 0
    assert on.any() and (~on).any()
    assert bool((targets[:, ~on] == -100).all())
    colour_words = [model.tok.vocab[i] for i in targets[0][on].tolist()]
    shape_words = [model.tok.vocab[i] for i in targets[1][on].tolist()]
    assert colour_words == [COLOR_NAMES[c - 1] for c in dense[..., 0][on].tolist()]
    assert shape_words == [SHAPES[c - 1] for c in dense[..., 1][on].tolist()]


def test_align_loss_teaches_visual_tokens_their_words_through_the_word_embeddings():
    """A few steps of the alignment loss alone make the projector's tokens read, through the
    LM's own word embeddings, as their object's colour among the colour words."""
    from evtp.data.synthetic import COLOR_NAMES

    model = tiny_model()
    batch = train.make_batch(model, "image", 0, 4, train.family_weights("image", 1.0, 0.1))
    lm_ids = [0]
    targets = train.align_targets(model, batch.dense, lm_ids)
    colour_ids = torch.tensor([model.tok.ids[c] for c in COLOR_NAMES])
    on = targets[0] >= 0

    with torch.no_grad():
        vit = model.encode_frames(batch.frames)[0]  # the projector learns; the ViT's features stay

    def colour_hits():
        with torch.no_grad():
            logits = model.word_logits(model.visual_tokens(vit))
        return float((colour_ids[logits[..., colour_ids].argmax(-1)] == targets[0])[on].float().mean())

    before = colour_hits()
    opt = torch.optim.Adam(model.projector.parameters(), 1e-2)
    first = None
    for _ in range(60):
        loss = train.align_loss(model.word_logits(model.visual_tokens(vit))[None], targets)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    assert colour_hits() > max(0.8, before + 0.3)


def test_a_bad_config_file_is_refused_before_anything_is_written(tmp_path, capsys):
    for text, want in (('{"lm_dimm": 8}', "unknown ReferenceConfig field"), ("[1]", "JSON object"),
                       ("{", "--config"), ('{"align_layers": [9]}', "align_layers")):
        cfg = tmp_path / "c.json"
        cfg.write_text(text)
        with pytest.raises(SystemExit) as err:
            cli_train(["--out", str(tmp_path / "run"), "--config", str(cfg), "--minutes", "1", "--vit-minutes", "0"])
        assert err.value.code == 2 and want in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_dense_loss_rewards_the_right_shape_on_objects():
    nc, ns = N_COLOR_CLASSES, N_SHAPE_CLASSES
    dense = torch.zeros(1, 1, 4, 3, dtype=torch.long)
    dense[0, 0, 0] = torch.tensor([2, 3, 15])  # one object patch, three background patches
    good = torch.zeros(1, 1, 4, nc + ns + 1)
    good[..., 0] = good[..., nc] = 10.0  # background everywhere ...
    good[0, 0, 0] = 0
    good[0, 0, 0, 2] = good[0, 0, 0, nc + 3] = 10.0  # ... and the right colour / shape on the object
    good[0, 0, 0, -1] = 1.5
    bad = good.clone()
    bad[0, 0, 0, nc + 3], bad[0, 0, 0, nc + 1] = 0.0, 10.0  # wrong shape on the one object patch
    assert float(train.dense_loss(good, dense)) < 0.01
    # the object-only term makes one wrong object patch among background cost a full CE, not 1/4
    assert float(train.dense_loss(bad, dense)) > 10.0


def test_lr_schedule():
    assert train.lr_at(0.0, 1e-3, 0.04) == pytest.approx(2e-5)
    assert train.lr_at(0.04, 1e-3, 0.04) == pytest.approx(1e-3)
    assert train.lr_at(1.0, 1e-3, 0.04) == pytest.approx(5e-5)
    xs = [train.lr_at(p / 100, 1e-3, 0.04) for p in range(4, 101)]
    assert all(a >= b for a, b in zip(xs, xs[1:]))


def test_train_cli_two_stages_then_resume(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "run"
    argv = ["--out", str(out), "--config", str(cfg), "--minutes", "0.06", "--vit-minutes", "0.02",
            "--batch", "2", "--video-batch", "1", "--video-every", "2", "--threads", "1",
            "--val-every", "0"]
    assert cli_train(argv) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    done = log[-1]
    assert done["done"] and 0 < done["vit_pretrain_steps"] < done["steps"]
    assert {"val_image_ciou", "val_image_ciou_keep0"} <= set(done)
    assert (out / "final" / "reference.safetensors").is_file()
    from evtp.models.reference import load_pretrained

    model = load_pretrained(out / "final")
    assert model.cfg.lm_layers == 1 and model.meta["vit_pretrain_steps"] == done["vit_pretrain_steps"]
    check = model.meta["check"]  # recorded on the saved (fp16) weights, as the tests re-check them
    from evtp.models.reference import fixed_check

    assert fixed_check(model, check["n_image"], 0, keep=0)["image_ciou"] == pytest.approx(
        check["none"]["image_ciou"], abs=1e-6)
    assert [h["from_step"] for h in model.meta["history"]] == [0]
    # re-running the finished command resumes from ckpt.pt and takes no further step
    assert cli_train(argv) == 0
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["steps"] == done["steps"]
    # a larger budget continues the finished run, and the weights record both commands
    longer = argv[:argv.index("--minutes")] + ["--minutes", "0.09"] + argv[argv.index("--minutes") + 2:]
    assert cli_train(longer) == 0
    more = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert more["steps"] > done["steps"]
    history = load_pretrained(out / "final").meta["history"]
    assert [h["args"]["minutes"] for h in history] == [0.06, 0.09]
    assert history[1]["from_step"] == done["steps"]
    # the shorter command no longer has anything to do and leaves the weights alone
    before = (out / "final" / "reference.safetensors").stat().st_mtime_ns
    assert cli_train(argv) == 0
    assert (out / "final" / "reference.safetensors").stat().st_mtime_ns == before


def test_each_seed_reads_its_own_stretch_of_the_train_split(tmp_path, capsys):
    assert train.data_start(0) == 0 and train.data_start(3) == 3 * train.SEED_DATA_STRIDE
    cfg = ReferenceConfig(vit_dim=16, vit_layers=1, vit_heads=2, vit_mlp=16, lm_dim=16, lm_layers=1, lm_heads=2,
                          lm_mlp=16, dec_dim=4, role_layer=1, align_layers=(0, 1))
    model = ReferenceIVS(cfg)
    weights = train.family_weights("image", 1.0, 0.12)
    first = train.make_batch(model, "image", train.data_start(0), 2, weights)
    other = train.make_batch(model, "image", train.data_start(1), 2, weights)
    assert not torch.equal(first.frames, other.frames)
    with pytest.raises(SystemExit) as err:
        cli_train(["--out", str(tmp_path / "run"), "--seed", "100", "--minutes", "1", "--vit-minutes", "0"])
    assert err.value.code == 2 and "--seed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_cli_rejects_bad_budgets(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_train(["--out", str(tmp_path / "r"), "--minutes", "5", "--vit-minutes", "6"])
    assert "--vit-minutes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_train(["--out", str(tmp_path / "r"), "--minutes", "5", "--vit-minutes", "1", "--align-minutes", "4"])
    assert "--align-minutes must be >= 0 and below --minutes - --vit-minutes - --seg-decoder-minutes (4)" in \
        capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_train_cli_aligns_the_widened_projector_before_the_full_stage(tmp_path):
    """--init from one-frame-token weights into temporal_patch 2, then --align-minutes: the align
    steps are counted apart, logged as "align", and the full stage follows."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    base = ["--config", str(cfg), "--batch", "2", "--video-batch", "1", "--video-every", "2", "--threads", "1",
            "--val-every", "0", "--vit-minutes", "0"]
    assert cli_train(["--out", str(tmp_path / "one"), "--minutes", "0.02", *base]) == 0
    motion = tmp_path / "motion.json"
    motion.write_text(json.dumps({**TINY, "temporal_patch": 2, "align_motion": True}))
    argv = ["--out", str(tmp_path / "two"), "--init", str(tmp_path / "one" / "ckpt.pt"), "--minutes", "0.05",
            "--align-minutes", "0.02", *base]
    argv[argv.index(str(cfg))] = str(motion)
    assert cli_train(argv) == 0
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    done = log[-1]
    assert 0 < done["align_steps"] < done["steps"]
    from evtp.models.reference import load_pretrained

    model = load_pretrained(tmp_path / "two" / "final")
    assert model.cfg.temporal_patch == 2 and model.meta["align_steps"] == done["align_steps"]


def test_motion_words_name_each_video_tokens_object_motion_between_its_two_frames():
    from evtp.data.synthetic import DIRECTIONS

    model = ReferenceIVS(ReferenceConfig(**{**TINY, "temporal_patch": 2, "align_motion": True}))
    lm_ids = model.lm_frame_ids(8)
    # a temporal sample whose target moves and stops at frame 2
    s = next(s for s in (make_sample("train", i, "video", family="temporal", with_labels=True)
                         for i in range(40)) if s.meta["objects"][s.meta["target"]]["stop"] == 2)
    cover = train.object_cover(s, model.cfg.patch)
    words = train.motion_words(model, [s], [cover], lm_ids)[0].view(len(lm_ids), -1)
    o = s.meta["objects"][s.meta["target"]]
    moving = model.tok.ids[{v: k for k, v in DIRECTIONS.items()}[(int(np.sign(o["vx"])), int(np.sign(o["vy"])))]]
    for row, f in zip(words, lm_ids):
        on_target = cover[f, s.meta["target"]] >= 0.25
        want = moving if min(f, 6) + 1 <= 2 else model.tok.ids["not"]  # frame 0 moves; later frames stand
        assert on_target.any() and bool((row[on_target] == want).all()), f
        assert bool((row[cover[f].max(0).values < 0.25] == -100).all())
    batch = train.make_batch(model, "video", 0, 2, train.family_weights("video", 1.0, 0.1))
    assert batch.motion_words is not None and batch.motion_words.shape == batch.on_target.shape
    assert "align" in train.losses(model, batch)
    image = train.make_batch(model, "image", 0, 2, train.family_weights("image", 1.0, 0.1))
    assert image.motion_words is None


def test_align_motion_needs_a_temporal_patch_and_align_layers():
    for bad in ({"align_motion": True}, {"align_motion": True, "temporal_patch": 2, "align_layers": ()}):
        with pytest.raises(ValueError, match="align_motion"):
            ReferenceConfig(**{**TINY, **bad})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_train_refuses_a_missing_cuda_device_before_writing(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        cli_train(["--out", str(tmp_path / "run"), "--device", "cuda", "--minutes", "1", "--vit-minutes", "0"])
    assert err.value.code == 2 and "--device" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
