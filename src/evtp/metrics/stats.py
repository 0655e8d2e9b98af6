"""Statistics of data-set scores over training seeds and samples: a two-level bootstrap, paired
contrasts, Holm's correction and non-inferiority verdicts (numpy only).

Data layout: R runs (training seeds of one recipe) score the same N samples under C
configurations (method, keep). A data-set score is a ratio of sums over samples,
``score = sum(num) / sum(den)`` (`score_parts`: cIoU = sum I / sum U for images, mean J&F for
video, the definitions of `evtp.metrics.summarize_metrics`); a run's score is its own ratio and
the recipe's score is the mean over the R runs.

The bootstrap (`BootstrapDraws`) is two-level: each replicate draws R - 1 of the R seeds with
replacement (R - 1, not R: the mean of R - 1 draws has the unbiased variance s^2 / R of a mean over
R seeds, where R draws would shrink it by (R - 1) / R, a third at R = 3), then N samples with
replacement, and scores every configuration on that one draw of seeds and samples, so the
difference of two configurations is paired on both levels. Seeds and samples are crossed (every
seed scores every sample), so one sample draw is shared by the drawn seeds. With R = 1 the seed
draw is always the one run: the intervals are the plain sample bootstrap, over samples only.
The sample draw uses the same random stream as `evtp.metrics.paired_bootstrap`, so with R = 1 the
two give the same replicates.

Tests (`contrast`, `adjust_family`): two-sided bootstrap p-value of "difference = 0", one-sided
p-value of "difference <= -margin" (non-inferiority), both Holm-corrected over a family of
contrasts; Holm-adjusted intervals are percentile intervals at the level Holm tests each contrast
at (`holm_levels`), so an interval excludes 0 exactly when Holm rejects (up to the replicates'
discreteness). Verdicts (`verdict`) read the adjusted intervals.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

VERDICTS = ("superior", "non-inferior", "inferior", "inconclusive")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    p (m,) in [0, 1] -> adjusted (m,): sorted ascending p_(1..m), adjusted_(i) =
    max_{j <= i} min(1, (m - j + 1) p_(j)). Each adjusted value is >= its raw value, and the
    adjusted values are ordered as the raw ones; with m = 1 it is the raw p (Bonferroni)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or (p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1)):
        raise ValueError(f"holm needs a 1-d sequence of p-values in [0, 1], got {p_values!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(stepped) if m else stepped
    return out


def holm_levels(p_values: Sequence[float], alpha: float) -> np.ndarray:
    """The level Holm's procedure tests each hypothesis at, in the input order: alpha / (m - r + 1)
    for the hypothesis of rank r (ascending p) while every earlier one is rejected; from the first
    non-rejected rank k on, alpha / (m - k + 1) (the procedure stops there). An interval at this
    level excludes the null value exactly when Holm rejects."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    levels_sorted = alpha / (m - np.arange(m))
    failed = np.flatnonzero(p[order] >= levels_sorted)
    if failed.size:
        levels_sorted[failed[0]:] = levels_sorted[failed[0]]
    out = np.empty(m)
    out[order] = levels_sorted
    return out


