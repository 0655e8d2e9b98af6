"""The standard expression families of the synthetic benchmark.

Each family generator takes ``(rng, config, frames)`` and returns ``(objects, target index,
instruction, roles)`` or None to retry; ``roles`` names the reference set (``members``) and the
``anchor`` the expression relates them to.

Image families: ``attribute``, ``spatial``, ``ordinal``, ``reasoning``.
Video families: ``attribute``, ``motion``, ``temporal``.
"""
from __future__ import annotations

import math

import numpy as np

from evtp.data.synthetic_scene import (COLOR_NAMES, CORNERS, DIRECTIONS, SHAPES, SceneObject, desc_words,
                                       distinct_radii, matches, non_member, pick_anchor, place,
                                       random_desc, random_motion, roles, scene_with_set, unique_attr)

IMAGE_FAMILIES = ("attribute", "spatial", "ordinal", "reasoning")
VIDEO_FAMILIES = ("attribute", "motion", "temporal")


def _attribute(rng, cfg, frames):
    c, s = str(rng.choice(COLOR_NAMES)), str(rng.choice(SHAPES))
    # distractors share colour or shape with the target
    motions = None
    if frames > 1:
        motions = [random_motion(rng, cfg, frames)]
    objs = []
    if place(rng, objs, s, c, cfg, frames, None if motions is None else motions[0]) is None:
        return None
    n_total = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    while len(objs) < n_total:
        if rng.random() < 0.6:
            cc, ss = (c, str(rng.choice([x for x in SHAPES if x != s]))) if rng.random() < 0.5 else \
                (str(rng.choice([x for x in COLOR_NAMES if x != c])), s)
        else:
            cc, ss = non_member(rng, (c, s))
        if (cc, ss) == (c, s):
            continue
        mot = random_motion(rng, cfg, frames) if frames > 1 else None
        if place(rng, objs, ss, cc, cfg, frames, mot) is None:
            break
    if len(objs) < cfg.min_objects:
        return None
    return objs, 0, f"the {c} {s}", roles([0])


def _spatial(rng, cfg, frames):
    desc = random_desc(rng)
    kind = str(rng.choice(["extreme", "relation", "corner", "near_anchor"]))
    if kind == "extreme":
        objs = scene_with_set(rng, cfg, frames, desc, int(rng.integers(2, 4)))
        if objs is None:
            return None
        word, axis, sign = [("leftmost", 0, 1), ("rightmost", 0, -1), ("topmost", 1, 1),
                            ("bottommost", 1, -1)][int(rng.integers(4))]
        mem = [i for i, o in enumerate(objs) if matches(o, desc)]
        vals = sorted((sign * (objs[i].x if axis == 0 else objs[i].y), i) for i in mem)
        if vals[1][0] - vals[0][0] < 12:
            return None
        return objs, vals[0][1], f"the {word} {desc_words(desc)}", roles(mem)
    if kind == "corner":
        objs = scene_with_set(rng, cfg, frames, desc, int(rng.integers(2, 4)))
        if objs is None:
            return None
        name = str(rng.choice(list(CORNERS)))
        cx, cy = (v * cfg.size for v in CORNERS[name])
        mem = [i for i, o in enumerate(objs) if matches(o, desc)]
        d = sorted((math.hypot(objs[i].x - cx, objs[i].y - cy), i) for i in mem)
        if d[1][0] - d[0][0] < 15:
            return None
        return objs, d[0][1], f"the {desc_words(desc)} nearest the {name} corner", roles(mem)
    # relations to a unique anchor
    objs = scene_with_set(rng, cfg, frames, desc, int(rng.integers(2, 4)))
    if objs is None:
        return None
    picked = pick_anchor(rng, objs, desc)
    if picked is None:
        return None
    mem, ai, a, aw = picked
    if kind == "near_anchor":
        d = sorted((math.hypot(objs[i].x - a.x, objs[i].y - a.y), i) for i in mem)
        if d[1][0] - d[0][0] < 15:
            return None
        return objs, d[0][1], f"the {desc_words(desc)} nearest to the {aw}", roles(mem, ai)
    rel, axis, sign = [("left of", 0, -1), ("right of", 0, 1), ("above", 1, -1),
                       ("below", 1, 1)][int(rng.integers(4))]
    side = [sign * ((objs[i].x - a.x) if axis == 0 else (objs[i].y - a.y)) for i in mem]
    yes = [i for i, s in zip(mem, side) if s > 10]
    no_margin = all(s < -10 for i, s in zip(mem, side) if i not in yes)
    if len(yes) != 1 or not no_margin:
        return None
    return objs, yes[0], f"the {desc_words(desc)} {rel} the {aw}", roles(mem, ai)


