"""`torchrun --nproc_per_node 2 -m evtp.eval` on CPU (gloo) gives the 1-process summary."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evtp.eval.records import read_records
from evtp.cli.eval import main
from fixtures.ivs_formats import make_refvos

TESTS_DIR = Path(__file__).resolve().parent
MODEL = "fixtures.tiny_ivs:make_tiny"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(nproc, args, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), "-m", "evtp.eval", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _comparable(out):
    s = json.loads((Path(out) / "summary.json").read_text())
    return {k: s[k] for k in ("metrics", "counts", "tokens", "failures")}


def test_two_ranks_equal_one_process_and_resume_across_world_sizes(tmp_path):
    info = make_refvos(tmp_path / "revos", "revos")
    # one broken sample: the failure must be counted identically
    (info["frame_dir"] / "vid1" / "00000.jpg").write_bytes(b"not a jpeg")
    args = ["--model", MODEL, "--dataset", "revos", "--root", str(tmp_path / "revos"),
            "--split", "valid", "--method", "evtp", "--keep", "0.5", "--no-progress"]
    one = tmp_path / "one"
    assert main([*args, "--out", str(one)]) == 0

    two = tmp_path / "two"
    res = _torchrun(2, [*args, "--out", str(two)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert _comparable(two) == _comparable(one)
    rows = read_records(two / "samples.jsonl")[0]
    assert sorted({r["rank"] for r in rows}) == [0, 1]  # both ranks did work
    assert [r["sample_id"] for r in rows] == [r["sample_id"] for r in read_records(one / "samples.jsonl")[0]]

    # interrupted single-process run (3 of 6 done), finished by 2 ranks
    mixed = tmp_path / "mixed"
    assert main([*args, "--out", str(mixed), "--limit", "3"]) == 0
    res = _torchrun(2, [*args, "--out", str(mixed)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert _comparable(mixed) == _comparable(one)


def test_torchrun_bad_split_fails_cleanly_on_all_ranks(tmp_path):
    make_refvos(tmp_path / "revos", "revos")
    res = _torchrun(2, ["--model", MODEL, "--dataset", "revos", "--root", str(tmp_path / "revos"),
                        "--split", "val", "--out", str(tmp_path / "o"), "--no-progress"],
                    timeout=120)
    assert res.returncode != 0
    assert "valid splits: valid, train" in res.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