def score_parts(metric_records: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample numerator and denominator of the data-set score: (num (N,), den (N,)) with
    score = num.sum() / den.sum(). Image records (intersection / union counts): I and U, so the
    score is cIoU; video records (J / F): (J + F) / 2 and 1, so the score is the mean J&F, which
    `evtp.metrics.summarize_metrics` defines as (mean J + mean F) / 2."""
    recs = list(metric_records)
    if recs and all("intersection" in r for r in recs):
        return (np.array([r["intersection"] for r in recs], np.float64),
                np.array([r["union"] for r in recs], np.float64))
    if recs and all("J" in r and "F" in r for r in recs):
        return np.array([(r["J"] + r["F"]) / 2 for r in recs], np.float64), np.ones(len(recs))
    raise ValueError("score_parts needs a non-empty list of all image (intersection/union) or all "
                     "video (J/F) metric records")


@dataclass(frozen=True)
class BootstrapDraws:
    """The replicates' draws, shared by every configuration (so contrasts are paired):
    ``samples`` (B, N) how often each sample is drawn, ``seeds`` (B, R) how often each run is
    (max(R - 1, 1) draws per replicate, see the module docstring)."""

    samples: np.ndarray
    seeds: np.ndarray

    @classmethod
    def draw(cls, n_seeds: int, n_samples: int, n_boot: int = 2000, seed: int = 0) -> "BootstrapDraws":
        """``n_boot`` replicates of max(R - 1, 1) of R = ``n_seeds`` runs and N = ``n_samples``
        samples. The sample draw is `evtp.metrics.paired_bootstrap`'s (same generator, same calls)."""
        if min(n_seeds, n_samples) < 1 or n_boot < 2:
            raise ValueError(f"need >= 1 seed and sample and >= 2 replicates; got {n_seeds} seeds, "
                             f"{n_samples} samples, {n_boot} replicates")
        idx = np.random.default_rng(seed).integers(0, n_samples, size=(n_boot, n_samples))
        seed_idx = np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_boot, max(n_seeds - 1, 1)))
        return cls(_counts(idx, n_samples), _counts(seed_idx, n_seeds))

    @property
    def n_boot(self) -> int:
        return self.samples.shape[0]


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, k) drawn indices in [0, n) -> (B, n) float counts."""
    b = idx.shape[0]
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def run_scores(num: np.ndarray, den: np.ndarray, subset: np.ndarray | None = None) -> np.ndarray:
    """Each run's score of each configuration: num, den (C, R, N) -> (C, R) sum(num) / sum(den) over
    the samples (``subset`` (N,) bool: only those); NaN where the denominator is 0."""
    keep = np.ones(num.shape[2]) if subset is None else np.asarray(subset, np.float64)
    return _ratio((num * keep).sum(2), (den * keep).sum(2))


def hierarchical_scores(num: np.ndarray, den: np.ndarray, draws: BootstrapDraws,
                        subset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores of C configurations and their bootstrap replicates.

    Args:
        num, den: (C, R, N) per-sample parts (`score_parts`) of each configuration in each run.
        draws: the shared `BootstrapDraws` (R runs, N samples).
        subset: (N,) bool, score only these samples (e.g. one expression family); None: all.
    Returns:
        (point (C,), replicates (C, B)): point = mean over runs of each run's sum(num) / sum(den);
        a replicate scores each drawn run on the drawn samples and averages over the drawn runs
        (with multiplicity).
        NaN where a denominator is 0 (no sample of the subset drawn).
    """
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    if num.shape != den.shape or num.ndim != 3 or num.shape[1:] != (draws.seeds.shape[1], draws.samples.shape[1]):
        raise ValueError(f"num {num.shape} / den {den.shape} must be (C, R, N) with R, N = "
                         f"{draws.seeds.shape[1]}, {draws.samples.shape[1]} (the draws')")
    keep = np.ones(num.shape[2]) if subset is None else np.asarray(subset, np.float64)
    point = run_scores(num, den, subset).mean(1)
    w = draws.samples * keep  # (B, N)
    per_run = _ratio(num @ w.T, den @ w.T)  # (C, R, B)
    reps = np.einsum("crb,br->cb", np.nan_to_num(per_run), draws.seeds) / draws.seeds.sum(1)
    drawn_nan = np.einsum("crb,br->cb", np.isnan(per_run).astype(np.float64), draws.seeds) > 0
    return point, np.where(drawn_nan, np.nan, reps)


