"""`evtp bench compare`: scores, contrasts and verdicts over R runs of `evtp bench reference`.

Each run is one training seed of one recipe: its results JSON (``RUN.json``) and, next to it, the
per-sample records it was summarised from (``RUN.records.jsonl``). The runs must agree on every
setting in the records' header except the weights (task, split, seed offset, readout, options,
position mode, ...), on the methods and keeps of the JSON and on its samples; each run's
weights must differ (one seed each). `check_runs` refuses any disagreement before any work.

`compare_runs` computes (`evtp.metrics.stats`; the same two-level draws for every number, so
every contrast is paired over seeds and samples):

* ``scores[method][keep]``: the data-set score (cIoU for images, J&F for video) with its 95 %
  interval, its share of the full-token score with interval, the mean kept visual tokens per
  object in the scene, and whether the method is score-based (its registry entry's
  ``wants_scores(options)``);
* ``families[family][method][keep]``: the same score per expression family;
* ``contrasts``: ``--reference`` minus every other method at every keep that prunes
  (0 < keep < all), in Holm families: ``primary`` (the pre-registered `PRIMARY_METHODS` at
  `PRIMARY_KEEPS`), ``secondary`` (every other contrast over all samples), ``per_family`` (every
  contrast within each expression family); the tables show each family's score-free and
  score-based opponents apart. Each
  contrast carries its raw and Holm-adjusted p-value and interval and a verdict at the
  non-inferiority margin (`evtp.metrics.stats.verdict`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evtp.bench.measures import method_free
from evtp.eval.records import read_first_line, read_records, records_path_beside
from evtp.metrics.stats import (BootstrapDraws, adjust_family, contrast, hierarchical_scores, interval,
                                run_scores, score_parts, share)
from evtp.pruning import resolve_budget
from evtp.selection import METHODS
from evtp.settings import SettingsError, method_options, parse_keep, parse_methods

PRIMARY_METHODS = ("kcenter", "dpp", "uniform", "attention")
PRIMARY_KEEPS = (0.2, 0.1)
SEED_KEYS = ("weights", "weights_sha256")  # the header keys in which seeds of one recipe differ
HOLM_FAMILIES = ("primary", "secondary", "per_family")


@dataclass(frozen=True)
class CompareConfig:
    """What ``evtp bench compare`` compares: the results JSONs ``runs`` (one per training seed),
    ``reference`` (a method label of theirs) against every other method, at non-inferiority
    ``margin``, family-wise error ``alpha``, ``n_boot`` bootstrap replicates drawn from ``seed``;
    tables to ``out`` (markdown) and everything to its ``.json`` sibling."""

    runs: tuple[Path, ...]
    reference: str = "evtp"
    margin: float = 0.01
    alpha: float = 0.05
    n_boot: int = 10000
    seed: int = 0
    out: Path = Path("results/compare.md")

    def __post_init__(self):
        if not self.runs:
            raise SettingsError("give at least one run (an `evtp bench reference` results JSON)")
        if not (math.isfinite(self.margin) and 0 < self.margin < 1):
            raise SettingsError(f"--margin {self.margin}: give a score difference in (0, 1), e.g. 0.01")
        if not 0 < self.alpha < 1:
            raise SettingsError(f"--alpha {self.alpha}: give an error rate in (0, 1), e.g. 0.05")
        if self.n_boot < 100:
            raise SettingsError(f"--boot {self.n_boot}: use at least 100 replicates (the default is 10000)")
        if Path(self.out).suffix == ".json":
            raise SettingsError(f"--out {str(self.out)!r}: give the markdown file (e.g. results/compare.md); "
                                f"the JSON is written next to it with the suffix .json")

    @property
    def json_out(self) -> Path:
        return Path(self.out).with_suffix(".json")


@dataclass
class Run:
    """One `evtp bench reference` run: its ``results`` JSON, records ``header`` and ``records``."""

    path: Path
    records_path: Path
    header: dict
    results: dict
    records: list[dict]


def load_run(path: Path) -> Run:
    """Read one run's JSON, records header and records; `SettingsError` naming the file when one
    is missing or is not what `evtp bench reference` writes."""
    path = Path(path).expanduser()
    rec_path = records_path_beside(path)
    for p, what in ((path, "results JSON"), (rec_path, "records file")):
        if not p.is_file():
            raise SettingsError(f"{p}: no such {what}; give the --out JSON of `evtp bench reference` "
                                f"(its records file {rec_path.name} must lie next to it)")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not a JSON file ({exc})") from None
    if not (isinstance(results, dict) and results and all(
            isinstance(per, dict) and per and all(isinstance(r, dict) and "n" in r for r in per.values())
            for per in results.values())):
        raise SettingsError(f"{path}: not an `evtp bench reference` results JSON "
                            f"({{method: {{keep: {{..., 'n'}}}}}})")
    header = (read_first_line(rec_path) or {}).get("header")
    if not isinstance(header, dict):
        raise SettingsError(f"{rec_path}: its first line is no records header; is it an `evtp bench "
                            f"reference` records file?")
    return Run(path, rec_path, header, results, read_records(rec_path)[0])


@dataclass(frozen=True)
class Layout:
    """What the runs share: the ``header`` (without `SEED_KEYS`), ``methods`` (labels), ``keeps``
    (as typed), ``sample_ids`` (N,), and per method label whether it is ``score_based``."""

    header: dict
    methods: tuple[str, ...]
    keeps: tuple[str, ...]
    sample_ids: tuple[str, ...]
    score_based: dict

    @property
    def task(self) -> str:
        return self.header["task"]


def _agree(runs: list[Run], what: str, value) -> None:
    """`SettingsError` naming the first run whose ``value(run)`` differs from the first run's."""
    first = value(runs[0])
    for run in runs[1:]:
        if value(run) != first:
            raise SettingsError(f"{run.path} and {runs[0].path} disagree on {what}: {value(run)!r} vs "
                                f"{first!r}; compare runs of one recipe (training seeds) only")


