"""Metrics against hand-computed values, including empty masks and boundary cases."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from evtp.metrics import (boundary_f, boundary_map, boundary_radius, ciou_giou,
                          ciou_giou_from_counts, disk, image_sample_metrics, j_and_f,
                          mean_of_families, region_similarity, revos_accuracy_robustness,
                          summarize_by_family, summarize_metrics, video_sample_metrics)


def m(rows):
    return np.array(rows, dtype=bool)


# ---------------------------------------------------------------- image metrics

def test_ciou_giou_hand_values():
    preds = [m([[1, 1], [0, 0]]), m([[0, 0], [0, 0]]), None]
    gts = [m([[1, 0], [0, 0]]), m([[0, 0], [0, 0]]), m([[1, 1], [0, 0]])]
    ciou, giou = ciou_giou(preds, gts)
    # I = 1 + 0 + 0, U = 2 + 0 + 2; per-sample IoU 0.5, 1 (empty union), 0 (None -> empty)
    assert ciou == pytest.approx(1 / 4)
    assert giou == pytest.approx(0.5)


def test_none_prediction_counts_as_empty_not_skipped():
    gts = [m([[1, 1], [1, 1]]), m([[1, 0], [0, 0]])]
    with_none = ciou_giou([gts[0], None], gts)
    # Skipping the None sample (Sa2VA) would give 1.0; evtp counts it: I = 4, U = 5
    assert with_none[0] == pytest.approx(4 / 5)
    assert with_none[1] == pytest.approx(0.5)


def test_ignore_pixels_leave_both_sums():
    pred = m([[1, 1], [0, 0]])
    gt = m([[1, 0], [0, 0]])
    ign = m([[0, 1], [0, 0]])
    assert ciou_giou([pred], [gt], [ign]) == (1.0, 1.0)


def test_all_empty_is_perfect():
    z = np.zeros((3, 3), bool)
    assert ciou_giou([z, None], [z, z]) == (1.0, 1.0)


def test_ciou_giou_bad_input():
    with pytest.raises(ValueError, match="shape"):
        ciou_giou([np.zeros((2, 3), bool)], [np.zeros((3, 2), bool)])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        ciou_giou([None, None], [np.zeros((2, 2), bool)])
    with pytest.raises(ValueError, match="no samples"):
        ciou_giou([], [])
    with pytest.raises(ValueError, match="intersection"):
        ciou_giou_from_counts([3], [2])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(arrays(bool, (5, 6)), arrays(bool, (5, 6))), min_size=1, max_size=6))
def test_ciou_giou_match_definition(pairs):
    preds, gts = zip(*pairs)
    inter = [np.sum(p & g) for p, g in pairs]
    union = [np.sum(p | g) for p, g in pairs]
    ciou, giou = ciou_giou(preds, gts)
    want_c = 1.0 if sum(union) == 0 else sum(inter) / sum(union)
    want_g = np.mean([1.0 if u == 0 else i / u for i, u in zip(inter, union)])
    assert ciou == pytest.approx(want_c) and giou == pytest.approx(want_g)
    assert 0.0 <= ciou <= 1.0 and 0.0 <= giou <= 1.0


# ---------------------------------------------------------------- boundary map / disk

def test_boundary_map_hand_value():
    mask = m([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    want = m([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(boundary_map(mask), want)


def test_image_border_is_not_a_boundary():
    assert not boundary_map(np.ones((4, 5), bool)).any()
    assert not boundary_map(np.zeros((4, 5), bool)).any()


def _boundary_loop(mask):
    """Independent, per-pixel statement of the DAVIS boundary rule (clamped neighbours)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                yy, xx = min(y + dy, h - 1), min(x + dx, w - 1)
                out[y, x] |= mask[y, x] != mask[yy, xx]
    return out


@settings(max_examples=40, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 7), st.integers(1, 7))))
def test_boundary_map_matches_per_pixel_rule(mask):
    np.testing.assert_array_equal(boundary_map(mask), _boundary_loop(mask))


