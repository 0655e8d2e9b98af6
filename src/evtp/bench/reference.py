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
  ``speedup_mllm`` / ``speedup_total`` (vs the full-token run), ``coverage`` and ``n``;
  ``readout`` and ``score_source`` (where score-based methods got their scores,
  `evtp.models.reference.scores`), and with ``--score-source lm`` ``score_pass_ms``: the median
  LM score pass, which ``timings_ms["selection"]`` (so ``mllm_ms`` and the speed-ups) includes.
* ``<out stem>.records.jsonl``: a header line (the settings) and one line per (method, keep,
  sample), written as the run goes with `evtp.eval.records.RecordWriter` (fsync'd, a torn last line
  dropped); a re-run with the same settings resumes from it, one with other settings is refused.
* ``<out stem>.md``: a markdown table; ``<out stem>_*.png``: accuracy vs keep, speed-up vs keep,
  coverage vs accuracy (with its Pearson r); ``<out stem>_overlays/``: kept tokens + masks.

Timings are medians: each of the first ``--timed-samples`` samples is run ``--repeats`` times per
configuration and the per-sample medians are combined by a median. The other samples record no
timings: they compute the ViT and the mask decoder's image features once and reuse them for every
configuration (`ReferenceIVS.reuse_encodings`; the outputs are the same).

`ReferenceBenchConfig` holds the settings (the flags are parsed by `evtp.cli.bench_reference`);
`run_reference_bench` plans (`plan_reference_bench`), runs (`run_samples`), summarises
(`summarise_records`) and writes the reports.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from evtp.bench.measures import (coverage_measures, method_free, object_hits, on_objects_share,
                                 pointer_hit, reference_set, sample_metrics, target_hit)
from evtp.bench.models import load_bench_model, weights_digest
from evtp.bench.report import add_paired_differences, make_plots, overlay, summarize, write_table
from evtp.data.synthetic import DIFFICULTIES, make_sample, object_cover
from evtp.eval.records import (RecordWriter, prepare_output_file, read_first_line, read_records,
                               records_path_beside, write_text_atomic)
from evtp.models.reference.model import SCORE_DEFAULTS, ReferencePredictOptions
from evtp.pruning import resolve_budget
from evtp.selection import METHODS
from evtp.settings import MethodSetting, SettingsError, method_options, parse_keep

TASKS, SPLITS = ("image", "video"), ("train", "val", "test")


def check_base_options(options: Mapping[str, Any], specs) -> None:
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