def check_runs(runs: list[Run], reference: str) -> Layout:
    """The runs' shared `Layout`; `SettingsError` before any work when they disagree on a setting
    (header key), the methods, keeps or samples, share weights, or lack records."""
    shared = lambda run: {k: v for k, v in run.header.items() if k not in SEED_KEYS}  # noqa: E731
    for key in sorted({k for run in runs for k in shared(run)}):
        _agree(runs, f"{key} (records header)", lambda run: shared(run).get(key))
    _agree(runs, "the methods", lambda run: sorted(run.results))
    _agree(runs, "the keeps", lambda run: sorted({k for per in run.results.values() for k in per}))
    for run in runs:
        if len({r["n"] for per in run.results.values() for r in per.values()}) != 1 or \
                len({frozenset(per) for per in run.results.values()}) != 1:
            raise SettingsError(f"{run.path}: its entries differ in keeps or sample counts; not one run")
    _agree(runs, "the number of samples", lambda run: next(iter(next(iter(run.results.values())).values()))["n"])
    digests = [run.header.get("weights_sha256") for run in runs]
    twice = sorted({d for d in digests if digests.count(d) > 1})
    if twice:
        paths = [str(run.path) for run in runs if run.header.get("weights_sha256") in twice]
        raise SettingsError(f"{', '.join(paths)} were run with the same weights ({', '.join(map(str, twice))}); "
                            f"give one run per training seed")
    layout = _layout(runs[0], shared(runs[0]))
    if reference not in layout.methods:
        raise SettingsError(f"--reference {reference!r} is not a method of the runs; their methods: "
                            f"{', '.join(layout.methods)}")
    for run in runs:
        _check_complete(run, layout)
    return layout


def _layout(run: Run, header: dict) -> Layout:
    """The `Layout` of one run: its methods checked against the registry, its sample ids those
    `evtp.bench.reference.ReferenceBenchConfig` gives its first n samples."""
    from evtp.bench.reference import ReferenceBenchConfig
    from evtp.settings import parse_keeps

    methods = tuple(run.results)
    keeps = tuple(next(iter(run.results.values())))
    options = header.get("options") or {}
    settings = parse_methods(",".join(methods), base_options=options, flag=f"{run.path}: method")
    n = next(iter(next(iter(run.results.values())).values()))["n"]
    config = ReferenceBenchConfig(methods=tuple(settings), keeps=tuple(parse_keeps(",".join(keeps), allow_zero=True)),
                                  options=options, task=header["task"], split=header["split"],
                                  seed_offset=header.get("seed_offset", 0), samples=n)
    score_based = {s.label: METHODS[s.method].wants_scores(method_options(s, options)) for s in settings}
    return Layout(header, methods, keeps, tuple(config.sample_id(i) for i in range(n)), score_based)


