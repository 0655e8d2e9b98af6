"""`evtp eval`: evaluate an IVS model with visual-token pruning on a benchmark, resumably.

    evtp eval --model reference --dataset refcoco --root data/refer_seg --split val \\
              --method evtp --keep 0.2 --out runs/refcoco-val-evtp-0.2

    torchrun --nproc_per_node 8 -m evtp.eval --model ... --out RUN_DIR    # one shard per rank

Run directory::

    RUN_DIR/manifest.json        settings of the run (a restart must use the same ones)
    RUN_DIR/scope.json           the sample ids of the run, in data-set order
    RUN_DIR/parts/rank<r>.jsonl  records being written (one JSON line per sample, fsync'd)
    RUN_DIR/samples.jsonl        all records, merged in data-set order at the end
    RUN_DIR/summary.{json,md}    scores overall and per family, counts, failures, timings
    RUN_DIR/plots/*.png

A restart with the same RUN_DIR skips every sample that already has a record (failed ones too,
unless ``--retry-failed``). A kill loses at most the sample in flight; a torn last line is
dropped. Every sample that cannot be loaded or predicted is recorded as failed with its error
and the run goes on.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from evtp.eval.records import (RecordWriter, best_rows, read_records, write_json_atomic,
                               write_records_atomic, write_text_atomic)
from evtp.eval.summary import build_summary, summary_markdown, write_plots

COMPARED_SETTINGS = ("model", "model_options", "dataset", "dataset_options", "split", "method",
                     "keep", "options")


# ---------------------------------------------------------------- argument parsing

def parse_keep(text: str) -> int | float:
    """``"0.2"`` -> ratio 0.2; ``"64"`` -> count 64 (a count never has a dot or exponent)."""
    try:
        if any(c in text for c in ".eE"):
            value: int | float = float(text)
        else:
            value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keep {text!r}: give a ratio in (0, 1] like 0.2 or an "
                                         f"integer token count like 64") from None
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"--keep {text}: a ratio must lie in (0, 1]")
    if isinstance(value, int) and value < 1:
        raise argparse.ArgumentTypeError(f"--keep {text}: a count must be >= 1")
    return value


def parse_options(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as JSON when they are JSON)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def build_parser(prog: str = "evtp eval") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="a name of evtp.models.MODELS (e.g. reference) or module:factory")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="keyword argument of the model factory (repeatable), e.g. device=cuda")
    p.add_argument("--dataset", required=True, help="a name of evtp.data.DATASETS")
    p.add_argument("--root", default=None, help="the data set folder (see docs/benchmarks/)")
    p.add_argument("--split", required=True, help="e.g. val, testA, valid_u")
    p.add_argument("--dataset-option", action="append", metavar="KEY=VALUE",
                   help="reader option (repeatable), e.g. image_dir=PATH, all_texts=true")
    p.add_argument("--method", default="evtp", help="a selection method of evtp.METHODS")
    p.add_argument("--keep", type=parse_keep, default=0.2,
                   help="visual-token budget: ratio in (0, 1] (0.2) or count (64)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="extra keyword option passed to model.predict (repeatable)")
    p.add_argument("--out", required=True, help="run directory (created; reused to resume)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--retry-failed", action="store_true", help="re-run samples recorded as failed")
    p.add_argument("--save-masks", action="store_true",
                   help="store the predicted masks as COCO RLE in each record")
    p.add_argument("--summary-only", action="store_true",
                   help="only merge the records of --out and rewrite the summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dist-timeout-min", type=float, default=24 * 60,
                   help="torchrun only: how long rank 0 waits for the slowest rank (minutes)")
    return p


# ---------------------------------------------------------------- model

def resolve_model(spec: str, options: dict):
    """An IVSModel from a registry name or ``module:factory``."""
    from evtp.models import MODELS, IVSModel, load_model

    if spec in MODELS:
        model = load_model(spec, **options)
    elif ":" in spec:
        module, func = spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"--model {spec!r}: cannot import {func} from {module} ({exc})") from None
        model = factory(**options)
    else:
        raise ValueError(f"unknown model {spec!r}; known models: {', '.join(sorted(MODELS))}, "
                         f"or give module:factory for your own IVSModel")
    if not isinstance(model, IVSModel):
        raise TypeError(f"--model {spec!r} returned {type(model).__name__}, which does not follow "
                        f"evtp.models.IVSModel (needs a `name` and a `predict(sample, *, method, "
                        f"keep, **options)` method)")
    return model


# ---------------------------------------------------------------- one sample

def _safe_meta(meta: dict) -> dict:
    out = {}
    for k, v in (meta or {}).items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and len(v) <= 64 and all(
                isinstance(x, (str, int, float, bool)) for x in v):
            out[k] = list(v)
    return out


def _encode_masks(masks: np.ndarray | None) -> list | None:
    if masks is None:
        return None
    from pycocotools import mask as mask_utils

    out = []
    for m in masks:
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        out.append({"size": [int(x) for x in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return out


def _check_masks(masks, shape: tuple[int, int, int]) -> np.ndarray | None:
    if masks is None:
        return None
    arr = np.asarray(masks.detach().cpu().numpy() if hasattr(masks, "detach") else masks)
    if arr.ndim == 2 and shape[0] == 1:
        arr = arr[None]
    if arr.shape != shape:
        raise ValueError(f"the model returned masks of shape {arr.shape}; expected (T, H, W) = "
                         f"{shape}, the frames' size")
    return arr.astype(bool) if arr.dtype != bool else arr


def evaluate_sample(model, reader, sample_id: str, *, method: str, keep, options: dict,
                    save_masks: bool = False) -> dict:
    """Load, predict and score one sample; never raises for bad data or a failing model."""
    from evtp.metrics import image_sample_metrics, video_sample_metrics

    row: dict[str, Any] = {"sample_id": sample_id, "status": "ok", "error": None}
    stage = "load"
    t0 = time.perf_counter()
    try:
        sample = reader.load(sample_id)
        row.update(task=sample.task, family=sample.family, instruction=sample.instruction,
                   meta=_safe_meta(sample.meta))
        t1 = time.perf_counter()
        stage = "predict"
        pred = model.predict(sample, method=method, keep=keep, **options)
        t2 = time.perf_counter()
        stage = "metrics"
        masks = _check_masks(pred.masks, tuple(sample.frames.shape[:3]))
        metrics = None
        if sample.gt_masks is not None:
            gt = np.asarray(sample.gt_masks)
            if gt.shape != tuple(sample.frames.shape[:3]):
                raise ValueError(f"ground truth has shape {gt.shape} but the frames are "
                                 f"{tuple(sample.frames.shape[:3])}")
            if sample.task == "image":
                metrics = image_sample_metrics(masks, gt, sample.meta.get("ignore_mask"))
            else:
                metrics = video_sample_metrics(masks, gt, sample.meta.get("foreground_masks"))
        t3 = time.perf_counter()
        row.update(metrics=metrics, no_mask=masks is None,
                   tokens_kept=int(pred.tokens_kept), tokens_total=int(pred.tokens_total),
                   timings_ms={**{k: float(v) for k, v in (pred.timings_ms or {}).items()},
                               "eval_load": (t1 - t0) * 1e3, "eval_predict": (t2 - t1) * 1e3,
                               "eval_metrics": (t3 - t2) * 1e3})
        if save_masks:
            row["pred_rle"] = _encode_masks(masks)
    except Exception as exc:  # bad data or a failing model: record and go on
        msg = str(exc)
        if sample_id not in msg:
            msg = f"sample {sample_id}: {msg}"
        row.update(status="failed", stage=stage, error=f"{type(exc).__name__}: {msg}",
                   traceback=traceback.format_exc(limit=4)[-2000:])
    return row


# ---------------------------------------------------------------- distributed helpers

class _Dist:
    def __init__(self, timeout_min: float):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        if self.active:
            import torch
            import torch.distributed as dist

            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank % torch.cuda.device_count())
            # gloo only coordinates (barrier, broadcast of the id list); models use their devices
            dist.init_process_group("gloo", timeout=timedelta(minutes=timeout_min))
            self._dist = dist

    def broadcast(self, obj):
        if not self.active:
            return obj
        box = [obj]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self):
        if self.active:
            self._dist.barrier()

    def close(self):
        if self.active:
            self._dist.destroy_process_group()


# ---------------------------------------------------------------- run directory

def _all_records(out: Path) -> list[dict]:
    rows, _ = read_records(out / "samples.jsonl")
    for part in sorted((out / "parts").glob("*.jsonl")):
        rows += read_records(part)[0]
    return rows


def _check_manifest(out: Path, manifest: dict) -> None:
    path = out / "manifest.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    diff = [f"{k}: {old.get(k)!r} (in RUN_DIR) != {manifest.get(k)!r}" for k in COMPARED_SETTINGS
            if json.dumps(old.get(k), sort_keys=True) != json.dumps(manifest.get(k), sort_keys=True)]
    if diff:
        raise ValueError(f"--out {str(out)!r} holds a run with different settings ("
                         + "; ".join(diff) + "); use a new --out directory to evaluate these settings")


def finalize(out: Path, *, quiet: bool = False, remove_parts: bool = True) -> dict:
    """Merge all records of ``out`` into samples.jsonl (data-set order) and write the summary.

    ``remove_parts`` deletes the merged part files (only safe when no rank is still writing)."""
    manifest = json.loads((out / "manifest.json").read_text())
    scope = json.loads((out / "scope.json").read_text())
    best = best_rows(_all_records(out))
    order = {sid: i for i, sid in enumerate(scope)}
    merged = sorted(best.values(), key=lambda r: (order.get(r["sample_id"], len(order)), r["sample_id"]))
    write_records_atomic(out / "samples.jsonl", merged)
    if remove_parts:
        for part in (out / "parts").glob("*.jsonl"):
            part.unlink()
    summary = build_summary(merged, scope, manifest)
    write_json_atomic(out / "summary.json", summary)
    md = summary_markdown(summary)
    write_text_atomic(out / "summary.md", md)
    try:
        write_plots(summary, [r for r in merged if r["sample_id"] in order], out / "plots")
    except Exception as exc:  # plots are a convenience; never lose a summary over them
        print(f"warning: could not draw plots: {exc}", file=sys.stderr)
    if not quiet:
        print(md)
    return summary


def _lock(path: Path):
    """Exclusive lock on a rank's part file: two runs must not write the same RUN_DIR rank."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        return None
    fh = open(path, "a")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise RuntimeError(f"another evtp eval is writing {str(path)!r}; wait for it or use "
                           f"another --out") from None
    return fh


