"""`evtp demo`: the example is chosen by its rule (the median sample), every example figure is
labelled with what it shows, and bad arguments get one-line errors before any work."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from matplotlib.text import Text

from evtp.cli.demo import main
from evtp.demo import example_demo, example_figure, example_rule, kept_cells, typical_index

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


# ----------------------------------------------------------------------------- the choice rule

@given(st.lists(finite, min_size=1, max_size=40))
def test_typical_index_is_the_median_sample(scores):
    n = len(scores)
    i = typical_index(scores)
    assert 0 <= i < n
    below = sum(s < scores[i] for s in scores)
    above = sum(s > scores[i] for s in scores)
    assert below <= (n - 1) // 2 and above <= n // 2
    if n % 2 == 1:
        assert scores[i] == float(np.median(scores))
    else:  # the lower of the two middle ones
        assert scores[i] == sorted(scores)[n // 2 - 1]


@given(st.lists(finite, min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_typical_index_does_not_depend_on_the_order(scores, rnd):
    shuffled = list(scores)
    rnd.shuffle(shuffled)
    assert shuffled[typical_index(shuffled)] == scores[typical_index(scores)]


@pytest.mark.parametrize("scores, match", [([], "non-empty"), ([[0.1, 0.2]], "1-d"),
                                           ([0.3, float("nan"), 0.1], "indices \\[1\\]"),
                                           ([float("inf")], "finite")])
def test_typical_index_rejects_bad_scores(scores, match):
    with pytest.raises(ValueError, match=match):
        typical_index(scores)


def test_example_rule_mentions_the_tie_only_for_an_even_count():
    assert "lower of the two middle" in example_rule(8, "image", "IoU", 0.2)
    odd = example_rule(9, "video", "J&F", 0.2)
    assert "lower of the two middle" not in odd
    assert "first 9 test videos" in odd and "J&F at keep 0.2 is the median" in odd


@settings(max_examples=50)
@given(st.integers(1, 3), st.integers(1, 6), st.data())
def test_kept_cells_marks_exactly_the_kept_positions(n_frames, grid, data):
    cells = [(f, r, c) for f in range(n_frames) for r in range(grid) for c in range(grid)]
    kept = data.draw(st.lists(st.integers(0, len(cells) - 1), unique=True, max_size=len(cells)))
    positions = np.array(cells)
    if n_frames == 1:
        positions = positions[:, 1:]
    got = kept_cells(positions, np.array(kept, dtype=np.int64), n_frames, grid)
    want = np.zeros((n_frames, grid, grid), bool)
    for i in kept:
        want[cells[i]] = True
    assert np.array_equal(got, want)


def test_kept_cells_rejects_positions_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(N, 2\) or \(N, 3\).*\(4, 4\)"):
        kept_cells(np.zeros((4, 4), int), np.array([0]), 1, 2)


# ------------------------------------------------------------------- figures from a tiny model

@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from evtp.models.reference import ReferenceConfig, ReferenceIVS, save_model

    cfg = ReferenceConfig(vit_dim=32, vit_layers=1, vit_heads=2, vit_mlp=64, lm_dim=32, lm_layers=1,
                          lm_heads=2, lm_mlp=64, dec_dim=8, role_layer=0, align_layers=(0, 1))
    wdir = tmp_path_factory.mktemp("tiny_weights")
    save_model(ReferenceIVS(cfg), wdir)
    return wdir


def _texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


@pytest.mark.parametrize("task", ["image", "video"])
def test_example_figure_labels_every_panel(task, tiny_weights):
    from evtp.data.synthetic import make_sample
    from evtp.demo import sample_score
    from evtp.models import load_model

    model = load_model("reference", weights=str(tiny_weights))
    sample = make_sample("test", 1, task)
    settings_ = []
    for label, keep in (("all tokens", 1.0), ("EVTP-IV, keep 0.25", 0.25)):
        pred = model.predict(sample, method="evtp", keep=keep)
        settings_.append((label, pred, sample_score(task, pred, sample)))
    lm_frames = model.lm_frame_ids(sample.frames.shape[0])
    fig = example_figure(sample, settings_, task=task, grid=model.cfg.grid, lm_frames=lm_frames,
                         caption="CAPTION: how it was chosen")
    text = _texts(fig)
    metric = "IoU" if task == "image" else "J&F"
    assert sample.instruction in text and "Reference IVS model" in text
    for label, pred, score in settings_:
        assert label in text
        assert f"{pred.tokens_kept} of {pred.tokens_total} tokens kept\n{metric} {score:.3f}" in text
    assert settings_[1][1].tokens_kept < settings_[0][1].tokens_kept
    for entry in ("ground truth", "predicted mask", "pruned token (dimmed)", "CAPTION: how it was chosen"):
        assert entry in text
    if task == "video":
        assert all(f"frame {f}" in text for f in lm_frames)
    # every panel shows its frame: one image per (setting, LM frame)
    assert len([ax for ax in fig.axes if ax.images]) == len(settings_) * len(lm_frames)


def test_example_demo_shows_the_median_sample_and_says_so(tmp_path, tiny_weights, capsys):
    from PIL import Image

    res = example_demo(tmp_path, 0.2, weights=str(tiny_weights), samples=3, repeats=1)
    text = capsys.readouterr().out
    for task, metric_key in (("image", "iou"), ("video", "jf")):
        choice = res[task]["choice"]
        assert len(choice["scores"]) == 3 and choice["index"] == typical_index(choice["scores"])
        assert choice["rank"] == 2 and choice["median"] == pytest.approx(np.median(choice["scores"]))
        # the figure's EVTP-IV panel is the run that was ranked
        assert res[task]["evtp@0.2"][metric_key] == pytest.approx(choice["scores"][choice["index"]], abs=1e-9)
        assert choice["rule"] in res[task]["caption"] and choice["rule"] in text
        assert f"#{choice['index']}, rank 2 of 3" in text
        with Image.open(res[task]["overlay"]) as im:
            assert im.size[0] > 3 * 256 and im.size[1] > 256  # panels plus title, legend and caption
    assert "first 3 test images" in text and "first 3 test videos" in text


# -------------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("argv, message", [
    (["--samples", "0"], "argument --samples: must be >= 1, got 0"),
    (["--samples", "two"], "argument --samples: 'two' is not an integer"),
    (["--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
    (["--keep", "0"], "--keep: must be a fraction in (0, 1], e.g. 0.2; got '0'"),
    (["--keep", "1.5"], "--keep: must be a fraction in (0, 1], e.g. 0.2; got '1.5'"),
    (["--keep", "nan"], "--keep: must be a fraction in (0, 1], e.g. 0.2; got 'nan'"),
    (["--keep", "51"], "--keep: must be a fraction in (0, 1], e.g. 0.2; got '51'"),
])
def test_demo_refuses_bad_arguments_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--out", str(out)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_demo_refuses_a_file_as_out(tmp_path, capsys):
    out = tmp_path / "demo.json"
    out.write_text(json.dumps({}))
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(out)])
    assert exc.value.code == 2
    assert f"--out {str(out)!r} is a file; give a folder" in capsys.readouterr().err