def _check_complete(run: Run, layout: Layout) -> None:
    have = {(r["method"], r["keep"], r["sample_id"]) for r in run.records}
    missing = [(m, k, s) for m in layout.methods for k in layout.keeps for s in layout.sample_ids
               if (m, k, s) not in have]
    if missing:
        total = len(layout.methods) * len(layout.keeps) * len(layout.sample_ids)
        raise SettingsError(f"{run.records_path} lacks {len(missing)} of the {total} "
                            f"runs its JSON summarises (first: {missing[0]}); re-run its `evtp bench "
                            f"reference` command to complete it")


@dataclass(frozen=True)
class RunArrays:
    """Per-sample arrays of R runs over the `Layout`'s C = methods x keeps configurations (method-major)
    and N samples: ``num`` / ``den`` (C, R, N) score parts (`evtp.metrics.stats.score_parts`),
    ``tokens`` (C, R, N) visual tokens kept, ``objects`` (N,) objects in each scene (None when a
    record lacks the count), ``families`` (N,) expression family of each sample."""

    configs: tuple[tuple[str, str], ...]
    num: np.ndarray
    den: np.ndarray
    tokens: np.ndarray
    objects: np.ndarray | None
    families: tuple[str, ...]

    def index(self, method: str, keep: str) -> int:
        return self.configs.index((method, keep))


def collect_arrays(runs: list[Run], layout: Layout) -> RunArrays:
    """Stack the runs' records (the last record of each (method, keep, sample) counts) into `RunArrays`."""
    configs = tuple((m, k) for m in layout.methods for k in layout.keeps)
    shape = (len(configs), len(runs), len(layout.sample_ids))
    num, den, tokens = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    first: list[dict] = []
    for r, run in enumerate(runs):
        by_key = {(rec["method"], rec["keep"], rec["sample_id"]): rec for rec in run.records}
        for c, (m, k) in enumerate(configs):
            recs = [by_key[(m, k, sid)] for sid in layout.sample_ids]
            num[c, r], den[c, r] = score_parts([rec["metrics"] for rec in recs])
            tokens[c, r] = [rec["tokens_kept"] for rec in recs]
            if r == 0 and c == 0:
                first = recs
    objects = np.array([rec["objects"] for rec in first], np.float64) \
        if all("objects" in rec for rec in first) else None
    return RunArrays(configs, num, den, tokens, objects, tuple(rec.get("family") or "" for rec in first))


def keep_value(keep: str):
    return parse_keep(keep, allow_zero=True)


def is_primary(method: str, keep: str) -> bool:
    """Whether (method, keep) is a pre-registered primary contrast's opponent and keep."""
    v = keep_value(keep)
    return method in PRIMARY_METHODS and isinstance(v, float) and any(math.isclose(v, p) for p in PRIMARY_KEEPS)


def score_table(arrays: RunArrays, layout: Layout, point: np.ndarray, reps: np.ndarray) -> dict:
    """``{method: {keep: {"score", "lo", "hi", "tokens_kept", "tokens_per_object", "score_based",
    "share": {"share", "lo", "hi"}}}}`` (share of the full-token score: absent without a keep
    that keeps all tokens; tokens per object None without object counts)."""
    full = next((k for k in layout.keeps if resolve_budget(keep_value(k)).keeps_all), None)
    out: dict = {}
    for c, (m, k) in enumerate(arrays.configs):
        lo, hi = interval(reps[c])
        entry = {"score": float(point[c]), "lo": lo, "hi": hi, "tokens_kept": float(arrays.tokens[c].mean()),
                 "tokens_per_object": None if arrays.objects is None else
                 float((arrays.tokens[c] / arrays.objects).mean()),
                 "score_based": layout.score_based[m]}
        if full is not None:
            f = arrays.index(m, full)
            entry["share"] = share(point[c], reps[c], point[f], reps[f])
        out.setdefault(m, {})[k] = entry
    return out