def _ordinal(rng, cfg, frames):
    desc = random_desc(rng)
    kind = str(rng.choice(["largest", "smallest", "second_largest", "second_from"]))
    n = int(rng.integers(3, 5)) if kind.startswith("second") else int(rng.integers(2, 4))
    radii = distinct_radii(rng, cfg, n)
    if radii is None:
        return None
    objs = scene_with_set(rng, cfg, frames, desc, n, radii=radii)
    if objs is None:
        return None
    mem = [i for i, o in enumerate(objs) if matches(o, desc)]
    dw = desc_words(desc)
    if kind in ("largest", "smallest", "second_largest"):
        order = sorted(mem, key=lambda i: -objs[i].r)
        if kind == "largest":
            return objs, order[0], f"the largest {dw}", roles(mem)
        if kind == "smallest":
            return objs, order[-1], f"the smallest {dw}", roles(mem)
        return objs, order[1], f"the second largest {dw}", roles(mem)
    side, axis = [("left", 0), ("top", 1)][int(rng.integers(2))]
    vals = sorted(((objs[i].x if axis == 0 else objs[i].y), i) for i in mem)
    if min(b[0] - a[0] for a, b in zip(vals, vals[1:])) < 12:
        return None
    return objs, vals[1][1], f"the second {dw} from the {side}", roles(mem)


def _reasoning(rng, cfg, frames):
    kind = str(rng.choice(["same_colour", "same_shape", "larger_than", "farthest"]))
    if kind in ("same_colour", "same_shape"):
        # reference set: a shape (same colour) or a colour (same shape); exactly one member shares
        # the property with a unique anchor outside the set
        for _ in range(10):
            objs: list[SceneObject] = []
            if kind == "same_colour":
                s = str(rng.choice(SHAPES))
                cols = list(rng.choice(COLOR_NAMES, size=int(rng.integers(2, 4)), replace=False))
                a_shape = str(rng.choice([x for x in SHAPES if x != s]))
                anchor = (str(cols[0]), a_shape)
                members = [(str(c), s) for c in cols]
                words = f"which {s} has the same colour as the {anchor[0]} {anchor[1]}"
            else:
                c = str(rng.choice(COLOR_NAMES))
                shapes = list(rng.choice(SHAPES, size=int(rng.integers(2, 4)), replace=False))
                a_color = str(rng.choice([x for x in COLOR_NAMES if x != c]))
                anchor = (a_color, str(shapes[0]))
                members = [(c, str(sh)) for sh in shapes]
                words = f"which {c} shape has the same shape as the {anchor[0]} {anchor[1]}"
            ok = all(place(rng, objs, sh, co, cfg, frames) is not None for co, sh in members)
            ok = ok and place(rng, objs, anchor[1], anchor[0], cfg, frames) is not None
            if not ok:
                continue
            n_total = int(rng.integers(max(cfg.min_objects, len(objs)), cfg.max_objects + 1))
            while len(objs) < n_total:
                co, sh = str(rng.choice(COLOR_NAMES)), str(rng.choice(SHAPES))
                if kind == "same_colour" and (sh == members[0][1] or co == anchor[0]):
                    continue
                if kind == "same_shape" and (co == members[0][0] or sh == anchor[1]):
                    continue
                if place(rng, objs, sh, co, cfg, frames) is None:
                    break
            ai = len(members)
            if not unique_attr(objs, objs[ai]):
                continue
            return objs, 0, words, roles(range(ai), ai)
        return None
    desc = random_desc(rng)
    n = int(rng.integers(2, 4))
    radii = distinct_radii(rng, cfg, n + 1) if kind == "larger_than" else None
    if kind == "larger_than" and radii is None:
        return None
    objs = scene_with_set(rng, cfg, frames, desc, n, radii=None if radii is None else radii[:n])
    if objs is None:
        return None
    picked = pick_anchor(rng, objs, desc)
    if picked is None:
        return None
    mem, ai, a, aw = picked
    if kind == "farthest":
        d = sorted((-math.hypot(objs[i].x - a.x, objs[i].y - a.y), i) for i in mem)
        if d[1][0] - d[0][0] < 15:
            return None
        return objs, d[0][1], f"find the {desc_words(desc)} farthest from the {aw}", roles(mem, ai)
    bigger = [i for i in mem if objs[i].r > a.r + 3]
    smaller = [i for i in mem if objs[i].r < a.r - 3]
    if len(bigger) == 1 and len(smaller) == len(mem) - 1:
        return objs, bigger[0], f"find the {desc_words(desc)} that is larger than the {aw}", roles(mem, ai)
    if len(smaller) == 1 and len(bigger) == len(mem) - 1:
        return objs, smaller[0], f"find the {desc_words(desc)} that is smaller than the {aw}", roles(mem, ai)
    return None