def test_disk_and_radius():
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert disk(2).sum() == 13
    assert boundary_radius(100, 100) == math.ceil(0.008 * math.hypot(100, 100)) == 2
    assert boundary_radius(480, 854) == 8
    assert boundary_radius(10, 10, bound_th=3) == 3
    skm = pytest.importorskip("skimage.morphology")
    for r in range(0, 9):
        np.testing.assert_array_equal(disk(r), skm.disk(r).astype(np.uint8))


# ---------------------------------------------------------------- J, F, J&F

def _top(rows_fg, h=100, w=100):
    x = np.zeros((h, w), bool)
    x[:rows_fg] = True
    return x


def test_boundary_f_tolerance_is_the_disk_radius():
    gt = _top(50)[None]  # boundary = row 49; radius on 100x100 = 2
    assert boundary_f(_top(52)[None], gt)[0] == pytest.approx(1.0)  # 2 px away: matched
    assert boundary_f(_top(53)[None], gt)[0] == pytest.approx(0.0)  # 3 px away: unmatched


def test_boundary_f_hand_value_partial_match():
    gt = _top(50)
    pred = _top(50)
    pred[:60, 50:] = True
    # pred boundary: row 49 cols 0..49 (50) + col 49 rows 50..59 (10) + row 59 cols 50..99 (50)
    # matched: 52 predicted pixels within 2 px of row 49; 52 gt pixels (cols 0..51) near pred
    p, r = 52 / 110, 52 / 100
    assert boundary_f(pred[None], gt[None])[0] == pytest.approx(2 * p * r / (p + r))


def test_empty_mask_conventions():
    z = np.zeros((1, 8, 8), bool)
    g = z.copy()
    g[0, 2:5, 2:5] = True
    assert j_and_f(z, z) == (1.0, 1.0, 1.0)  # nothing to find, nothing found
    assert j_and_f(None, z) == (1.0, 1.0, 1.0)
    assert j_and_f(z, g) == (0.0, 0.0, 0.0)  # P = 1, R = 0
    assert j_and_f(None, g) == (0.0, 0.0, 0.0)
    assert j_and_f(g, z) == (0.0, 0.0, 0.0)  # P = 0, R = 1
    assert j_and_f(g, g) == (1.0, 1.0, 1.0)


def test_j_and_f_averages_over_frames():
    g = np.zeros((2, 100, 100), bool)
    g[:, :50] = True
    pred = g.copy()
    pred[1, :25] = False  # frame 1: J = 25/50; boundaries rows 24 and 49 -> P = 1/2, R = 1
    j, f, jf = j_and_f(pred, g)
    assert j == pytest.approx((1 + 0.5) / 2)
    assert f == pytest.approx((1 + 2 / 3) / 2)
    assert jf == pytest.approx((j + f) / 2)
    np.testing.assert_allclose(region_similarity(pred, g), [1.0, 0.5])


def test_j_and_f_bad_shapes():
    with pytest.raises(ValueError, match="resize"):
        j_and_f(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))
    with pytest.raises(ValueError, match="expected"):
        j_and_f(None, np.zeros((1, 2, 3, 4), bool))


def test_revos_a_r_hand_values():
    gt = m([[1, 0], [0, 0]])[None]
    pred = m([[1, 1], [0, 0]])[None]
    fg = m([[1, 0], [0, 1]])[None]
    a, r = revos_accuracy_robustness(pred, gt, fg)
    assert a == pytest.approx(3 / 4)
    assert r == pytest.approx(1 - 1 / 2, abs=1e-6)
    a, r = revos_accuracy_robustness(np.ones((1, 2, 2), bool), gt, fg)  # 3 FP > 2 fg: clipped
    assert r == 0.0 and a == pytest.approx(1 / 4)


@settings(max_examples=30, deadline=None)
@given(arrays(bool, (2, 9, 7)), arrays(bool, (2, 9, 7)))
def test_j_f_properties(a, b):
    j, f, jf = j_and_f(a, b)
    j2, f2, _ = j_and_f(b, a)
    assert 0 <= j <= 1 and 0 <= f <= 1 and jf == pytest.approx((j + f) / 2)
    assert j == pytest.approx(j2) and f == pytest.approx(f2)  # symmetric
    assert j_and_f(a, a) == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------- aggregation

