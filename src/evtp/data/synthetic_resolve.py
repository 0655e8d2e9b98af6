"""A perfect-perception solver of the synthetic benchmark: which objects an instruction can mean.

`resolve` reads an instruction with the benchmark's grammar and evaluates it on a sample's scene
description (``meta``: objects with colour, shape, radius, frame-0 centre, velocity and stop
frame; a hard sample's background feature). It is written from the templates' wording, not from
the generators, so it checks them: an expression is unambiguous when `resolve` returns exactly
one object. Comparisons count an object as a candidate when it is within a tolerance of the best
(a near tie is an ambiguity a viewer could not settle), so a single answer also means the
decisive margin is there.
"""
from __future__ import annotations

import math
import re

from evtp.data.synthetic_hard import half_side, segment_distance
from evtp.data.synthetic_scene import COLOR_NAMES, CORNERS, DIRECTIONS, SHAPES, SceneObject

# tolerances (px, or px per frame for speed): a rival within this of the best is also a candidate
POSITION_TOLERANCE = 11.0
DISTANCE_TOLERANCE = 14.0
RADIUS_TOLERANCE = 3.0
SPEED_TOLERANCE = 2.0
EDGE_TOLERANCE = 9.0

_C, _S = "|".join(COLOR_NAMES), "|".join(SHAPES)
_DESC = rf"(?:(?P<c>{_C}) )?(?P<s>{_S}|shape)"
_ANCHOR = rf"the (?P<ac>{_C}) (?P<as>{_S})"


def _objects(meta: dict) -> list[SceneObject]:
    return [SceneObject(o["shape"], o["color"], o["radius"], o["x"], o["y"], o["vx"], o["vy"], o["stop"])
            for o in meta["objects"]]


def _members(objs, c: str | None, s: str) -> list[int]:
    return [i for i, o in enumerate(objs) if (c is None or o.color == c) and (s == "shape" or o.shape == s)]


def _best(scores: dict[int, float], tolerance: float) -> list[int]:
    """Indices whose score is within ``tolerance`` of the smallest."""
    if not scores:
        return []
    low = min(scores.values())
    return sorted(i for i, v in scores.items() if v <= low + tolerance)


def _anchor(objs, m) -> int | None:
    found = [i for i, o in enumerate(objs) if o.color == m["ac"] and o.shape == m["as"]]
    return found[0] if len(found) == 1 else None


def _second_from(objs, mem, side: str) -> list[int]:
    vals = sorted(((objs[i].x if side == "left" else objs[i].y), i) for i in mem)
    if len(vals) < 2:
        return []
    out = {vals[1][1]}
    for j in (0, 2):  # a neighbour within the tolerance could be second as well
        if j < len(vals) and abs(vals[j][0] - vals[1][0]) <= POSITION_TOLERANCE:
            out.add(vals[j][1])
    return sorted(out)


def _static_rules(objs, size: int):
    """(pattern, rule(match, members) -> candidates) of the standard expressions about frame 0."""
    def extreme(m, mem):
        axis, sign = {"leftmost": (0, 1), "rightmost": (0, -1), "topmost": (1, 1), "bottommost": (1, -1)}[m["w"]]
        return _best({i: sign * (objs[i].x if axis == 0 else objs[i].y) for i in mem}, POSITION_TOLERANCE)

    def corner(m, mem):
        cx, cy = (v * size for v in CORNERS[m["k"]])
        return _best({i: math.hypot(objs[i].x - cx, objs[i].y - cy) for i in mem}, DISTANCE_TOLERANCE)

    def near_to(m, mem, sign=1):
        a = _anchor(objs, m)
        if a is None:
            return []
        return _best({i: sign * math.hypot(objs[i].x - objs[a].x, objs[i].y - objs[a].y) for i in mem if i != a},
                     DISTANCE_TOLERANCE)

    def relation(m, mem):
        a = _anchor(objs, m)
        if a is None:
            return []
        axis, sign = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}[m["r"]]
        off = {i: sign * ((objs[i].x - objs[a].x) if axis == 0 else (objs[i].y - objs[a].y)) for i in mem if i != a}
        return sorted(i for i, v in off.items() if v > -10)  # on the named side, or too close to tell

    def by_radius(m, mem, sign):
        return _best({i: sign * objs[i].r for i in mem}, RADIUS_TOLERANCE)

    def second_largest(m, mem):
        order = sorted(mem, key=lambda i: -objs[i].r)
        if len(order) < 2:
            return []
        return sorted(i for i in order if abs(objs[i].r - objs[order[1]].r) <= RADIUS_TOLERANCE)

    def compare(m, mem):
        a = _anchor(objs, m)
        if a is None:
            return []
        sign = 1 if m["cmp"] == "larger" else -1
        return sorted(i for i in mem if i != a and sign * (objs[i].r - objs[a].r) > -RADIUS_TOLERANCE)

    def same(m, mem, what):
        a = _anchor(objs, m)
        if a is None:
            return []
        return sorted(i for i in mem if i != a and getattr(objs[i], what) == getattr(objs[a], what))

    corners = "|".join(CORNERS)
    return [
        (rf"the (?P<w>leftmost|rightmost|topmost|bottommost) {_DESC}", extreme),
        (rf"the {_DESC} nearest the (?P<k>{corners}) corner", corner),
        (rf"the {_DESC} nearest to {_ANCHOR}", near_to),
        (rf"find the {_DESC} farthest from {_ANCHOR}", lambda m, mem: near_to(m, mem, -1)),
        (rf"the {_DESC} (?P<r>left of|right of|above|below) {_ANCHOR}", relation),
        (rf"the largest {_DESC}", lambda m, mem: by_radius(m, mem, -1)),
        (rf"the smallest {_DESC}", lambda m, mem: by_radius(m, mem, 1)),
        (rf"the second largest {_DESC}", second_largest),
        (rf"the second {_DESC} from the (?P<side>left|top)", lambda m, mem: _second_from(objs, mem, m["side"])),
        (rf"find the {_DESC} that is (?P<cmp>larger|smaller) than {_ANCHOR}", compare),
        (rf"which (?P<s>{_S}) has the same colour as {_ANCHOR}", lambda m, mem: same(m, mem, "color")),
        (rf"which (?P<c>{_C}) (?P<s>shape) has the same shape as {_ANCHOR}", lambda m, mem: same(m, mem, "shape")),
    ]


