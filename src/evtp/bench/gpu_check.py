"""`make gpu-check`: everything evtp should show on one GPU, in one run, into one report.

Parts, in order (each recorded as it finishes, so a run cut short keeps what it measured):

1. ``tests``: the GPU-marked tests (``pytest -m gpu``: CUDA selection equals CPU selection for
   every method, the compiled greedy loop, every family's tiny model pruned on CUDA in bf16 with
   SDPA, and with flash-attention where it is installed), one outcome per test;
2. ``ceilings``: the card's datasheet peaks (`evtp.bench.cards`) and what it reaches (a bf16
   matrix product, a device-to-device copy);
3. ``selection``: ``evtp bench selection`` on the device (every method against one Gram product);
4. ``prefill``: LM prefill at real sizes with random weights (`evtp.bench.prefill`), each time
   beside its compute and weight-bandwidth bounds.

``GpuCheckConfig(tiny=True)`` runs the same code with a tiny decoder, small selection sizes and
few repeats (a dry run of the runner on any device, CPU included).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evtp.bench import cards, prefill
from evtp.eval.records import write_json_atomic, write_text_atomic

PARTS = ("tests", "ceilings", "selection", "prefill")
REPO = Path(__file__).resolve().parents[3]


class NoDeviceError(RuntimeError):
    """The requested device is not there (the message says what is missing and what to do)."""


def check_device(device: str) -> torch.device:
    """``device`` as a torch device, or `NoDeviceError` naming what is missing."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise NoDeviceError(f"--device {device!r} is not a torch device; use cuda, cuda:N or cpu") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise NoDeviceError(f"no CUDA device is present (torch {torch.__version__}, {build}): gpu-check measures "
                            f"a GPU and needs one; run it on a machine with an NVIDIA GPU, or "
                            f"`--device cpu --tiny` for a dry run of the same code")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise NoDeviceError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type not in ("cuda", "cpu"):
        raise NoDeviceError(f"--device {device}: only cuda and cpu are supported")
    return dev


@dataclass(frozen=True)
class GpuCheckConfig:
    """One gpu-check run: ``parts`` of `PARTS` on ``device``, the report in ``out`` (a folder:
    report.json, report.md, and the raw selection benchmark). ``tiny``: the dry-run sizes;
    ``plan``: the prefill plan (None: the real one, or the tiny one with ``tiny``)."""

    out: Path
    device: str = "cuda"
    parts: tuple[str, ...] = PARTS
    tiny: bool = False
    tests: tuple[str, ...] = ("tests/test_gpu.py",)
    plan: prefill.PrefillPlan | None = None

    def __post_init__(self):
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise ValueError(f"--parts: unknown or no part(s) {unknown}; choose from {', '.join(PARTS)}")

    @property
    def prefill_plan(self) -> prefill.PrefillPlan:
        if self.plan is not None:
            return self.plan
        if self.tiny:
            return prefill.PrefillPlan(shape=prefill.TINY, warmup=1, repeats=2)
        return prefill.PrefillPlan()


@dataclass
class Report:
    """The report as it grows: ``info`` (device, software), one entry per part run."""

    path: Path
    info: dict
    parts: dict = field(default_factory=dict)

    def add(self, name: str, entry: dict) -> None:
        self.parts[name] = entry
        self.save()

    def save(self) -> None:
        data = {"info": self.info, "parts": self.parts}
        write_json_atomic(self.path / "report.json", data)
        write_text_atomic(self.path / "report.md", format_report(data))


def run_gpu_check(config: GpuCheckConfig) -> Report:
    """Run every part of ``config`` in order; a part that fails is recorded with its error and the
    next one still runs. Returns the report (already written to ``config.out``)."""
    dev = check_device(config.device)
    config.out.mkdir(parents=True, exist_ok=True)
    report = Report(config.out, {**cards.device_info(dev), "tiny": config.tiny, "parts": list(config.parts),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    report.save()
    ceilings = None
    for name in config.parts:
        t0 = time.perf_counter()
        try:
            if name == "tests":
                entry = run_tests(config, dev)
            elif name == "ceilings":
                ceilings = _ceilings(dev, config.tiny)
                entry = {"measured": ceilings, "peak": report.info["peak"]}
            elif name == "selection":
                entry = run_selection(config, dev)
            else:
                ceilings = ceilings or _ceilings(dev, config.tiny)
                entry = prefill.run_prefill(config.prefill_plan, dev, ceilings, report.info["peak"])
            entry["status"] = entry.get("status", "ok")
        except Exception as exc:  # recorded, and the next part still runs
            entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        report.add(name, entry)
        print(f"gpu-check: {name} {entry['status']} in {entry['seconds']} s", file=sys.stderr, flush=True)
    return report


def _ceilings(dev: torch.device, tiny: bool) -> dict:
    if tiny:
        return cards.measured_ceilings(dev, matmul_size=256, copy_bytes=2**22, repeats=3)
    return cards.measured_ceilings(dev)


def run_tests(config: GpuCheckConfig, dev: torch.device) -> dict:
    """The GPU-marked tests in a subprocess (``pytest -m gpu``); one outcome per test from its
    JUnit XML. On CPU every one of them skips (they need CUDA)."""
    xml = config.out / "tests.xml"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={xml}",
           *[str(REPO / t) for t in config.tests]]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    cases = parse_junit(xml) if xml.exists() else []
    counts = {s: sum(c["outcome"] == s for c in cases) for s in ("passed", "failed", "skipped")}
    status = "ok" if proc.returncode in (0, 5) and not counts["failed"] else "failed"
    return {"status": status, "returncode": proc.returncode, "counts": counts, "cases": cases,
            "output_tail": (proc.stdout + proc.stderr)[-4000:]}


def parse_junit(path: Path) -> list[dict]:
    """[{"test", "outcome" (passed / failed / skipped), "message", "seconds"}] from pytest's JUnit XML."""
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (el.get("message") or el.text or "")[:500]
        out.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                    "message": message, "seconds": float(case.get("time") or 0.0)})
    return out


