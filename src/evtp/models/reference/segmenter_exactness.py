"""How exact the point readout's stand-in segmenter and tracker are on the synthetic benchmark.

`exactness_table` seeds `segment_at` at random pixels of every object of generated val scenes and
compares the mask with the object's ground truth (pixel for pixel), clicks background points at
least 5 px from every object (they must select nothing), and on videos tracks each object from a
random pixel of frame 0 (all frames must equal the ground truth). The ground truth is read here
only, to score; the segmenter sees pixels.

    python -c "from evtp.models.reference.segmenter_exactness import exactness_table; print(exactness_table())"
"""
from __future__ import annotations

import cv2
import numpy as np

from evtp.data.synthetic import make_sample
from evtp.models.reference.segmenter import segment_at, track

# (label, task, difficulty, family, textured, samples)
SPLITS = (("standard", "image", "standard", None, False, 60),
          ("hard background", "image", "hard", "background", False, 60),
          ("hard low_saliency", "image", "hard", "low_saliency", False, 60),
          ("hard small", "image", "hard", "small", False, 60),
          ("hard dense", "image", "hard", "dense", False, 60),
          ("textured", "image", "standard", None, True, 60),
          ("standard", "video", "standard", None, False, 30),
          ("textured", "video", "standard", None, True, 30),
          ("hard (mixed families)", "video", "hard", None, False, 30),
          ("hard textured (mixed families)", "video", "hard", None, True, 30))


def image_exactness(n: int, difficulty: str = "standard", family: str | None = None, textured: bool = False,
                    points: int = 3, background_points: int = 5, seed: int = 0) -> dict:
    """Objects whose masks are exact from all ``points`` random seeds, and background points that
    select nothing, over the first ``n`` val images."""
    rng = np.random.default_rng(seed)
    exact = objects = quiet = 0
    for i in range(n):
        s = make_sample("val", i, "image", with_labels=True, difficulty=difficulty, family=family,
                        textured=textured)
        frame, lab = s.frames[0], s.meta["labels"][0]
        for o in range(len(s.meta["objects"])):
            ys, xs = np.nonzero(lab == o + 1)
            picks = rng.integers(len(xs), size=points)
            exact += all(np.array_equal(segment_at(frame, xs[j] + 0.5, ys[j] + 0.5), lab == o + 1) for j in picks)
            objects += 1
        far = cv2.dilate((lab > 0).astype(np.uint8), np.ones((11, 11), np.uint8)) == 0
        ys, xs = np.nonzero(far)
        for j in rng.choice(len(xs), background_points, replace=False):
            quiet += not segment_at(frame, xs[j] + 0.5, ys[j] + 0.5).any()
    return {"objects": objects, "exact": int(exact), "background": n * background_points, "quiet": int(quiet)}


def video_exactness(n: int, difficulty: str = "standard", family: str | None = None, textured: bool = False,
                    seed: int = 0) -> dict:
    """Objects tracked exactly in every frame from a random pixel of frame 0, over ``n`` val videos."""
    rng = np.random.default_rng(seed)
    exact = objects = 0
    for i in range(n):
        s = make_sample("val", i, "video", with_labels=True, difficulty=difficulty, family=family,
                        textured=textured)
        lab = s.meta["labels"]
        for o in range(len(s.meta["objects"])):
            ys, xs = np.nonzero(lab[0] == o + 1)
            j = int(rng.integers(len(xs)))
            exact += np.array_equal(track(s.frames, segment_at(s.frames[0], xs[j] + 0.5, ys[j] + 0.5)), lab == o + 1)
            objects += 1
    return {"objects": objects, "exact": int(exact)}


def exactness_table(splits=SPLITS) -> str:
    """A markdown table of `image_exactness` / `video_exactness` over ``splits``."""
    rows = ["| task | split | samples | objects exact | background points selecting nothing |",
            "|---|---|---|---|---|"]
    for label, task, difficulty, family, textured, n in splits:
        if task == "image":
            r = image_exactness(n, difficulty, family, textured)
            rows.append(f"| image | {label} | {n} | {r['exact']} / {r['objects']} | {r['quiet']} / {r['background']} |")
        else:
            r = video_exactness(n, difficulty, family, textured)
            rows.append(f"| video | {label} | {n} | {r['exact']} / {r['objects']} (all 8 frames) | - |")
    return "\n".join(rows)
