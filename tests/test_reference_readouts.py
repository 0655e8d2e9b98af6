"""The reference model's readouts: the point readout (location tokens -> exact segmenter -> tracker),
its training targets, the readout checks, and the leak controls' machinery."""
import cv2
import numpy as np
import pytest
import torch

from evtp.data.synthetic import make_sample
from evtp.models.reference import train
from evtp.models.reference import ReferenceConfig, ReferenceIVS, frames_to_tensor
from evtp.models.reference.leaks import leak_report, picked_object, word_swaps
from evtp.models.reference.segmenter import segment_at, track
from evtp.testing.reference import tiny_reference


def tiny(**kw) -> ReferenceIVS:
    return tiny_reference(**kw)


@pytest.fixture(scope="module")
def model():
    return tiny()


def test_segmenter_returns_the_exact_object_under_any_of_its_pixels():
    rng = np.random.default_rng(0)
    for i in range(6):
        s = make_sample("val", i, "image", with_labels=True)
        lab = s.meta["labels"][0]
        for o in range(len(s.meta["objects"])):
            ys, xs = np.nonzero(lab == o + 1)
            j = int(rng.integers(len(xs)))
            assert np.array_equal(segment_at(s.frames[0], xs[j] + 0.5, ys[j] + 0.5), lab == o + 1)
        ys, xs = np.nonzero(lab == 0)  # a background point far from every object selects nothing
        far = np.hypot(*np.gradient(lab.astype(float))) == 0
        j = int(np.flatnonzero(far[ys, xs])[0])
        assert not segment_at(s.frames[0], xs[j] + 0.5, ys[j] + 0.5).any()


def test_segmenter_searches_the_named_cell_for_the_nearest_object():
    s = make_sample("val", 1, "image", with_labels=True)
    lab = s.meta["labels"][0]
    ys, xs = np.nonzero(lab == 1)
    x, y = xs.min() - 3, ys[xs.argmin()]  # 3 px left of the object's leftmost pixel
    assert not segment_at(s.frames[0], x + 0.5, y + 0.5).any()
    assert np.array_equal(segment_at(s.frames[0], x + 0.5, y + 0.5, radius=4.0), lab == 1)


def test_tracker_follows_moving_objects_exactly():
    moving = 0
    for i in range(4):
        s = make_sample("val", i, "video", family="motion", with_labels=True)
        lab = s.meta["labels"]
        for o, obj in enumerate(s.meta["objects"]):
            if obj["stop"] == 0 or not (obj["vx"] or obj["vy"]):
                continue
            moving += 1
            ys, xs = np.nonzero(lab[0] == o + 1)
            masks = track(s.frames, segment_at(s.frames[0], xs[0] + 0.5, ys[0] + 0.5))
            assert np.array_equal(masks, lab == o + 1), (i, o)
    assert moving >= 4


def test_segmenter_and_tracker_are_exact_on_hard_and_textured_videos():
    """Faint (desaturated, textured) objects, a crowded textured scene and textured objects whose
    bright stripes reach 255: seeded at a random pixel of each object in frame 0, the tracked masks
    equal every object's ground truth in all frames; objects never touch (not even 4-adjacently)."""
    rng = np.random.default_rng(1)
    for family, difficulty, textured, index in (("low_saliency", "hard", False, 0), ("dense", "hard", True, 1),
                                                (None, "standard", True, 2)):
        s = make_sample("val", index, "video", difficulty=difficulty, textured=textured, family=family,
                        with_labels=True)
        lab = s.meta["labels"]
        for o in range(len(s.meta["objects"])):
            grown = np.stack([cv2.dilate((f == o + 1).astype(np.uint8), np.ones((3, 3), np.uint8)) for f in lab])
            assert not ((grown > 0) & (lab > 0) & (lab != o + 1)).any()
            ys, xs = np.nonzero(lab[0] == o + 1)
            j = int(rng.integers(len(xs)))
            masks = track(s.frames, segment_at(s.frames[0], xs[j] + 0.5, ys[j] + 0.5))
            assert np.array_equal(masks, lab == o + 1), (family, difficulty, textured, o)


def test_point_targets_lie_inside_the_target():
    for i in range(8):
        s = make_sample("train", i, "image")
        bins = 32
        (bx, by), = train.point_targets(s.gt_masks[:1], bins).tolist()
        cell = 256 / bins
        assert s.gt_masks[0, int((by + 0.5) * cell), int((bx + 0.5) * cell)] or \
            s.gt_masks[0, int(by * cell):int((by + 1) * cell), int(bx * cell):int((bx + 1) * cell)].any()


