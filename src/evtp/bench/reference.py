"""`evtp bench reference`: pruning methods x keep ratios on the reference model and benchmark.

Runs the reference IVS model (`evtp.models.reference`) on a split of the synthetic benchmark
(`evtp.data.synthetic`) with every selection method and keep ratio, and writes:

* ``--out`` (JSON, the contract other tools rely on)::

      {method: {keep as typed: {"ciou", "giou"}                 (images)
                                or {"j", "f", "jf"}             (video)
                               + "lm_prefill_ms", "total_ms", "tokens_kept", "target_hit", ...}}

  ``keep`` "0" is the ablation in which the language model sees no visual tokens; "1.0" is the
  full-token model. Extra keys per entry: ``families`` (the metrics per expression family),
  ``timings_ms`` (median per component), ``mllm_ms`` (selection + LM prefill + decode),
  ``set_hit`` / ``object_hit`` (share of the expression's reference set and anchor / of all objects
  with at least one kept token on them), ``on_objects`` (share of the kept tokens on some object;
  absent at keep 0), ``pointer_hit`` (share of samples in which the kept token with the highest
  target logit, the LM's pointer, lies on the target; absent at keep 0), ``paired`` (for every
  method after the first: its accuracy minus the first method's at the same keep on the same
  samples, ``diff`` ± paired bootstrap ``se``),
  ``speedup_mllm`` / ``speedup_total`` (vs the full-token run), ``coverage`` and ``n``.
* ``<out stem>.records.jsonl``: one line per (method, keep, sample), written as the run goes; a
  re-run with the same arguments resumes from it.
* ``<out stem>.md``: a markdown table; ``<out stem>_*.png``: accuracy vs keep, speed-up vs keep,
  coverage vs accuracy (with its Pearson r); ``<out stem>_overlays/``: kept tokens + masks.

Timings are medians: each of the first ``--timed-samples`` samples is run ``--repeats`` times per
configuration and the per-sample medians are combined by a median.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from evtp.data.synthetic import make_sample, object_cover

COMPONENTS = ("vision", "selection", "lm_prefill", "decode", "mask_decoder", "total")


def load_bench_model(weights: str | None):
    """The model a benchmark runs: the shipped weights (None), a weights directory, or
    "random-tiny", a tiny untrained model (seed 0) for tests of the benchmarks themselves."""
    from evtp.models.reference import ReferenceConfig, ReferenceIVS, load_pretrained

    if weights != "random-tiny":
        return load_pretrained(weights)
    torch.manual_seed(0)
    return ReferenceIVS(ReferenceConfig(vit_dim=32, vit_layers=1, vit_heads=2, vit_mlp=64, lm_dim=32,
                                        lm_layers=1, lm_heads=2, lm_mlp=64, dec_dim=8, role_layer=0)).eval()


def parse_keep(text: str):
    """'0' -> 0 (no visual tokens), '1.0' -> 1.0, '0.2' -> 0.2, '64' -> 64 (a count)."""
    t = text.strip()
    try:
        if any(c in t for c in ".eE"):
            v = float(t)
            if not (0.0 <= v <= 1.0) or not math.isfinite(v):
                raise ValueError
            return v
        v = int(t)
        if v < 0:
            raise ValueError
        return v
    except ValueError:
        raise ValueError(f"--keep entry {text!r} is not a ratio in [0, 1] (write it with a dot, e.g. "
                         f"0.2 or 1.0) or a token count >= 0") from None


def method_free(keep) -> bool:
    """keep 0 (no visual tokens) and keep 1.0 (all) give the same run for every method."""
    return keep == 0 or (isinstance(keep, float) and keep == 1.0)


def mllm_ms(timings: dict[str, float]) -> float:
    """The MLLM part of one run: selection + LM prefill + the ``[SEG]`` decode step (a component
    missing from ``timings`` counts 0)."""
    return timings.get("selection", 0.0) + timings.get("lm_prefill", 0.0) + timings.get("decode", 0.0)


def parse_option(text: str):
    if "=" not in text:
        raise ValueError(f"--option {text!r}: write NAME=VALUE, e.g. spatial_weight=0.5")
    k, v = text.split("=", 1)
    for conv in (int, float):
        try:
            return k, conv(v)
        except ValueError:
            pass
    if v in ("true", "false"):
        return k, v == "true"
    if v == "none":
        return k, None
    return k, v


def parse_methods(text: str, known) -> list[tuple[str, str, dict]]:
    """'evtp,evtp[saliency_weight=4],dpp' -> [(label, method, options)]: a method name, optionally
    followed by its own options in brackets (``NAME=VALUE``, several separated by ``;`` or ``,``),
    which override ``--option``. The label (the entry as typed) is the method's key in the results."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if depth < 0 or depth > 1:
            raise ValueError(f"--methods {text!r}: unbalanced brackets")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise ValueError(f"--methods {text!r}: unbalanced brackets")
    parts.append(cur)
    out = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        name, _, rest = part.partition("[")
        name = name.strip()
        if rest and not rest.endswith("]"):
            raise ValueError(f"--methods entry {part!r}: write NAME[OPTION=VALUE;...]")
        if name not in known:
            raise ValueError(f"unknown method {name!r} in --methods; known: {', '.join(sorted(known))}")
        opts = dict(parse_option(o.strip()) for o in rest[:-1].replace(";", ",").split(",") if o.strip())
        bad = sorted(set(opts) - set(known[name].options))
        if bad:
            raise ValueError(f"--methods entry {part!r}: {name!r} has no option(s) {bad}; its options: "
                             f"{', '.join(sorted(known[name].options)) or 'none'}")
        out.append((part.replace(" ", ""), name, opts))
    labels = [lb for lb, _, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--methods {text!r} lists a method twice")
    return out


def patch_shares(gt: np.ndarray, patch: int) -> np.ndarray:
    """Share of each patch's pixels on the mask: gt (T, H, W) bool -> (T, H/patch, W/patch) float."""
    T, H, W = gt.shape
    g = H // patch
    return gt[:, :g * patch, :g * patch].reshape(T, g, patch, g, patch).mean(axis=(2, 4))


def _kept_cells(kept: np.ndarray, positions: np.ndarray, lm_frames: list[int]):
    """Frame, row and column of each kept token: kept (K,), positions (N, 2) or (N, 3)."""
    pos = positions[kept]
    if pos.shape[1] == 2:
        return np.zeros(len(pos), int), pos[:, 0], pos[:, 1]
    return np.asarray(lm_frames)[pos[:, 0]], pos[:, 1], pos[:, 2]


def target_hit(kept: np.ndarray, positions: np.ndarray, gt: np.ndarray, lm_frames: list[int],
               patch: int, min_share: float = 0.25) -> bool:
    """Whether at least one kept token lies on the target: its patch has >= ``min_share`` of its
    pixels on the ground-truth mask of its frame. kept (K,), positions (N, P), gt (T, H, W)."""
    if kept.size == 0:
        return False
    f, r, c = _kept_cells(kept, positions, lm_frames)
    return bool((patch_shares(gt, patch)[f, r, c] >= min_share).any())


def object_hits(kept: np.ndarray, positions: np.ndarray, cover: np.ndarray, objects: list[int],
                lm_frames: list[int], min_share: float = 0.25) -> float | None:
    """Share of the given objects that at least one kept token lies on (as in `target_hit`).

    cover (T, O, G*G): share of each cell each object covers (`evtp.data.synthetic.object_cover`);
    objects: object indices. Returns None for an empty list.
    """
    if not objects:
        return None
    if kept.size == 0:
        return 0.0
    f, r, c = _kept_cells(kept, positions, lm_frames)
    g = int(round(math.sqrt(cover.shape[-1])))
    on = cover[f][:, objects, :][np.arange(len(f)), :, r * g + c] >= min_share  # (K, len(objects))
    return float(on.any(0).mean())


def on_objects_share(kept: np.ndarray, positions: np.ndarray, cover: np.ndarray, lm_frames: list[int],
                     min_share: float = 0.25) -> float | None:
    """Share of the kept tokens that lie on some object (>= ``min_share`` of their patch's pixels
    on one object, as in `target_hit`); None when nothing is kept. cover as in `object_hits`."""
    if kept.size == 0:
        return None
    f, r, c = _kept_cells(kept, positions, lm_frames)
    g = int(round(math.sqrt(cover.shape[-1])))
    return float((cover[f, :, r * g + c] >= min_share).any(1).mean())


def pointer_hit(kept: np.ndarray, token_logits: np.ndarray, positions: np.ndarray, gt: np.ndarray,
                lm_frames: list[int], patch: int, min_share: float = 0.25) -> bool | None:
    """Whether the LM points at the target: the kept token with the highest target logit (the
    pointer the mask decoder's prompt is built from) lies on the target in its frame (as in
    `target_hit`). kept (K,), token_logits (K,). None when nothing is kept."""
    if kept.size == 0:
        return None
    top = kept[int(np.argmax(token_logits))]
    return target_hit(np.array([top]), positions, gt, lm_frames, patch, min_share)


def _reference_set(meta: dict) -> list[int]:
    """Objects an expression refers to: its reference set (``members``, target included) and its
    anchor object, if any."""
    objs = set(meta.get("members") or [meta["target"]])
    if meta.get("anchor") is not None:
        objs.add(meta["anchor"])
    return sorted(objs)


def _sample_metrics(task: str, pred: np.ndarray, gt: np.ndarray) -> dict:
    from evtp.metrics import image_sample_metrics, video_sample_metrics

    if task == "image":
        return image_sample_metrics(pred, gt)
    return video_sample_metrics(pred, gt)


def _coverage(visual: torch.Tensor, positions: torch.Tensor, kept: np.ndarray) -> dict:
    from evtp.coverage import mean_nearest_distance, spatial_coverage

    if kept.size == 0:
        return {}
    k = torch.as_tensor(kept, dtype=torch.long)
    x = visual.float()
    out = {"mean_nn_feature": float(mean_nearest_distance(x, k, metric="feature")),
           "spatial_r1": float(spatial_coverage(positions, k, r=1))}
    try:
        out["mean_nn_combined"] = float(mean_nearest_distance(x, k, positions, metric="combined"))
    except (TypeError, ValueError):  # pragma: no cover - older coverage module
        pass
    return out


def _optional_means(records: list[dict], keys) -> dict:
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
    timed = [r["timings_ms"] for r in records if r.get("timed")] or [r["timings_ms"] for r in records]
    tm = {c: float(np.median([t[c] for t in timed])) for c in COMPONENTS if all(c in t for t in timed)}
    out.update({
        "lm_prefill_ms": tm.get("lm_prefill", float("nan")),
        "total_ms": tm.get("total", float("nan")),
        "tokens_kept": float(np.mean([r["tokens_kept"] for r in records])),
        "tokens_total": float(np.mean([r["tokens_total"] for r in records])),
        "target_hit": float(np.mean([r["target_hit"] for r in records])),
        **_optional_means(records, ("set_hit", "object_hit", "on_objects", "pointer_hit")),
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
    (`evtp.metrics.paired_bootstrap`). keep 0 and 1.0 are skipped (the same run for every method)."""
    from evtp.metrics import paired_bootstrap

    if len(methods) < 2:
        return
    base = methods[0]
    for ks in keeps:
        try:
            if method_free(parse_keep(ks)):
                continue
        except ValueError:
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


def weights_digest(model: torch.nn.Module) -> str:
    """Short SHA-256 of a model's state (names + values): records of other weights never resume."""
    h = hashlib.sha256()
    for name, v in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _config_header(args, methods, keeps, options, digest: str) -> dict:
    return {"task": args.task, "split": args.split, "seed_offset": args.seed_offset,
            "weights": str(args.weights or "shipped"), "weights_sha256": digest, "options": options,
            "contiguous": args.contiguous}


def _load_records(path: Path, header: dict) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    if not lines:
        return []
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError:
        first = {}
    if first.get("header") != header:
        raise ValueError(f"{path} was written by a run with different settings ({first.get('header')}); "
                         f"pass another --out or delete it")
    recs = []
    for ln in lines[1:]:
        try:
            recs.append(json.loads(ln))
        except json.JSONDecodeError:  # a torn last line from an interrupted run
            continue
    return recs


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
                         f" | {r['lm_prefill_ms']:.1f} | "
                         f"{r['mllm_ms']:.1f} | {r['total_ms']:.1f} | {r.get('speedup_mllm', float('nan')):.2f}x | "
                         f"{r.get('speedup_total', float('nan')):.2f}x |")
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
                  f"bootstrap, ± one standard error):", "",
                  "| method | " + " | ".join(f"keep {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for m, per in paired:
            lines.append(f"| {m} | " + " | ".join(
                f"{per[k]['paired']['diff']:+.3f} ± {per[k]['paired']['se']:.3f}"
                if "paired" in per.get(k, {}) else "-" for k in ks) + " |")
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


def main(argv: list[str] | None = None, prog: str = "evtp bench reference") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("image", "video"), default="image")
    ap.add_argument("--split", choices=("train", "val", "test"), default="test")
    ap.add_argument("--seed-offset", type=int, default=0, help="shift of the split's seed range")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--methods", default="evtp,kcenter,random,uniform,attention,dpp,tome,dart",
                    help="comma-separated methods; a method may carry its own options, e.g. "
                         "evtp[saliency_weight=4] (several: evtp[saliency_weight=4;spatial_weight=0.5])")
    ap.add_argument("--keep", default="1.0,0.5,0.3,0.2,0.1,0.05",
                    help="comma-separated keep ratios (with a dot) or counts; 0 = no visual tokens")
    ap.add_argument("--out", default="results/reference_image.json")
    ap.add_argument("--weights", default=None, help="model directory (default: the shipped weights)")
    ap.add_argument("--option", action="append", default=[],
                    help="NAME=VALUE method option, e.g. spatial_weight=0.5 (repeatable); passed to "
                         "the methods that declare it")
    ap.add_argument("--contiguous", action="store_true",
                    help="re-index kept tokens contiguously instead of keeping their original positions")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats per timed sample")
    ap.add_argument("--timed-samples", type=int, default=8, help="samples timed with --repeats")
    ap.add_argument("--overlays", type=int, default=1, help="samples to draw kept-token overlays for")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)

    from evtp.selection import METHODS

    try:
        keeps = [(k.strip(), parse_keep(k)) for k in args.keep.split(",") if k.strip()]
        options = dict(parse_option(o) for o in args.option)
        specs = parse_methods(args.methods, METHODS)
    except ValueError as e:
        ap.error(str(e))
    methods = [lb for lb, _, _ in specs]
    method_of = {lb: (name, {**{k: v for k, v in options.items() if k in METHODS[name].options}, **own})
                 for lb, name, own in specs}
    if args.samples < 1:
        ap.error("--samples must be >= 1")
    torch.set_num_threads(args.threads)
    model = load_bench_model(args.weights)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    rec_path = Path(f"{stem}.records.jsonl")
    header = _config_header(args, methods, keeps, options, weights_digest(model))
    try:
        records = _load_records(rec_path, header)
    except ValueError as e:
        ap.error(str(e))
    done = {(r["method"], r["keep"], r["sample_id"]) for r in records}
    if not rec_path.exists() or not rec_path.read_text().strip():
        rec_path.write_text(json.dumps({"header": header}) + "\n")
    fh = open(rec_path, "a")

    from tqdm import tqdm

    configs = [(m, ks, kv) for m in methods for ks, kv in keeps]
    total = len(configs) * args.samples
    bar = tqdm(total=total, initial=sum(1 for m, ks, _ in configs for i in range(args.samples)
                                        if (m, ks, f"{args.split}-{args.task}-{i + args.seed_offset}") in done),
               desc=f"bench reference {args.task}", unit="run")
    overlays_dir = Path(f"{stem}_overlays")
    for i in range(args.samples):
        sample = None
        shared: dict[str, dict] = {}  # keep 0 and 1.0 do not depend on the method: run them once
        for m, ks, kv in configs:
            sid = f"{args.split}-{args.task}-{i + args.seed_offset}"
            if (m, ks, sid) in done:
                continue
            if ks in shared:
                rec = dict(shared[ks], method=m)
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                records.append(rec)
                bar.update(1)
                continue
            if sample is None:
                sample = make_sample(args.split, i, args.task, seed_offset=args.seed_offset,
                                     with_labels=True)
                cover = object_cover(sample.meta["labels"], len(sample.meta["objects"]), model.cfg.patch)
            name, opts = method_of[m]
            reps = args.repeats if i < args.timed_samples else 1
            tms, pred = [], None
            for _ in range(max(1, reps)):
                gen = torch.Generator().manual_seed(int(sample.meta["seed"]) % (2 ** 31))
                pred = model.predict(sample, method=name, keep=kv, contiguous=args.contiguous,
                                     generator=gen, **opts)
                tms.append(pred.timings_ms)
            timing = {c: float(np.median([t[c] for t in tms])) for c in tms[0]}
            lm_frames = model.lm_frame_ids(sample.frames.shape[0])
            rec = {"method": m, "keep": ks, "sample_id": sid, "family": sample.family,
                   "metrics": _sample_metrics(args.task, pred.masks, sample.gt_masks),
                   "tokens_kept": pred.tokens_kept, "tokens_total": pred.tokens_total,
                   "target_hit": target_hit(pred.extra["kept"], pred.extra["positions"], sample.gt_masks,
                                            lm_frames, model.cfg.patch),
                   # the objects the expression needs: its reference set (target included) and anchor
                   "set_hit": object_hits(pred.extra["kept"], pred.extra["positions"], cover,
                                          _reference_set(sample.meta), lm_frames),
                   "object_hit": object_hits(pred.extra["kept"], pred.extra["positions"], cover,
                                             list(range(cover.shape[1])), lm_frames),
                   **({"pointer_hit": pointer_hit(pred.extra["kept"], pred.extra["token_logits"],
                                                  pred.extra["positions"], sample.gt_masks, lm_frames,
                                                  model.cfg.patch)}
                      if "token_logits" in pred.extra else {}),
                   "on_objects": on_objects_share(pred.extra["kept"], pred.extra["positions"], cover,
                                                  lm_frames),
                   "coverage": _coverage(pred.extra["visual"], torch.as_tensor(pred.extra["positions"]),
                                         pred.extra["kept"]) if 0 < pred.tokens_kept < pred.tokens_total else {},
                   "timings_ms": timing, "timed": i < args.timed_samples,
                   "emitted_seg": pred.extra["emitted_seg"]}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            records.append(rec)
            if method_free(kv):
                shared[ks] = rec
            if i < args.overlays and 0 < pred.tokens_kept:
                import cv2

                overlays_dir.mkdir(parents=True, exist_ok=True)
                img = overlay(sample, pred, model.cfg.patch, lm_frames)
                safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in m)
                cv2.imwrite(str(overlays_dir / f"{sid}_{safe}_{ks}.png"), img[..., ::-1])
            bar.update(1)
    bar.close()
    fh.close()

    ids = {f"{args.split}-{args.task}-{i + args.seed_offset}" for i in range(args.samples)}
    results: dict = {}
    for m, ks, _ in configs:
        recs = [r for r in records if r["method"] == m and r["keep"] == ks and r["sample_id"] in ids]
        results.setdefault(m, {})[ks] = summarize(args.task, recs)
    # speed-ups against the full-token run (any method's keep 1.0: selection is skipped there)
    full = [r for r in records if r["keep"] in ("1.0", "1") and r["sample_id"] in ids]
    if not full:
        full = [r for r in records if r["tokens_kept"] == r["tokens_total"] and r["sample_id"] in ids]
    if full:
        base = summarize(args.task, full)
        for per in results.values():
            for r in per.values():
                r["speedup_mllm"] = base["mllm_ms"] / r["mllm_ms"] if r["mllm_ms"] > 0 else float("nan")
                r["speedup_total"] = base["total_ms"] / r["total_ms"] if r["total_ms"] > 0 else float("nan")
    add_paired_differences(results, records, methods, [ks for ks, _ in keeps], ids)
    out.write_text(json.dumps(results, indent=1) + "\n")
    command = "evtp bench reference " + " ".join(argv if argv is not None else [])
    write_table(args.task, results, Path(f"{stem}.md"), command.strip())
    written = [] if args.no_plots else make_plots(args.task, results, stem)
    print(Path(f"{stem}.md").read_text())
    print(f"wrote {out}, {stem}.md, {rec_path}" + ("".join(", " + w for w in written)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
