"""`evtp eval`: records, summaries, bad input, resume after interruption (incl. a real kill)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evtp.data import open_dataset
from evtp.eval.records import RecordWriter, read_records, repair_tail
from evtp.cli.eval import main
from evtp.settings import parse_keep
from evtp.metrics import ciou_giou, j_and_f
from fixtures.ivs_formats import make_reasonseg, make_refcoco, make_refvos, rle_json
from fixtures.tiny_ivs import TinyIVS

TESTS_DIR = Path(__file__).resolve().parent
MODEL = "fixtures.tiny_ivs:make_tiny"


def run_eval(out, dataset, root, split, *extra, keep="1.0", method="uniform"):
    argv = ["--model", MODEL, "--dataset", dataset, "--root", str(root), "--split", split,
            "--method", method, "--keep", keep, "--out", str(out), "--no-progress", *extra]
    return main(argv)


def load_summary(out):
    return json.loads((Path(out) / "summary.json").read_text())


def comparable(summary):
    return {"metrics": summary["metrics"], "counts": summary["counts"], "tokens": summary["tokens"],
            "failures": summary["failures"]}


@pytest.fixture
def refcoco(tmp_path):
    make_refcoco(tmp_path / "data", "refcoco")
    return tmp_path / "data"


@pytest.fixture
def mevis(tmp_path):
    info = make_refvos(tmp_path / "mevis", "mevis")
    return tmp_path / "mevis", info


# ---------------------------------------------------------------- records

def test_record_writer_survives_torn_tail(tmp_path):
    p = tmp_path / "r.jsonl"
    with RecordWriter(p) as w:
        w.write({"sample_id": "a", "x": 1})
        w.write({"sample_id": "b", "x": float("nan")})  # non-finite -> null, never invalid JSON
    with open(p, "ab") as fh:
        fh.write(b'{"sample_id": "c", "x"')  # a kill in the middle of a write
    rows, dropped = read_records(p)
    assert [r["sample_id"] for r in rows] == ["a", "b"] and dropped == 1 and rows[1]["x"] is None
    with RecordWriter(p) as w:  # appending first truncates the torn tail
        w.write({"sample_id": "c", "x": 3})
    rows, dropped = read_records(p)
    assert [r["sample_id"] for r in rows] == ["a", "b", "c"] and dropped == 0
    assert repair_tail(p) == 0


def test_parse_keep():
    assert parse_keep("0.2") == 0.2 and isinstance(parse_keep("64"), int)
    assert parse_keep("1.0") == 1.0 and parse_keep("1") == 1
    for bad in ("0", "1.5", "x", "-3"):
        with pytest.raises(Exception):
            parse_keep(bad)


# ---------------------------------------------------------------- image runs

def test_refcoco_run_matches_direct_metrics(refcoco, tmp_path):
    out = tmp_path / "run"
    assert run_eval(out, "refcoco", refcoco, "val", keep="0.5", method="evtp") == 0
    rows, _ = read_records(out / "samples.jsonl")
    ds = open_dataset("refcoco", refcoco, "val")
    assert [r["sample_id"] for r in rows] == ds.ids()
    # recompute independently through the model and the public metric
    model = TinyIVS()
    preds, gts = [], []
    for s in ds:
        p = model.predict(s, method="evtp", keep=0.5)
        preds.append(None if p.masks is None else p.masks[0])
        gts.append(s.gt_masks[0])
    ciou, giou = ciou_giou(preds, gts)
    summ = load_summary(out)
    assert summ["metrics"]["overall"]["cIoU"] == pytest.approx(ciou)
    assert summ["metrics"]["overall"]["gIoU"] == pytest.approx(giou)
    assert summ["counts"] == {"samples": 2, "done": 2, "ok": 2, "failed": 0, "pending": 0,
                              "scored": 2, "no_mask": 0, "no_ground_truth": 0}
    assert 0 < summ["tokens"]["mean_ratio"] <= 0.55
    r = rows[0]
    assert r["status"] == "ok" and r["meta"]["ann_id"] == 1000 and r["tokens_kept"] < r["tokens_total"]
    assert {"eval_load", "eval_predict", "selection"} <= set(r["timings_ms"])
    assert "| overall | 2 |" in (out / "summary.md").read_text()
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "per_sample_hist.png", "scores_by_family.png", "timings.png"]


def test_full_budget_finds_the_objects(refcoco, tmp_path):
    assert run_eval(tmp_path / "run", "refcoco", refcoco, "val", keep="1.0") == 0
    m = load_summary(tmp_path / "run")["metrics"]["overall"]
    assert m["cIoU"] > 0.9 and m["gIoU"] > 0.9  # red threshold recovers the red boxes


def test_no_mask_counts_as_empty(refcoco, tmp_path):
    out = tmp_path / "run"
    assert run_eval(out, "refcoco", refcoco, "val", "--model-option", "threshold=255") == 0
    s = load_summary(out)
    assert s["counts"]["no_mask"] == 2 and s["metrics"]["overall"]["cIoU"] == 0.0


def test_reasonseg_uses_ignore_and_families(tmp_path):
    make_reasonseg(tmp_path / "rs")
    out = tmp_path / "run"
    assert run_eval(out, "reasonseg", tmp_path / "rs", "val") == 0
    s = load_summary(out)
    assert set(s["metrics"]["families"]) == {"long", "short"}
    assert s["metrics"]["overall"]["n"] == 3


# ---------------------------------------------------------------- video runs

def test_mevis_run_matches_direct_j_and_f(mevis, tmp_path):
    root, info = mevis
    out = tmp_path / "run"
    assert run_eval(out, "mevis", root, "valid_u", keep="0.5", method="evtp") == 0
    ds = open_dataset("mevis", root, "valid_u")
    model = TinyIVS()
    js, fs = [], []
    for s in ds:
        j, f, _ = j_and_f(model.predict(s, method="evtp", keep=0.5).masks, s.gt_masks)
        js.append(j)
        fs.append(f)
    m = load_summary(out)["metrics"]["overall"]
    assert m["J"] == pytest.approx(np.mean(js)) and m["F"] == pytest.approx(np.mean(fs))
    assert m["J&F"] == pytest.approx((np.mean(js) + np.mean(fs)) / 2) and m["n"] == 6


def test_revos_overall_is_mean_of_families_with_a_and_r(tmp_path):
    make_refvos(tmp_path / "revos", "revos")
    out = tmp_path / "run"
    assert run_eval(out, "revos", tmp_path / "revos", "valid") == 0
    m = load_summary(out)["metrics"]
    fam = m["families"]
    assert set(fam) == {"referring", "reasoning"}
    for key in ("J", "F", "J&F", "A", "R"):
        assert m["overall"][key] == pytest.approx((fam["referring"][key] + fam["reasoning"][key]) / 2)
    assert "all_expressions" in m
    assert "mean of families" in (out / "summary.md").read_text()


# ---------------------------------------------------------------- bad input

def test_bad_inputs_fail_their_sample_and_the_run_goes_on(mevis, tmp_path):
    root, info = mevis
    frame_dir = info["frame_dir"]
    (frame_dir / "vid0" / "00002.jpg").write_bytes(b"\xff\xd8 corrupt")  # corrupt JPEG in vid0
    masks = json.loads(info["mask_path"].read_text())
    masks["3"][2] = rle_json(np.ones((7, 9), bool))  # size mismatch: vid1 exp 1 and 2
    info["mask_path"].write_text(json.dumps(masks))
    out = tmp_path / "run"
    assert run_eval(out, "mevis", root, "valid_u") == 0
    s = load_summary(out)
    assert s["counts"]["failed"] == 5 and s["counts"]["ok"] == 1 and s["counts"]["pending"] == 0
    errors = {f["sample_id"]: f["error"] for f in s["failures"]}
    assert "cannot decode image" in errors["mevis/valid_u/vid0/0"]
    assert "mevis/valid_u/vid0/0" in errors["mevis/valid_u/vid0/0"]
    assert "7x9 but the frame is 40x56" in errors["mevis/valid_u/vid1/1"]
    assert "Failures (5)" in (out / "summary.md").read_text()
    assert s["metrics"]["overall"]["n"] == 1
    # fix the data, retry only the failed samples
    make_refvos(root, "mevis")
    assert run_eval(out, "mevis", root, "valid_u", "--retry-failed") == 0
    s = load_summary(out)
    assert s["counts"]["failed"] == 0 and s["counts"]["ok"] == 6
    assert len(read_records(out / "samples.jsonl")[0]) == 6


def test_model_failure_and_missing_file_are_recorded(refcoco, tmp_path):
    (refcoco / "images/mscoco/images/train2014/COCO_train2014_000000000100.jpg").unlink()
    out = tmp_path / "run"
    assert run_eval(out, "refcoco", refcoco, "val") == 1  # every sample failed: exit status 1
    rows = {r["sample_id"]: r for r in read_records(out / "samples.jsonl")[0]}
    assert all(r["status"] == "failed" and r["stage"] == "load" and "is missing" in r["error"]
               for r in rows.values())
    out2 = tmp_path / "run2"
    make_refcoco(refcoco, "refcoco")
    assert run_eval(out2, "refcoco", refcoco, "val", "--model-option", 'fail_on="0 1"') == 0
    failed = [f for f in load_summary(out2)["failures"]]
    assert len(failed) == 1 and "TinyIVS refuses" in failed[0]["error"]


def test_unknown_split_and_bad_settings(refcoco, tmp_path, capsys):
    assert run_eval(tmp_path / "r", "refcoco", refcoco, "testC") == 2
    err = capsys.readouterr().err
    assert "unknown split 'testC'" in err and "valid splits: val, testA, testB" in err
    assert main(["--model", "nope", "--dataset", "refcoco", "--root", str(refcoco), "--split",
                 "val", "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "known models:" in err and "reference" in err
    assert main(["--model", "json:dumps", "--dataset", "refcoco", "--root", str(refcoco),
                 "--split", "val", "--out", str(tmp_path / "r3"), "--no-progress",
                 "--model-option", "obj=1"]) == 2
    assert "does not follow evtp.models.IVSModel" in capsys.readouterr().err
    out = tmp_path / "r4"
    assert run_eval(out, "refcoco", refcoco, "val", keep="0.5") == 0
    assert run_eval(out, "refcoco", refcoco, "val", keep="0.25") == 2
    assert "different settings (keep: 0.5 (in RUN_DIR) != 0.25)" in capsys.readouterr().err


def test_cli_routes_eval(refcoco, tmp_path):
    from evtp.cli import main as cli_main

    rc = cli_main(["eval", "--model", MODEL, "--dataset", "refcoco", "--root", str(refcoco),
                   "--split", "val", "--method", "uniform", "--keep", "0.5",
                   "--out", str(tmp_path / "r"), "--no-progress"])
    assert rc == 0 and (tmp_path / "r" / "summary.json").is_file()


# ---------------------------------------------------------------- resume

def test_resume_after_limit_and_torn_line_equals_uninterrupted(mevis, tmp_path):
    root, _ = mevis
    full = tmp_path / "full"
    assert run_eval(full, "mevis", root, "valid_u", keep="0.5", method="evtp") == 0
    part = tmp_path / "part"
    # interrupted after 4 samples: records left in a part file plus a torn 5th line
    assert run_eval(part, "mevis", root, "valid_u", "--limit", "4", keep="0.5", method="evtp") == 0
    assert load_summary(part)["counts"]["samples"] == 4
    lines = (part / "samples.jsonl").read_bytes()
    (part / "samples.jsonl").unlink()
    fifth = (full / "samples.jsonl").read_bytes().split(b"\n")[4]
    (part / "parts").mkdir(exist_ok=True)
    (part / "parts" / "rank0.jsonl").write_bytes(lines + fifth[: len(fifth) // 2])
    assert run_eval(part, "mevis", root, "valid_u", keep="0.5", method="evtp") == 0
    assert comparable(load_summary(part)) == comparable(load_summary(full))
    rows, dropped = read_records(part / "samples.jsonl")
    assert dropped == 0 and [r["sample_id"] for r in rows] == \
        [r["sample_id"] for r in read_records(full / "samples.jsonl")[0]]
    assert not list((part / "parts").glob("*.jsonl"))
    # a second restart has nothing left to do and changes nothing
    assert run_eval(part, "mevis", root, "valid_u", keep="0.5", method="evtp") == 0
    assert comparable(load_summary(part)) == comparable(load_summary(full))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_real_kill_then_resume_equals_uninterrupted(mevis, tmp_path):
    """SIGKILL a running `python -m evtp.eval` mid-run, resume, compare with a clean run."""
    root, _ = mevis  # 6 expressions
    args = ["--model", MODEL, "--dataset", "mevis", "--root", str(root), "--split", "valid_u",
            "--method", "uniform", "--keep", "0.5", "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "evtp.eval", *args, "--out", str(killed),
                             "--model-option", "delay_s=0.3"], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    part = killed / "parts" / "rank0.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not part.is_file() or part.read_bytes().count(b"\n") < 1):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    n_before = len(read_records(part)[0])
    assert 1 <= n_before < 6, "the kill should land mid-run"
    assert not (killed / "summary.json").exists()
    assert main([*args, "--out", str(killed), "--model-option", "delay_s=0.3"]) == 0
    clean = tmp_path / "clean"
    assert main([*args, "--out", str(clean), "--model-option", "delay_s=0.3"]) == 0
    assert comparable(load_summary(killed)) == comparable(load_summary(clean))
