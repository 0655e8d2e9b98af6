"""`evtp bench selection`: time every selection method against the Gram-product floor and DivPrune.

For each (N, D) it times, round-robin in one run (median of repeats):
  * floor       - one full float32 Gram product X X^T: DivPrune's first-pick rule needs every pair's
                  product (kcenter / evtp compute each pair about once on one CPU thread, so there
                  they can cost less than this floor);
  * divprune    - a faithful DivPrune procedure (full N x N matrix, min over all kept rows per step);
  * every registered method at keep = 20 %;
  * fast paths of kcenter / evtp (float16 Gram, random projection), with their covering radius
    in the exact metric next to the exact selection's;
  * on CUDA, also kcenter / evtp with ``loop="compiled"`` (the greedy loop captured as one CUDA
    graph), checked to return the eager loop's selection.
With one CPU thread it also records each call's thread CPU time (the same calls; without the waits
while other processes hold the core). Token layouts: N = 256 is one 16 x 16 image; 1280 is 5 video frames of 16 x 16 (Sa2VA's video
input); 3328 is 13 tiles of 16 x 16 (Sa2VA's largest image input), tiles treated as frames.
"""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import evtp
from evtp.bench.timing import time_interleaved
from evtp.coverage import covering_radius
from evtp.eval.records import prepare_output_file, write_json_atomic, write_text_atomic
from evtp.selection.divprune_reference import divprune_select
from evtp.settings import SettingsError

SIZES_N = (256, 1280, 3328)
SIZES_D = (896, 2048, 4096)
FAST_PATHS = {"fp16": {"precision": "float16"}, "proj256": {"projection_dim": 256}}
LOOP_PATHS = {"compiled": {"loop": "compiled"}}  # timed on CUDA only (on CPU the NumPy loop is faster)


