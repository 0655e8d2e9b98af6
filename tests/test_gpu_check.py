"""`make gpu-check`'s runner on CPU: the bounds arithmetic against the real decoder, the card table,
the report (a real tiny run of the same code path), and the one-line refusal without CUDA."""
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from evtp.bench import gpu_check, prefill
from evtp.bench.cards import card_peak
from evtp.cli import gpu_check as cli

torch.set_num_threads(1)
TINY = prefill.TINY


@pytest.fixture(scope="module")
def decoder():
    # eager attention: its two L x L products are matmuls the FLOP counter sees
    return prefill.build_decoder(TINY, torch.device("cpu"), dtype=torch.float32, attn_implementation="eager")


def test_flops_and_weight_bytes_match_the_built_decoder(decoder):
    """prefill_flops(causal=False) is what torch's FLOP counter counts for one prefill, and
    weight_bytes is every parameter but the embedding, as the shape says."""
    model, lm_head = decoder
    grid = (2, 3, 4)
    visual = torch.randn(2, 24, TINY.hidden)
    text = torch.randn(2, prefill.TEXT_BEFORE + prefill.TEXT_AFTER, TINY.hidden)
    embeds, positions = prefill.prompt_inputs(visual, text, grid, None)
    with FlopCounterMode(display=False) as counter:
        prefill.prefill(model, lm_head, embeds, positions)
    assert counter.get_total_flops() == prefill.prefill_flops(TINY, 2, embeds.shape[1], causal=False)
    L = embeds.shape[1]
    assert prefill.prefill_flops(TINY, 2, L) < prefill.prefill_flops(TINY, 2, L, causal=False)
    h, kv, i = TINY.hidden, TINY.kv_dim, TINY.intermediate
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + (h + 2 * kv) + 2 * h  # weights, q/k/v biases, 2 norms
    assert prefill.weight_bytes(model, lm_head) == 4 * (TINY.layers * per_layer + h + h * TINY.vocab)


def test_pruned_prompt_keeps_original_positions():
    grid = (2, 3, 4)
    visual = torch.arange(24.0).view(1, 24, 1).expand(2, 24, 1)
    text = torch.full((2, prefill.TEXT_BEFORE + prefill.TEXT_AFTER, 1), -1.0)
    kept = torch.tensor([[0, 5, 23], [1, 2, 12]])
    embeds, pos = prefill.prompt_inputs(visual, text, grid, kept)
    T = prefill.TEXT_BEFORE
    assert embeds.shape == (2, T + 3 + prefill.TEXT_AFTER, 1)
    assert embeds[:, T:T + 3, 0].tolist() == kept.float().tolist()
    cell = prefill.grid_positions(grid)
    assert torch.equal(pos[:, 1, T:T + 3].T, T + cell[kept[1]])
    assert pos[:, 0, T + 3].tolist() == [T + 4] * 3  # one past the full grid's largest offset (w = 3)
    assert pos[:, :, :T].tolist() == [[list(range(T))] * 2] * 3


@pytest.mark.parametrize("name, card", [("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
                                        ("NVIDIA H100 NVL", "H100 NVL"), ("NVIDIA H200", "H200 SXM"),
                                        ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"),
                                        ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"), ("NVIDIA L40S", "L40S"),
                                        ("NVIDIA L4", "L4"), ("Tesla T4", None)])
def test_card_table(name, card):
    peak = card_peak(name)
    assert (peak.card if peak else None) == card


def test_tiny_run_writes_the_report_with_bounds(tmp_path, monkeypatch):
    """A real run of the runner on CPU (tiny decoder, fewer sizes): every part recorded, each
    prefill beside bounds computed from its own FLOPs and the measured ceilings; a failing part is
    recorded and the next part still runs."""
    def broken(config, dev):
        raise RuntimeError("selection broke")

    monkeypatch.setattr(gpu_check, "run_selection", broken)
    plan = prefill.PrefillPlan(shape=TINY, prompts=("image",), batches=(1, 2), keeps=(1.0, 0.2), warmup=0,
                               repeats=1)
    config = gpu_check.GpuCheckConfig(out=tmp_path, device="cpu", tiny=True, plan=plan,
                                      parts=("ceilings", "selection", "prefill"))
    gpu_check.run_gpu_check(config)
    data = json.loads((tmp_path / "report.json").read_text())
    parts = data["parts"]
    assert [parts[p]["status"] for p in ("ceilings", "selection", "prefill")] == ["ok", "failed", "ok"]
    assert parts["selection"]["error"] == "RuntimeError: selection broke"
    ceil = parts["ceilings"]["measured"]
    rows = parts["prefill"]["rows"]
    assert [(r["batch"], r["keep"], r["kept"]) for r in rows] == [(1, 1.0, 576), (1, 0.2, 115), (2, 1.0, 576),
                                                                  (2, 0.2, 115)]
    for r in rows:
        assert r["length"] == prefill.TEXT_BEFORE + r["kept"] + prefill.TEXT_AFTER
        assert r["flops"] == prefill.prefill_flops(TINY, r["batch"], r["length"])
        compute = r["flops"] / (ceil["bf16_tflops"] * 1e12) * 1e3
        bandwidth = parts["prefill"]["weight_bytes"] / (ceil["copy_tb_s"] * 1e12) * 1e3
        assert r["bound_measured_ms"] == pytest.approx(max(compute, bandwidth))
        assert r["prefill_ms"] > 0 and "bound_ms" not in r  # no datasheet peaks for a CPU
    text = (tmp_path / "report.md").read_text()
    assert "## selection: failed" in text and "RuntimeError: selection broke" in text
    assert "| image | 2 | 0.2 | 179 |" in text


def test_no_cuda_is_one_line_and_exit_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert cli.main(["--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device is present" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
