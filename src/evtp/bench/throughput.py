"""`evtp bench throughput`: batched inference time of the reference model, per method and keep ratio.

`evtp bench reference` times one sample at a time (batch 1, latency). A model this small is
*overhead-bound* at batch 1 on a CPU: a 6-layer LM spends ~3 ms per forward whatever the number
of tokens, so cutting 80 % of the tokens cannot cut 80 % of the time. Real IVS models (a 7B LM
reading 1,000+ tokens) are *compute-bound*. Batching moves the small model into that regime: the
fixed per-call costs are shared by the batch, and what is left per sample scales with the tokens.
This benchmark measures both regimes side by side, so that a speed-up can be read for what it is.

For every batch size B (``--batch 1,4,16``) it runs ``ReferenceIVS.run`` on the split's first B
samples with every (method, keep) configuration, round-robin (every configuration sees the same
machine load; ratios are side-by-side measurements), ``--repeats`` times, each timed run right
after an untimed run of the same configuration (`time_batch`), and reports per-sample medians
(batch time / B) of every component (vision, selection, LM prefill, decode, mask decoder, total)
and the MLLM part (selection + LM prefill + decode), plus speed-ups against the full-token run at
the same B. Writes ``--out`` (JSON: ``{"header": ..., "results":
{B: {method: {keep: {...}}}}}``, updated after every batch size; a re-run with the same arguments
skips the batch sizes it already has), ``<out stem>.md`` and ``<out stem>.png`` (speed-up vs batch).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from evtp.bench.measures import COMPONENTS, method_free, mllm_ms
from evtp.pruning import resolve_budget
from evtp.bench.models import load_bench_model, weights_digest
from evtp.bench.timing import sync
from evtp.eval.records import prepare_output_file, write_json_atomic, write_text_atomic
from evtp.settings import MethodSetting, SettingsError


def time_batch(model, frames: torch.Tensor, text_ids: list[list[int]], configs: list[tuple],
               repeats: int, warmup: int = 1,
               contiguous: bool = False) -> tuple[dict[tuple, dict[str, float]], dict[tuple, float]]:
    """Per-sample median component times (ms) of ``model.run`` on one batch, per configuration.

    configs: (key, method, keep, options) tuples. Each of ``repeats`` rounds visits every
    configuration in turn (round-robin: all of them see the same machine load) and runs it
    ``warmup`` times untimed, then once timed. The untimed runs matter: right after a run of
    another shape the first run is slower (measured: a full-token batch of 16 images spent 13.9
    instead of 11.5 ms per image in the LM after a pruned run), and a server repeats one
    configuration. frames (B, T, 3, S, S). Returns ({key: {component: ms / B}}, {key: mean
    visual tokens kept per sample}), the latter read from the last timed run's ``kept``.
    """
    B = frames.shape[0]
    runs: dict[tuple, list[dict]] = {key: [] for key, _, _, _ in configs}
    tokens: dict[tuple, float] = {}
    for r in range(repeats):
        for key, name, keep, opts in configs:
            for _ in range(warmup + 1):
                tm: dict[str, float] = {}
                sync()
                gen = torch.Generator().manual_seed(r)
                out = model.run(frames, text_ids, method=name, keep=keep,
                                position_mode="contiguous" if contiguous else "original",
                                generator=gen, timings=tm, **opts)
                sync()
            runs[key].append(tm)
            tokens[key] = float((out["kept"] >= 0).sum(1).float().mean())
    timed = {key: {c: statistics.median(t[c] for t in ts) / B for c in COMPONENTS} for key, ts in runs.items()}
    return timed, tokens


def summarize_batch(timed: dict[tuple, dict], methods: list[str], keeps: list[str], full_ks: str,
                    tokens: dict[tuple, float]) -> dict:
    """{method: {keep: {timings_ms, mllm_ms, total_ms, samples_per_s, tokens_kept, lm_share,
    speedup_mllm, speedup_total}}} from `time_batch`'s timings, keyed (method, keep) or, for the
    runs every method shares (keep 0 and 1.0), ("", keep); speed-ups against the full-token run
    (``full_ks``, the keep as typed, e.g. "1.0")."""
    out: dict = {}
    for m in methods:
        per = out.setdefault(m, {})
        for ks in keeps:
            key = (m, ks) if (m, ks) in timed else ("", ks)
            tm = timed[key]
            per[ks] = {"timings_ms": tm, "mllm_ms": mllm_ms(tm), "total_ms": tm["total"],
                       "samples_per_s": 1000.0 / tm["total"], "tokens_kept": tokens[key],
                       "lm_share": tm["lm_prefill"] / tm["total"]}
        base = per[full_ks]
        for r in per.values():
            r["speedup_mllm"] = base["mllm_ms"] / r["mllm_ms"]
            r["speedup_total"] = base["total_ms"] / r["total_ms"]
    return out


def write_table(results: dict, path: Path, command: str, task: str) -> None:
    cols = ("vision", "selection", "lm_prefill", "decode", "mask_decoder")
    lines = [f"Command: `{command}`", "",
             f"Per-sample milliseconds ({task}): batch time / batch size, median of repeats; speed-ups "
             "against the full-token run at the same batch size.", "",
             "| batch | method | keep | tokens | " + " | ".join(f"{c} ms" for c in cols)
             + " | MLLM ms | total ms | samples/s | LM share | MLLM speed-up | total speed-up |",
             "|" + "---|" * (len(cols) + 10)]
    for b, per_m in results.items():
        for m, per in per_m.items():
            for ks, r in per.items():
                tm = r["timings_ms"]
                lines.append(f"| {b} | {m} | {ks} | {r['tokens_kept']:.0f} | "
                             + " | ".join(f"{tm[c]:.2f}" for c in cols)
                             + f" | {r['mllm_ms']:.2f} | {r['total_ms']:.2f} | {r['samples_per_s']:.1f}"
                             f" | {100 * r['lm_share']:.0f} % | {r.get('speedup_mllm', float('nan')):.2f}x"
                             f" | {r.get('speedup_total', float('nan')):.2f}x |")
    write_text_atomic(path, "\n".join(lines) + "\n")


def make_plot(results: dict, path: Path, task: str, full_ks: str) -> None:
    """Two panels: the first method's speed-up vs batch size at every pruned keep (MLLM part solid,
    whole pipeline dashed), and every method's MLLM speed-up at keep 0.2 (or the pruned keep
    nearest it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted(results, key=int)
    xs = [int(b) for b in batches]
    first = results[batches[0]]
    methods = list(first)
    pruned = [ks for ks in first[methods[0]] if ks != full_ks and first[methods[0]][ks]["tokens_kept"] > 0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for ks in pruned:
        ln, = ax1.plot(xs, [results[b][methods[0]][ks]["speedup_mllm"] for b in batches], marker="o",
                       label=f"keep {ks} (MLLM)")
        ax1.plot(xs, [results[b][methods[0]][ks]["speedup_total"] for b in batches], marker="x", ls="--",
                 color=ln.get_color(), label=f"keep {ks} (total)")
    ax1.set_title(f"{task}: {methods[0]}")
    if pruned:
        ks = min(pruned, key=lambda k: abs(first[methods[0]][k]["tokens_kept"]
                                           / first[methods[0]][full_ks]["tokens_kept"] - 0.2))
        for m in methods:
            ax2.plot(xs, [results[b][m][ks]["speedup_mllm"] for b in batches], marker="o", label=m)
        ax2.set_title(f"{task}: MLLM part at keep {ks}")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("speed-up vs full tokens (same batch size)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class ThroughputConfig:
    """What ``evtp bench throughput`` measures: the first max(``batches``) samples of the
    synthetic ``task`` / ``split``, every entry of ``methods`` (`evtp.settings.MethodSetting`)
    at every ``keeps`` entry ((text, budget) pairs; keep 1.0, the speed-up baseline, is added
    when missing), ``repeats`` timed rounds. ``weights``: the model folder (None: the shipped
    weights; ``"random-tiny"``: a tiny untrained model, for tests). Results go to ``out`` (JSON,
    resumed), ``<out stem>.md`` and, with ``plots``, ``<out stem>.png``."""

    methods: tuple[MethodSetting, ...]
    keeps: tuple[tuple[str, int | float], ...]
    batches: tuple[int, ...] = (1, 4, 16)
    task: str = "image"
    split: str = "test"
    repeats: int = 5
    contiguous: bool = False
    out: Path = Path("results/throughput_image.json")
    weights: str | None = None
    threads: int = 2
    plots: bool = True

    def __post_init__(self):
        if not self.batches or min(self.batches) < 1:
            raise SettingsError(f"--batch {','.join(map(str, self.batches))!r}: give positive batch sizes, e.g. 1,4,16")
        if not self.methods or not self.keeps or self.repeats < 1 or self.threads < 1:
            raise SettingsError("give at least one method and one keep; --repeats and --threads must be >= 1")


def _with_full_keep(keeps) -> tuple[list[str], dict, str]:
    """(keep texts, {text: budget}, the text of the full-token run), 1.0 added first if missing."""
    values = dict(keeps)
    texts = list(values)
    full = next((ks for ks, v in values.items() if resolve_budget(v).keeps_all), None)
    if full is None:
        full = "1.0"
        texts.insert(0, full)
        values[full] = 1.0
    return texts, values, full


def _resume(out: Path, header: dict) -> dict:
    """The results already in ``out`` for the same ``header`` (SettingsError for other settings)."""
    if not out.exists():
        return {}
    try:
        prev = json.loads(out.read_text())
    except json.JSONDecodeError:
        raise SettingsError(f"--out {str(out)!r} exists but is not valid JSON; remove it or choose another --out") from None
    if prev.get("header") != header:
        raise SettingsError(f"--out {str(out)!r} holds a run with other settings ({prev.get('header')}); remove "
                            f"it or choose another --out")
    return prev["results"]


def run_throughput(config: ThroughputConfig, command: str = "evtp bench throughput") -> dict:
    """Plan (``out`` checked, the model loaded, earlier batch sizes of the same settings
    resumed), time every batch size not yet in ``out`` (JSON rewritten atomically after each),
    summarise (the table and plot beside ``out``; ``command`` is written into the table).
    Returns ``{batch: {method: {keep: {...}}}}``."""
    from evtp.data.synthetic import make_sample
    from evtp.models.reference import frames_to_tensor

    out = prepare_output_file(config.out)
    keeps, keep_values, full_ks = _with_full_keep(config.keeps)
    torch.set_num_threads(config.threads)
    model = load_bench_model(config.weights)
    methods = [lb for lb, _, _ in config.methods]
    header = {"task": config.task, "split": config.split, "methods": methods, "keep": keeps,
              "repeats": config.repeats, "contiguous": config.contiguous, "threads": config.threads,
              "weights": weights_digest(model)}
    results = _resume(out, header)
    # keep 0 and 1.0 give the same run for every method: timed once, under the key ("", keep)
    configs, seen = [], set()
    for lb, name, opts in config.methods:
        for ks in keeps:
            key = ("", ks) if method_free(keep_values[ks]) else (lb, ks)
            if key not in seen:
                seen.add(key)
                configs.append((key, name, keep_values[ks], opts))
    samples = [make_sample(config.split, i, config.task) for i in range(max(config.batches))]
    for b in config.batches:
        if str(b) in results:
            print(f"batch {b}: already in {out}, skipped", flush=True)
            continue
        frames = torch.cat([frames_to_tensor(s.frames, model.cfg.image_size) for s in samples[:b]])
        text = [model.tok.encode(s.instruction) for s in samples[:b]]
        timed, tokens = time_batch(model, frames, text, configs, config.repeats, contiguous=config.contiguous)
        results[str(b)] = summarize_batch(timed, methods, keeps, full_ks, tokens)
        write_json_atomic(out, {"header": header, "results": results})
        print(f"batch {b}: done", flush=True)
    results = {str(b): results[str(b)] for b in sorted(config.batches)}
    stem = out.with_suffix("")
    write_table(results, Path(f"{stem}.md"), command, config.task)
    if config.plots:
        make_plot(results, Path(f"{stem}.png"), config.task, full_ks)
    print(Path(f"{stem}.md").read_text())
    return results