def test_summaries_per_expression_and_family():
    recs = [{"J": 1.0, "F": 0.5, "J&F": 0.75}, {"J": 0.0, "F": 0.5, "J&F": 0.25},
            {"J": 0.5, "F": 1.0, "J&F": 0.75}]
    s = summarize_metrics(recs)
    assert s == {"n": 3, "J": 0.5, "F": pytest.approx(2 / 3), "J&F": pytest.approx((0.5 + 2 / 3) / 2)}
    fam = summarize_by_family(recs, ["referring", "reasoning", "referring"])
    assert fam["referring"]["J"] == 0.75 and fam["reasoning"]["J"] == 0.0
    both = mean_of_families(fam)  # ReVOS overall = mean of the two family scores
    assert both["J"] == pytest.approx((0.75 + 0.0) / 2) and both["n"] == 3


def test_image_records_roundtrip():
    gts = [m([[1, 0], [0, 0]]), m([[1, 1], [0, 0]])]
    preds = [m([[1, 1], [0, 0]]), None]
    recs = [image_sample_metrics(p, g) for p, g in zip(preds, gts)]
    s = summarize_metrics(recs)
    assert (s["cIoU"], s["gIoU"]) == pytest.approx(ciou_giou(preds, gts))
    with pytest.raises(ValueError, match="mix"):
        summarize_metrics(recs + [video_sample_metrics(gts[0][None], gts[0][None])])
    assert summarize_metrics([]) == {"n": 0}


def test_video_sample_metrics_with_foreground():
    g = np.zeros((1, 4, 4), bool)
    g[0, :2] = True
    rec = video_sample_metrics(g, g, foreground=g)
    assert rec == {"J": 1.0, "F": 1.0, "J&F": 1.0, "A": 1.0, "R": 1.0}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(1, 100)), min_size=1, max_size=30),
       st.integers(0, 1000))
def test_paired_bootstrap_image_difference(rows, seed):
    """diff is exactly the cIoU difference; identical systems give 0 ± 0; se is finite and >= 0."""
    from evtp.metrics import paired_bootstrap, summarize_metrics

    a = [{"intersection": min(i, u), "union": u} for i, _, u in rows]
    b = [{"intersection": min(j, u), "union": u} for _, j, u in rows]
    d = paired_bootstrap(a, b, n_boot=200, seed=seed)
    assert d["n"] == len(rows)
    assert d["diff"] == pytest.approx(summarize_metrics(a)["cIoU"] - summarize_metrics(b)["cIoU"])
    assert d["se"] >= 0 and math.isfinite(d["se"])
    assert d["lo"] <= d["hi"] and math.isfinite(d["lo"]) and math.isfinite(d["hi"])
    same = paired_bootstrap(a, a, n_boot=200, seed=seed)
    assert same["diff"] == 0 and same["se"] == 0 and same["lo"] == same["hi"] == 0


def test_paired_bootstrap_video_and_errors():
    from evtp.metrics import paired_bootstrap

    rng = np.random.default_rng(0)
    a = [{"J": float(j), "F": float(f)} for j, f in rng.random((40, 2))]
    shifted = [{"J": r["J"] - 0.1, "F": r["F"] - 0.1} for r in a]
    d = paired_bootstrap(a, shifted, n_boot=300)
    assert d["diff"] == pytest.approx(0.1) and d["se"] < 1e-9  # a constant shift has no spread
    assert d["lo"] == pytest.approx(0.1) and d["hi"] == pytest.approx(0.1)
    noisy = [{"J": r["J"] + e, "F": r["F"]} for r, e in zip(a, rng.normal(0, 0.2, 40))]
    assert 0.005 < paired_bootstrap(a, noisy, n_boot=500)["se"] < 0.05  # about 0.1 / sqrt(40)
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap(a, a[:-1])
    with pytest.raises(ValueError, match="all be image"):
        paired_bootstrap(a, [{"intersection": 1, "union": 2}] * 40)
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap(a, a, n_boot=1)
