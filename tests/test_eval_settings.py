"""`evtp eval`: every setting is checked before anything is evaluated or written; broken inputs
become failed samples with their ids; a broken file every sample needs stops the run; the exit
status says what happened (0 done, 1 every sample failed, 2 bad settings, 130 interrupted)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evtp.eval.records import read_records
from evtp.cli.eval import main
from fixtures.ivs_formats import make_reasonseg, make_refcoco, make_refvos

TESTS_DIR = Path(__file__).resolve().parent
MODEL = "fixtures.tiny_ivs:make_tiny"


def _args(out, dataset="refcoco", root=None, split="val", *extra, model=MODEL, method="uniform", keep="0.5"):
    return ["--model", model, "--dataset", dataset, *(["--root", str(root)] if root else []),
            "--split", split, "--method", method, "--keep", keep, "--out", str(out), "--no-progress", *extra]


@pytest.fixture
def refcoco(tmp_path):
    make_refcoco(tmp_path / "data", "refcoco")
    return tmp_path / "data"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("evtp eval: error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


# ---------------------------------------------------------------- settings checked first

@pytest.mark.parametrize("extra, words", [
    (["--method", "evpt"], "unknown method 'evpt'; known methods: attention, dart"),
    (["--method", "evtp[spatial_weight=-1]"], "option spatial_weight=-1: must be a finite number >= 0"),
    (["--method", "evtp[precision=fp16]"], "option precision='fp16': must be one of 'float32', 'float16'"),
    (["--model", "llava-sam-tiny", "--option", "position_mode=shifted"],
     "predict option position_mode='shifted': must be one of 'original', 'contiguous'"),
    (["--model", "llava-sam-tiny", "--option", "position_mode=false"],
     "predict option position_mode=False: must be one of 'original', 'contiguous'"),
    (["--method", "evtp[saliency_weight=4"], "unbalanced brackets"),
    (["--option", "spatial_wieght=0.5"], "--option spatial_wieght: neither an option of method 'uniform'"),
    (["--option", "nokey"], "--option 'nokey': write KEY=VALUE"),
    (["--model", "fixtures.tiny_ivs:nope"], "cannot import nope from fixtures.tiny_ivs"),
    (["--model", "tiny-ivs"], "unknown model 'tiny-ivs'; known models: llava-sam-tiny"),
    (["--model", "reference", "--model-option", "device=cuda:99"], "--model-option device="),
    (["--model", "reference", "--model-option", "device=gpu"], "is not a device; give cpu, cuda"),
    (["--model", "reference", "--model-option", "dtype=int8"], "not a model dtype"),
    (["--model", "reference", "--model-option", "wieghts=x"], "model 'reference' does not take it; its "
                                                             "options: device, dtype"),
    (["--dataset-option", "bogus=1"], "unknown options: bogus"),
])
def test_a_bad_setting_stops_before_anything_is_written(refcoco, tmp_path, capsys, extra, words):
    out = tmp_path / "run"
    assert main(_args(out, "refcoco", refcoco, "val") + extra) == 2
    assert words in _error_line(capsys)
    assert not out.exists()  # no manifest, no scope, no part file


def test_the_corrected_command_runs_after_a_failed_start(refcoco, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(out, "refcoco", refcoco, "val", method="evpt")) == 2
    assert main(_args(out, "refcoco", refcoco, "val", "--option", "nope=1")) == 2
    capsys.readouterr()
    assert main(_args(out, "refcoco", refcoco, "val")) == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["ok"] == 2


def test_shipped_models_say_what_their_scores_mean_on_real_benchmarks(refcoco, tmp_path, capsys):
    assert main(_args(tmp_path / "r", "refcoco", refcoco, "val", "--limit", "1", model="reference",
                      method="evtp")) == 0
    assert "note: the reference model was trained on synthetic scenes only" in capsys.readouterr().err
    assert main(_args(tmp_path / "s", "synthetic-image", None, "val", "--limit", "1", model="reference",
                      method="evtp")) == 0
    assert "note:" not in capsys.readouterr().err


def test_cuda_without_cuda_is_refused_for_every_shipped_model(refcoco, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for model in ("reference", "llava-sam-tiny", "llava-smollm2-sam"):
        out = tmp_path / model
        assert main(_args(out, "refcoco", refcoco, "val", model=model)
                    + ["--model-option", "device=cuda"]) == 2
        assert "CUDA is not available here" in _error_line(capsys)
        assert not out.exists()


def test_device_and_dtype_reach_the_model(tmp_path):
    out = tmp_path / "run"
    assert main(_args(out, "synthetic-image", None, "val", "--limit", "1", "--model-option", "device=cpu",
                      "--model-option", "dtype=bfloat16", "--model-option", "video=false",
                      model="llava-sam-tiny", method="evtp")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_options"] == {"device": "cpu", "dtype": "bfloat16", "video": False}
    [row] = read_records(out / "samples.jsonl")[0]
    assert row["status"] == "ok" and row["tokens_total"] == 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model", ["reference", "llava-sam-tiny"])
def test_eval_on_cuda(tmp_path, model):
    out = tmp_path / model
    assert main(_args(out, "synthetic-image", None, "val", "--limit", "2", "--model-option", "device=cuda",
                      model=model, method="evtp", keep="0.2")) == 0
    rows = read_records(out / "samples.jsonl")[0]
    assert [r["status"] for r in rows] == ["ok", "ok"], rows


def test_bracketed_method_options_equal_option_flags(refcoco, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(_args(a, "refcoco", refcoco, "val", method="evtp[spatial_weight=0.5]")) == 0
    assert main(_args(b, "refcoco", refcoco, "val", "--option", "spatial_weight=0.5", method="evtp")) == 0
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert (ma["method"], ma["options"]) == (mb["method"], mb["options"]) == ("evtp", {"spatial_weight": 0.5})
    # the same settings written either way resume each other
    assert main(_args(a, "refcoco", refcoco, "val", "--option", "spatial_weight=0.5", method="evtp")) == 0
    assert main(_args(a, "refcoco", refcoco, "val", method="evtp[spatial_weight=0.5]",
                      *["--option", "spatial_weight=1"])) == 2
    assert "both set spatial_weight" in _error_line(capsys)


def test_model_predict_keywords_pass_as_options(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(out, "synthetic-image", None, "val", "--limit", "1", "--option", "position_mode=contiguous",
                      model="reference", method="evtp")) == 0
    assert json.loads((out / "manifest.json").read_text())["options"] == {"position_mode": "contiguous"}
    assert main(_args(tmp_path / "r2", "synthetic-image", None, "val", "--limit", "1", "--option",
                      "positon_mode=contiguous", model="reference", method="evtp")) == 2
    line = _error_line(capsys)
    assert "--option positon_mode: neither an option of method 'evtp'" in line
    assert "nor a keyword of ReferencePredictOptions (" in line and "position_mode" in line
    assert not (tmp_path / "r2").exists()
    # the old spelling is refused, never recorded as the string "False" and run as something else
    assert main(_args(tmp_path / "r3", "synthetic-image", None, "val", "--limit", "1", "--option",
                      "contiguous=False", model="reference", method="evtp")) == 2
    assert "--option contiguous: neither an option of method 'evtp'" in _error_line(capsys)
    assert not (tmp_path / "r3").exists()


def test_different_settings_in_run_dir_still_refused(refcoco, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(out, "refcoco", refcoco, "val", keep="0.5")) == 0
    assert main(_args(out, "refcoco", refcoco, "val", keep="0.25")) == 2
    assert "different settings (keep: 0.5 (in RUN_DIR) != 0.25)" in _error_line(capsys)


# ---------------------------------------------------------------- broken files

def test_corrupt_mask_file_stops_the_run_and_names_the_file(tmp_path, capsys):
    info = make_refvos(tmp_path / "mevis", "mevis")
    text = info["mask_path"].read_text()
    info["mask_path"].write_text(text[: len(text) // 2])  # truncated download
    out = tmp_path / "run"
    assert main(_args(out, "mevis", tmp_path / "mevis", "valid_u")) == 2
    line = _error_line(capsys)
    assert str(info["mask_path"]) in line and "is not valid JSON" in line and "truncated or corrupt" in line
    assert not out.exists()


def test_corrupt_refs_pickle_and_instances_name_the_file(refcoco, tmp_path, capsys):
    refs = refcoco / "refcoco" / "refs(unc).p"
    data = refs.read_bytes()
    refs.write_bytes(data[: len(data) // 3])
    assert main(_args(tmp_path / "a", "refcoco", refcoco, "val")) == 2
    assert f"{str(refs)!r}: cannot be unpickled" in _error_line(capsys)
    refs.write_bytes(data)
    inst = refcoco / "refcoco" / "instances.json"
    inst.write_text(inst.read_text()[:100])
    assert main(_args(tmp_path / "b", "refcoco", refcoco, "val")) == 2
    assert f"{str(inst)!r}: is not valid JSON" in _error_line(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_reasonseg_annotation_without_image_is_a_failed_sample(tmp_path):
    make_reasonseg(tmp_path / "rs")
    (tmp_path / "rs" / "val" / "b.jpg").unlink()
    out = tmp_path / "run"
    assert main(_args(out, "reasonseg", tmp_path / "rs", "val")) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["counts"]["samples"] == 3 and s["counts"]["failed"] == 1 and s["counts"]["ok"] == 2
    [f] = s["failures"]
    assert f["sample_id"] == "reasonseg/val/b" and "b.jpg' is missing" in f["error"]


def test_mevis_expression_without_anno_id_is_a_failed_sample(tmp_path):
    info = make_refvos(tmp_path / "mevis", "mevis")
    meta = json.loads(info["meta_path"].read_text())
    del meta["videos"]["vid1"]["expressions"]["2"]["anno_id"]
    meta["videos"]["vid0"]["expressions"]["1"]["anno_id"] = []
    info["meta_path"].write_text(json.dumps(meta))
    out = tmp_path / "run"
    assert main(_args(out, "mevis", tmp_path / "mevis", "valid_u")) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["counts"]["failed"] == 2 and s["counts"]["ok"] == 4 and s["metrics"]["overall"]["n"] == 4
    errors = {f["sample_id"]: f["error"] for f in s["failures"]}
    assert set(errors) == {"mevis/valid_u/vid0/1", "mevis/valid_u/vid1/2"}
    assert "expression 2 of video vid1 has no anno_id" in errors["mevis/valid_u/vid1/2"]


def test_every_sample_failing_exits_1(refcoco, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(out, "refcoco", refcoco, "val", "--model-option", 'fail_on="red"')) == 1
    assert "every one of the 2 samples failed; the first: RuntimeError" in _error_line(capsys)
    assert json.loads((out / "summary.json").read_text())["counts"]["failed"] == 2


# ---------------------------------------------------------------- command line

def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_ctrl_c_prints_a_resume_hint_and_the_same_command_resumes(refcoco, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "evtp.eval", *_args(out, "refcoco", refcoco, "val"),
           "--model-option", "delay_s=3"]
    # a job started in the background of a non-interactive shell (as CI may run the suite)
    # inherits SIGINT ignored, and Python then never installs its Ctrl-C handler: restore it
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    part = out / "parts" / "rank0.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not part.is_file():
        time.sleep(0.05)
    time.sleep(0.3)  # inside the first sample's predict
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"python -m evtp.eval: interrupted; the finished samples are kept "
                                            f"in {out}: run the same command again to resume")
    assert main(_args(out, "refcoco", refcoco, "val", "--model-option", "delay_s=3")) == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["ok"] == 2


def test_help_shows_defaults_and_choices(capsys):
    from evtp.data import DATASETS
    from evtp.models import MODELS
    from evtp.selection import METHODS

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in [*DATASETS, *MODELS, *METHODS]:
        assert name in text
    assert "(default: evtp)" in text and "(default: 0.2)" in text and "(default: 1440" in text


@pytest.mark.parametrize("argv, words", [
    (["--keep", "1.5"], "argument --keep: a ratio must lie in (0, 1]"),
    (["--keep", "x"], "argument --keep: give a ratio"),
    (["--limit", "0"], "argument --limit: must be >= 1, got 0"),
    (["--dataset", "coco"], "argument --dataset: invalid choice: 'coco'"),
    (["--dist-timeout-min", "-1"], "argument --dist-timeout-min: must be a finite number > 0"),
])
def test_bad_arguments_are_one_line_errors(refcoco, tmp_path, capsys, argv, words):
    base = {"--model": MODEL, "--dataset": "refcoco", "--root": str(refcoco), "--split": "val",
            "--out": str(tmp_path / "r"), "--keep": "0.5", "--limit": "2", "--dist-timeout-min": "5"}
    base[argv[0]] = argv[1]
    with pytest.raises(SystemExit) as e:
        main([x for kv in base.items() for x in kv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: evtp eval") and words in err[-1] and "Traceback" not in "".join(err)


def test_wrong_mask_shape_and_short_rle_list_fail_their_sample(tmp_path):
    import numpy as np

    from evtp.data import open_dataset
    from evtp.eval.run import evaluate_sample
    from evtp.models import Prediction

    info = make_refvos(tmp_path / "mevis", "mevis")
    masks = json.loads(info["mask_path"].read_text())
    masks["0"] = masks["0"][:2]  # vid0's moving box: 2 RLEs for 3 frames
    info["mask_path"].write_text(json.dumps(masks))
    reader = open_dataset("mevis", tmp_path / "mevis", "valid_u")

    class WrongShape:
        name = "wrong-shape"

        def predict(self, sample, *, method="evtp", keep=0.2, **options):
            return Prediction(masks=np.zeros((1, 4, 4), bool), tokens_kept=1, tokens_total=4)

    row = evaluate_sample(WrongShape(), reader, "mevis/valid_u/vid1/0", method="evtp", keep=0.5, options={})
    assert row["status"] == "failed" and row["stage"] == "metrics"
    assert "masks of shape (1, 4, 4); expected (T, H, W) = (3, 40, 56)" in row["error"]
    row = evaluate_sample(WrongShape(), reader, "mevis/valid_u/vid0/0", method="evtp", keep=0.5, options={})
    assert row["status"] == "failed" and row["stage"] == "load"
    assert "mevis/valid_u/vid0/0: anno_id 0 has 2 entries but the video has 3 frames" in row["error"]
