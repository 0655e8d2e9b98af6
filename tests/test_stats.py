"""Statistics over seeds and samples (`evtp.metrics.stats`) and `evtp bench compare`: Holm, the
two-level bootstrap, non-inferiority verdicts, the refusals and an end-to-end run."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evtp.metrics import paired_bootstrap, summarize_metrics
from evtp.metrics.stats import (BootstrapDraws, adjust_family, contrast, hierarchical_scores, holm, holm_levels,
                                score_parts)

p_lists = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(p_lists)
def test_holm_is_monotone_never_below_the_raw_p_and_at_most_one(p):
    adj, raw = holm(p), np.asarray(p)
    assert (adj >= raw - 1e-15).all() and (adj <= 1).all()
    for i in range(len(p)):
        for j in range(len(p)):
            if raw[i] <= raw[j]:
                assert adj[i] <= adj[j] + 1e-15


@settings(max_examples=30, deadline=None)
@given(st.floats(0, 1, allow_nan=False))
def test_holm_of_one_test_is_bonferroni(p):
    assert holm([p])[0] == pytest.approx(min(1.0, p))


def test_holm_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


@settings(max_examples=60, deadline=None)
@given(p_lists, st.sampled_from([0.05, 0.025, 0.1]))
def test_holm_levels_reject_exactly_what_the_adjusted_p_values_reject(p, alpha):
    assert ((holm(p) < alpha) == (np.asarray(p) < holm_levels(p, alpha))).all()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-4, 4), min_size=1, max_size=8), st.integers(0, 10 ** 6))
def test_holm_intervals_exclude_zero_exactly_when_holm_rejects(means, seed):
    rng = np.random.default_rng(seed)
    contrasts = []
    for mu in means:
        d = rng.normal(mu, 1.0, 4000)
        contrasts.append(contrast(float(d.mean()), 0.0, d, np.zeros_like(d), 0.5))
    for r in adjust_family(contrasts, alpha=0.05, margin=0.5):
        if abs(r["p_holm"] - 0.05) > 0.01:  # away from the replicates' discreteness
            assert (r["adj_lo"] > 0 or r["adj_hi"] < 0) == (r["p_holm"] < 0.05)
        if abs(r["p_noninferior_holm"] - 0.025) > 0.01:
            assert (r["noninferior_lower"] > -0.5) == (r["p_noninferior_holm"] < 0.025)


def image_records(rng, n, shift=0.0):
    union = rng.integers(200, 2000, n)
    inter = (union * rng.uniform(0.1, 0.9, n)).astype(int)
    return [{"intersection": float(i + shift * u), "union": int(u), "iou": 0.0} for i, u in zip(inter, union)]


def video_records(rng, n, shift=0.0, noise=0.0):
    j, f = rng.uniform(0.2, 0.8, n), rng.uniform(0.2, 0.8, n)
    e = rng.normal(0, noise, n) if noise else np.zeros(n)
    return [{"J": float(a + shift + x), "F": float(b + shift + x), "J&F": 0.0} for a, b, x in zip(j, f, e)]


def parts(runs_by_config):
    """[[records of run r] of config c] -> num, den (C, R, N)."""
    pairs = [[score_parts(recs) for recs in runs] for runs in runs_by_config]
    return np.array([[p[0] for p in c] for c in pairs]), np.array([[p[1] for p in c] for c in pairs])


@pytest.mark.parametrize("make, key", [(image_records, "cIoU"), (video_records, "J&F")])
def test_score_parts_give_the_metric_definitions(make, key):
    recs = make(np.random.default_rng(1), 37)
    num, den = score_parts(recs)
    assert num.sum() / den.sum() == pytest.approx(summarize_metrics(recs)[key], abs=1e-12)


@pytest.mark.parametrize("make", [image_records, video_records])
def test_one_run_is_the_sample_bootstrap(make):
    rng = np.random.default_rng(2)
    a, b = make(rng, 50), make(rng, 50)
    num, den = parts([[a], [b]])
    draws = BootstrapDraws.draw(1, 50, n_boot=500, seed=7)
    point, reps = hierarchical_scores(num, den, draws)
    c = contrast(point[0], point[1], reps[0], reps[1], 0.01)
    ref = paired_bootstrap(a, b, n_boot=500, seed=7)
    assert c["diff"] == pytest.approx(ref["diff"]) and c["se"] == pytest.approx(ref["se"])
    assert (c["lo"], c["hi"]) == pytest.approx((ref["lo"], ref["hi"]))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(2, 30), st.integers(0, 10 ** 6), st.booleans())
def test_identical_systems_differ_by_zero_with_p_one(r, n, seed, video):
    rng = np.random.default_rng(seed)
    make = video_records if video else image_records
    runs = [make(rng, n) for _ in range(r)]
    num, den = parts([runs, runs])
    point, reps = hierarchical_scores(num, den, BootstrapDraws.draw(r, n, n_boot=200, seed=seed))
    (row,) = adjust_family([contrast(point[0], point[1], reps[0], reps[1], 0.01)])
    assert row["diff"] == 0 and row["p"] == 1 and row["p_holm"] == 1 and row["lo"] == row["hi"] == 0
    assert row["verdict"] == "non-inferior"


@pytest.mark.parametrize("make", [image_records, video_records])
def test_a_constant_shift_of_five_points_is_superior_and_inside_its_interval(make):
    rng = np.random.default_rng(3)
    base = [make(np.random.default_rng(s), 40) for s in range(3)]
    shifted = [make(np.random.default_rng(s), 40, shift=0.05) for s in range(3)]
    num, den = parts([shifted, base])
    point, reps = hierarchical_scores(num, den, BootstrapDraws.draw(3, 40, n_boot=300, seed=int(rng.integers(99))))
    (row,) = adjust_family([contrast(point[0], point[1], reps[0], reps[1], 0.01)])
    assert row["diff"] == pytest.approx(0.05)
    assert row["lo"] - 1e-9 <= 0.05 <= row["hi"] + 1e-9 and row["adj_lo"] - 1e-9 <= 0.05 <= row["adj_hi"] + 1e-9
    assert row["verdict"] == "superior" and row["p"] == 0


def test_verdicts_on_constructed_records():
    """One Holm family of four contrasts built to be superior, non-inferior (though worse),
    inferior and inconclusive."""
    rng = np.random.default_rng(4)
    base = [video_records(np.random.default_rng(s), 400) for s in range(3)]
    other = [[{**r, "J": r["J"] + d, "F": r["F"] + d} for r, d in zip(recs, rng.normal(0, sd, len(recs)))]
             for shift, sd in ((0.05, 0.01), (-0.003, 0.005), (-0.05, 0.01), (0.0, 0.4)) for recs in
             [[{**r, "J": r["J"] + shift, "F": r["F"] + shift} for r in run] for run in base]]
    configs = [base] + [other[i * 3:(i + 1) * 3] for i in range(4)]
    num, den = parts(configs)
    point, reps = hierarchical_scores(num, den, BootstrapDraws.draw(3, 400, n_boot=1000, seed=0))
    rows = adjust_family([contrast(point[i], point[0], reps[i], reps[0], 0.01) for i in range(1, 5)])
    assert [r["verdict"] for r in rows] == ["superior", "non-inferior", "inferior", "inconclusive"]
    assert rows[1]["adj_hi"] < 0 < rows[1]["noninferior_lower"] + 0.01  # worse, by less than the margin
    assert all(r["p_holm"] >= r["p"] and r["family_size"] == 4 for r in rows)
    assert all(r["adj_lo"] <= r["lo"] and r["adj_hi"] >= r["hi"] for r in rows)  # adjusted intervals are wider
    # the Holm interval excludes 0 exactly when the Holm p-value is below alpha
    assert [r["adj_lo"] > 0 or r["adj_hi"] < 0 for r in rows] == [r["p_holm"] < 0.05 for r in rows]


def test_seed_spread_widens_the_interval_beyond_the_sample_bootstrap():
    """Samples that score alike in every run but runs that differ: the sample bootstrap of one run
    has no spread; the two-level bootstrap of three runs has the runs' spread."""
    n = 30
    num = np.array([[np.full(n, 0.5 + o) for o in (-0.05, 0.0, 0.05)]])  # (1, 3, n)
    den = np.ones_like(num)
    point, reps = hierarchical_scores(num, den, BootstrapDraws.draw(3, n, n_boot=400, seed=1))
    assert point[0] == pytest.approx(0.5) and reps[0].max() - reps[0].min() > 0.05
    # R - 1 seeds per replicate: the replicates' variance is the unbiased s^2 / R of a mean of R runs
    assert reps[0].var() == pytest.approx(np.var([-0.05, 0.0, 0.05], ddof=1) / 3, rel=0.1)
    _, reps1 = hierarchical_scores(num[:, :1], den[:, :1], BootstrapDraws.draw(1, n, n_boot=400, seed=1))
    assert np.ptp(reps1[0]) < 1e-12