@pytest.mark.parametrize("task", ["image", "video"])
def test_point_readout_shapes_and_keep0(model, task):
    s = make_sample("val", 0, task)
    for keep in (1.0, 0.2, 0):
        p = model.predict(s, keep=keep)
        assert p.extra["readout"] == "point" and p.masks.shape == s.gt_masks.shape and p.masks.dtype == bool
        assert p.extra["point"].shape == (2,) and "token_logits" not in p.extra


def test_no_per_token_logit_reaches_the_point_mask(image_sample=None):
    """Scrambling every training-only per-token head and the dense decoder leaves the point
    readout's masks and points unchanged (they do change the dense readout)."""
    s = make_sample("val", 3, "image")
    a, b = tiny(readouts=("point", "dense")), tiny(readouts=("point", "dense"))
    with torch.no_grad():
        for mod in (b.token_aux, b.decoder, b.role_aux):
            for p in mod.parameters():
                p.add_(torch.randn_like(p))
    pa, pb = a.predict(s, keep=0.3, method="uniform"), b.predict(s, keep=0.3, method="uniform")
    assert np.array_equal(pa.masks, pb.masks) and np.array_equal(pa.extra["point"], pb.extra["point"])
    da, db = (m.predict(s, keep=0.3, method="uniform", readout="dense") for m in (a, b))
    assert not np.array_equal(da.extra["token_logits"], db.extra["token_logits"])


def test_decoded_location_tokens_match_teacher_forcing(model):
    """Inference decodes <x> then <y> with the KV cache; training reads the same logits in one pass."""
    s = make_sample("val", 2, "video")
    fr = frames_to_tensor(s.frames, 256)
    text = [model.tok.encode(s.instruction)]
    out = model.run(fr, text, keep=1.0)
    cell = 256 / model.cfg.point_bins
    bins = (out["point"] / cell - 0.5).round().long()
    with torch.no_grad():
        tr = model.forward_train(fr, text, torch.zeros(1, 8, 64, 64), point_bins=bins)
    assert torch.equal(tr.point_logits.argmax(-1), bins)


def test_location_tokens_extend_the_vocabulary_and_warm_start_keeps_the_words():
    words_only = tiny(readouts=("dense",))
    point = tiny()
    assert len(point.cfg.token_vocab) == len(words_only.cfg.vocab) + 2 * point.cfg.point_bins
    state = train.widen_state(point, words_only.state_dict())
    point.load_state_dict(state)
    V = len(words_only.cfg.vocab)
    assert torch.equal(point.lm_head.weight[:V], words_only.lm_head.weight)
    assert torch.equal(point.lm.get_input_embeddings().weight[:V], words_only.lm.get_input_embeddings().weight)


def test_warm_start_into_a_temporal_patch_computes_the_checkpoints_function():
    """--init from one-frame-token weights into temporal_patch=2: the projector's new input columns
    start at zero, so every output is unchanged at step 0 and only those columns are new."""
    one = tiny()
    two = tiny(temporal_patch=2, align_motion=True)
    state = train.widen_state(two, one.state_dict())
    assert state["projector.0.weight"].shape == (one.cfg.lm_dim, 2 * one.cfg.vit_dim)
    assert not state["projector.0.weight"][:, one.cfg.vit_dim:].any()
    two.load_state_dict(state)
    s = make_sample("val", 1, "video")
    fr = frames_to_tensor(s.frames, 256)
    text = [two.tok.encode(s.instruction)]
    a, b = one.run(fr, text, keep=0.5), two.run(fr, text, keep=0.5)
    assert torch.equal(a["point"], b["point"]) and torch.equal(a["masks"], b["masks"])
    with pytest.raises(RuntimeError, match="size mismatch"):  # other shape changes stay refused
        tiny(lm_dim=48).load_state_dict(train.widen_state(tiny(lm_dim=48), one.state_dict()))


def test_readout_errors_name_the_choices_and_the_trained_readouts(model):
    s = make_sample("val", 0, "image")
    with pytest.raises(ValueError, match="unknown readout 'pt'; choose one of point, seg, dense"):
        model.predict(s, readout="pt")
    with pytest.raises(ValueError, match="trained for the 'dense' readout.*not 'point'"):
        tiny(readouts=("dense",)).predict(s, readout="point")
    with pytest.raises(ValueError, match="readouts must be"):
        ReferenceConfig(readouts=("mask",))