@dataclass(frozen=True)
class ReferenceBenchConfig:
    """What ``evtp bench reference`` runs: the first ``samples`` samples of the synthetic ``task``
    / ``split`` (seeds shifted by ``seed_offset``), every entry of ``methods``
    (`evtp.settings.MethodSetting`) at every ``keeps`` entry ((text, budget) pairs, 0 allowed), with
    the base ``options`` (``--option``) where a method declares them. ``weights``: the model folder
    (None: the shipped weights; ``"random-tiny"``: a tiny untrained model, for tests); ``readout``
    None: the weights' primary one. ``score_source`` / ``score_layer`` / ``score_noise``: the
    scores of score-based methods (`evtp.models.reference.scores`; checked as
    `ReferencePredictOptions` checks them). The first ``timed_samples`` samples are timed ``repeats``
    times; the first ``overlays`` samples get kept-token overlays. Results go to ``out`` (JSON),
    its records file (resumed), table and, with ``plots``, plots."""

    methods: tuple[MethodSetting, ...]
    keeps: tuple[tuple[str, int | float], ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    task: str = "image"
    split: str = "test"
    difficulty: str = "standard"
    textured: bool = False
    seed_offset: int = 0
    samples: int = 200
    out: Path = Path("results/reference_image.json")
    weights: str | None = None
    contiguous: bool = False
    readout: str | None = None
    score_source: str = SCORE_DEFAULTS["score_source"]
    score_layer: int = SCORE_DEFAULTS["score_layer"]
    score_noise: float = SCORE_DEFAULTS["score_noise"]
    repeats: int = 3
    timed_samples: int = 8
    overlays: int = 1
    threads: int = 2
    plots: bool = True

    def __post_init__(self):
        if self.task not in TASKS or self.split not in SPLITS:
            raise SettingsError(f"task {self.task!r} / split {self.split!r}: choose a task of "
                                f"{', '.join(TASKS)} and a split of {', '.join(SPLITS)}")
        if self.difficulty not in DIFFICULTIES:
            raise SettingsError(f"difficulty {self.difficulty!r}: choose one of {', '.join(DIFFICULTIES)}")
        if not self.methods or not self.keeps:
            raise SettingsError("give at least one method (--methods) and one keep (--keep)")
        if min(self.samples, self.repeats, self.threads) < 1 or min(self.timed_samples, self.overlays) < 0:
            raise SettingsError(f"--samples {self.samples}, --repeats {self.repeats}, --threads {self.threads} "
                                f"must be >= 1; --timed-samples {self.timed_samples}, --overlays "
                                f"{self.overlays} must be >= 0")
        check_base_options(self.options, self.methods)
        try:
            ReferencePredictOptions(**self.score_options)
        except ValueError as exc:
            raise SettingsError(f"--score-source / --score-layer / --score-noise: {exc}") from None

    @property
    def score_options(self) -> dict:
        """The score keywords of `ReferenceIVS.predict`."""
        return {"score_source": self.score_source, "score_layer": self.score_layer, "score_noise": self.score_noise}

    @property
    def position_mode(self) -> str:
        return "contiguous" if self.contiguous else "original"

    def sample_id(self, i: int) -> str:
        return f"{self.split}-{self.task}-{i + self.seed_offset}"


@dataclass
class ReferencePlan:
    """What `plan_reference_bench` settled before the first sample: the loaded ``model``, its
    ``readout``, the records file's ``header``, the ``records`` already there (resumed; the list
    the run appends to) and the (method, keep, sample id) triples they cover."""

    model: Any
    readout: str
    out: Path
    records_path: Path
    header: dict
    records: list[dict]
    has_header: bool
    method_of: dict[str, tuple[str, dict]]

    @property
    def stem(self) -> Path:
        return self.out.with_suffix("")

    def done(self) -> set[tuple[str, str, str]]:
        return {(r["method"], r["keep"], r["sample_id"]) for r in self.records}


def resume_records(path: Path, header: dict) -> tuple[list[dict], bool]:
    """(the records in ``path``, whether it holds a header); `SettingsError` when its header
    is not ``header`` (a run with other settings or other weights)."""
    first = read_first_line(path)
    if first is None:
        return [], False
    if first.get("header") != header:
        raise SettingsError(f"{path} was written by a run with different settings ({first.get('header')}); "
                            f"pass another --out or delete it")
    return read_records(path)[0], True


def plan_reference_bench(config: ReferenceBenchConfig) -> ReferencePlan:
    """Check ``--out``, load the model, settle its readout and resume the records of an earlier
    run with the same settings (`SettingsError` for a readout the weights lack or a records file
    of other settings)."""
    out = prepare_output_file(config.out)
    torch.set_num_threads(config.threads)
    model = load_bench_model(config.weights)
    try:
        readout = model.check_readout(config.readout)
        model.check_score_options(config.score_source, config.score_layer, config.score_noise)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    records_path = records_path_beside(out)
    header = {"task": config.task, "split": config.split, "seed_offset": config.seed_offset,
              "weights": str(config.weights or "shipped"), "weights_sha256": weights_digest(model),
              "options": dict(config.options), "position_mode": config.position_mode, "readout": readout}
    if config.score_source != "vit":  # the ViT's scores write the header they always did: their records resume
        header.update(config.score_options)
    if config.difficulty != "standard" or config.textured:  # likewise for the standard, untextured scenes
        header.update(difficulty=config.difficulty, textured=config.textured)
    records, has_header = resume_records(records_path, header)
    method_of = {s.label: (s.method, method_options(s, config.options)) for s in config.methods}
    return ReferencePlan(model, readout, out, records_path, header, records, has_header, method_of)


def measure(config: ReferenceBenchConfig, plan: ReferencePlan, sample, cover: np.ndarray, sid: str,
            label: str, keep_text: str, keep, timed: bool):
    """Run method entry ``label`` at one keep on sample ``sid`` (timed: ``config.repeats`` times,
    median timings): (its record, the model's prediction)."""
    model, (name, opts) = plan.model, plan.method_of[label]
    tms, pred = [], None
    for _ in range(config.repeats if timed else 1):
        gen = torch.Generator().manual_seed(int(sample.meta["seed"]) % (2 ** 31))
        pred = model.predict(sample, method=name, keep=keep, readout=plan.readout,
                             position_mode=config.position_mode, generator=gen, **config.score_options, **opts)
        tms.append(pred.timings_ms)
    timing = {c: float(np.median([t[c] for t in tms])) for c in tms[0]} if timed else {}
    lm_frames = model.lm_frame_ids(sample.frames.shape[0])
    kept, positions, extra = pred.extra["kept"], pred.extra["positions"], pred.extra
    rec = {"method": label, "keep": keep_text, "sample_id": sid, "family": sample.family,
           "metrics": sample_metrics(config.task, pred.masks, sample.gt_masks),
           "tokens_kept": pred.tokens_kept, "tokens_total": pred.tokens_total,
           "objects": len(sample.meta["objects"]),  # objects in the scene (kept tokens per object)
           "target_hit": target_hit(kept, positions, sample.gt_masks, lm_frames, model.cfg.patch),
           # the objects the expression needs: its reference set (target included) and anchor
           "set_hit": object_hits(kept, positions, cover, reference_set(sample.meta), lm_frames),
           "object_hit": object_hits(kept, positions, cover, list(range(cover.shape[1])), lm_frames),
           **({"pointer_hit": pointer_hit(kept, extra["token_logits"], positions, sample.gt_masks, lm_frames,
                                          model.cfg.patch)} if "token_logits" in extra else {}),
           # point readout: whether the location the LM wrote lies on the target
           **({"pointer_hit": point_on_target(extra["point"], sample.gt_masks)} if "point" in extra else {}),
           "on_objects": on_objects_share(kept, positions, cover, lm_frames),
           "coverage": coverage_measures(extra["visual"], torch.as_tensor(positions), kept)
           if 0 < pred.tokens_kept < pred.tokens_total else {},
           "timings_ms": timing, "timed": timed, "emitted_seg": extra["emitted_seg"]}
    return rec, pred


def _write_overlay(plan: ReferencePlan, sample, pred, sid: str, label: str, keep_text: str) -> None:
    import cv2

    folder = Path(f"{plan.stem}_overlays")
    folder.mkdir(parents=True, exist_ok=True)
    img = overlay(sample, pred, plan.model.cfg.patch, plan.model.lm_frame_ids(sample.frames.shape[0]))
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in label)
    cv2.imwrite(str(folder / f"{sid}_{safe}_{keep_text}.png"), img[..., ::-1])


