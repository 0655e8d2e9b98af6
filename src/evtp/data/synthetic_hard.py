"""The hard families of the synthetic benchmark (``make_sample(..., difficulty="hard")``).

Scenes where which visual tokens a pruner keeps matters for reasons a real image has too:

* ``background`` (images): the referent needs the background. ``dark_half`` / ``light_half``:
  "the star on the dark half", the background is split into a dark and a light part (boundary at
  40-60 % of the side, vertical or horizontal) and exactly one member of the reference set lies
  wholly on the named part, the others wholly on the other. ``long_line``: "the circle nearest the
  long line", one straight line of 160-280 px (3 px, near-black or near-white) crosses the
  background, whose clutter lines are at most ~57 px and 1-2 px thick.
* ``low_saliency``: the reference set (target included) is desaturated (saturation 0.3-0.5) and
  textured, the other objects are plain, saturated distractors that draw a saliency score.
  Expressions of the standard attribute / spatial / ordinal (image) or attribute / motion /
  temporal (video) families.
* ``small``: every object has a radius of 6-10 px (about one patch of 16 px). Standard attribute /
  spatial (image) or attribute / motion / temporal (video) expressions.
* ``dense``: 8-12 objects of radius 8-18 px (video: 7-14 px). Standard spatial / ordinal /
  reasoning (image) or attribute / motion / temporal (video) expressions.

Each generator returns ``(objects, target, instruction, roles, extras)`` or None to retry;
``extras`` holds ``kind`` (the template or base family), ``looks`` (per-object `Look` or None) and
``background`` (the plain-data description of the background feature the expression names, or
None), which `paint_background` draws.
"""
from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np

from evtp.data.synthetic_families import IMAGE_GENERATORS, VIDEO_GENERATORS
from evtp.data.synthetic_scene import (BenchmarkConfig, Look, SceneObject, TEXTURES, background, desc_words,
                                       matches, random_desc, roles, scene_with_set)

HARD_IMAGE_FAMILIES = ("background", "low_saliency", "small", "dense")
HARD_VIDEO_FAMILIES = ("low_saliency", "small", "dense")
HARD_VOCAB_WORDS = ("dark", "half", "light", "line", "long", "on")

SMALL_RADIUS = (6, 10)
DENSE_OBJECTS = (8, 12)
DENSE_RADIUS = {"image": (8, 18), "video": (7, 14)}
FAINT_SATURATION = (0.3, 0.5)
LINE_LENGTH = (160, 280)
HALF_MARGIN = 6.0  # px between a member's edge and the halves' boundary
NEAR_MARGIN = 15.0  # px between the nearest and the second-nearest member (centre distance)
NEAR_EDGE_MARGIN = 10.0  # the same between their edges


def small_config(cfg: BenchmarkConfig) -> BenchmarkConfig:
    return replace(cfg, min_radius=SMALL_RADIUS[0], max_radius=SMALL_RADIUS[1])


def dense_config(cfg: BenchmarkConfig, frames: int) -> BenchmarkConfig:
    lo, hi = DENSE_RADIUS["image" if frames == 1 else "video"]
    return replace(cfg, min_objects=DENSE_OBJECTS[0], max_objects=DENSE_OBJECTS[1], min_radius=lo, max_radius=hi)


def _base(rng, frames: int, image_bases: tuple[str, ...]):
    """A standard family for the hard variant: its name and generator."""
    if frames == 1:
        name = str(rng.choice(image_bases))
        return name, IMAGE_GENERATORS[name]
    name = str(rng.choice(("attribute", "motion", "temporal")))
    return name, VIDEO_GENERATORS[name]


def _retry(make, tries: int = 200):
    """The first scene ``make()`` returns within ``tries`` calls (a family's kind is drawn once per
    sample, so that kinds that are rejected more often keep their share), or None."""
    for _ in range(tries):
        out = make()
        if out is not None:
            return out
    return None


def _small(rng, cfg, frames):
    kind, gen = _base(rng, frames, ("attribute", "spatial"))
    out = _retry(lambda: gen(rng, small_config(cfg), frames))
    return None if out is None else (*out, {"kind": kind})


def _dense(rng, cfg, frames):
    kind, gen = _base(rng, frames, ("spatial", "ordinal", "reasoning"))
    dense = dense_config(cfg, frames)

    def make():
        out = gen(rng, dense, frames)
        return None if out is None or len(out[0]) < DENSE_OBJECTS[0] else out

    out = _retry(make)
    return None if out is None else (*out, {"kind": kind})


def faint_look(rng) -> Look:
    """A desaturated, textured `Look` (the low-saliency family's reference set)."""
    return Look(saturation=float(rng.uniform(*FAINT_SATURATION)), texture=str(rng.choice(TEXTURES)),
                period=float(rng.uniform(5, 9)), angle=float(rng.uniform(0, math.pi)),
                contrast=float(rng.uniform(0.12, 0.25)))


def _low_saliency(rng, cfg, frames):
    kind, gen = _base(rng, frames, ("attribute", "spatial", "ordinal"))
    out = _retry(lambda: gen(rng, cfg, frames))
    if out is None:
        return None
    objs, target, text, role = out
    members = set(role["members"])
    looks = [faint_look(rng) if i in members else None for i in range(len(objs))]
    return objs, target, text, role, {"kind": kind, "looks": looks}


