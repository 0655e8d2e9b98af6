"""`evtp bench throughput`: batched timing of the reference model (tiny random config)."""
from __future__ import annotations

import json

import pytest
import torch

from evtp.bench.measures import COMPONENTS, mllm_ms
from evtp.bench.throughput import summarize_batch, time_batch
from evtp.cli.bench_throughput import main


class _FakeModel:
    """Records its calls; component times proportional to the batch, and 10x slower on a run that
    follows a run of another configuration (as the first run after a change of shape is)."""

    def __init__(self):
        self.calls = []

    def run(self, frames, text_ids, *, method, keep, position_mode, generator, timings, **opts):
        changed = not self.calls or self.calls[-1] != (method, keep)
        self.calls.append((method, keep))
        for i, c in enumerate(COMPONENTS):
            timings[c] = frames.shape[0] * (i + 1) * (10.0 if changed else 1.0)
        k = 8 if keep == 1.0 else 2  # kept indices, -1 padded: sample 0 keeps 2, the others 1
        kept = torch.full((frames.shape[0], k), -1)
        kept[:, :1] = 0
        kept[0, :k] = torch.arange(k)
        return {"kept": kept}


def test_time_batch_round_robin_median_per_sample():
    model = _FakeModel()
    frames = torch.zeros(4, 1, 3, 8, 8)
    configs = [(("evtp", "0.2"), "evtp", 0.2, {}), (("", "1.0"), "evtp", 1.0, {})]
    timed, tokens = time_batch(model, frames, [[1]] * 4, configs, repeats=3, warmup=1)
    # three rounds, the configurations alternating; each timed run follows an untimed one of its own
    assert model.calls == [("evtp", 0.2), ("evtp", 0.2), ("evtp", 1.0), ("evtp", 1.0)] * 3
    for key in timed:  # the slow first run after a change is not counted; per sample (batch time / 4)
        assert timed[key] == {c: float(i + 1) for i, c in enumerate(COMPONENTS)}
    # tokens kept per sample, averaged over the batch from the runs' kept indices (-1 = padding)
    assert tokens == {("evtp", "0.2"): (2 + 1 + 1 + 1) / 4, ("", "1.0"): (8 + 1 + 1 + 1) / 4}


def test_summarize_batch_speedups_against_the_shared_full_run():
    full = {"vision": 1.0, "selection": 0.0, "lm_prefill": 6.0, "decode": 2.0, "mask_decoder": 1.0, "total": 10.0}
    pruned = dict(full, selection=0.5, lm_prefill=1.5, total=6.0)
    res = summarize_batch({("", "1.0"): full, ("evtp", "0.2"): pruned}, ["evtp"], ["1.0", "0.2"], "1.0",
                          {("", "1.0"): 256.0, ("evtp", "0.2"): 51.0})
    r = res["evtp"]["0.2"]
    assert mllm_ms(pruned) == r["mllm_ms"] == 4.0
    assert r["speedup_mllm"] == pytest.approx(8.0 / 4.0) and r["speedup_total"] == pytest.approx(10 / 6)
    assert res["evtp"]["1.0"]["speedup_mllm"] == 1.0 and res["evtp"]["1.0"]["lm_share"] == 0.6
    assert r["samples_per_s"] == pytest.approx(1000 / 6) and r["tokens_kept"] == 51.0


def test_throughput_cli_contract_and_resume(tmp_path, capsys):
    out = tmp_path / "t.json"
    argv = ["--weights", "random-tiny", "--methods", "evtp,random", "--keep", "0.2,0", "--repeats", "1",
            "--threads", "1", "--out", str(out)]
    assert main(argv + ["--batch", "1,2"]) == 0
    data = json.loads(out.read_text())
    res = data["results"]
    assert set(res) == {"1", "2"} and data["header"]["keep"] == ["1.0", "0.2", "0"]  # 1.0 added
    for b in res:
        assert set(res[b]) == {"evtp", "random"}
        for m in res[b]:
            assert set(res[b][m]) == {"1.0", "0.2", "0"}
            assert res[b][m]["1.0"]["speedup_mllm"] == 1.0 and res[b][m]["1.0"]["tokens_kept"] == 256
            assert res[b][m]["0.2"]["tokens_kept"] == round(0.2 * 256) and res[b][m]["0"]["tokens_kept"] == 0
            for r in res[b][m].values():
                assert set(COMPONENTS) == set(r["timings_ms"]) and r["total_ms"] > 0
        # keep 1.0 and 0 are one run shared by every method
        assert res[b]["evtp"]["1.0"] == res[b]["random"]["1.0"] and res[b]["evtp"]["0"] == res[b]["random"]["0"]
    assert (tmp_path / "t.md").exists() and (tmp_path / "t.png").exists()
    capsys.readouterr()
    # resume: a new batch size is added, the ones present are not re-timed
    assert main(argv + ["--batch", "1,2,3"]) == 0
    printed = capsys.readouterr().out
    assert "batch 1: already in" in printed and "batch 3: done" in printed
    again = json.loads(out.read_text())["results"]
    assert again["1"] == res["1"] and set(again) == {"1", "2", "3"}
    # other settings in the same file are refused, not mixed
    with pytest.raises(SystemExit):
        main(argv[:-4] + ["--repeats", "2", "--threads", "1", "--out", str(out), "--batch", "1"])
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--batch", "0"], ["--batch", "x"], ["--keep", "2.0"], ["--methods", "nope"],
                                 ["--repeats", "0"]])
def test_throughput_cli_rejects_bad_arguments(tmp_path, capsys, bad):
    with pytest.raises(SystemExit):
        main(["--weights", "random-tiny", "--out", str(tmp_path / "x.json")] + bad)
    assert "error" in capsys.readouterr().err