def _shuffled_set(rng, cfg, frames, desc, motions, text):
    """Place the set of objects matching `desc` with `motions` in random order; the target is the
    object that got motions[0]. Returns (objects, target index, text) or None."""
    order = rng.permutation(len(motions))
    objs = scene_with_set(rng, cfg, frames, desc, len(motions), motions=[motions[i] for i in order])
    if objs is None:
        return None
    return objs, int(np.argmin(order)), text, roles(range(len(motions)))


def _motion(rng, cfg, frames):
    desc = random_desc(rng)
    kind = str(rng.choice(["direction", "static", "fastest"]))
    n = int(rng.integers(2, 4))
    dirs = list(DIRECTIONS)
    if kind == "direction":
        d = str(rng.choice(dirs))
        others = [x for x in dirs if x != d]
        motions = [(DIRECTIONS[d], float(rng.uniform(*cfg.speed)), frames)]
        for _ in range(n - 1):
            if rng.random() < 0.3:
                motions.append(((0, 0), 0.0, 0))
            else:
                motions.append((DIRECTIONS[str(rng.choice(others))], float(rng.uniform(*cfg.speed)),
                                frames))
        text = f"the {desc_words(desc)} that moves {d}"
    elif kind == "static":
        motions = [((0, 0), 0.0, 0)] + [(DIRECTIONS[str(rng.choice(dirs))],
                                         float(rng.uniform(*cfg.speed)), frames) for _ in range(n - 1)]
        text = f"the {desc_words(desc)} that does not move"
    else:
        sp = np.sort(rng.uniform(1.5, cfg.speed[1] + 1, n))[::-1]
        if n > 1 and sp[0] - sp[1] < 2.5:
            return None
        motions = [(DIRECTIONS[str(rng.choice(dirs))], float(s), frames) for s in sp]
        text = f"the {desc_words(desc)} that moves fastest"
    return _shuffled_set(rng, cfg, frames, desc, motions, text)


def _temporal(rng, cfg, frames):
    desc = random_desc(rng)
    kind = str(rng.choice(["stops_first", "keeps_moving"]))
    n = int(rng.integers(2, 4))
    dirs = list(DIRECTIONS)
    if kind == "stops_first":
        stops = sorted(rng.choice([4, 6, frames], size=n - 1).tolist())
        motions = [(DIRECTIONS[str(rng.choice(dirs))], float(rng.uniform(*cfg.speed)), 2)]
        motions += [(DIRECTIONS[str(rng.choice(dirs))], float(rng.uniform(*cfg.speed)), int(s))
                    for s in stops]
        text = f"the {desc_words(desc)} that stops first"
    else:
        motions = [(DIRECTIONS[str(rng.choice(dirs))], float(rng.uniform(*cfg.speed)), frames)]
        motions += [(DIRECTIONS[str(rng.choice(dirs))], float(rng.uniform(*cfg.speed)),
                     int(rng.choice([2, 4]))) for _ in range(n - 1)]
        text = f"the {desc_words(desc)} that keeps moving"
    return _shuffled_set(rng, cfg, frames, desc, motions, text)


# family name -> generator, and the default family mix of each task
IMAGE_GENERATORS = {"attribute": _attribute, "spatial": _spatial, "ordinal": _ordinal,
              "reasoning": _reasoning}
VIDEO_GENERATORS = {"attribute": _attribute, "motion": _motion, "temporal": _temporal}
IMAGE_WEIGHTS = {"attribute": 0.15, "spatial": 0.3, "ordinal": 0.3, "reasoning": 0.25}
VIDEO_WEIGHTS = {"attribute": 0.15, "motion": 0.5, "temporal": 0.35}
