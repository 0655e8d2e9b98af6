"""The selection benchmark and the demo run end to end on tiny sizes and write what they promise."""
import json

import pytest

import evtp
from evtp.cli import main as cli


def test_bench_selection_tiny(tmp_path, capsys):
    out = tmp_path / "sel.json"
    assert cli(["bench", "selection", "--n", "256", "--d", "32", "--repeats", "1", "--threads", "1",
                "--methods", "kcenter,evtp,random", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["n"] == 256 and row["k"] == 51
    assert {"floor", "divprune", "kcenter", "evtp", "random", "kcenter[fp16]", "evtp[proj256]"} <= set(row["ms"])
    assert row["kcenter_same_as_divprune"] is True
    assert row["covering_radius"]["kcenter"] > 0
    assert set(row["cpu_ms"]) == set(row["ms"]) and min(row["cpu_ms"].values()) > 0  # one thread: its CPU time
    text = capsys.readouterr().out
    assert "DivPrune procedure" in text and (tmp_path / "sel.md").exists()
    assert "Thread CPU time of the same calls" in text


def test_bench_selection_tables_without_the_kcenter_methods(tmp_path, capsys):
    """--methods without kcenter / evtp still prints its tables (their columns show a dash)."""
    out = tmp_path / "sel.json"
    assert cli(["bench", "selection", "--n", "64", "--d", "8", "--repeats", "1", "--methods", "tome",
                "--out", str(out)]) == 0
    assert "tome" in json.loads(out.read_text())["rows"][0]["ms"]
    assert "| 64 | 8 |" in capsys.readouterr().out


def test_bench_selection_rejects_unknown_method():
    with pytest.raises(SystemExit):
        cli(["bench", "selection", "--methods", "nope"])


@pytest.mark.parametrize("args, words", [
    (["--n", "0"], "argument --n: every value must be an integer >= 1, got '0'"),
    (["--d", "16,x"], "argument --d: expected comma-separated integers"),
    (["--repeats", "0"], "argument --repeats"),
    (["--device", "foo"], "--device 'foo' is not a torch device"),
    (["--device", "mps"], "only cpu and cuda"),
])
def test_bench_selection_bad_arguments_are_one_line_errors(args, words, capsys):
    with pytest.raises(SystemExit) as info:
        cli(["bench", "selection", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message when CUDA is missing")
def test_bench_selection_cuda_without_a_gpu_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli(["bench", "selection", "--device", "cuda", "--n", "256", "--d", "16"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--device cuda requested but no CUDA device is available" in err and "Traceback" not in err


def test_cli_unknown_command(capsys):
    assert cli(["frobnicate"]) == 2
    assert "bench selection" in capsys.readouterr().err


def test_demo_overlays(tmp_path):
    from evtp.demo import selection_overlays

    rows = selection_overlays(tmp_path, keep=0.1)
    assert {r["method"] for r in rows} == set(evtp.METHODS)
    assert all(r["kept"] == 26 for r in rows)
    assert (tmp_path / "overlays.png").stat().st_size > 0
    for name in evtp.METHODS:
        assert (tmp_path / f"overlay_{name}.png").exists()


def test_demo_reference_part_runs_on_a_saved_model(tmp_path):
    from evtp.demo import reference_demo
    from evtp.models.reference import ReferenceConfig, ReferenceIVS, save_model

    save_model(ReferenceIVS(ReferenceConfig()), tmp_path)
    table = reference_demo(0.2, 1, methods=("evtp", "random", "evtp[saliency_weight=4]"), weights=str(tmp_path))
    assert set(table) == {"full@1.0", "evtp@0.2", "random@0.2", "evtp[saliency_weight=4]@0.2"}
    assert table["full@1.0"]["tokens_kept"] == 256 and table["evtp@0.2"]["tokens_kept"] == 51
    assert all(0.0 <= r["ciou"] <= 1.0 for r in table.values())


def test_demo_reference_part_skips_without_weights(tmp_path):
    from evtp.demo import reference_demo

    assert reference_demo(0.2, 1, weights=str(tmp_path)) is None


def test_demo_examples_one_image_one_video(tmp_path, capsys):
    """Item 7 of the reference-model issue: one image and one video, full vs EVTP-IV at 20 %,
    instruction, IoU / J&F, tokens, speed-ups printed and overlays written."""
    from evtp.demo import example_demo
    from evtp.models.reference import ReferenceConfig, ReferenceIVS, save_model

    cfg = ReferenceConfig(vit_dim=32, vit_layers=1, vit_heads=2, vit_mlp=64, lm_dim=32, lm_layers=1,
                          lm_heads=2, lm_mlp=64, dec_dim=8, role_layer=0, align_layers=(0, 1))
    wdir = tmp_path / "w"
    save_model(ReferenceIVS(cfg), wdir)
    res = example_demo(tmp_path, 0.2, weights=str(wdir), samples=3, repeats=1)
    assert set(res) == {"image", "video"}
    n_video = len(cfg.lm_frames) * cfg.grid ** 2
    assert res["image"]["evtp@0.2"]["tokens_kept"] == 51 and res["image"]["full"]["tokens_kept"] == 256
    assert res["video"]["evtp@0.2"]["tokens_kept"] == round(0.2 * n_video)
    assert res["image"]["evtp[saliency_weight=4]@0.2"]["tokens_kept"] == 51
    assert 0 <= res["image"]["full"]["iou"] <= 1 and 0 <= res["video"]["full"]["jf"] <= 1
    assert res["image"]["full"]["speedup_mllm"] == 1.0 and res["video"]["evtp@0.2"]["speedup_mllm"] > 0
    text = capsys.readouterr().out
    assert res["image"]["instruction"] in text and res["video"]["instruction"] in text
    for task in ("image", "video"):
        png = tmp_path / f"example_{task}.png"
        assert png.stat().st_size > 0 and res[task]["overlay"] == str(png)
    assert example_demo(tmp_path, 0.2, weights=str(tmp_path / "none")) is None