# ---------------------------------------------------------------- `evtp bench compare`

def write_run(folder, name, *, task="image", readout="point", methods=("evtp", "kcenter"), keeps=("0.2",),
              n=4, digest=None, drop=0, seed=0):
    """A results JSON + records file as `evtp bench reference` writes them (sample ids of split test)."""
    rng = np.random.default_rng(seed)
    header = {"task": task, "split": "test", "seed_offset": 0, "weights": name, "weights_sha256": digest or name,
              "options": {}, "position_mode": "original", "readout": readout}
    lines = [json.dumps({"header": header})]
    for i in range(n):
        for m in methods:
            for k in keeps:
                u = int(rng.integers(100, 900))
                metrics = ({"intersection": int(u * rng.uniform()), "union": u, "iou": 0.5} if task == "image"
                           else {"J": 0.5, "F": 0.5, "J&F": 0.5})
                lines.append(json.dumps({"method": m, "keep": k, "sample_id": f"test-{task}-{i}", "family": "spatial",
                                         "metrics": metrics, "tokens_kept": 51, "tokens_total": 256, "objects": 4}))
    lines = lines[:len(lines) - drop]
    (folder / f"{name}.records.jsonl").write_text("\n".join(lines) + "\n")
    results = {m: {k: {"n": n, "readout": readout} for k in keeps} for m in methods}
    (folder / f"{name}.json").write_text(json.dumps(results))
    return str(folder / f"{name}.json")


