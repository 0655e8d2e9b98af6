"""`evtp eval --model sa2va` end to end on a tiny Sa2VA-InternVL checkpoint written in the released
layout (config.json with auto_map, remote-code modeling files — the stand-in of
`evtp.testing.sa2va_standin` —, model.safetensors, tokenizer and generation config), loaded with
``from_pretrained`` offline, on the image and video benchmark fixtures, pruning on and off, resume."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evtp.cli.eval import main
from evtp.eval.records import read_records
from evtp.testing.checkpoints import steer, write_not_a_checkpoint, write_sa2va_internvl
from fixtures.ivs_formats import make_refcoco, make_refvos


pytestmark = pytest.mark.usefixtures("hf_hub_offline")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ivs_data")
    make_refcoco(root / "refer", "refcoco")
    make_refvos(root / "mevis", "mevis")
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_sa2va_internvl(tmp_path_factory.mktemp("sa2va") / "Sa2VA-tiny")


def run(out, ckpt, dataset, root, split, *extra, keep="1.0", method="evtp", trust=True):
    opts = ["--model-option", f"path={ckpt}", "--model-option", "dtype=float32", "--model-option", "max_new_tokens=6"]
    if trust:
        opts += ["--model-option", "trust_remote_code=true"]
    return main(["--model", "sa2va", *opts, "--dataset", dataset, "--root", str(root), "--split", split,
                 "--method", method, "--keep", keep, "--out", str(out), "--no-progress", *extra])


def summary(out):
    return json.loads((out / "summary.json").read_text())


def test_image_benchmark_pruning_on_and_off(ckpt, data, tmp_path):
    full, pruned = tmp_path / "full", tmp_path / "pruned"
    assert run(full, ckpt, "refcoco", data / "refer", "val") == 0
    assert run(pruned, ckpt, "refcoco", data / "refer", "val", keep="0.5") == 0
    for out in (full, pruned):
        s = summary(out)
        assert s["counts"]["ok"] == s["counts"]["samples"] == 2 and s["counts"]["no_mask"] == 0
    rows_full = read_records(full / "samples.jsonl")[0]
    rows_pruned = read_records(pruned / "samples.jsonl")[0]
    # 48x64 images: InternVL's tiling picks 4x3 tiles + a thumbnail, 16 tokens each (56-px tiles)
    assert [r["tokens_total"] for r in rows_full] == [r["tokens_total"] for r in rows_pruned] == [13 * 16] * 2
    assert all(r["tokens_kept"] == r["tokens_total"] for r in rows_full)
    assert all(r["tokens_kept"] == 13 * 8 for r in rows_pruned)  # half of every tile


def test_video_benchmark_and_resume_after_a_kill(ckpt, data, tmp_path):
    """Five frames to the LLM at most (3 here, 16 tokens each), every frame to SAM2; a
    `python -m evtp.eval` killed (SIGKILL) after its first record and resumed equals an
    uninterrupted run."""
    full = tmp_path / "full"
    assert run(full, ckpt, "mevis", data / "mevis", "valid_u", "--limit", "3", keep="0.25") == 0
    s = summary(full)
    assert s["counts"]["ok"] == 3 and s["counts"]["no_mask"] == 0
    rows = read_records(full / "samples.jsonl")[0]
    assert all(r["tokens_total"] == 3 * 16 and r["tokens_kept"] == 3 * 4 for r in rows)
    killed = tmp_path / "killed"
    argv = ["--model", "sa2va", "--model-option", f"path={ckpt}", "--model-option", "trust_remote_code=true",
            "--model-option", "dtype=float32", "--model-option", "max_new_tokens=6", "--dataset", "mevis",
            "--root", str(data / "mevis"), "--split", "valid_u", "--method", "evtp", "--keep", "0.25",
            "--limit", "3", "--out", str(killed), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "evtp.eval", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    part = killed / "parts" / "rank0.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and \
            (not part.is_file() or part.read_bytes().count(b"\n") < 1):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    n_before = len(read_records(part)[0])
    assert 1 <= n_before < 3, "the kill should land mid-run"
    assert main(argv) == 0
    assert summary(killed)["metrics"] == s["metrics"] and summary(killed)["counts"] == s["counts"]
    assert [r["sample_id"] for r in read_records(killed / "samples.jsonl")[0]] == [r["sample_id"] for r in rows]


def test_no_seg_token_is_an_empty_mask(ckpt, data, tmp_path):
    ckpt = steer(shutil.copytree(ckpt, tmp_path / "silent"), "sure it is .")
    out = tmp_path / "run"
    assert run(out, ckpt, "refcoco", data / "refer", "val", keep="0.5") == 0
    s = summary(out)
    assert s["counts"]["ok"] == 2 and s["counts"]["no_mask"] == 2 and s["metrics"]["overall"]["cIoU"] == 0.0
    assert read_records(out / "samples.jsonl")[0][0]["tokens_kept"] == 13 * 8


def test_bad_checkpoints_are_refused_before_any_sample(ckpt, data, tmp_path, capsys):
    cases = [
        (dict(ckpt=tmp_path / "nowhere"), "no such folder; expected a Sa2VA checkpoint"),
        (dict(ckpt=write_not_a_checkpoint(tmp_path / "bert")), "a BertModel checkpoint; expected a Sa2VA checkpoint"),
        (dict(ckpt=ckpt, trust=False), "allow it with --model-option trust_remote_code=true"),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((dict(ckpt=tmp_path / "empty"), "the folder has no config.json"))
    for i, (kw, message) in enumerate(cases):
        out = tmp_path / f"r{i}"
        assert run(out, kw["ckpt"], "refcoco", data / "refer", "val", trust=kw.get("trust", True)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and str(kw["ckpt"]) in err[0], err
        assert not out.exists() or not any(out.iterdir())


def test_a_missing_path_names_the_option():
    from evtp.models.checkpoint import CheckpointError
    from evtp.models.sa2va import load_sa2va

    with pytest.raises(CheckpointError, match=r"^path: not given; expected a Sa2VA checkpoint"):
        load_sa2va(trust_remote_code=True)


def test_a_hub_id_is_checked_through_the_hub(ckpt, monkeypatch):
    """``org/name`` resolves its config.json with huggingface_hub (the local cache offline); one
    that cannot be fetched is one line."""
    import huggingface_hub

    from evtp.models.checkpoint import CheckpointError
    from evtp.models.sa2va import check_sa2va

    def download(repo, filename, **kwargs):
        if repo == "ByteDance/Sa2VA-4B" and filename == "config.json":
            return str(ckpt / "config.json")
        raise OSError(f"{repo}/{filename} is not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert check_sa2va("ByteDance/Sa2VA-4B", True) == ("ByteDance/Sa2VA-4B", "InternVL")
    with pytest.raises(CheckpointError, match=r"^path='ByteDance/Sa2VA-404': not a local folder, and its "
                                              r"config.json cannot be fetched from the Hugging Face hub \(OSError\)"):
        check_sa2va("ByteDance/Sa2VA-404", True)


def test_masks_come_from_the_checkpoint(ckpt, data):
    """The pipeline returns Sa2VA's own masks at the frame size, one per frame."""
    from evtp.data import open_dataset
    from evtp.models.sa2va import load_sa2va

    model = load_sa2va(path=str(ckpt), trust_remote_code=True, dtype="float32", max_new_tokens=6)
    sample = next(iter(open_dataset("mevis", data / "mevis", "valid_u")))
    pred = model.predict(sample, method="uniform", keep=0.5)
    T, H, W = np.asarray(sample.frames).shape[:3]
    assert pred.masks.shape == (T, H, W) and pred.masks.dtype == bool
    assert "[SEG]" in pred.extra["prediction"] and pred.extra["n_masks"] == 1
    # keep=1.0 (pruning off) returns what the checkpoint's own predict_forward returns unpatched
    from evtp.models.sa2va import _pil_frames, prompt_for

    full = model.predict(sample, method="evtp", keep=1.0)
    own = model.model.predict_forward(video=_pil_frames(np.asarray(sample.frames)), text=prompt_for(sample),
                                      tokenizer=model.tokenizer)
    assert full.extra["prediction"] == own["prediction"] and np.array_equal(full.masks, own["prediction_masks"][0])
    assert full.tokens_kept == full.tokens_total == pred.tokens_total == 2 * pred.tokens_kept
