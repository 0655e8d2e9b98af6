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

import importlib
import inspect
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from evtp.eval.records import (RecordWriter, best_rows, check_output_dir, prepare_output_dir,
                               read_records,
                               write_json_atomic, write_records_atomic, write_text_atomic)
from evtp.eval.summary import build_summary, summary_markdown, write_plots
from evtp.settings import SettingsError, check_method, model_placement, split_method
from evtp.pruning import PruningSettings

COMPARED_SETTINGS = ("model", "model_options", "dataset", "dataset_options", "split", "method",
                     "keep", "options")
# errors that mean "these settings cannot run": one line on stderr, exit status 2, nothing written
SETTINGS_ERRORS = (SettingsError, ValueError, TypeError, FileNotFoundError, NotADirectoryError,
                   PermissionError, RuntimeError, ImportError)
EXIT_SETTINGS, EXIT_ALL_FAILED, EXIT_INTERRUPTED = 2, 1, 130


@dataclass(frozen=True)
class EvalConfig:
    """The settings of one evaluation run (what ``evtp eval``'s flags hold).

    ``model`` is a registry name (`evtp.models.MODELS`) or ``module:factory``; ``model_options``
    its factory's keywords. ``dataset`` is a registry name (`evtp.data.DATASETS`) read from
    ``root`` (None for the synthetic benchmark, which reads nothing). ``method`` may carry its
    options in brackets (``evtp[saliency_weight=4]``); ``options`` are the method's options or
    keywords of the model's ``predict``. ``out`` is the run directory (resumed when it holds a run
    with the same settings). ``progress``: a progress bar on stderr. ``prog``: the command name
    used in messages.
    """

    model: str
    dataset: str
    split: str
    out: Path
    root: str | None = None
    model_options: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    method: str = "evtp"
    keep: int | float = 0.2
    options: dict = field(default_factory=dict)
    limit: int | None = None
    retry_failed: bool = False
    save_masks: bool = False
    summary_only: bool = False
    progress: bool = True
    dist_timeout_min: float = 24 * 60
    prog: str = "evtp eval"


# ---------------------------------------------------------------- settings

def _factory(spec: str):
    """The factory behind a registry name or ``module:factory``; SettingsError when unknown."""
    from evtp.models import MODELS

    if spec in MODELS:
        module, func = MODELS[spec].split(":")
    elif ":" in spec:
        module, func = spec.split(":", 1)
    else:
        raise SettingsError(f"--model: unknown model {spec!r}; known models: {', '.join(sorted(MODELS))}, "
                            f"or give module:factory for your own IVSModel")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"--model {spec!r}: cannot import {func} from {module} ({exc})") from None


