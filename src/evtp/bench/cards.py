"""What a GPU can do at most: its datasheet peaks (dense bf16 tensor throughput, memory bandwidth)
looked up by the name torch reports, and the ceilings measured on it (a large bf16 matrix product,
a large device-to-device copy). Used to put every measured time beside its bounds.

Datasheet figures are dense (without 2:4 sparsity; NVIDIA's headline bf16 numbers assume it and
are twice these). A card not in the table gets measured ceilings only.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class CardPeak:
    """Datasheet peaks of one card: ``bf16_tflops`` dense bf16 tensor TFLOP/s, ``hbm_tb_s``
    memory bandwidth in TB/s (1e12 bytes/s), ``source`` where the numbers are from."""

    card: str
    bf16_tflops: float
    hbm_tb_s: float
    source: str


_H100 = "NVIDIA H100 Tensor Core GPU datasheet (2023), bf16 tensor core figure halved (no sparsity)"
_H200 = "NVIDIA H200 Tensor Core GPU datasheet (2024), bf16 tensor core figure halved (no sparsity)"
_A100 = "NVIDIA A100 Tensor Core GPU datasheet (2021), bf16 tensor core dense figure"
# (pattern on the lower-cased torch device name, peaks); the first match wins
CARD_PEAKS: tuple[tuple[str, CardPeak], ...] = (
    (r"h200 nvl", CardPeak("H200 NVL", 835.5, 4.8, _H200)),
    (r"h200", CardPeak("H200 SXM", 989.5, 4.8, _H200)),
    (r"h100 nvl", CardPeak("H100 NVL", 835.5, 3.9, _H100)),
    (r"h100 pcie", CardPeak("H100 PCIe", 756.5, 2.0, _H100)),
    (r"h100", CardPeak("H100 SXM", 989.5, 3.35, _H100)),
    (r"a100.*80gb.*pcie|a100.*pcie.*80gb", CardPeak("A100 PCIe 80GB", 312.0, 1.935, _A100)),
    (r"a100.*80gb", CardPeak("A100 SXM 80GB", 312.0, 2.039, _A100)),
    (r"a100", CardPeak("A100 40GB", 312.0, 1.555, _A100)),
    (r"l40s", CardPeak("L40S", 362.0, 0.864, "NVIDIA L40S datasheet (2023), bf16 figure halved (no sparsity)")),
    (r"\bl4\b", CardPeak("L4", 121.0, 0.300, "NVIDIA L4 datasheet (2023), bf16 figure halved (no sparsity)")),
)


def card_peak(name: str) -> CardPeak | None:
    """Datasheet peaks for a device name as ``torch.cuda.get_device_name`` reports it
    (e.g. "NVIDIA H100 80GB HBM3"), or None for a card not in `CARD_PEAKS`."""
    low = name.lower()
    for pattern, peak in CARD_PEAKS:
        if re.search(pattern, low):
            return peak
    return None


def device_info(device: torch.device) -> dict:
    """Name, memory and software of ``device`` (cuda or cpu), with its datasheet peaks if known."""
    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    else:
        info["name"] = "cpu"
    peak = card_peak(info["name"]) if device.type == "cuda" else None
    info["peak"] = asdict(peak) if peak else None
    return info


def time_ms(fn, device: torch.device, *, warmup: int = 2, repeats: int = 10) -> list[float]:
    """Wall times (ms) of ``repeats`` calls of ``fn`` after ``warmup`` calls: CUDA events on a GPU
    (each call between two events, synchronised on the end one), perf_counter elsewhere."""
    import time

    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def measured_ceilings(device: torch.device, *, matmul_size: int = 8192, copy_bytes: int = 2**30,
                      repeats: int = 10) -> dict:
    """What this device reaches: bf16 TFLOP/s of one (size x size) @ (size x size) product and TB/s
    of a ``copy_bytes`` device-to-device copy (bytes read plus written), medians of ``repeats``."""
    import statistics

    n = int(matmul_size)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    mm_ms = statistics.median(time_ms(lambda: a @ b, device, warmup=3, repeats=repeats))
    src = torch.empty(int(copy_bytes) // 2, device=device, dtype=torch.bfloat16).fill_(1)
    dst = torch.empty_like(src)
    cp_ms = statistics.median(time_ms(lambda: dst.copy_(src), device, warmup=3, repeats=repeats))
    return {"matmul_size": n, "matmul_ms": mm_ms, "bf16_tflops": 2 * n**3 / (mm_ms * 1e-3) / 1e12,
            "copy_bytes": int(copy_bytes), "copy_ms": cp_ms,
            "copy_tb_s": 2 * src.numel() * 2 / (cp_ms * 1e-3) / 1e12}