# ---------------------------------------------------------------- main

def run(args) -> int:
    out = Path(args.out)
    if args.summary_only:
        if not (out / "manifest.json").is_file():
            raise FileNotFoundError(f"--out {str(out)!r} has no manifest.json; nothing to summarise")
        finalize(out, remove_parts=False)  # a run may still be appending to its part file
        return 0

    from evtp.data import open_dataset
    from evtp.data.readers import dataset_class

    dist = _Dist(args.dist_timeout_min)
    try:
        # rank 0 validates, lists the ids and decides what is left; the others follow
        plan: dict[str, Any] = {}
        if dist.rank == 0:
            try:
                model_options = parse_options(args.model_option, "--model-option")
                dataset_options = parse_options(args.dataset_option, "--dataset-option")
                options = parse_options(args.option, "--option")
                cls = dataset_class(args.dataset)
                if args.root is None and not args.dataset.startswith("synthetic"):
                    raise ValueError(f"--root is required for dataset {args.dataset!r}")
                reader = open_dataset(args.dataset, args.root, args.split, **dataset_options)
                ids = reader.ids()
                if args.limit is not None:
                    if args.limit < 1:
                        raise ValueError("--limit must be >= 1")
                    ids = ids[:args.limit]
                manifest = {"model": args.model, "model_options": model_options,
                            "dataset": args.dataset, "dataset_options": dataset_options,
                            "root": str(args.root), "split": args.split, "task": cls.task,
                            "overall": cls.overall, "method": args.method, "keep": args.keep,
                            "options": options, "limit": args.limit, "world_size": dist.world}
                out.mkdir(parents=True, exist_ok=True)
                _check_manifest(out, manifest)
                write_json_atomic(out / "manifest.json", manifest)
                scope_path = out / "scope.json"
                old_scope = json.loads(scope_path.read_text()) if scope_path.is_file() else []
                in_scope = set(ids)
                scope = ids + [s for s in old_scope if s not in in_scope]
                write_json_atomic(scope_path, scope)
                best = best_rows(_all_records(out))
                done = {s for s, r in best.items()
                        if r.get("status") == "ok" or not args.retry_failed}
                todo = [s for s in ids if s not in done]
                plan = {"error": None, "todo": todo, "n_done": len(ids) - len(todo),
                        "options": options, "model_options": model_options,
                        "dataset_options": dataset_options}
            except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
                plan = {"error": f"{type(exc).__name__}: {exc}"}
        plan = dist.broadcast(plan)
        if plan["error"]:
            if dist.rank == 0:
                print(f"{args.prog}: error: {plan['error']}", file=sys.stderr)
            return 2
        shard = plan["todo"][dist.rank::dist.world]
        if dist.rank == 0:
            print(f"{args.dataset} {args.split}: {plan['n_done']} samples already done, "
                  f"{len(plan['todo'])} to go over {dist.world} process(es)", file=sys.stderr)
        if shard:
            reader = open_dataset(args.dataset, args.root, args.split, **plan["dataset_options"])
            model = resolve_model(args.model, plan["model_options"])
            _evaluate_shard(model, reader, shard, args, plan["options"], out, dist)
        dist.barrier()
        if dist.rank == 0:
            finalize(out)
        dist.barrier()
        return 0
    finally:
        dist.close()


def _evaluate_shard(model, reader, shard, args, options, out: Path, dist) -> None:
    from tqdm import tqdm

    part = out / "parts" / f"rank{dist.rank}.jsonl"
    part.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(part)
    bar = tqdm(total=len(shard), desc=f"{args.dataset} {args.split} [rank {dist.rank}]",
               disable=args.no_progress or dist.rank != 0, dynamic_ncols=True, file=sys.stderr)
    n_failed = 0
    try:
        with RecordWriter(part) as writer:
            for sid in shard:
                row = evaluate_sample(model, reader, sid, method=args.method, keep=args.keep,
                                      options=options, save_masks=args.save_masks)
                row["rank"] = dist.rank
                writer.write(row)
                if row["status"] != "ok":
                    n_failed += 1
                    tqdm.write(f"failed: {row['error']}", file=sys.stderr)
                bar.update(1)
                bar.set_postfix(failed=n_failed)
    finally:
        bar.close()
        if lock is not None:
            lock.close()


def main(argv: list[str] | None = None, prog: str = "evtp eval") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    args.prog = prog
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    try:
        return run(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
