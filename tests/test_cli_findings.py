"""What a new user hit on the command line, each fixed: a run whose samples all failed on a budget
above the model's token count does not block the corrected command; options and output paths
that cannot work end in one line naming the flag before any work; `--help` of the groups and the
benchmarks reads right; the demo says what its timings are."""
import json

import pytest

from evtp.cli import main as cli
from evtp.cli.eval import main as eval_main
from fixtures.ivs_formats import make_reasonseg, make_refcoco

MODEL = "fixtures.tiny_ivs:make_tiny"


def _eval(out, *extra, dataset="refcoco", root=None, keep="0.5"):
    return ["--model", MODEL, "--dataset", dataset, *(["--root", str(root)] if root else []), "--split", "val",
            "--method", "uniform", "--keep", keep, "--out", str(out), "--no-progress", *extra]


def _last_error(capsys, prog="evtp eval") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"{prog}: error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


# ---------------------------------------------------------------- evtp eval

def test_a_budget_above_the_token_count_does_not_block_the_corrected_command(tmp_path, capsys):
    make_refcoco(tmp_path / "d", "refcoco")
    out = tmp_path / "run"
    # the tiny model sees 6 x 8 = 48 patch tokens per image: 300 fails every sample
    assert eval_main(_eval(out, root=tmp_path / "d", keep="300")) == 1
    assert "every one of the 2 samples failed" in _last_error(capsys)
    assert eval_main(_eval(out, root=tmp_path / "d", keep="20")) == 0
    assert "samples all failed (keep: 300 (in RUN_DIR) != 20); it is replaced" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["ok"] == 2 and summary["counts"]["failed"] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["keep"] == 20
    # a run that scored samples stays protected: other settings are still refused
    assert eval_main(_eval(out, root=tmp_path / "d", keep="10")) == 2
    assert "holds a run with different settings (keep: 20 (in RUN_DIR) != 10)" in _last_error(capsys)


@pytest.mark.parametrize("extra, words", [
    (["--dataset-option", "n=abc"], "--dataset-option"),
    (["--root", "/nonexistent"], "--root '/nonexistent': dataset 'synthetic-image' is generated"),
    (["--model-option", "threads=0"], "--model-option threads=0: give an integer >= 1"),
])
def test_options_that_cannot_work_name_their_flag_before_any_work(tmp_path, capsys, extra, words):
    out = tmp_path / "run"
    argv = ["--model", "reference", "--dataset", "synthetic-image", "--split", "val", "--out", str(out),
            "--no-progress", *extra]
    assert eval_main(argv) == 2
    line = _last_error(capsys)
    assert words in line
    if extra[0] == "--dataset-option":
        assert "n" in line and "'abc'" in line
    assert not out.exists()


def test_an_out_that_cannot_be_written_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert eval_main(["--model", MODEL, "--dataset", "synthetic-image", "--split", "val", "--limit", "1",
                      "--out", str(blocker / "run"), "--no-progress"]) == 2
    assert f"{str(blocker)!r} is a file, not a folder" in _last_error(capsys)


# ---------------------------------------------------------------- ReasonSeg empty targets

def test_reasonseg_empty_shapes_is_an_empty_target_and_missing_shapes_fails(tmp_path):
    from evtp.data import open_dataset

    make_reasonseg(tmp_path)
    for stem, anno in (("a", {"shapes": []}), ("c", {"shapes": None})):
        path = tmp_path / "val" / f"{stem}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **anno}))
    ds = open_dataset("reasonseg", tmp_path, "val")
    sample = ds.load("reasonseg/val/a")  # LISA's get_mask_from_json: an all-zero target, scored
    assert not sample.gt_masks.any() and sample.meta["empty_target"] is True
    assert ds.load("reasonseg/val/b").meta["empty_target"] is False
    with pytest.raises(ValueError, match="has no 'shapes' list"):
        ds.load("reasonseg/val/c")


# ---------------------------------------------------------------- --out of the benchmarks and the demo

def test_bench_selection_creates_a_missing_parent_and_refuses_a_folder(tmp_path, capsys):
    out = tmp_path / "missing" / "deeper" / "bench.json"
    assert cli(["bench", "selection", "--n", "16", "--d", "4", "--repeats", "1", "--methods", "random",
                "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["n"] == 16 and out.with_suffix(".md").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # before any work: no "done N=" line
        cli(["bench", "selection", "--n", "16", "--d", "4", "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{str(tmp_path)!r} is a folder; give a file name" in err and "done N=" not in err


@pytest.mark.parametrize("command", [["bench", "throughput"], ["bench", "transformers"], ["bench", "vllm"]])
def test_benchmarks_refuse_a_folder_as_out(tmp_path, capsys, command):
    with pytest.raises(SystemExit) as info:
        cli([*command, "--out", str(tmp_path)])
    assert info.value.code == 2 and "is a folder; give a file name" in capsys.readouterr().err


def test_demo_out_that_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as info:
        cli(["demo", "--out", str(blocker / "x")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("evtp demo: error: --out") and "cannot create folder" in err[-1]


# ---------------------------------------------------------------- --help

def test_group_help_exits_0_and_lists_its_commands(capsys):
    assert cli(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: evtp bench <command>")
    assert all(f"bench {name}" in out for name in ("selection", "reference", "throughput", "transformers", "vllm"))


def test_benchmark_help_says_each_thing_once(capsys):
    with pytest.raises(SystemExit):
        cli(["bench", "vllm", "--help"])
    out = capsys.readouterr().out
    assert out.count("offline serving cost of a random") == 1 and "in one in-process vLLM engine" in out
    with pytest.raises(SystemExit):
        cli(["bench", "selection", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: every registered method)" in text and "(default: None)" not in text
    assert "--repeats REPEATS timed runs of every method, interleaved; medians are reported (default: 5)" in text


# ---------------------------------------------------------------- demo timings

def test_demo_times_are_interleaved_medians_and_labelled():
    from evtp.demo import _interleaved_runs, timing_caveat

    calls = []

    class Model:
        def predict(self, sample, *, method, keep, **opts):
            calls.append(keep)
            return keep

    runs = _interleaved_runs(Model(), None, [("full", "", 1.0, {}), ("pruned", "", 0.2, {})], repeats=3)
    assert calls == [1.0, 0.2] * 4  # one untimed round, then 3 rounds alternating the settings
    assert runs == {"full": [1.0] * 3, "pruned": [0.2] * 3}
    assert "medians of 3 interleaved runs" in timing_caveat(3) and "noisy" in timing_caveat(3)
    assert "single-shot" in timing_caveat(1)


def test_help_shows_a_zero_default_and_never_a_default_twice():
    from evtp.cli.args import non_negative_int, parser

    ap = parser("evtp x", "x: a command.")
    ap.add_argument("--zero", type=non_negative_int, default=0, help="a count")
    ap.add_argument("--named", default="a", help="a name (default: the first)")
    ap.add_argument("--flag", action="store_true", help="a switch")
    text = " ".join(ap.format_help().split())
    assert "--zero ZERO a count (default: 0)" in text
    assert "(default: the first)" in text and "(default: a)" not in text and "(default: False)" not in text