def interval(replicates: np.ndarray, level: float = 0.05) -> tuple[float, float]:
    """Two-sided percentile interval at error ``level`` (0.05: the 95 % interval) of the finite
    replicates (B,); (nan, nan) when none is finite."""
    r = np.asarray(replicates, np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(r, [level / 2, 1 - level / 2])
    return float(lo), float(hi)


def contrast(point_a: float, point_b: float, reps_a: np.ndarray, reps_b: np.ndarray,
             margin: float) -> dict:
    """Paired contrast a - b: ``diff`` (point), ``se`` and the 95 % percentile interval ``lo`` /
    ``hi`` of the replicated differences, ``p`` the two-sided bootstrap p-value of "diff = 0"
    (min(1, 2 min(P*(d <= 0), P*(d >= 0)))), ``p_noninferior`` the one-sided p-value of
    "diff <= -margin" (P*(d <= -margin)), and ``replicates`` (B',) the finite replicated
    differences (for `adjust_family`)."""
    d = np.asarray(reps_a, np.float64) - np.asarray(reps_b, np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        raise ValueError(f"contrast needs >= 2 finite replicates, got {d.size}")
    lo, hi = interval(d)
    p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return {"diff": float(point_a - point_b), "se": float(d.std(ddof=1)), "lo": lo, "hi": hi, "p": p,
            "p_noninferior": float(np.mean(d <= -margin)), "replicates": d}


def verdict(adjusted_lo: float, adjusted_hi: float, noninferior_lower: float, margin: float) -> str:
    """One of `VERDICTS` for a - b from its Holm-adjusted two-sided interval and its Holm-adjusted
    one-sided lower bound: "superior" when the interval lies above 0; else "non-inferior" when the
    lower bound is above -margin; else "inferior" when the interval lies below 0; else
    "inconclusive"."""
    if adjusted_lo > 0:
        return "superior"
    if noninferior_lower > -margin:
        return "non-inferior"
    if adjusted_hi < 0:
        return "inferior"
    return "inconclusive"


def adjust_family(contrasts: list[dict], alpha: float = 0.05, margin: float = 0.01) -> list[dict]:
    """Holm over one family of `contrast` results: each gets ``p_holm`` (two-sided test of 0),
    ``adj_lo`` / ``adj_hi`` (the percentile interval at its Holm level), ``p_noninferior_holm``
    and ``noninferior_lower`` (one-sided test of -margin at alpha / 2, so that with one contrast
    the bound is the lower end of the two-sided 95 % interval; the bound is the replicates'
    quantile at its Holm level), ``verdict`` (`verdict`) and ``family_size``. Returns new dicts
    without the replicates, in the input order."""
    if not contrasts:
        return []
    p = [c["p"] for c in contrasts]
    p_ni = [c["p_noninferior"] for c in contrasts]
    levels, ni_levels = holm_levels(p, alpha), holm_levels(p_ni, alpha / 2)
    out = []
    for c, p_adj, lv, p_ni_adj, ni_lv in zip(contrasts, holm(p), levels, holm(p_ni), ni_levels):
        adj_lo, adj_hi = interval(c["replicates"], lv)
        ni_lower = float(np.quantile(c["replicates"], ni_lv))
        row = {k: v for k, v in c.items() if k != "replicates"}
        row.update(p_holm=float(p_adj), adj_lo=adj_lo, adj_hi=adj_hi, p_noninferior_holm=float(p_ni_adj),
                   noninferior_lower=ni_lower, verdict=verdict(adj_lo, adj_hi, ni_lower, margin),
                   family_size=len(contrasts))
        out.append(row)
    return out


def share(point: np.ndarray, reps: np.ndarray, point_full: float, reps_full: np.ndarray) -> dict:
    """Score as a share of the full-token score, ``share`` = point / point_full, with the 95 %
    percentile interval ``lo`` / ``hi`` of the replicated ratios (the same draws)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.asarray(reps, np.float64) / np.asarray(reps_full, np.float64)
    lo, hi = interval(ratio)
    return {"share": float(point / point_full) if point_full else float("nan"), "lo": lo, "hi": hi}