def layout(n: int) -> torch.Tensor:
    """(N, 2) or (N, 3) grid positions for the token counts above (groups of 16 x 16)."""
    if n % 256:
        side = int(n**0.5)
        r = torch.arange(n) // side
        return torch.stack([r, torch.arange(n) % side], -1)
    frames = n // 256
    t = torch.arange(n) // 256
    rc = torch.arange(n) % 256
    pos = torch.stack([t, rc // 16, rc % 16], -1)
    return pos if frames > 1 else pos[:, 1:]


def bench_size(n: int, d: int, *, methods: list[str], repeats: int, device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, d, generator=g).to(device)
    pos = layout(n).unsqueeze(0).to(device)
    scores = torch.rand(1, n, generator=g).to(device)
    k = max(1, int(n * 0.2 + 0.5))

    def run(method, **opts):
        spec = evtp.METHODS[method]
        extra = {"scores": scores} if spec.needs_scores or method in ("dpp", "dart") else {}
        return evtp.select_tokens(x, pos, 0.2, method, **extra, **opts)

    fns = {"floor": lambda: torch.bmm(x, x.transpose(1, 2)),
           "divprune": lambda: divprune_select(x[0], k)}
    for m in methods:
        fns[m] = (lambda m=m: run(m))
    for fast, opts in FAST_PATHS.items():
        for m in ("kcenter", "evtp"):
            if m in methods:
                fns[f"{m}[{fast}]"] = (lambda m=m, opts=opts: run(m, **opts))
    loop_paths = LOOP_PATHS if torch.device(device).type == "cuda" else {}
    for name, opts in loop_paths.items():
        for m in ("kcenter", "evtp"):
            if m in methods:
                fns[f"{m}[{name}]"] = (lambda m=m, opts=opts: run(m, **opts))
    # a fresh order every round: the call after the DivPrune procedure runs slower (timing.py)
    cpu_ms: dict[str, float] = {}
    ms = time_interleaved(fns, repeats=repeats, device=device, shuffle_seed=seed, cpu_ms=cpu_ms)

    row = {"n": n, "d": d, "k": k, "ms": ms}
    if torch.device(device).type == "cpu" and torch.get_num_threads() == 1:
        row["cpu_ms"] = cpu_ms  # the one thread's CPU time: the whole call's, without waits for the core
    if "kcenter" in methods:
        row["kcenter_same_as_divprune"] = bool(torch.equal(
            run("kcenter")[0].cpu(), divprune_select(x[0], k).sort().values.cpu()))
    radius = {}
    for m, metric in (("kcenter", "feature"), ("evtp", "combined")):
        if m not in methods:
            continue
        exact = covering_radius(x, run(m), pos, metric=metric).item()
        radius[m] = exact
        for fast, opts in FAST_PATHS.items():
            radius[f"{m}[{fast}]"] = covering_radius(x, run(m, **opts), pos, metric=metric).item()
    row["covering_radius"] = radius
    for name, opts in loop_paths.items():
        for m in ("kcenter", "evtp"):
            if m in methods:
                row[f"{m}[{name}]_same_as_eager"] = bool(torch.equal(run(m, **opts), run(m)))
    return row


def format_tables(rows: list[dict], methods: list[str]) -> str:
    out = ["### k-center against the floor and DivPrune's procedure (keep 20 %)", "",
           "| N | D | floor (fp32 X·Xᵀ) ms | DivPrune procedure ms | kcenter ms | kcenter / floor "
           "| DivPrune / kcenter | same selection | evtp ms | evtp / floor |",
           "|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|"]
    def cell(v, fmt):  # a method left out of --methods has no column value
        return "—" if v is None else format(v, fmt)

    for r in rows:
        ms = r["ms"]
        kc, ev, fl, dp = ms.get("kcenter"), ms.get("evtp"), ms["floor"], ms["divprune"]
        same = "—" if kc is None else ("yes" if r.get("kcenter_same_as_divprune") else "NO")
        out.append(f"| {r['n']} | {r['d']} | {fl:.1f} | {dp:.1f} | {cell(kc, '.1f')} | "
                   f"{cell(kc and kc / fl, '.2f')}× | {cell(kc and dp / kc, '.1f')}× | {same} | "
                   f"{cell(ev, '.1f')} | {cell(ev and ev / fl, '.2f')}× |")
    out += _cpu_time_table(rows)
    out += ["", "### Fast paths: time against the exact floor, covering radius against the exact selection", "",
            "| N | D | " + " | ".join(f"{m}[{f}] ms (/ floor, radius / exact)"
                                    for m in ("kcenter", "evtp") for f in FAST_PATHS) + " |",
            "|---:|---:|" + "---:|" * (2 * len(FAST_PATHS))]
    for r in rows:
        cells = []
        for m in ("kcenter", "evtp"):
            for f in FAST_PATHS:
                key = f"{m}[{f}]"
                if key not in r["ms"]:
                    cells.append("—")
                    continue
                t = r["ms"][key]
                rr = r["covering_radius"][key] / max(r["covering_radius"][m], 1e-12)
                cells.append(f"{t:.1f} ({t / r['ms']['floor']:.2f}×, {rr:.3f})")
        out.append(f"| {r['n']} | {r['d']} | " + " | ".join(cells) + " |")
    out += ["", "### Every method, median ms (keep 20 %)", "",
            "| N | D | " + " | ".join(methods) + " |", "|---:|---:|" + "---:|" * len(methods)]
    for r in rows:
        out.append(f"| {r['n']} | {r['d']} | " + " | ".join(f"{r['ms'][m]:.1f}" for m in methods) + " |")
    looped = [f"{m}[{name}]" for name in LOOP_PATHS for m in ("kcenter", "evtp")
              if rows and f"{m}[{name}]" in rows[0]["ms"]]
    if looped:
        out += ["", "### Capturable greedy loop (`loop=\"compiled\"`, one CUDA graph), median ms (keep 20 %)", "",
                "| N | D | floor ms | " + " | ".join(f"{m} ms (eager {m.split('[')[0]} ms, same selection)"
                                                  for m in looped) + " |",
                "|---:|---:|---:|" + "---:|" * len(looped)]
        for r in rows:
            cells = [f"{r['ms'][m]:.2f} ({r['ms'][m.split('[')[0]]:.2f}, "
                     f"{'yes' if r.get(m + '_same_as_eager') else 'NO'})" for m in looped]
            out.append(f"| {r['n']} | {r['d']} | {r['ms']['floor']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _cpu_time_table(rows: list[dict]) -> list[str]:
    """The same calls' thread CPU time against the floor's (one CPU thread only), or no lines."""
    timed = [r for r in rows if "cpu_ms" in r]
    if not timed:
        return []
    out = ["", "Thread CPU time of the same calls (one thread: the whole call, without the waits while other "
           "processes hold the core), median ms:", "",
           "| N | D | floor ms | kcenter ms | kcenter / floor | evtp ms | evtp / floor |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in timed:
        cpu = r["cpu_ms"]
        fl = cpu["floor"]
        cells = []
        for m in ("kcenter", "evtp"):
            t = cpu.get(m)
            cells += ["—", "—"] if t is None else [f"{t:.1f}", f"{t / fl:.3f}×"]
        out.append(f"| {r['n']} | {r['d']} | {fl:.1f} | " + " | ".join(cells) + " |")
    return out


def check_device(device: str) -> str:
    """The torch device string, or an error message naming what is missing (None when usable)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            return (f"--device {device} requested but no CUDA device is available (torch {torch.__version__}, "
                    f"{build}); run it on a machine with an NVIDIA GPU and a CUDA build of torch, or use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present"
    elif dev.type != "cpu":
        return f"--device {device}: only cpu and cuda are supported by this benchmark"
    return None


@dataclass(frozen=True)
class SelectionBenchConfig:
    """What ``evtp bench selection`` measures: every (N, D) of ``n`` x ``d``, ``methods`` (None:
    every registered one), ``repeats`` interleaved timed runs (medians), on ``device`` with
    ``threads`` torch CPU threads (None: torch's), the raw numbers written to ``out`` (JSON, after
    every size) and its tables to ``out`` with suffix ``.md``. Checked on construction."""

    n: tuple[int, ...] = SIZES_N
    d: tuple[int, ...] = SIZES_D
    methods: tuple[str, ...] | None = None
    repeats: int = 5
    threads: int | None = None
    device: str = "cpu"
    out: Path | None = None

    def __post_init__(self):
        if not self.n or not self.d or min(*self.n, *self.d) < 1 or self.repeats < 1:
            raise SettingsError("--n, --d and --repeats must be integers >= 1")
        unknown = [m for m in self.methods or () if m not in evtp.METHODS]
        if unknown:
            raise SettingsError(f"--methods: unknown method(s) {', '.join(unknown)}; known methods: "
                                f"{', '.join(sorted(evtp.METHODS))}")
        problem = check_device(self.device)
        if problem:
            raise SettingsError(problem)


def _env(device: str, load_before: str, load_after: str = "(running)") -> str:
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
            f"{platform.machine()}, device {device}, load average before/after {load_before} / {load_after}")


def run_selection_bench(config: SelectionBenchConfig) -> str:
    """Plan (check ``out`` before any work), run every size (raw JSON rewritten atomically after
    each), summarise (tables printed and written beside ``out``). Returns the tables' text."""
    out = prepare_output_file(config.out) if config.out is not None else None
    if config.threads:
        torch.set_num_threads(config.threads)
    methods = list(config.methods or sorted(evtp.METHODS))
    load_before = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    rows = []
    for n in config.n:
        for d in config.d:
            rows.append(bench_size(n, d, methods=methods, repeats=config.repeats, device=config.device))
            print(f"done N={n} D={d}", file=sys.stderr, flush=True)
            if out is not None:  # the raw numbers as they come, so nothing measured is lost
                write_json_atomic(out, {"env": _env(config.device, load_before), "repeats": config.repeats,
                                        "rows": rows})
    env = _env(config.device, load_before, ", ".join(f"{v:.1f}" for v in os.getloadavg()))
    if out is not None:
        write_json_atomic(out, {"env": env, "repeats": config.repeats, "rows": rows})
    text = (f"evtp bench selection ({env}); median of {config.repeats} interleaved repeats\n\n"
            + format_tables(rows, methods))
    print(text)
    if out is not None:
        write_text_atomic(out.with_suffix(".md"), text + "\n")
    return text