def _background_rules(objs, meta):
    """(pattern, rule) of the hard expressions about the background feature ``meta["background"]``."""
    def half(m, mem):
        spec = meta.get("background") or {}
        if spec.get("type") != "halves":
            return []
        return sorted(i for i in mem if half_side(objs[i], spec) in (m["h"], None))

    def line(m, mem):
        spec = meta.get("background") or {}
        if spec.get("type") != "line":
            return []
        d = {i: segment_distance(objs[i].x, objs[i].y, spec["points"]) for i in mem}
        return sorted(set(_best(d, DISTANCE_TOLERANCE)) |
                      set(_best({i: v - objs[i].r for i, v in d.items()}, EDGE_TOLERANCE)))

    return [
        (rf"the {_DESC} on the (?P<h>dark|light) half", half),
        (rf"the {_DESC} nearest the long line", line),
    ]


def _motion_rules(objs, frames: int):
    """(pattern, rule) of the expressions about motion over ``frames`` frames."""
    def moving(i) -> bool:
        return objs[i].stop > 0 and (objs[i].vx != 0 or objs[i].vy != 0)

    def direction(m, mem):
        dx, dy = DIRECTIONS[m["d"]]
        return sorted(i for i in mem if moving(i) and
                      (objs[i].vx * dx + objs[i].vy * dy) > 0 and (objs[i].vx * dy - objs[i].vy * dx) == 0)

    return [
        (rf"the {_DESC} that moves (?P<d>{'|'.join(DIRECTIONS)})", direction),
        (rf"the {_DESC} that does not move", lambda m, mem: sorted(i for i in mem if not moving(i))),
        (rf"the {_DESC} that moves fastest",
         lambda m, mem: _best({i: -objs[i].speed for i in mem}, SPEED_TOLERANCE)),
        (rf"the {_DESC} that stops first",
         lambda m, mem: _best({i: objs[i].stop for i in mem if moving(i)}, 0)),
        (rf"the {_DESC} that keeps moving",
         lambda m, mem: sorted(i for i in mem if moving(i) and objs[i].stop >= frames - 1)),
    ]


def resolve(instruction: str, meta: dict, *, frames: int = 1, size: int = 256) -> list[int]:
    """Indices of the objects of ``meta["objects"]`` that ``instruction`` can refer to.

    Args:
        instruction: a benchmark instruction (any difficulty).
        meta: the sample's ``meta`` (`make_sample`); image geometry is read at frame 0.
        frames: frames of the clip (1 for an image); "keeps moving" means moving up to the last.
        size: image side in pixels (for the corners).
    Returns:
        sorted candidate indices; exactly one for an unambiguous expression. Raises ValueError for
        an instruction outside the grammar.
    """
    objs = _objects(meta)
    m = re.fullmatch(rf"the (?P<c>{_C}) (?P<s>{_S})", instruction)
    if m:
        return _members(objs, m["c"], m["s"])
    rules = _static_rules(objs, size) + _background_rules(objs, meta) + _motion_rules(objs, frames)
    for pattern, rule in rules:
        m = re.fullmatch(pattern, instruction)
        if m:
            groups = m.groupdict()
            return rule(m, _members(objs, groups.get("c"), groups["s"]))
    raise ValueError(f"instruction {instruction!r} is outside the benchmark's grammar")