def contrast_list(arrays: RunArrays, layout: Layout, reference: str, point: np.ndarray, reps: np.ndarray,
                  margin: float, family: str | None = None, subset: np.ndarray | None = None) -> list[dict]:
    """`evtp.metrics.stats.contrast` of ``reference`` minus every other method at every keep that
    prunes, each with ``method`` (the opponent), ``keep``, ``score_based`` (the opponent's),
    ``per_run`` (the difference in each run, on the samples of ``subset`` (N,) bool or all) and,
    when given, ``family``; contrasts whose replicates are all undefined are left out."""
    per_run = run_scores(arrays.num, arrays.den, subset)
    rows = []
    for k in layout.keeps:
        if method_free(keep_value(k)):
            continue
        a = arrays.index(reference, k)
        for m in layout.methods:
            if m == reference:
                continue
            b = arrays.index(m, k)
            if np.isfinite(reps[a] - reps[b]).sum() < 2:
                continue
            row = {"method": m, "keep": k, "score_based": layout.score_based[m],
                   **({} if family is None else {"family": family}),
                   "per_run": [float(v) for v in per_run[a] - per_run[b]],
                   **contrast(point[a], point[b], reps[a], reps[b], margin)}
            rows.append(row)
    return rows


def holm_families(overall: list[dict], per_family: list[dict], alpha: float, margin: float) -> dict:
    """The contrasts in their Holm families (`HOLM_FAMILIES`), each adjusted (`adjust_family`)."""
    groups = {"primary": [c for c in overall if is_primary(c["method"], c["keep"])],
              "secondary": [c for c in overall if not is_primary(c["method"], c["keep"])],
              "per_family": per_family}
    return {name: adjust_family(groups[name], alpha, margin) for name in HOLM_FAMILIES}


def compare_runs(config: CompareConfig) -> dict:
    """Load and check the runs (`check_runs`, before any work), then score and contrast them
    (module docstring). Returns everything the JSON holds."""
    runs = [load_run(p) for p in config.runs]
    layout = check_runs(runs, config.reference)
    arrays = collect_arrays(runs, layout)
    draws = BootstrapDraws.draw(len(runs), len(layout.sample_ids), config.n_boot, config.seed)
    point, reps = hierarchical_scores(arrays.num, arrays.den, draws)
    families, per_family = {}, []
    for fam in sorted(set(arrays.families)):
        subset = np.array([f == fam for f in arrays.families])
        f_point, f_reps = hierarchical_scores(arrays.num, arrays.den, draws, subset)
        families[fam] = {"n": int(subset.sum()), "scores": {}}
        for c, (m, k) in enumerate(arrays.configs):
            lo, hi = interval(f_reps[c])
            families[fam]["scores"].setdefault(m, {})[k] = {"score": float(f_point[c]), "lo": lo, "hi": hi}
        per_family += contrast_list(arrays, layout, config.reference, f_point, f_reps, config.margin, fam, subset)
    overall = contrast_list(arrays, layout, config.reference, point, reps, config.margin)
    return {"settings": settings_summary(config, runs, layout, arrays),
            "scores": score_table(arrays, layout, point, reps), "families": families,
            "contrasts": holm_families(overall, per_family, config.alpha, config.margin)}


def settings_summary(config: CompareConfig, runs: list[Run], layout: Layout, arrays: RunArrays) -> dict:
    """The settings block of the output: what was compared and how."""
    r = len(runs)
    return {"runs": [{"path": str(run.path), "weights": run.header.get("weights"),
                      "weights_sha256": run.header.get("weights_sha256")} for run in runs],
            "seeds": r, "samples": len(layout.sample_ids), "header": layout.header,
            "metric": "cIoU" if layout.task == "image" else "J&F", "reference": config.reference,
            "margin": config.margin, "alpha": config.alpha, "n_boot": config.n_boot, "seed": config.seed,
            "methods": list(layout.methods), "keeps": list(layout.keeps),
            "primary": {"methods": list(PRIMARY_METHODS), "keeps": list(PRIMARY_KEEPS)},
            "object_counts": arrays.objects is not None,
            "bootstrap": ("seeds, then samples (two levels)" if r > 1 else
                          "samples only: one run, so the intervals leave out seed-to-seed variation")}