def run_sample(config: ReferenceBenchConfig, plan: ReferencePlan, writer: RecordWriter, i: int,
               done: set, on_record=lambda: None) -> None:
    """Every (method, keep) of sample ``i`` not in ``done``; each record written (``writer``) and
    appended to ``plan.records`` as it comes. Keep 0 and 1.0 do not depend on the method: they run
    once and are recorded for every method."""
    sid, timed = config.sample_id(i), i < config.timed_samples
    sample = cover = None
    shared: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        if not timed:  # the ViT and decoder image features once per sample; no timings recorded
            stack.enter_context(plan.model.reuse_encodings())
        for label in (s.label for s in config.methods):
            for keep_text, keep in config.keeps:
                if (label, keep_text, sid) in done:
                    continue
                if keep_text in shared:
                    rec = dict(shared[keep_text], method=label)
                else:
                    if sample is None:
                        sample = make_sample(config.split, i, config.task, seed_offset=config.seed_offset,
                                             with_labels=True, difficulty=config.difficulty,
                                             textured=config.textured)
                        cover = object_cover(sample.meta["labels"], len(sample.meta["objects"]),
                                             plan.model.cfg.patch)
                    rec, pred = measure(config, plan, sample, cover, sid, label, keep_text, keep, timed)
                    if method_free(keep):
                        shared[keep_text] = rec
                    if i < config.overlays and 0 < pred.tokens_kept:
                        _write_overlay(plan, sample, pred, sid, label, keep_text)
                writer.write(rec)
                plan.records.append(rec)
                on_record()