def _keywords(fn) -> tuple[set[str], bool]:
    """Keyword parameter names of ``fn`` and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: accept anything
        return set(), True
    names = {q.name for q in params if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY)}
    return names, any(q.kind == q.VAR_KEYWORD for q in params)


def check_model_options(spec: str, options: dict) -> dict:
    """``options`` checked against the factory's keywords, with ``device`` / ``dtype`` turned into
    torch objects (`evtp.settings.model_placement`): unknown keywords, a device this machine lacks
    or an unknown dtype raise SettingsError before the model is built."""
    factory = _factory(spec)
    names, var = _keywords(factory)
    unknown = sorted(set(options) - names) if not var else []
    if unknown:
        raise SettingsError(f"--model-option {', '.join(unknown)}: model {spec!r} does not take it; its "
                            f"options: {', '.join(sorted(names)) or 'none'}")
    threads = options.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise SettingsError(f"--model-option threads={threads!r}: give an integer >= 1 (torch CPU threads)")
    return model_placement(options)


def resolve_model(spec: str, options: dict):
    """An IVSModel from a registry name or ``module:factory`` (options checked first)."""
    from evtp.models import IVSModel

    model = _factory(spec)(**check_model_options(spec, options))
    if not isinstance(model, IVSModel):
        raise SettingsError(f"--model {spec!r} returned {type(model).__name__}, which does not follow "
                            f"evtp.models.IVSModel (needs a `name` and a `predict(sample, *, method, "
                            f"keep, **options)` method)")
    return model


def split_run_options(method_text: str, options: dict) -> tuple[str, dict, dict]:
    """``--method`` (``NAME`` or ``NAME[K=V;...]``) and ``--option`` -> (method, method options,
    other options for the model's predict), the method options checked (`check_method`)."""
    from evtp.selection import METHODS

    name, own = split_method(method_text, "--method")
    twice = sorted(set(own) & set(options))
    if twice:
        raise SettingsError(f"--method {method_text!r} and --option both set {', '.join(twice)}; set it once")
    merged = {**options, **own}
    if name not in METHODS:
        raise SettingsError(f"--method: unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    declared = METHODS[name].options
    method_opts = {k: v for k, v in merged.items() if k in declared}
    check_method(name, method_opts, flag=f"--method {method_text!r}")
    return name, method_opts, {k: v for k, v in merged.items() if k not in declared}


def check_predict_options(model, method: str, extra: dict) -> dict:
    """Options that are not the method's must be the model's own ``predict`` options, typed and
    checked by its declared `evtp.models.base.PredictOptions` (``model`` may be the model or its
    factory; `evtp.models.base.check_predict_options`). Returns them typed."""
    from evtp.models.base import check_predict_options as check, predict_option_names, predict_options_of
    from evtp.selection import METHODS

    if not extra:
        return {}
    names = predict_option_names(model)
    unknown = sorted(set(extra) - names) if names is not None else []
    if unknown:
        declared = predict_options_of(model)
        owner = declared.__qualname__ if declared is not None else \
            getattr(model, "__name__", None) or f"{type(model).__name__}.predict"
        raise SettingsError(
            f"--option {', '.join(unknown)}: neither an option of method {method!r} (its options: "
            f"{', '.join(sorted(METHODS[method].options)) or 'none'}) nor a keyword of "
            f"{owner} ({', '.join(sorted(names)) or 'none'})")
    try:
        return check(model, extra)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"--option: {exc}") from None


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
    """Load, predict and score one sample; never raises for a bad sample or a failing model.

    A `DatasetFileError` (a file every sample needs is broken) is raised: going on would only
    record every sample as failed."""
    from evtp.data import DatasetFileError
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
        if masks is None and (pred.extra or {}).get("no_mask_reason"):  # e.g. an answer a parser cannot read
            row["no_mask_reason"] = str(pred.extra["no_mask_reason"])[:2000]
        if save_masks:
            row["pred_rle"] = _encode_masks(masks)
    except DatasetFileError:
        raise
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

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (all ranks get the list)."""
        if not self.active:
            return [obj]
        box = [None] * self.world
        self._dist.all_gather_object(box, obj)
        return box

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


def _check_manifest(out: Path, manifest: dict) -> str | None:
    """Refuse a run directory that holds a run with other settings, unless that run has no
    sample scored ok (e.g. every sample failed on a budget above the model's token count): such a
    run holds nothing worth keeping and is replaced. Returns a description of the replaced
    settings, or None."""
    path = out / "manifest.json"
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    diff = [f"{k}: {old.get(k)!r} (in RUN_DIR) != {manifest.get(k)!r}" for k in COMPARED_SETTINGS
            if json.dumps(old.get(k), sort_keys=True) != json.dumps(manifest.get(k), sort_keys=True)]
    if not diff:
        return None
    records = _all_records(out)
    if not any(r.get("status") == "ok" for r in records):
        return "; ".join(diff)
    raise ValueError(f"--out {str(out)!r} holds a run with different settings ("
                     + "; ".join(diff) + "); use a new --out directory to evaluate these settings")


def _clear_run(out: Path) -> None:
    """Remove the files of a run directory's earlier run (manifest, scope, records, summary, plots)."""
    for name in ("manifest.json", "scope.json", "samples.jsonl", "summary.json", "summary.md"):
        (out / name).unlink(missing_ok=True)
    for old in [*(out / "parts").glob("*.jsonl"), *(out / "plots").glob("*.png")]:
        old.unlink()


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

def plan_run(config: EvalConfig, world: int) -> tuple[dict, Any]:
    """Check every setting and list what is left to do, writing nothing (rank 0).

    Returns (plan, reader): the plan holds the manifest to write, the run's ids (scope), the ids
    still to evaluate and the parsed options (plain data, broadcast to the other ranks); the
    reader is the opened, checked data set. Raises one of `SETTINGS_ERRORS` for settings that
    cannot run."""
    from evtp.data import open_dataset
    from evtp.data.readers import DatasetOptionError, dataset_class

    out = check_output_dir(config.out)
    model_options = dict(config.model_options)
    check_model_options(config.model, model_options)  # unknown keyword, device, dtype
    method, method_opts, extra = split_run_options(config.method, dict(config.options))
    try:  # the one settings type: keep (0, a count, a ratio) with the method and its options
        PruningSettings(method, config.keep, options=method_opts)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"--keep {config.keep!r} / --method {config.method!r}: {exc}") from None
    factory = _factory(config.model)
    if getattr(factory, "predict_options", None) is not None:  # typed before the model is built
        extra = check_predict_options(factory, method, extra)
    dataset_options = dict(config.dataset_options)
    cls = dataset_class(config.dataset)
    synthetic = config.dataset.startswith("synthetic")
    if config.root is None and not synthetic:
        raise SettingsError(f"--root is required for dataset {config.dataset!r}: the folder that holds it "
                            f"(docs/benchmarks/)")
    if config.root is not None and synthetic:
        raise SettingsError(f"--root {str(config.root)!r}: dataset {config.dataset!r} is generated, nothing "
                            f"is read from disk; leave --root out")
    try:
        reader = open_dataset(config.dataset, config.root, config.split, **dataset_options)
    except (ValueError, TypeError) as exc:  # a reader option it does not know or cannot use
        if isinstance(exc, DatasetOptionError) or "option" in str(exc):
            raise SettingsError(f"--dataset-option: {exc}") from None
        raise
    reader.check()  # the annotation files every sample needs parse
    ids = reader.ids()
    if not ids:
        raise SettingsError(f"{config.dataset} {config.split} at {str(config.root)!r} has no samples")
    if config.limit is not None:
        ids = ids[:config.limit]
    run_options = {**method_opts, **extra}
    manifest = {"model": config.model, "model_options": model_options,
                "dataset": config.dataset, "dataset_options": dataset_options,
                "root": str(config.root), "split": config.split, "task": cls.task,
                "overall": cls.overall, "method": method, "keep": config.keep,
                "options": run_options, "limit": config.limit, "world_size": world}
    replaced = _check_manifest(out, manifest)
    scope_path = out / "scope.json"
    old_scope = json.loads(scope_path.read_text()) if scope_path.is_file() and not replaced else []
    in_scope = set(ids)
    scope = ids + [s for s in old_scope if s not in in_scope]
    best = best_rows(_all_records(out)) if out.is_dir() and not replaced else {}
    done = {s for s, r in best.items() if r.get("status") == "ok" or not config.retry_failed}
    todo = [s for s in ids if s not in done]
    return {"error": None, "manifest": manifest, "scope": scope, "todo": todo,
            "n_done": len(ids) - len(todo), "method": method, "options": run_options,
            "extra_options": extra, "model_options": model_options,
            "dataset_options": dataset_options, "replaced": replaced}, reader


def run_eval(config: EvalConfig) -> int:
    """Plan (`plan_run`: every setting checked, nothing written), run (each rank evaluates its
    shard, writing a record per sample), summarise (`finalize`). Returns the exit status: 0 done,
    1 every sample failed, 2 settings that cannot run (one line printed by rank 0). Under
    torchrun every rank calls it."""
    out = Path(config.out)
    if config.summary_only:
        if not (out / "manifest.json").is_file():
            raise FileNotFoundError(f"--out {str(out)!r} has no manifest.json; nothing to summarise")
        finalize(out, remove_parts=False)  # a run may still be appending to its part file
        return 0

    from evtp.data import open_dataset

    dist = _Dist(config.dist_timeout_min)
    try:
        # rank 0 checks the settings and decides what is left; nothing is written yet
        plan: dict[str, Any] = {}
        reader = None
        if dist.rank == 0:
            try:
                plan, reader = plan_run(config, dist.world)
            except SETTINGS_ERRORS as exc:
                plan = {"error": one_line(exc)}
        plan = dist.broadcast(plan)
        if plan["error"]:
            if dist.rank == 0:
                print(f"{config.prog}: error: {plan['error']}", file=sys.stderr)
            return EXIT_SETTINGS
        # every rank with work builds its model (rank 0 whenever anything is left: the model's
        # own checks run before anything is written); a failure anywhere stops all ranks
        shard = plan["todo"][dist.rank::dist.world]
        model = None
        error = None
        if shard or (dist.rank == 0 and plan["todo"]):
            try:
                model = resolve_model(config.model, plan["model_options"])
                check_predict_options(model, plan["method"], plan["extra_options"])
                if reader is None:
                    reader = open_dataset(config.dataset, config.root, config.split, **plan["dataset_options"])
            except SETTINGS_ERRORS as exc:
                error = f"{one_line(exc)}" + (f" (rank {dist.rank})" if dist.active else "")
        errors = [e for e in dist.gather(error) if e]
        if errors:
            if dist.rank == 0:
                print(f"{config.prog}: error: {errors[0]}", file=sys.stderr)
            return EXIT_SETTINGS
        if dist.rank == 0:
            _start_run(config, plan, out, dist.world)
        dist.barrier()
        if shard:
            _evaluate_shard(model, reader, shard, config, plan["method"], plan["options"], out, dist)
        dist.barrier()
        status = 0
        if dist.rank == 0:
            summary = finalize(out)
            status = _all_failed_status(config.prog, summary)
        dist.barrier()
        return status
    finally:
        dist.close()


def _start_run(config: EvalConfig, plan: dict, out: Path, world: int) -> None:
    """Rank 0, once every setting is checked: create the run directory (replacing an earlier run
    whose samples all failed) and write the manifest and the scope."""
    from evtp.models import NOTES

    prepare_output_dir(out)
    if plan["replaced"]:
        print(f"note: {str(out)!r} held a run with other settings whose samples all failed "
              f"({plan['replaced']}); it is replaced", file=sys.stderr)
        _clear_run(out)
    write_json_atomic(out / "manifest.json", plan["manifest"])
    write_json_atomic(out / "scope.json", plan["scope"])
    print(f"{config.dataset} {config.split}: {plan['n_done']} samples already done, "
          f"{len(plan['todo'])} to go over {world} process(es)", file=sys.stderr)
    if config.model in NOTES and not config.dataset.startswith("synthetic"):
        print(f"note: {NOTES[config.model]}", file=sys.stderr)


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: a ValueError (settings, data files) or missing file by its message alone,
    anything else with its type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    plain = isinstance(exc, (ValueError, FileNotFoundError, NotADirectoryError)) and not isinstance(exc, TypeError)
    return text if plain else f"{type(exc).__name__}: {text}"


def _all_failed_status(prog: str, summary: dict) -> int:
    """Exit status 1 (and one line) when every finished sample of the run failed."""
    c = summary["counts"]
    if c["done"] and not c["ok"]:
        first = summary["failures"][0]["error"] if summary["failures"] else ""
        print(f"{prog}: error: every one of the {c['failed']} samples failed; the first: {first}",
              file=sys.stderr)
        return EXIT_ALL_FAILED
    return 0


def _evaluate_shard(model, reader, shard, config, method: str, options: dict, out: Path, dist) -> None:
    from tqdm import tqdm

    part = out / "parts" / f"rank{dist.rank}.jsonl"
    part.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(part)
    bar = tqdm(total=len(shard), desc=f"{config.dataset} {config.split} [rank {dist.rank}]",
               disable=not config.progress or dist.rank != 0, dynamic_ncols=True, file=sys.stderr)
    n_failed = 0
    try:
        with RecordWriter(part) as writer:
            for sid in shard:
                row = evaluate_sample(model, reader, sid, method=method, keep=config.keep,
                                      options=options, save_masks=config.save_masks)
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
