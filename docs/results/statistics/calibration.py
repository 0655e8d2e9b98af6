"""Coverage of `evtp.metrics.stats`' two-level bootstrap on simulated seeds x samples with a known truth.

Model (per-sample scores of two methods, crossed seeds r and samples i, video-style mean score):
    y_A[r, i] = mu + a[i] + s_A[r] + e_A[r, i],   y_B[r, i] = y_A[r, i] - delta + t[r] + u[i] + v[r, i]
with a ~ N(0, sample_sd), s_A ~ N(0, seed_sd), e ~ N(0, noise_sd), and the difference's own seed (t),
sample (u) and residual (v) terms. The estimands are mu (method A's score over new seeds and new
samples) and delta (A - B). For each scenario it prints how often the 95 % interval of A's score and
of A - B covers the truth, how often the two-sided p-value of A - B falls below 0.05 when delta = 0,
and how often it does so with every run's own difference of the same sign.

Run from the repository root: OMP_NUM_THREADS=1 .venv/bin/python docs/results/statistics/calibration.py
"""
import numpy as np

from evtp.metrics.stats import BootstrapDraws, contrast, hierarchical_scores, interval, run_scores

SCENARIOS = [  # (runs R, samples N, seed_sd, sample_sd, noise_sd, difference seed sd)
    (1, 300, 0.0, 0.25, 0.10, 0.0),
    (1, 300, 0.02, 0.25, 0.10, 0.01),
    (2, 300, 0.02, 0.25, 0.10, 0.01),
    (3, 300, 0.02, 0.25, 0.10, 0.01),
    (5, 300, 0.02, 0.25, 0.10, 0.01),
    (3, 300, 0.005, 0.25, 0.10, 0.003),
]


def simulate(rng, r, n, seed_sd, sample_sd, noise_sd, diff_seed_sd, delta=0.0, mu=0.6):
    a = rng.normal(0, sample_sd, n)
    y_a = mu + a[None] + rng.normal(0, seed_sd, (r, 1)) + rng.normal(0, noise_sd, (r, n))
    y_b = y_a - delta + rng.normal(0, diff_seed_sd, (r, 1)) + rng.normal(0, 0.05, n)[None] \
        + rng.normal(0, 0.05, (r, n))
    return np.stack([y_a, y_b]), mu, delta


def one_scenario(rng, scenario, sims=1000, n_boot=1000):
    r, n = scenario[:2]
    cover_score = cover_diff = rejects = rejects_agree = 0
    for k in range(sims):
        num, mu, delta = simulate(rng, *scenario)
        point, reps = hierarchical_scores(num, np.ones_like(num), BootstrapDraws.draw(r, n, n_boot, seed=k))
        lo, hi = interval(reps[0])
        c = contrast(point[0], point[1], reps[0], reps[1], 0.01)
        cover_score += lo <= mu <= hi
        cover_diff += c["lo"] <= delta <= c["hi"]
        rejects += c["p"] < 0.05
        per_run = run_scores(num, np.ones_like(num))
        rejects_agree += c["p"] < 0.05 and bool((np.sign(per_run[0] - per_run[1]) == np.sign(c["diff"])).all())
    return cover_score / sims, cover_diff / sims, rejects / sims, rejects_agree / sims


def main():
    rng = np.random.default_rng(0)
    print("| R | N | seed sd | sample sd | residual sd | difference seed sd | score covered | "
          "difference covered | p < 0.05 at delta = 0 | the same, and every run's difference of that sign |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for sc in SCENARIOS:
        cov_s, cov_d, rej, rej_agree = one_scenario(rng, sc)
        print("| " + " | ".join(str(v) for v in sc) + f" | {cov_s:.3f} | {cov_d:.3f} | {rej:.3f} | {rej_agree:.3f} |")


if __name__ == "__main__":
    main()
