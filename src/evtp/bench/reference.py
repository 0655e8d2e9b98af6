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
configuration and the per-sample medians are combined by a median. The other samples record no
timings: they compute the ViT and the mask decoder's image features once and reuse them for every
configuration (`ReferenceIVS.reuse_encodings`; the outputs are the same).
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from evtp.bench.measures import (coverage_measures, method_free, object_hits, on_objects_share,
                                 pointer_hit, reference_set, sample_metrics, target_hit)
from evtp.bench.models import load_bench_model, weights_digest
from evtp.bench.report import add_paired_differences, make_plots, overlay, summarize, write_table
from evtp.data.synthetic import make_sample, object_cover
from evtp.models.reference.config import READOUTS
from evtp.selection import METHODS
from evtp.cli.args import HelpFormatter, non_negative_int, positive_int
from evtp.pruning import resolve_budget
from evtp.settings import SettingsError, method_options, parse_keep, parse_keeps, parse_methods, parse_options


def check_base_options(options: dict, specs) -> None:
    """Raise `SettingsError` for an ``--option`` that no listed method declares (a typo would
    otherwise be ignored silently)."""
    unused = sorted(k for k in options if not any(k in METHODS[s.method].options for s in specs))
    if unused:
        declared = sorted({o for s in specs for o in METHODS[s.method].options})
        raise SettingsError(f"--option {', '.join(unused)}: no listed method has this option; their "
                            f"options: {', '.join(declared) or 'none'}")


def point_on_target(point, gt: np.ndarray) -> float:
    """1.0 when the point (x, y) in pixels lies on the target in frame 0 of gt (T, H, W), else 0.0."""
    x, y = (int(v) for v in point)
    H, W = gt.shape[1:]
    return float(0 <= x < W and 0 <= y < H and bool(gt[0, y, x]))


def _config_header(args, methods, keeps, options, digest: str) -> dict:
    return {"task": args.task, "split": args.split, "seed_offset": args.seed_offset,
            "weights": str(args.weights or "shipped"), "weights_sha256": digest, "options": options,
            "position_mode": "contiguous" if args.contiguous else "original", "readout": args.readout}


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


def main(argv: list[str] | None = None, prog: str = "evtp bench reference") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--task", choices=("image", "video"), default="image", help="benchmark task")
    ap.add_argument("--split", choices=("train", "val", "test"), default="test", help="benchmark split")
    ap.add_argument("--seed-offset", type=int, default=0, help="shift of the split's seed range")
    ap.add_argument("--samples", type=positive_int, default=200, help="samples of the split")
    ap.add_argument("--methods", default="evtp,kcenter,random,uniform,attention,dpp,tome,dart",
                    help=f"comma-separated methods of {', '.join(sorted(METHODS))}; a method may carry its "
                         "own options, e.g. evtp[saliency_weight=4] (several: "
                         "evtp[saliency_weight=4;spatial_weight=0.5])")
    ap.add_argument("--keep", default="1.0,0.5,0.3,0.2,0.1,0.05",
                    help="comma-separated keep ratios (with a dot) or counts; 0 = no visual tokens")
    ap.add_argument("--out", default="results/reference_image.json", help="results JSON")
    ap.add_argument("--weights", default=None,
                    help="model directory (None: the shipped weights; random-tiny: a tiny untrained model)")
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="method option, e.g. spatial_weight=0.5 (repeatable); passed to the methods that "
                         "declare it")
    ap.add_argument("--contiguous", action="store_true",
                    help="re-index kept tokens contiguously instead of keeping their original positions")
    ap.add_argument("--readout", choices=READOUTS, default=None,
                    help="how the mask is read from the LM: point (the LM writes the target's location, "
                         "an exact segmenter returns the object there), dense (Text4Seg-style heat map of "
                         "per-kept-token logits); default: the weights' primary readout (point for the "
                         "shipped weights)")
    ap.add_argument("--repeats", type=positive_int, default=3, help="timing repeats per timed sample")
    ap.add_argument("--timed-samples", type=non_negative_int, default=8, help="samples timed with --repeats")
    ap.add_argument("--overlays", type=non_negative_int, default=1, help="samples to draw kept-token overlays for")
    ap.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    ap.add_argument("--no-plots", action="store_true", help="no PNG plots")
    args = ap.parse_args(argv)

    try:
        keeps = parse_keeps(args.keep, allow_zero=True)
        options = parse_options(args.option, "--option")
        specs = parse_methods(args.methods, base_options=options)
        check_base_options(options, specs)
    except SettingsError as e:
        ap.error(str(e))
    methods = [s.label for s in specs]
    method_of = {s.label: (s.method, method_options(s, options)) for s in specs}
    torch.set_num_threads(args.threads)
    model = load_bench_model(args.weights)
    try:
        args.readout = model.check_readout(args.readout)
    except ValueError as e:
        ap.error(str(e))
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
        timed = i < args.timed_samples
        with contextlib.ExitStack() as stack:
            if not timed:  # the ViT and decoder image features once per sample; no timings recorded
                stack.enter_context(model.reuse_encodings())
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
                reps = args.repeats if timed else 1
                tms, pred = [], None
                for _ in range(max(1, reps)):
                    gen = torch.Generator().manual_seed(int(sample.meta["seed"]) % (2 ** 31))
                    pred = model.predict(sample, method=name, keep=kv, readout=args.readout,
                                         position_mode="contiguous" if args.contiguous else "original",
                                         generator=gen, **opts)
                    tms.append(pred.timings_ms)
                timing = {c: float(np.median([t[c] for t in tms])) for c in tms[0]} if timed else {}
                lm_frames = model.lm_frame_ids(sample.frames.shape[0])
                rec = {"method": m, "keep": ks, "sample_id": sid, "family": sample.family,
                       "metrics": sample_metrics(args.task, pred.masks, sample.gt_masks),
                       "tokens_kept": pred.tokens_kept, "tokens_total": pred.tokens_total,
                       "target_hit": target_hit(pred.extra["kept"], pred.extra["positions"], sample.gt_masks,
                                                lm_frames, model.cfg.patch),
                       # the objects the expression needs: its reference set (target included) and anchor
                       "set_hit": object_hits(pred.extra["kept"], pred.extra["positions"], cover,
                                              reference_set(sample.meta), lm_frames),
                       "object_hit": object_hits(pred.extra["kept"], pred.extra["positions"], cover,
                                                 list(range(cover.shape[1])), lm_frames),
                       **({"pointer_hit": pointer_hit(pred.extra["kept"], pred.extra["token_logits"],
                                                      pred.extra["positions"], sample.gt_masks, lm_frames,
                                                      model.cfg.patch)}
                          if "token_logits" in pred.extra else {}),
                       # point readout: whether the location the LM wrote lies on the target
                       **({"pointer_hit": point_on_target(pred.extra["point"], sample.gt_masks)}
                          if "point" in pred.extra else {}),
                       "on_objects": on_objects_share(pred.extra["kept"], pred.extra["positions"], cover,
                                                      lm_frames),
                       "coverage": coverage_measures(pred.extra["visual"], torch.as_tensor(pred.extra["positions"]),
                                             pred.extra["kept"]) if 0 < pred.tokens_kept < pred.tokens_total else {},
                       "timings_ms": timing, "timed": timed,
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
        results.setdefault(m, {})[ks] = {**summarize(args.task, recs), "readout": args.readout}
    # speed-ups against the full-token run (any method's keep 1.0: selection is skipped there)
    full = [r for r in records if resolve_budget(parse_keep(r["keep"], allow_zero=True)).keeps_all
            and r["sample_id"] in ids]
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