def run_samples(config: ReferenceBenchConfig, plan: ReferencePlan) -> None:
    """Run every sample's missing (method, keep) runs, appending to the records file (its header
    written first when it has none)."""
    from tqdm import tqdm

    done = plan.done()
    total = len(config.methods) * len(config.keeps) * config.samples
    initial = sum((s.label, ks, config.sample_id(i)) in done for s in config.methods for ks, _ in config.keeps
                  for i in range(config.samples))
    with RecordWriter(plan.records_path) as writer, \
            tqdm(total=total, initial=initial, desc=f"bench reference {config.task}", unit="run") as bar:
        if not plan.has_header:
            writer.write({"header": plan.header})
            plan.has_header = True
        for i in range(config.samples):
            run_sample(config, plan, writer, i, done, on_record=lambda: bar.update(1))


def score_pass_ms(records: list[dict]) -> dict:
    """``{"score_pass_ms": median}`` of the timed records' LM score pass (the "lm" score source;
    already counted in their ``selection``), or {} when none ran one."""
    timed = [r["timings_ms"]["score_pass"] for r in records if r.get("timed") and "score_pass" in r["timings_ms"]]
    return {"score_pass_ms": float(np.median(timed))} if timed else {}


def summarise_records(config: ReferenceBenchConfig, records: list[dict], readout: str) -> dict:
    """``{method: {keep: {metric: ...}}}`` over this run's samples: `evtp.bench.report.summarize`
    per (method, keep) with its ``readout``, speed-ups against the full-token run and every later
    method's paired difference to the first."""
    ids = {config.sample_id(i) for i in range(config.samples)}
    results: dict = {}
    for label in (s.label for s in config.methods):
        for keep_text, _ in config.keeps:
            recs = [r for r in records if r["method"] == label and r["keep"] == keep_text and r["sample_id"] in ids]
            results.setdefault(label, {})[keep_text] = {**summarize(config.task, recs), "readout": readout,
                                                        "score_source": config.score_source,
                                                        **score_pass_ms(recs)}
    # speed-ups against the full-token run (any method's keep 1.0: selection is skipped there)
    full = [r for r in records if resolve_budget(parse_keep(r["keep"], allow_zero=True)).keeps_all
            and r["sample_id"] in ids]
    if not full:
        full = [r for r in records if r["tokens_kept"] == r["tokens_total"] and r["sample_id"] in ids]
    if full:
        base = summarize(config.task, full)
        for per in results.values():
            for r in per.values():
                r["speedup_mllm"] = base["mllm_ms"] / r["mllm_ms"] if r["mllm_ms"] > 0 else float("nan")
                r["speedup_total"] = base["total_ms"] / r["total_ms"] if r["total_ms"] > 0 else float("nan")
    add_paired_differences(results, records, [s.label for s in config.methods],
                           [ks for ks, _ in config.keeps], ids)
    return results


def run_reference_bench(config: ReferenceBenchConfig, command: str = "evtp bench reference") -> dict:
    """Plan, run the missing runs, summarise; write ``out`` (JSON, atomically) before the table
    (``command`` written into it) and plots. Returns the results (`summarise_records`)."""
    plan = plan_reference_bench(config)
    run_samples(config, plan)
    results = summarise_records(config, plan.records, plan.readout)
    write_text_atomic(plan.out, json.dumps(results, indent=1) + "\n")
    table = Path(f"{plan.stem}.md")
    write_table(config.task, results, table, command.strip())
    written = make_plots(config.task, results, plan.stem) if config.plots else []
    print(table.read_text())
    print(f"wrote {plan.out}, {table}, {plan.records_path}" + "".join(", " + w for w in written))
    return results
