"""Aggregates, tables, plots and overlays of `evtp bench reference` (from its per-run records).

A record is one (method label, keep as typed, sample) run with the measures of
`evtp.bench.measures`; ``results`` is ``{method label: {keep as typed: summary}}`` (`summarize`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evtp.bench.measures import COMPONENTS, method_free, mllm_ms
from evtp.settings import SettingsError, parse_keep


def keep_is_method_free(keep_text: str) -> bool:
    """Whether a keep as typed (``"0"``, ``"1.0"``, ``"0.2"``, ``"64"``) gives the same run for
    every method (`evtp.bench.measures.method_free`); `SettingsError` for text that is no keep."""
    return method_free(parse_keep(keep_text, allow_zero=True))


def tokens_per_object_cell(entry: dict) -> str:
    """The "kept tokens per object" cell of an `evtp.bench.compare` score entry: two decimals, or
    "-" when its runs did not record the objects per scene."""
    tpo = entry["tokens_per_object"]
    return "-" if tpo is None else f"{tpo:.2f}"


def optional_means(records: list[dict], keys) -> dict:
    """Means of per-record measures that older records may lack: a key is reported only when
    every record has it (so a resumed run never averages a subset); None values (nothing kept)
    are skipped, and a key whose values are all None is left out."""
    out = {}
    for k in keys:
        if records and all(k in r for r in records):
            v = [r[k] for r in records if r[k] is not None]
            if v:
                out[k] = float(np.mean(v))
    return out


def summarize(task: str, records: list[dict]) -> dict:
    """Aggregate the per-sample records of one (method, keep) configuration."""
    from evtp.metrics import summarize_by_family, summarize_metrics

    mets = [r["metrics"] for r in records]
    s = summarize_metrics(mets)
    fam = summarize_by_family(mets, [r["family"] for r in records])
    conv = (lambda d: {"ciou": d["cIoU"], "giou": d["gIoU"], "n": d["n"]}) if task == "image" else \
        (lambda d: {"j": d["J"], "f": d["F"], "jf": d["J&F"], "n": d["n"]})
    out = conv(s)
    # the timed samples' medians; records without timings (untimed samples reuse encodings) never count
    timed = [r["timings_ms"] for r in records if r.get("timed")] or [r["timings_ms"] for r in records
                                                                      if r["timings_ms"]]
    tm = {c: float(np.median([t[c] for t in timed])) for c in COMPONENTS
          if timed and all(c in t for t in timed)}
    out.update({
        "lm_prefill_ms": tm.get("lm_prefill", float("nan")),
        "total_ms": tm.get("total", float("nan")),
        "tokens_kept": float(np.mean([r["tokens_kept"] for r in records])),
        "tokens_total": float(np.mean([r["tokens_total"] for r in records])),
        "target_hit": float(np.mean([r["target_hit"] for r in records])),
        **optional_means(records, ("set_hit", "object_hit", "on_objects", "pointer_hit")),
        "timings_ms": tm,
        "mllm_ms": mllm_ms(tm),
        "families": {k: conv(v) for k, v in fam.items()},
    })
    covs = [r["coverage"] for r in records if r.get("coverage")]
    if covs:
        out["coverage"] = {k: float(np.mean([c[k] for c in covs if k in c])) for k in covs[0]}
    return out


def add_paired_differences(results: dict, records: list[dict], methods: list[str], keeps: list[str],
                           ids: set[str], n_boot: int = 2000) -> None:
    """Give every (method, keep) entry of methods[1:] a ``"paired"`` entry: its accuracy minus the
    first method's at the same keep, on the same samples, with the paired bootstrap standard error
    and 95 % interval (`evtp.metrics.paired_bootstrap`). keep 0 and 1.0 are skipped (the same run for every method)."""
    from evtp.metrics import paired_bootstrap

    if len(methods) < 2:
        return
    base = methods[0]
    for ks in keeps:
        try:
            if keep_is_method_free(ks):
                continue
        except SettingsError:
            continue
        ref = {r["sample_id"]: r["metrics"] for r in records
               if r["method"] == base and r["keep"] == ks and r["sample_id"] in ids}
        for m in methods[1:]:
            mine = {r["sample_id"]: r["metrics"] for r in records
                    if r["method"] == m and r["keep"] == ks and r["sample_id"] in ids}
            common = sorted(set(ref) & set(mine))
            if common:
                d = paired_bootstrap([mine[i] for i in common], [ref[i] for i in common], n_boot=n_boot)
                results[m][ks]["paired"] = {"vs": base, **d}


def paired_cell(d: dict) -> str:
    """One paired difference as ``+0.012 [-0.004, +0.027]`` (bold when the 95 % interval excludes 0;
    records written before the interval was kept show ``± se`` instead)."""
    if "lo" not in d:
        return f"{d['diff']:+.3f} ± {d['se']:.3f}"
    text = f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
    return f"**{text}**" if d["lo"] > 0 or d["hi"] < 0 else text


def _timing_cells(r: dict) -> str:
    """The timing columns of one `write_table` row; "-" for an untimed entry (--timed-samples 0)."""
    if not np.isfinite(r.get("lm_prefill_ms", np.nan)):
        return " | ".join(["-"] * 5)
    return (f"{r['lm_prefill_ms']:.1f} | {r['mllm_ms']:.1f} | {r['total_ms']:.1f} | "
            f"{r.get('speedup_mllm', np.nan):.2f}x | {r.get('speedup_total', np.nan):.2f}x")


def write_table(task: str, results: dict, path: Path, command: str) -> None:
    nan = float("nan")
    acc = ("ciou", "giou") if task == "image" else ("jf", "j", "f")
    lines = [f"Command: `{command}`", "",
             "| method | keep | " + " | ".join(acc) + " | tokens | target hit | set hit | on objects | "
             "pointer hit | LM prefill ms | MLLM ms | total ms | MLLM speed-up | total speed-up |",
             "|---|---|" + "---|" * (len(acc) + 10)]
    for m, per in results.items():
        for k, r in per.items():
            lines.append(f"| {m} | {k} | " + " | ".join(f"{r[a]:.3f}" for a in acc) +
                         f" | {r['tokens_kept']:.0f} | {r['target_hit']:.2f}"
                         f" | {r.get('set_hit', nan):.2f} | {r.get('on_objects', nan):.2f}"
                         f" | {r.get('pointer_hit', nan):.2f}"
                         " | " + _timing_cells(r) + " |")
    fams = sorted({f for per in results.values() for r in per.values() for f in r["families"]})
    main_key = acc[0]
    lines += ["", f"Per expression family ({main_key}):", "",
              "| method | keep | " + " | ".join(fams) + " |", "|---|---|" + "---|" * len(fams)]
    for m, per in results.items():
        for k, r in per.items():
            lines.append(f"| {m} | {k} | " + " | ".join(
                f"{r['families'][f][main_key]:.3f}" if f in r["families"] else "-" for f in fams) + " |")
    paired = [(m, per) for m, per in results.items() if any("paired" in r for r in per.values())]
    if paired:
        base = next(r["paired"]["vs"] for _, per in paired for r in per.values() if "paired" in r)
        ks = [k for k in next(iter(results.values()))
              if any(k in per and "paired" in per[k] for _, per in paired)]
        lines += ["", f"Difference to `{base}` at the same keep, on the same samples ({main_key}; paired "
                  f"bootstrap: the difference and its 95 % interval; **bold**: the interval excludes 0):", "",
                  "| method | " + " | ".join(f"keep {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for m, per in paired:
            lines.append(f"| {m} | " + " | ".join(
                paired_cell(per[k]["paired"]) if "paired" in per.get(k, {}) else "-" for k in ks) + " |")
    corr = correlations(task, results)
    if corr:
        lines += ["", f"Pearson r between {main_key} and each selection measure, across the (method, keep) "
                  f"configurations with 0 < keep < 1 (n = {corr['n']}):", "",
                  "| measure | r |", "|---|---|"]
        lines += [f"| {MEASURES[k]} | {v:.2f} |" for k, v in corr.items() if k != "n"]
    path.write_text("\n".join(lines) + "\n")


MEASURES = {"mean_nn_feature": "feature coverage distance (lower = better covered)",
            "mean_nn_combined": "feature + position coverage distance",
            "spatial_r1": "spatial coverage (cells within one cell of a kept token)",
            "target_hit": "target hit (a kept token on the target)",
            "set_hit": "set hit (share of the reference set and anchor with a kept token)",
            "object_hit": "object hit (share of all objects with a kept token)",
            "on_objects": "share of the kept tokens that lie on an object",
            "pointer_hit": "pointer hit (the kept token the LM points at lies on the target)"}


def correlations(task: str, results: dict) -> dict:
    """Pearson r between accuracy (cIoU / J&F) and each selection measure across the pruned
    configurations (0 < keep < 1): {measure: r, "n": configurations}; {} when fewer than 3."""
    key = "ciou" if task == "image" else "jf"
    rows = [r for per in results.values() for k, r in per.items() if 0 < float(k) < 1]
    if len(rows) < 3:
        return {}
    out: dict = {"n": len(rows)}
    for m in MEASURES:
        vals = [r.get(m, r.get("coverage", {}).get(m)) for r in rows]
        if any(v is None for v in vals):
            continue
        x, y = np.asarray(vals, float), np.asarray([r[key] for r in rows], float)
        if np.isfinite(x).all() and x.std() > 0 and y.std() > 0:
            out[m] = float(np.corrcoef(x, y)[0, 1])
    return out


def make_plots(task: str, results: dict, stem: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "ciou" if task == "image" else "jf"
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, per in results.items():
        pts = sorted((float(k), r[key]) for k, r in per.items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    ax.set_xlabel("keep ratio")
    ax.set_ylabel(key)
    ax.set_title(f"{task}: accuracy vs keep ratio")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{stem}_accuracy.png", dpi=110)
    written.append(f"{stem}_accuracy.png")
    plt.close(fig)

    # an untimed run (--timed-samples 0) has no speed-ups to plot
    if any(np.isfinite(r.get("speedup_mllm", np.nan)) for per in results.values() for r in per.values()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, per in results.items():
            pts = sorted((float(k), r.get("speedup_mllm", np.nan), r.get("speedup_total", np.nan))
                         for k, r in per.items() if float(k) > 0)
            ln, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{m} (MLLM)")
            ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="x", ls="--", color=ln.get_color(),
                    label=f"{m} (total)")
        ax.set_xlabel("keep ratio")
        ax.set_ylabel("speed-up vs full tokens")
        ax.set_title(f"{task}: speed-up")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        fig.savefig(f"{stem}_speedup.png", dpi=110)
        written.append(f"{stem}_speedup.png")
        plt.close(fig)

    xs, ys, labels = [], [], []
    for m, per in results.items():
        for k, r in per.items():
            c = r.get("coverage", {}).get("mean_nn_feature")
            if c is not None and 0 < float(k) < 1:
                xs.append(c)
                ys.append(r[key])
                labels.append(f"{m}@{k}")
    if len(xs) >= 3:
        rr = float(np.corrcoef(xs, ys)[0, 1])
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter(xs, ys)
        for x, y, lb in zip(xs, ys, labels):
            ax.annotate(lb, (x, y), fontsize=6)
        ax.set_xlabel("mean distance to nearest kept token (1 - cos; lower = better coverage)")
        ax.set_ylabel(key)
        ax.set_title(f"{task}: coverage vs accuracy, Pearson r = {rr:.2f}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(f"{stem}_coverage.png", dpi=110)
        written.append(f"{stem}_coverage.png")
        plt.close(fig)
    return written


def overlay(sample, pred, patch: int, lm_frames: list[int]) -> np.ndarray:
    """RGB (H, W', 3): for each LM frame, the frame with non-kept patches darkened, the predicted
    mask outline in green and the ground truth in red."""
    import cv2

    kept, pos = pred.extra["kept"], pred.extra["positions"]
    panels = []
    for fi, f in enumerate(lm_frames):
        img = sample.frames[f].astype(np.float32)
        g = img.shape[0] // patch
        keep_map = np.zeros((g, g), bool)
        for p in pos[kept]:
            if len(p) == 2 and fi == 0:
                keep_map[p[0], p[1]] = True
            elif len(p) == 3 and p[0] == fi:
                keep_map[p[1], p[2]] = True
        km = np.kron(keep_map, np.ones((patch, patch), bool))[..., None]
        img = np.where(km, img, img * 0.35).astype(np.uint8).copy()
        for m, col in ((sample.gt_masks[f], (255, 40, 40)), (pred.masks[f], (40, 255, 40))):
            cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, cs, -1, col, 1)
        panels.append(img)
    return np.concatenate(panels, 1)


# ---------------------------------------------------------------- `evtp bench compare` tables

VERDICT_WORDS = {"superior": "{ref} better", "non-inferior": "{ref} not worse by {margin:g} or more",
                 "inferior": "{ref} worse", "inconclusive": "inconclusive: a loss of {margin:g} or more not ruled out"}
TABLE_TITLES = {"primary": "Primary contrasts (pre-registered: {ref} vs {primary} at keeps {keeps})",
                "secondary": "Secondary contrasts (every other method and keep)",
                "per_family": "Contrasts per expression family"}


def _iv(lo: float, hi: float, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"[{f.format(lo)}, {f.format(hi)}]"


def _p(p: float, n_boot: int) -> str:
    """A bootstrap p-value: "< 1/B" when no replicate reached the null, 4 decimals below 0.001."""
    if p == 0:
        return f"< {1 / n_boot:.1g}"
    return f"{p:.4f}" if p < 0.001 else f"{p:.3f}"


def verdict_text(row: dict, ref: str, margin: float) -> str:
    """The plain-words verdict of one adjusted contrast (`evtp.metrics.stats.verdict`)."""
    text = VERDICT_WORDS[row["verdict"]].format(ref=f"`{ref}`", margin=margin)
    if row["verdict"] == "non-inferior" and row["adj_hi"] < 0:
        text += ", though worse by less"
    return f"**{text}**" if row["verdict"] in ("superior", "inferior") else text


def _compare_header(cmp: dict, command: str) -> list[str]:
    s = cmp["settings"]
    h, metric = s["header"], s["metric"]
    runs = "; ".join(f"`{r['path']}` (weights {r['weights']}, {r['weights_sha256']})" for r in s["runs"])
    score = ("cIoU: sum of intersections / sum of unions over the samples" if metric == "cIoU" else
             "J&F: (mean J + mean F) / 2 over the videos")
    few = (f". With {s['seeds']} runs, a contrast whose runs' own differences (per run) spread as widely as "
           f"its interval is less certain than the interval says (docs/statistics.md, Calibration)"
           if 1 < s["seeds"] < 5 else "")
    boot = (f"{s['n_boot']} bootstrap replicates, each drawing {s['seeds'] - 1} of the {s['seeds']} runs (training "
            f"seeds) with replacement and then the {s['samples']} samples with replacement (one draw for every "
            f"method){few}"
            if s["seeds"] > 1 else
            f"{s['n_boot']} bootstrap replicates of the {s['samples']} samples (one draw for every method). "
            f"**One run: the intervals are a sample bootstrap and leave out seed-to-seed variation**")
    return [f"Command: `{command}`", "",
            f"Task {h['task']}, split {h['split']}, readout {h.get('readout')}, {s['samples']} samples, "
            f"{s['seeds']} run(s): {runs}.", "",
            f"Score: {score}; the runs' mean. Intervals: 95 % percentile intervals of {boot}.", "",
            f"Contrasts: `{s['reference']}` minus the other method on the same draws (paired). p: two-sided "
            f"bootstrap p-value of a difference of 0. Holm p and Holm interval: corrected over the contrasts "
            f"of one family (primary, secondary or per family; m given with each), family-wise error "
            f"{s['alpha']:g}. NI bound: the Holm-corrected one-sided lower bound (at {s['alpha'] / 2:g}) of the "
            f"difference. Verdict "
            f"(non-inferiority margin {s['margin']:g}): better when the Holm interval lies above 0; else not "
            f"worse by {s['margin']:g} or more when the NI bound is above -{s['margin']:g}; else worse when "
            f"the Holm interval lies below 0; else inconclusive.", ""]


def _score_rows(cmp: dict, score_based: bool) -> list[str]:
    s = cmp["settings"]
    lines = [f"| method | keep | kept tokens per object | {s['metric']} [95 %] | share of full [95 %] |",
             "|---|---|---|---|---|"]
    for m, per in cmp["scores"].items():
        for k, e in per.items():
            if e["score_based"] != score_based or keep_is_method_free(k):
                continue
            sh = e.get("share")
            sh_text = "-" if sh is None else f"{sh['share']:.3f} {_iv(sh['lo'], sh['hi'])}"
            lines.append(f"| {m} | {k} | {tokens_per_object_cell(e)} | {e['score']:.3f} {_iv(e['lo'], e['hi'])} "
                         f"| {sh_text} |")
    return lines if len(lines) > 2 else ["None among the runs' methods."]


def _method_free_rows(cmp: dict) -> list[str]:
    s = cmp["settings"]
    per = cmp["scores"][s["reference"]]
    lines = [f"| keep | kept tokens per object | {s['metric']} [95 %] |", "|---|---|---|"]
    for k, e in per.items():
        if keep_is_method_free(k):
            lines.append(f"| {k} | {tokens_per_object_cell(e)} | {e['score']:.3f} {_iv(e['lo'], e['hi'])} |")
    return lines


def _contrast_rows(cmp: dict, name: str, score_based: bool) -> list[str]:
    """The score-free or score-based opponents' rows of one Holm family, as a table; with several
    runs a column of each run's own difference."""
    s = cmp["settings"]
    rows = [r for r in cmp["contrasts"][name] if r["score_based"] == score_based]
    ref, nb = s["reference"], s["n_boot"]
    fam, runs = name == "per_family", s["seeds"] > 1
    lines = [("| family " if fam else "") + f"| `{ref}` - X | keep | difference | 95 % interval | "
             + ("per run | " if runs else "") + "p | Holm p | Holm interval | NI bound | verdict |",
             "|---" * (9 + fam + runs) + "|"]
    for r in rows:
        opp = r["method"]
        per_run = ", ".join(f"{d:+.3f}" for d in r["per_run"]) + " | " if runs else ""
        lines.append((f"| {r['family']} " if fam else "") +
                     f"| {opp} | {r['keep']} | {r['diff']:+.3f} | {_iv(r['lo'], r['hi'], True)} | {per_run}"
                     f"{_p(r['p'], nb)} | {_p(r['p_holm'], nb)} | {_iv(r['adj_lo'], r['adj_hi'], True)} | "
                     f"{r['noninferior_lower']:+.3f} | {verdict_text(r, ref, s['margin'])} |")
    return lines


def _family_score_rows(cmp: dict) -> list[str]:
    """Scores per expression family: keep 0 and 1.0 once (the same run for every method), then
    every method at every keep that prunes."""
    fams = list(cmp["families"])
    first = cmp["families"][fams[0]]["scores"]
    ref = cmp["settings"]["reference"]
    lines = ["| method | keep | " + " | ".join(f"{f} (n = {cmp['families'][f]['n']})" for f in fams) + " |",
             "|---|---|" + "---|" * len(fams)]
    free = [("every method", ref, k) for k in first[ref] if keep_is_method_free(k)]
    pruned = [(m, m, k) for m, per in first.items() for k in per if not keep_is_method_free(k)]
    for label, m, k in free + pruned:
        cells = [cmp["families"][f]["scores"][m][k] for f in fams]
        lines.append(f"| {label} | {k} | "
                     + " | ".join(f"{c['score']:.3f} {_iv(c['lo'], c['hi'])}" for c in cells) + " |")
    return lines


def write_compare_tables(cmp: dict, path: Path, command: str) -> None:
    """The markdown of `evtp.bench.compare.compare_runs`'s output: the settings, scores of the
    score-free and the score-based methods, each Holm family's contrasts (score-free and
    score-based opponents in separate tables), and the scores per expression family."""
    s = cmp["settings"]
    lines = [f"# `{s['reference']}` against the other methods ({s['metric']})", ""] + _compare_header(cmp, command)
    lines += ["## Without selection (the same run for every method)", ""] + _method_free_rows(cmp) + [""]
    for kind, flag in (("score-free", False), ("score-based", True)):
        lines += [f"## Scores, {kind} methods", ""] + _score_rows(cmp, flag) + [""]
    for name, title in TABLE_TITLES.items():
        rows = cmp["contrasts"][name]
        heading = title.format(ref=s["reference"], primary=", ".join(s["primary"]["methods"]),
                               keeps=", ".join(map(str, s["primary"]["keeps"])))
        kinds = [(kind, flag) for kind, flag in (("score-free", False), ("score-based", True))
                 if any(r["score_based"] == flag for r in rows)]
        if kinds:
            lines += [f"## {heading}", "", f"One Holm family of m = {len(rows)} contrasts"
                      + (" over both tables below." if len(kinds) == 2 else "."), ""]
        for kind, flag in kinds:
            lines += [f"### {kind.capitalize()} opponents", ""] + _contrast_rows(cmp, name, flag) + [""]
    if cmp["families"]:
        lines += ["## Scores per expression family", ""] + _family_score_rows(cmp) + [""]
    Path(path).write_text("\n".join(lines))