def _coordinate(o: SceneObject, axis: str) -> float:
    return o.x if axis == "x" else o.y


def half_side(o: SceneObject, spec: dict) -> str | None:
    """"dark" or "light": the part of a `halves` background the object lies wholly on (with
    `HALF_MARGIN`), None if it straddles the boundary."""
    c, b = _coordinate(o, spec["axis"]), spec["boundary"]
    low = "dark" if spec["dark_side"] in ("left", "top") else "light"
    high = "light" if low == "dark" else "dark"
    if c + o.r < b - HALF_MARGIN:
        return low
    if c - o.r > b + HALF_MARGIN:
        return high
    return None


def _halves(rng, cfg, frames):
    desc = random_desc(rng)
    objs = scene_with_set(rng, cfg, frames, desc, int(rng.integers(2, 4)))
    if objs is None:
        return None
    axis = str(rng.choice(["x", "y"]))
    spec = {"type": "halves", "axis": axis, "boundary": float(rng.uniform(0.4, 0.6) * cfg.size),
            "dark_side": str(rng.choice(["left", "right"] if axis == "x" else ["top", "bottom"]))}
    named = str(rng.choice(["dark", "light"]))
    mem = [i for i, o in enumerate(objs) if matches(o, desc)]
    sides = [half_side(objs[i], spec) for i in mem]
    on = [i for i, s in zip(mem, sides) if s == named]
    if len(on) != 1 or None in sides:
        return None
    return objs, on[0], f"the {desc_words(desc)} on the {named} half", roles(mem), \
        {"kind": f"{named}_half", "background": spec}


def segment_distance(x: float, y: float, points) -> float:
    """Distance from (x, y) to the segment ``points`` = [x0, y0, x1, y1]."""
    x0, y0, x1, y1 = points
    dx, dy = x1 - x0, y1 - y0
    t = min(1.0, max(0.0, ((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy)))
    return math.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def _long_line(rng, cfg, frames):
    desc = random_desc(rng)
    objs = scene_with_set(rng, cfg, frames, desc, int(rng.integers(2, 4)))
    if objs is None:
        return None
    size = cfg.size
    cx, cy = (float(v) for v in rng.uniform(0.25 * size, 0.75 * size, 2))
    angle, length = float(rng.uniform(0, math.pi)), float(rng.uniform(*LINE_LENGTH))
    h = length / 2
    points = [cx - h * math.cos(angle), cy - h * math.sin(angle), cx + h * math.cos(angle), cy + h * math.sin(angle)]
    if min(points) < 4 or max(points) > size - 5:
        return None
    mem = [i for i, o in enumerate(objs) if matches(o, desc)]
    centre = sorted((segment_distance(objs[i].x, objs[i].y, points), i) for i in mem)
    edge = sorted((d - objs[i].r, i) for d, i in centre)
    if centre[0][1] != edge[0][1] or centre[1][0] - centre[0][0] < NEAR_MARGIN or \
            edge[1][0] - edge[0][0] < NEAR_EDGE_MARGIN or edge[0][0] < 3:
        return None
    spec = {"type": "line", "points": points, "width": 3, "value": float(rng.choice([25.0, 235.0]))}
    return objs, centre[0][1], f"the {desc_words(desc)} nearest the long line", roles(mem), \
        {"kind": "long_line", "background": spec}


def _background_family(rng, cfg, frames):
    make = _halves if rng.random() < 0.5 else _long_line
    return _retry(lambda: make(rng, cfg, frames))


def paint_background(rng: np.random.Generator, size: int, spec: dict | None) -> np.ndarray:
    """(S, S, 3) float32 background: the standard cluttered texture, then the feature ``spec``
    describes (None: none). ``halves``: the dark part at 0.35 x the texture's brightness, the light
    part at 0.55 x + 105. ``line``: the long line, anti-aliased, at grey level ``value``."""
    img = background(rng, size)
    if spec is None:
        return img
    if spec["type"] == "halves":
        coord = np.arange(size, dtype=np.float32) + 0.5
        low = coord < spec["boundary"]
        low = low[None, :, None] if spec["axis"] == "x" else low[:, None, None]
        dark_low = spec["dark_side"] in ("left", "top")
        dark = np.broadcast_to(low if dark_low else ~low, img.shape)
        return np.where(dark, img * 0.35, img * 0.55 + 105).astype(np.float32)
    if spec["type"] == "line":
        x0, y0, x1, y1 = spec["points"]
        cv2.line(img, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))), (spec["value"],) * 3,
                 int(spec["width"]), cv2.LINE_AA)
        return img
    raise ValueError(f"unknown background feature {spec['type']!r}")


# family name -> generator, and the default family mix of each task
HARD_IMAGE_GENERATORS = {"background": _background_family, "low_saliency": _low_saliency, "small": _small,
                         "dense": _dense}
HARD_VIDEO_GENERATORS = {"low_saliency": _low_saliency, "small": _small, "dense": _dense}
HARD_IMAGE_WEIGHTS = {f: 0.25 for f in HARD_IMAGE_FAMILIES}
HARD_VIDEO_WEIGHTS = {f: 1 / 3 for f in HARD_VIDEO_FAMILIES}