@pytest.mark.parametrize("other, words", [
    (dict(task="video"), "disagree on task"),
    (dict(readout="dense"), "disagree on readout"),
    (dict(methods=("evtp", "dpp")), "disagree on the methods"),
    (dict(keeps=("0.1",)), "disagree on the keeps"),
    (dict(n=5), "disagree on the number of samples"),
    (dict(digest="a"), "same weights"),
    (dict(drop=1), "lacks 1 of the 8 runs"),
])
def test_compare_refuses_runs_of_other_settings_before_any_work(tmp_path, capsys, other, words):
    from evtp.cli.bench_compare import main

    a = write_run(tmp_path, "a")
    b = write_run(tmp_path, "b", **other)
    with pytest.raises(SystemExit) as e:
        main([a, b, "--out", str(tmp_path / "c.md")])
    assert e.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "c.md").exists() and not (tmp_path / "c.json").exists()


def test_compare_refuses_a_missing_run_an_unknown_reference_and_a_json_out(tmp_path, capsys):
    from evtp.cli.bench_compare import main

    a = write_run(tmp_path, "a")
    for argv, words in (([str(tmp_path / "none.json")], "no such results JSON"),
                        ([a, "--reference", "dpp"], "--reference 'dpp' is not a method of the runs"),
                        ([a, "--out", str(tmp_path / "c.json")], "give the markdown file"),
                        ([a, "--out", str(tmp_path)], "is a folder")):
        with pytest.raises(SystemExit):
            main(argv + (["--out", str(tmp_path / "c.md")] if "--out" not in argv else []))
        assert words in capsys.readouterr().err


def test_bench_reference_with_two_seeds_to_compare_tables(tmp_path):
    """Two tiny models (two "seeds") through `evtp bench reference`, then `evtp bench compare`."""
    from evtp.cli import main
    from evtp.models.reference import ReferenceConfig, ReferenceIVS, save_model

    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = ReferenceIVS(ReferenceConfig(vit_dim=32, vit_layers=1, vit_heads=2, vit_mlp=64, lm_dim=32, lm_layers=1,
                                             lm_heads=2, lm_mlp=64, dec_dim=8, role_layer=0, align_layers=(0, 1),
                                             readouts=("dense", "point"))).eval()
        save_model(model, tmp_path / f"w{seed}", {})
        runs.append(str(tmp_path / f"r{seed}.json"))
        assert main(["bench", "reference", "--samples", "3", "--methods", "evtp,kcenter,attention", "--keep",
                     "1.0,0.2,0", "--readout", "dense", "--weights", str(tmp_path / f"w{seed}"), "--out", runs[-1],
                     "--repeats", "1", "--timed-samples", "0", "--overlays", "0", "--no-plots", "--threads", "1"]) == 0
    out = tmp_path / "cmp" / "compare.md"
    assert main(["bench", "compare", *runs, "--boot", "200", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    s = res["settings"]
    assert s["seeds"] == 2 and s["samples"] == 3 and s["metric"] == "cIoU" and s["object_counts"]
    assert res["scores"]["attention"]["0.2"]["score_based"] and not res["scores"]["kcenter"]["0.2"]["score_based"]
    e = res["scores"]["evtp"]["0.2"]
    assert e["tokens_per_object"] > 0 and e["lo"] <= e["score"] <= e["hi"]
    assert res["scores"]["evtp"]["0"]["tokens_per_object"] == 0
    assert [(c["method"], c["keep"]) for c in res["contrasts"]["primary"]] == [("kcenter", "0.2"), ("attention", "0.2")]
    assert res["contrasts"]["secondary"] == [] and res["contrasts"]["per_family"]
    one = res["contrasts"]["primary"][0]  # each run's own difference; their mean is the difference
    assert len(one["per_run"]) == 2 and np.mean(one["per_run"]) == pytest.approx(one["diff"])
    text = out.read_text()
    for words in ("## Scores, score-free methods", "## Scores, score-based methods",
                  "One Holm family of m = 2 contrasts over both tables below.", "### Score-based opponents",
                  "## Scores per expression family", "kept tokens per object", "run(s)", "| per run |"):
        assert words in text
    assert main(["bench", "compare", runs[0], "--boot", "200", "--out", str(out)]) == 0
    assert "leave out seed-to-seed variation" in out.read_text() and "per run" not in out.read_text()
