"""Counts of a synthetic split: families and kinds, objects per scene, target sizes.

``python -c "from evtp.data.synthetic_stats import split_table; print(split_table('test', 1000, 'image', 'hard'))"``
prints the Markdown table docs/benchmarks/synthetic.md shows.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from evtp.data.synthetic import make_sample, object_cover

PATCH = 16  # the reference model's patch side in pixels


def split_rows(split: str, n: int, task: str = "image", difficulty: str = "standard", *,
               seed_offset: int = 0) -> list[dict]:
    """One row per (family, kind) over the first ``n`` samples, then one for all: samples, share,
    objects per scene (mean, min, max), reference-set size (mean), target radius (median, px) and
    the patches of ``PATCH`` px the target covers by >= 25 % at frame 0 (median, p10)."""
    groups: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for i in range(n):
        s = make_sample(split, i, task, seed_offset=seed_offset, difficulty=difficulty, with_labels=True)
        n_obj = s.meta["n_objects"]
        cover = object_cover(s.meta["labels"][:1], n_obj, PATCH)[0, s.meta["target"]]
        row = (n_obj, len(s.meta["members"]), s.meta["objects"][s.meta["target"]]["radius"],
               int((cover >= 0.25).sum()))
        groups[(s.family, s.meta.get("kind", "*"))].append(row)
        groups[("all", "*")].append(row)
    rows = []
    for (family, kind), vals in sorted(groups.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        v = np.array(vals, float)
        rows.append({"family": family, "kind": kind, "n": len(vals), "share": len(vals) / n,
                     "objects_mean": v[:, 0].mean(), "objects_min": int(v[:, 0].min()),
                     "objects_max": int(v[:, 0].max()), "members_mean": v[:, 1].mean(),
                     "radius_median": float(np.median(v[:, 2])), "patches_median": float(np.median(v[:, 3])),
                     "patches_p10": float(np.percentile(v[:, 3], 10))})
    return rows


def split_table(split: str, n: int, task: str = "image", difficulty: str = "standard", *,
                seed_offset: int = 0) -> str:
    """`split_rows` as a Markdown table."""
    lines = ["| family | kind | samples | share | objects per scene: mean (min-max) | reference set: mean | "
             "target radius px: median | target patches (>= 25 % covered): median / p10 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in split_rows(split, n, task, difficulty, seed_offset=seed_offset):
        lines.append(f"| {r['family']} | {r['kind']} | {r['n']} | {r['share']:.2f} | {r['objects_mean']:.1f} "
                     f"({r['objects_min']}-{r['objects_max']}) | {r['members_mean']:.2f} | "
                     f"{r['radius_median']:.1f} | {r['patches_median']:.0f} / {r['patches_p10']:.0f} |")
    return "\n".join(lines)


def interior_change(split: str, n: int, *, textured: bool, difficulty: str = "standard") -> float:
    """Mean absolute change (0-255) between consecutive frames of the patches of ``PATCH`` px that
    lie >= 90 % inside the same moving object in both frames, over the first ``n`` videos: what a
    per-frame patch token can see of an object's motion away from its edges."""
    changes = []
    for i in range(n):
        s = make_sample(split, i, "video", difficulty=difficulty, textured=textured, with_labels=True)
        lab, frames = s.meta["labels"], s.frames.astype(np.float32)
        cover = object_cover(lab, s.meta["n_objects"], PATCH)  # (T, O, G*G)
        g = lab.shape[1] // PATCH
        patches = frames[:, :g * PATCH, :g * PATCH].reshape(len(frames), g, PATCH, g, PATCH, 3)
        patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(len(frames), g * g, -1)
        for k, o in enumerate(s.meta["objects"]):
            for t in range(min(o["stop"], len(frames) - 1)):
                if o["vx"] == 0 and o["vy"] == 0:
                    continue
                inside = (cover[t, k] >= 0.9) & (cover[t + 1, k] >= 0.9)
                changes.extend(np.abs(patches[t + 1, inside] - patches[t, inside]).mean(1).tolist())
    return float(np.mean(changes)) if changes else 0.0
