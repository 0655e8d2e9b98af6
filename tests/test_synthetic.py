"""The synthetic benchmark: determinism, split disjointness, exact masks, families, vocabulary."""
import numpy as np
import pytest

from evtp.data.synthetic import (IMAGE_FAMILIES, SPLIT_BASE, SPLIT_SIZE, VIDEO_FAMILIES, BenchmarkConfig,
                                 make_sample, seed_for, tokenize_words)


def test_deterministic_and_offset():
    a = make_sample("val", 3, "image")
    b = make_sample("val", 3, "image")
    assert a.instruction == b.instruction and np.array_equal(a.frames, b.frames)
    assert np.array_equal(a.gt_masks, b.gt_masks)
    c = make_sample("val", 0, "image", seed_offset=3)
    assert c.sample_id == a.sample_id and np.array_equal(c.frames, a.frames)
    d = make_sample("val", 4, "image")
    assert not np.array_equal(a.frames, d.frames)


def test_splits_are_disjoint():
    ranges = sorted((SPLIT_BASE[s], SPLIT_BASE[s] + SPLIT_SIZE) for s in SPLIT_BASE)
    assert all(r0[1] <= r1[0] for r0, r1 in zip(ranges, ranges[1:]))
    assert seed_for("train", 5) != seed_for("test", 5)
    with pytest.raises(ValueError, match="split"):
        seed_for("dev", 0)
    with pytest.raises(ValueError, match="range"):
        seed_for("train", SPLIT_SIZE)
    assert not np.array_equal(make_sample("train", 0).frames, make_sample("test", 0).frames)


@pytest.mark.parametrize("task", ["image", "video"])
def test_masks_exact_and_shapes(task):
    cfg = BenchmarkConfig()
    for i in range(6):
        s = make_sample("test", i, task)
        T = 1 if task == "image" else cfg.frames
        assert s.frames.shape == (T, cfg.size, cfg.size, 3) and s.frames.dtype == np.uint8
        assert s.gt_masks.shape == (T, cfg.size, cfg.size) and s.gt_masks.dtype == bool
        assert s.gt_masks.all(axis=0).sum() >= 0 and s.gt_masks.any(axis=(1, 2)).all()
        # the mask is exactly the target's pixels: inside it the colour is the object's (saturated)
        # colour, and it is a single blob near the recorded centre at frame 0
        o = s.meta["objects"][s.meta["target"]]
        ys, xs = np.nonzero(s.gt_masks[0])
        assert abs(xs.mean() - o["x"]) < o["radius"] and abs(ys.mean() - o["y"]) < o["radius"]
        px = s.frames[0][s.gt_masks[0]].astype(int)
        sat = px.max(1) - px.min(1)
        assert np.median(sat) > 80
        tokenize_words(s.instruction)


def test_families_present_and_forced():
    fams = {make_sample("train", i, "image").family for i in range(60)}
    assert fams == set(IMAGE_FAMILIES)
    vf = {make_sample("train", i, "video").family for i in range(30)}
    assert vf == set(VIDEO_FAMILIES)
    for f in IMAGE_FAMILIES:
        assert make_sample("val", 1, "image", family=f).family == f
    with pytest.raises(ValueError, match="family"):
        make_sample("val", 1, "image", family="motion")


STOP_WORDS = {"left", "right", "above", "below", "nearest", "from", "that", "farthest"}


@pytest.mark.parametrize("task,families", [("image", ("spatial", "ordinal")),
                                           ("video", ("motion", "temporal"))])
def test_relational_expressions_have_distractors(task, families):
    """The words before the relation name a set of >= 2 objects: the words alone are ambiguous."""
    from evtp.data.synthetic import COLOR_NAMES, SHAPES

    for fam in families:
        for i in range(12):
            s = make_sample("train", i, task, family=fam)
            desc = []
            for w in s.instruction.split():
                if w in STOP_WORDS:
                    break
                desc.append(w)
            colors = [w for w in desc if w in COLOR_NAMES]
            shapes = [w for w in desc if w in SHAPES]
            assert colors or shapes, s.instruction
            members = [o for o in s.meta["objects"]
                       if all(o["color"] == c for c in colors) and all(o["shape"] == h for h in shapes)]
            assert len(members) >= 2, s.instruction
            assert s.meta["objects"][s.meta["target"]] in members
            assert [s.meta["objects"][j] for j in s.meta["members"]] == members  # recorded set


@pytest.mark.parametrize("task", ["image", "video"])
def test_roles_name_the_reference_set_and_the_anchor(task):
    """meta["members"] holds the target; meta["anchor"], when set, is the unique object whose
    colour and shape end the instruction, outside the set."""
    anchors = 0
    for i in range(40):
        s = make_sample("val", i, task)
        m, objs = s.meta, s.meta["objects"]
        assert m["target"] in m["members"] and len(set(m["members"])) == len(m["members"])
        if s.family == "attribute":
            assert m["members"] == [m["target"]] and m["anchor"] is None
        if m["anchor"] is not None:
            anchors += 1
            a = objs[m["anchor"]]
            assert m["anchor"] not in m["members"]
            assert s.instruction.endswith(f"the {a['color']} {a['shape']}"), s.instruction
            assert sum(o["color"] == a["color"] and o["shape"] == a["shape"] for o in objs) == 1
    assert anchors > 0 or task == "video"


def test_video_motion_is_consistent():
    s = make_sample("test", 2, "video", family="motion")
    o = s.meta["objects"][s.meta["target"]]
    ys, xs = np.nonzero(s.gt_masks[-1])
    x_end = o["x"] + o["vx"] * min(s.frames.shape[0] - 1, o["stop"])
    assert abs(xs.mean() - x_end) < o["radius"]


def test_unknown_words_rejected():
    with pytest.raises(ValueError, match="vocabulary"):
        tokenize_words("the banana")


def test_label_map_matches_masks():
    s = make_sample("test", 7, "video", with_labels=True)
    lab = s.meta["labels"]
    assert lab.shape == s.gt_masks.shape
    assert np.array_equal(lab == s.meta["target"] + 1, s.gt_masks)
    assert lab.max() == len(s.meta["objects"])
    assert "labels" not in make_sample("test", 7, "video").meta


@pytest.mark.parametrize("task", ["image", "video"])
def test_object_cover_is_each_objects_share_of_each_cell(task):
    from evtp.data.synthetic import object_cover

    s = make_sample("val", 2, task, with_labels=True)
    lab, n = s.meta["labels"], len(s.meta["objects"])
    cover = object_cover(lab, n, 16)
    T, S = lab.shape[0], lab.shape[1]
    g = S // 16
    assert cover.shape == (T, n, g * g)
    for o in range(n):
        share = (lab == o + 1).reshape(T, g, 16, g, 16).mean(axis=(2, 4)).reshape(T, g * g)
        np.testing.assert_allclose(cover[:, o], share, atol=1e-7)
    assert np.all(cover.sum(1) <= 1 + 1e-6)  # objects never overlap in the label map