def run_selection(config: GpuCheckConfig, dev: torch.device) -> dict:
    """``evtp bench selection`` on ``dev`` (the tiny run: one small size, one repeat)."""
    from evtp.bench.selection import SelectionBenchConfig, run_selection_bench

    sizes = dict(n=(256, 1280), d=(64,), repeats=1) if config.tiny else dict(repeats=10)
    bench = SelectionBenchConfig(device=str(dev), out=config.out / "bench_selection.json", **sizes)
    text = run_selection_bench(bench)
    return {"command": f"evtp bench selection --device {dev} --repeats {bench.repeats} "
                       f"--n {','.join(map(str, bench.n))} --d {','.join(map(str, bench.d))}",
            "tables": text}


# ------------------------------------------------------------------------------------------------
# the markdown report
# ------------------------------------------------------------------------------------------------
def format_report(data: dict) -> str:
    info, parts = data["info"], data["parts"]
    peak = info.get("peak")
    lines = [f"# gpu-check on {info['name']} ({info['device']})", "",
             f"torch {info['torch']}, CUDA {info['cuda']}" + (", **tiny dry run**" if info.get("tiny") else "")
             + f"; started {info['started']}", "",
             (f"Datasheet peaks ({peak['card']}): {peak['bf16_tflops']} bf16 TFLOP/s dense, {peak['hbm_tb_s']} TB/s "
              f"— {peak['source']}." if peak else "Card not in the datasheet table: bounds from measured ceilings only."),
             ""]
    for name in PARTS:
        if name not in parts:
            continue
        entry = parts[name]
        lines += [f"## {name}: {entry['status']} ({entry['seconds']} s)", ""]
        if entry["status"] == "failed" and "error" in entry:
            lines += ["```", entry["error"], "```", ""]
            continue
        lines += _FORMATTERS[name](entry) + [""]
    return "\n".join(lines)


def _format_tests(entry: dict) -> list[str]:
    c = entry["counts"]
    lines = [f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped (pytest exit "
             f"{entry['returncode']})", "", "| test | outcome | s | message |", "|---|---|---:|---|"]
    for case in entry["cases"]:
        msg = case["message"].replace("|", "\\|").replace("\n", " ")[:160]
        lines.append(f"| `{case['test']}` | {case['outcome']} | {case['seconds']:.1f} | {msg} |")
    return lines


def _format_ceilings(entry: dict) -> list[str]:
    m = entry["measured"]
    return [f"Measured: {m['bf16_tflops']:.0f} bf16 TFLOP/s ({m['matmul_size']}³ product, {m['matmul_ms']:.2f} ms); "
            f"{m['copy_tb_s']:.2f} TB/s device copy ({m['copy_bytes'] / 2**20:.0f} MiB read + written, "
            f"{m['copy_ms']:.2f} ms)."]


def _format_selection(entry: dict) -> list[str]:
    return [f"`{entry['command']}`", "", entry["tables"]]


def _format_prefill(entry: dict) -> list[str]:
    s = entry["shape"]
    lines = [f"Decoder: hidden {s['hidden']}, {s['layers']} layers, {s['heads']} heads, {s['kv_heads']} KV heads, "
             f"MLP {s['intermediate']}, vocab {s['vocab']}; bf16, SDPA; weights read per prefill "
             f"{entry['weight_bytes'] / 1e9:.2f} GB; visual tokens chosen by `{entry['method']}`. Bounds: compute = "
             f"FLOPs / peak, weight bandwidth = weight bytes / bandwidth, bound = the larger; 'datasheet' uses the "
             f"card's peaks, 'measured' the ceilings measured above.", "",
             "| prompt | batch | keep | tokens | prefill ms | speed-up | compute bound ms (datasheet / measured) "
             "| weight-bw bound ms (datasheet / measured) | measured / bound (datasheet, measured) "
             "| bound speed-up | selection ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    full = {(r["prompt"], r["batch"]): r for r in entry["rows"] if r["keep"] == 1.0}
    for r in entry["rows"]:
        ref = full.get((r["prompt"], r["batch"]))
        ds = r.get("bound_ms")
        bound_up = (ref.get("bound_ms", ref["bound_measured_ms"]) / (ds or r["bound_measured_ms"])) if ref else None
        lines.append(
            f"| {r['prompt']} | {r['batch']} | {r['keep']} | {r['length']} | {r['prefill_ms']:.2f} | "
            f"{_x(r['speedup'])} | {_ms(r.get('compute_bound_ms'))} / {r['compute_bound_measured_ms']:.2f} | "
            f"{_ms(r.get('bandwidth_bound_ms'))} / {r['bandwidth_bound_measured_ms']:.2f} | "
            f"{_x(r['prefill_ms'] / ds if ds else None)}, {_x(r['prefill_ms'] / r['bound_measured_ms'])} | "
            f"{_x(bound_up)} | {r['selection_ms']:.2f} |")
    return lines


def _ms(v) -> str:
    return "—" if v is None else f"{v:.2f}"


def _x(v) -> str:
    return "—" if v is None else f"{v:.2f}×"


_FORMATTERS = {"tests": _format_tests, "ceilings": _format_ceilings, "selection": _format_selection,
               "prefill": _format_prefill}