def test_bench_readout_flag_errors(tmp_path, capsys):
    from evtp.cli.bench_reference import main

    base = ["--samples", "1", "--weights", "random-tiny", "--out", str(tmp_path / "r.json")]
    with pytest.raises(SystemExit):
        main(base + ["--readout", "pt"])
    assert "invalid choice: 'pt'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--readout", "seg"])
    assert "trained for the 'point' and 'dense' readout(s), not 'seg'" in capsys.readouterr().err


def test_shuffled_positions_permute_the_kept_tokens_ids(model):
    s = make_sample("val", 0, "image")
    visual = model.visual_tokens(model.encode_frames(frames_to_tensor(s.frames, 256))[0])
    kept = torch.tensor([[0, 5, 17, 40, 200, -1]])
    g = torch.Generator().manual_seed(0)
    orig = model.build_inputs(visual, kept, [[5, 6]])
    shuf = model.build_inputs(visual, kept, [[5, 6]], position_mode="shuffled", generator=g)
    vs = orig.visual_start
    a, b = orig.position_ids[..., vs:vs + 5], shuf.position_ids[..., vs:vs + 5]
    assert not torch.equal(a, b)
    assert sorted(map(tuple, a[:, 0].T.tolist())) == sorted(map(tuple, b[:, 0].T.tolist()))
    assert torch.equal(orig.embeds, shuf.embeds)


def test_word_swaps_name_another_object_uniquely():
    found = 0
    for i in range(12):
        s = make_sample("val", i, "image", family="attribute", with_labels=True)
        objs = s.meta["objects"]
        for kind, text, j in word_swaps(s):
            found += 1
            assert j != s.meta["target"] and text != s.instruction
            words = set(text.split())
            named = [k for k, o in enumerate(objs) if o["color"] in words and o["shape"] in words]
            assert named == [j], (text, kind)
            assert picked_object(s.meta["labels"][0] == j + 1, s.meta["labels"][0]) == j
    assert found >= 5


def test_leak_report_on_a_tiny_model(model):
    rep = leak_report(model, 2, n_swap=3)
    assert rep["readout"] == "point" and rep["n"] == 2
    for k in ("full", "keep0", "shuffled", "other_image", "other_image_chance"):
        assert 0 <= rep[k] <= 1
    assert set(rep["swap"]) == {"colour", "shape"}


def test_token_location_targets_are_each_cells_centre():
    m = tiny(point_bins=32)
    t = train.token_location_targets(m, 2 * 256)[0]
    assert t.shape == (512, 2)
    # token 17 = row 1, col 1 (centre 24 px -> bin 3); frame 1 repeats the grid
    assert t[17].tolist() == [3, 3] and t[16].tolist() == [1, 3] and torch.equal(t[:256], t[256:])


def test_location_loss_counts_object_tokens_however_few_they_are():
    # 2 depths, 1 sample, 100 tokens, 4 bins: background tokens read their cell perfectly, the 5
    # object tokens not at all; a mean over all tokens would call that nearly solved
    cells = torch.randint(0, 4, (1, 100, 2), generator=torch.Generator().manual_seed(0))
    on_object = torch.zeros(1, 100, dtype=torch.bool)
    on_object[0, :5] = True
    logits = torch.nn.functional.one_hot(cells, 4).float()[None].expand(2, 1, -1, -1, -1) * 50
    logits = logits.clone()
    logits[:, 0, :5] = 0.0  # object tokens: uniform, log(4) nats per axis
    loss = train.location_loss(logits, cells, on_object)
    assert loss.item() == pytest.approx(2 * np.log(4), rel=1e-4)  # 2 depths x the object tokens' mean
    assert train.location_loss(logits, cells, torch.zeros_like(on_object)).item() > 0.09  # all as background
    on_object[0, 50] = True  # an object token that reads its cell lowers the object mean
    assert train.location_loss(logits, cells, on_object).item() < loss.item()


def test_seg_attention_supervision_reads_the_last_layer_without_changing_outputs():
    m = tiny().train()
    batch = train.make_batch(m, "image", 0, 2, train.family_weights("image", 1.0, 0.1))
    torch.manual_seed(0)
    plain = m.forward_train(batch.frames, batch.text, None, point_bins=batch.point)
    withatt = m.forward_train(batch.frames, batch.text, None, point_bins=batch.point, seg_attention=True)
    assert torch.allclose(plain.point_logits, withatt.point_logits, atol=1e-5)
    att = withatt.seg_attention
    assert att.shape == (2, 256) and bool((att >= 0).all()) and bool((att.sum(-1) <= 1 + 1e-5).all())
    assert m.lm.config._attn_implementation == "sdpa"
    ls = train.losses(m, batch, seg_attention=True)
    assert torch.isfinite(ls["seg_attention"]) and "seg_attention" not in train.losses(m, batch)
