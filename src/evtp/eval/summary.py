"""Summaries of an evaluation run: JSON, a markdown table and plots.

The ``metrics`` and ``counts`` parts depend only on the per-sample records (taken in data-set
order), so a resumed, a sharded and an uninterrupted run of the same configuration give identical
values there; timings are reported separately.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from evtp.metrics import mean_of_families, summarize_by_family, summarize_metrics

IMAGE_COLS = ("cIoU", "gIoU")
VIDEO_COLS = ("J", "F", "J&F", "A", "R")


def build_summary(rows: Sequence[dict], scope: Sequence[str], manifest: dict) -> dict:
    """Summary of the records ``rows`` (one per sample id) restricted to the ids in ``scope``.

    Args:
        rows: per-sample records (see `evtp.eval.run`), any order, one per id.
        scope: the sample ids of the run, in data-set order.
        manifest: the run's settings (dataset, split, task, overall mode, model, method, keep ...).
    """
    by_id = {r["sample_id"]: r for r in rows}
    done = [by_id[s] for s in scope if s in by_id]
    ok = [r for r in done if r.get("status") == "ok"]
    failed = [r for r in done if r.get("status") != "ok"]
    scored = [r for r in ok if r.get("metrics")]
    recs = [r["metrics"] for r in scored]
    fams = [r.get("family") or "" for r in scored]
    metrics: dict = {}
    if recs:
        all_expr = summarize_metrics(recs)
        by_family = summarize_by_family(recs, fams) if any(fams) else {}
        if manifest.get("overall") == "families" and by_family:
            metrics["overall"] = mean_of_families(by_family)
            metrics["all_expressions"] = all_expr
        else:
            metrics["overall"] = all_expr
        if by_family:
            metrics["families"] = by_family
    counts = {"samples": len(scope), "done": len(done), "ok": len(ok), "failed": len(failed),
              "pending": len(scope) - len(done), "scored": len(scored),
              "no_mask": sum(1 for r in ok if r.get("no_mask")),
              "no_ground_truth": sum(1 for r in ok if not r.get("metrics"))}
    kept = [r["tokens_kept"] for r in ok if r.get("tokens_kept") is not None]
    total = [r["tokens_total"] for r in ok if r.get("tokens_total")]
    tokens = {}
    if kept and total and len(kept) == len(total):
        tokens = {"mean_kept": float(np.mean(kept)), "mean_total": float(np.mean(total)),
                  "mean_ratio": float(np.mean(np.asarray(kept, float) / np.asarray(total, float)))}
    timing_keys = sorted({k for r in ok for k in (r.get("timings_ms") or {})})
    timings = {k: float(np.mean([r["timings_ms"][k] for r in ok if k in (r.get("timings_ms") or {})]))
               for k in timing_keys}
    return {"settings": {k: manifest.get(k) for k in ("model", "dataset", "split", "task", "method",
                                                      "keep", "options", "overall", "limit")},
            "counts": counts, "metrics": metrics, "tokens": tokens, "timings_ms_mean": timings,
            "failures": [{"sample_id": r["sample_id"], "error": r.get("error")} for r in failed]}


def _cols(summary: dict) -> tuple[str, ...]:
    overall = summary["metrics"].get("overall", {})
    base = IMAGE_COLS if "cIoU" in overall else VIDEO_COLS
    return tuple(c for c in base if c in overall)


def summary_markdown(summary: dict) -> str:
    s, c = summary["settings"], summary["counts"]
    lines = [f"# evtp eval: {s['dataset']} / {s['split']}", "",
             f"model `{s['model']}`, method `{s['method']}`, keep `{s['keep']}`"
             + (f", options `{s['options']}`" if s.get("options") else ""), ""]
    cols = _cols(summary)
    m = summary["metrics"]
    if cols:
        lines += ["| scope | n | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]

        def row(name, vals):
            return (f"| {name} | {vals.get('n', 0)} | "
                    + " | ".join(f"{100 * vals[k]:.2f}" if k in vals else "" for k in cols) + " |")

        label = "overall (mean of families)" if "all_expressions" in m else "overall"
        lines.append(row(label, m["overall"]))
        if "all_expressions" in m:
            lines.append(row("all expressions", m["all_expressions"]))
        for fam, vals in m.get("families", {}).items():
            lines.append(row(fam or "(none)", vals))
        lines += ["", "Scores in %. A missing mask (no `[SEG]`) counts as an empty mask.", ""]
    else:
        lines += ["No scored samples (no ground truth in this split, or nothing finished).", ""]
    lines.append(f"samples {c['samples']}: ok {c['ok']}, failed {c['failed']}, pending {c['pending']}, "
                 f"no mask {c['no_mask']}, no ground truth {c['no_ground_truth']}")
    t = summary.get("tokens")
    if t:
        lines.append(f"visual tokens kept: {t['mean_kept']:.1f} of {t['mean_total']:.1f} "
                     f"({100 * t['mean_ratio']:.1f}%) on average")
    if summary.get("timings_ms_mean"):
        lines += ["", "| timing (mean ms / sample) | |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in summary["timings_ms_mean"].items()]
    if summary["failures"]:
        lines += ["", f"## Failures ({len(summary['failures'])})", ""]
        lines += [f"- `{f['sample_id']}`: {f['error']}" for f in summary["failures"][:50]]
        if len(summary["failures"]) > 50:
            lines.append(f"- ... {len(summary['failures']) - 50} more in summary.json")
    return "\n".join(lines) + "\n"


def write_plots(summary: dict, rows: Sequence[dict], out_dir: Path) -> list[Path]:
    """Per-family scores, the per-sample score histogram and the timing breakdown (PNG, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    cols = _cols(summary)
    m = summary["metrics"]

    def save(fig, name):
        FigureCanvasAgg(fig)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        written.append(path)

    if cols:
        groups = {"overall": m["overall"], **m.get("families", {})}
        fig = Figure(figsize=(1.8 + 1.2 * len(groups) * len(cols) / 2, 3.6))
        ax = fig.subplots()
        width = 0.8 / len(cols)
        x = np.arange(len(groups))
        for i, col in enumerate(cols):
            ax.bar(x + i * width, [100 * g.get(col, 0.0) for g in groups.values()], width, label=col)
        ax.set_xticks(x + width * (len(cols) - 1) / 2, [g or "(none)" for g in groups], rotation=20)
        ax.set_ylabel("score (%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
        ax.set_title(f"{summary['settings']['dataset']} {summary['settings']['split']}: "
                     f"{summary['settings']['method']} keep {summary['settings']['keep']}", fontsize=9)
        save(fig, "scores_by_family.png")

        key = "iou" if "cIoU" in cols else "J&F"
        vals = [r["metrics"][key] for r in rows if r.get("status") == "ok" and r.get("metrics")
                and key in r["metrics"]]
        if vals:
            fig = Figure(figsize=(4.5, 3.2))
            ax = fig.subplots()
            ax.hist(100 * np.asarray(vals), bins=20, range=(0, 100))
            ax.set_xlabel(f"per-sample {'IoU' if key == 'iou' else 'J&F'} (%)")
            ax.set_ylabel("samples")
            save(fig, "per_sample_hist.png")

    t = summary.get("timings_ms_mean") or {}
    if t:
        fig = Figure(figsize=(4.8, 0.6 + 0.35 * len(t)))
        ax = fig.subplots()
        ax.barh(list(t), list(t.values()))
        ax.set_xlabel("mean ms per sample")
        save(fig, "timings.png")
    return written
