"""A procedurally generated instructed-segmentation benchmark (images and short videos).

In the spirit of CLEVR-Ref+: controlled scenes of coloured shapes on a textured, cluttered
background, each with one referring expression whose answer needs spatial, ordinal, comparative,
reasoning or (for video) motion / temporal understanding, and the exact ground-truth mask(s).

Design points:

* Deterministic: a sample is a pure function of ``(split, task, index)``; the split's seed range
  (`SPLIT_BASE`) plus the index (and an optional ``seed_offset``) gives the RNG seed. train, val and
  test use disjoint seed ranges.
* Exact masks: shapes are rasterised without anti-aliasing into an integer label map and the RGB
  image is painted from that map, so a mask is exactly the pixels of its object. Objects never
  overlap (in any frame of a video).
* Distractors: every non-attribute expression refers to a *reference set* ("circle", "red square",
  "blue shape") of at least two objects, so the words alone never single out the target; the
  relation (left of, largest, same colour as, moves down, stops first ...) must be read from the
  image. Attribute expressions ("the red triangle", unique in the scene) are the easy family.

Image families: ``attribute``, ``spatial``, ``ordinal``, ``reasoning``.
Video families: ``attribute``, ``motion``, ``temporal``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from evtp.data.types import Sample

SHAPES = ("circle", "square", "triangle", "star")
COLORS = {
    "red": (220, 45, 45),
    "green": (40, 175, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 205, 35),
    "purple": (150, 60, 205),
    "cyan": (40, 200, 210),
}
COLOR_NAMES = tuple(COLORS)
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
CORNERS = {"top left": (0.0, 0.0), "top right": (1.0, 0.0), "bottom left": (0.0, 1.0),
           "bottom right": (1.0, 1.0)}

IMAGE_FAMILIES = ("attribute", "spatial", "ordinal", "reasoning")
VIDEO_FAMILIES = ("attribute", "motion", "temporal")

# Disjoint seed ranges per split; a split's index i (plus seed_offset) maps to base + i.
SPLIT_BASE = {"train": 0, "val": 2_000_000_000, "test": 3_000_000_000}
SPLIT_SIZE = 1_000_000_000
_TASK_CODE = {"image": 1, "video": 2}

# Every word any template can produce, in a fixed order: the reference model's tokenizer vocabulary.
VOCAB_WORDS = tuple(sorted(set(
    list(SHAPES) + list(COLOR_NAMES) + list(DIRECTIONS) +
    "the shape left right of above below nearest to top bottom corner leftmost rightmost topmost "
    "bottommost largest smallest second from which that has same colour as is larger smaller "
    "than farthest moves does not move fastest stops first last keeps moving find".split())))


@dataclass(frozen=True)
class BenchmarkConfig:
    """Plain-data description of the benchmark (defaults are the shipped benchmark).

    Attributes:
        size: image side in pixels (square images; 16 patches of ``size // 16`` px per side).
        frames: frames per video.
        min_objects / max_objects: objects per scene.
        min_radius / max_radius: object bounding radius range in pixels.
        speed: (min, max) speed in pixels per frame of moving video objects.
    """

    size: int = 256
    frames: int = 8
    min_objects: int = 4
    max_objects: int = 7
    min_radius: int = 11
    max_radius: int = 28
    speed: tuple[int, int] = (4, 7)


@dataclass
class _Obj:
    shape: str
    color: str
    r: float
    x: float  # centre at frame 0
    y: float
    vx: float = 0.0
    vy: float = 0.0
    stop: int = 0  # moves during frames t < stop (position at t = p0 + v * min(t, stop))

    def pos(self, t: int) -> tuple[float, float]:
        s = min(t, self.stop)
        return self.x + self.vx * s, self.y + self.vy * s

    @property
    def speed(self) -> float:
        return math.hypot(self.vx, self.vy) if self.stop > 0 else 0.0


def seed_for(split: str, index: int, seed_offset: int = 0) -> int:
    """The RNG seed of sample ``index`` of ``split`` (raises for unknown splits / out of range)."""
    if split not in SPLIT_BASE:
        raise ValueError(f"split must be one of {sorted(SPLIT_BASE)}, got {split!r}")
    i = int(index) + int(seed_offset)
    if not 0 <= i < SPLIT_SIZE:
        raise ValueError(f"index + seed_offset = {i} lies outside the split's range [0, {SPLIT_SIZE})")
    return SPLIT_BASE[split] + i


# ----------------------------------------------------------------------------------------------
# rendering

def _polygon(shape: str, x: float, y: float, r: float) -> np.ndarray | None:
    if shape == "square":
        h = r * 0.8
        pts = [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    elif shape == "triangle":
        pts = [(x + r * math.cos(a), y + r * math.sin(a))
               for a in (-math.pi / 2, -math.pi / 2 + 2 * math.pi / 3, -math.pi / 2 + 4 * math.pi / 3)]
    elif shape == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rr = r if i % 2 == 0 else r * 0.45
            pts.append((x + rr * math.cos(a), y + rr * math.sin(a)))
    else:
        return None
    return np.round(np.array(pts)).astype(np.int32)


def _draw(label: np.ndarray, obj: _Obj, value: int, t: int) -> None:
    x, y = obj.pos(t)
    if obj.shape == "circle":
        cv2.circle(label, (int(round(x)), int(round(y))), int(round(obj.r)), value, -1, cv2.LINE_8)
    else:
        cv2.fillPoly(label, [_polygon(obj.shape, x, y, obj.r)], value, cv2.LINE_8)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth low-frequency grey-brown texture plus clutter (thin lines, dots) of low saturation."""
    base = rng.uniform(70, 180, size=(6, 6, 1)) + rng.uniform(-18, 18, size=(6, 6, 3))
    img = cv2.resize(base.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 6, size=(size, size, 3)).astype(np.float32)
    for _ in range(int(rng.integers(15, 35))):
        g = float(rng.uniform(40, 210))
        col = tuple(float(np.clip(g + rng.uniform(-15, 15), 0, 255)) for _ in range(3))
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.6:
            p2 = (int(np.clip(p1[0] + rng.integers(-40, 41), 0, size - 1)),
                  int(np.clip(p1[1] + rng.integers(-40, 41), 0, size - 1)))
            cv2.line(img, p1, p2, col, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            cv2.circle(img, p1, int(rng.integers(2, 5)), col, -1, cv2.LINE_AA)
    return np.clip(img, 0, 255)


def _render(rng: np.random.Generator, objs: list[_Obj], frames: int, size: int):
    """Returns frames (T, S, S, 3) uint8 and labels (T, S, S) int16 (0 = background, i+1 = obj i)."""
    bg = _background(rng, size)
    cols = [np.clip(np.array(COLORS[o.color], np.float32) + rng.uniform(-14, 14, 3), 0, 255)
            for o in objs]
    shade = [rng.uniform(0.85, 1.0) for _ in objs]
    out = np.empty((frames, size, size, 3), np.uint8)
    labels = np.zeros((frames, size, size), np.int16)
    yy = np.arange(size, dtype=np.float32)[:, None]
    for t in range(frames):
        lab = labels[t]
        for i, o in enumerate(objs):
            _draw(lab, o, i + 1, t)
        img = bg.copy()
        for i, o in enumerate(objs):
            m = lab == i + 1
            if not m.any():
                continue
            _, y = o.pos(t)
            # mild vertical shading inside the object (not flat colour, still clearly saturated)
            g = 1.0 - (1.0 - shade[i]) * np.clip((yy - (y - o.r)) / max(2 * o.r, 1), 0, 1)
            g = np.broadcast_to(g, (size, size))[m][:, None]
            img[m] = cols[i][None, :] * g
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out, labels


# ----------------------------------------------------------------------------------------------
# scenes

def _fits(o: _Obj, others: list[_Obj], frames: int, size: int, gap: float = 4.0) -> bool:
    for t in range(frames):
        x, y = o.pos(t)
        if x - o.r < 2 or y - o.r < 2 or x + o.r > size - 3 or y + o.r > size - 3:
            return False
        for p in others:
            px, py = p.pos(t)
            if math.hypot(x - px, y - py) < o.r + p.r + gap:
                return False
    return True


def _place(rng, objs: list[_Obj], shape: str, color: str, cfg: BenchmarkConfig, frames: int,
           motion=None, r: float | None = None, tries: int = 60) -> _Obj | None:
    for _ in range(tries):
        rr = float(r if r is not None else rng.uniform(cfg.min_radius, cfg.max_radius))
        o = _Obj(shape, color, rr, float(rng.uniform(rr + 2, cfg.size - rr - 3)),
                 float(rng.uniform(rr + 2, cfg.size - rr - 3)))
        if motion is not None:
            (dx, dy), speed, stop = motion
            o.vx, o.vy, o.stop = dx * speed, dy * speed, stop
        if _fits(o, objs, frames, cfg.size):
            objs.append(o)
            return o
    return None


def _matches(o: _Obj, desc: tuple[str | None, str | None]) -> bool:
    color, shape = desc
    return (color is None or o.color == color) and (shape is None or o.shape == shape)


def _desc_words(desc: tuple[str | None, str | None]) -> str:
    color, shape = desc
    if shape is None:
        return f"{color} shape"
    return f"{color} {shape}" if color else shape


def _random_desc(rng) -> tuple[str | None, str | None]:
    u = rng.random()
    if u < 0.5:
        return None, str(rng.choice(SHAPES))
    if u < 0.8:
        return str(rng.choice(COLOR_NAMES)), str(rng.choice(SHAPES))
    return str(rng.choice(COLOR_NAMES)), None


def _fill_desc(rng, desc, exclude=()) -> tuple[str, str]:
    """Concrete (colour, shape) for a member of the reference set ``desc``."""
    color, shape = desc
    while True:
        c = color or str(rng.choice(COLOR_NAMES))
        s = shape or str(rng.choice(SHAPES))
        if (c, s) not in exclude:
            return c, s


def _unique_attr(objs: list[_Obj], o: _Obj) -> bool:
    return sum(p.color == o.color and p.shape == o.shape for p in objs) == 1


def _members_and_anchors(objs: list[_Obj], desc) -> tuple[list[int], list[int]]:
    """Indices of the objects matching `desc`, and of the others that a unique attribute names."""
    mem = [i for i, o in enumerate(objs) if _matches(o, desc)]
    return mem, [i for i, o in enumerate(objs) if i not in mem and _unique_attr(objs, o)]


def _non_member(rng, desc) -> tuple[str, str]:
    while True:
        c, s = str(rng.choice(COLOR_NAMES)), str(rng.choice(SHAPES))
        if not _matches(_Obj(s, c, 1, 0, 0), desc):
            return c, s


def _scene_with_set(rng, cfg: BenchmarkConfig, frames: int, desc, n_members: int, motions=None,
                    radii=None):
    """Objects: ``n_members`` members of ``desc`` (first ones in the list) plus non-members."""
    n_total = int(rng.integers(max(cfg.min_objects, n_members + 1), cfg.max_objects + 1))
    objs: list[_Obj] = []
    for i in range(n_members):
        c, s = _fill_desc(rng, desc)
        if _place(rng, objs, s, c, cfg, frames, None if motions is None else motions[i],
                  None if radii is None else radii[i]) is None:
            return None
    while len(objs) < n_total:
        c, s = _non_member(rng, desc)
        # distractors outside the set: moving or not at random in videos
        mot = None
        if frames > 1 and rng.random() < 0.5:
            d = DIRECTIONS[str(rng.choice(list(DIRECTIONS)))]
            mot = (d, float(rng.uniform(*cfg.speed)), int(rng.choice([2, 4, 6, frames])))
        if _place(rng, objs, s, c, cfg, frames, mot) is None:
            break
    return objs


# ----------------------------------------------------------------------------------------------
# expression families (each returns (objects, target index, instruction, roles) or None to retry)

def _roles(members, anchor: int | None = None) -> dict:
    """An expression's structure: the reference set it picks the target from (``members``, the
    objects its description matches, target included) and the object it relates them to."""
    return {"members": sorted(int(i) for i in members), "anchor": None if anchor is None else int(anchor)}


def _attribute(rng, cfg, frames):
    c, s = str(rng.choice(COLOR_NAMES)), str(rng.choice(SHAPES))
    # distractors share colour or shape with the target
    motions = None
    if frames > 1:
        motions = [_random_motion(rng, cfg, frames)]
    objs = []
    if _place(rng, objs, s, c, cfg, frames, None if motions is None else motions[0]) is None:
        return None
    n_total = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    while len(objs) < n_total:
        if rng.random() < 0.6:
            cc, ss = (c, str(rng.choice([x for x in SHAPES if x != s]))) if rng.random() < 0.5 else \
                (str(rng.choice([x for x in COLOR_NAMES if x != c])), s)
        else:
            cc, ss = _non_member(rng, (c, s))
        if (cc, ss) == (c, s):
            continue
        mot = _random_motion(rng, cfg, frames) if frames > 1 else None
        if _place(rng, objs, ss, cc, cfg, frames, mot) is None:
            break
    if len(objs) < cfg.min_objects:
        return None
    return objs, 0, f"the {c} {s}", _roles([0])


def _random_motion(rng, cfg, frames):
    if rng.random() < 0.35:
        return ((0, 0), 0.0, 0)
    d = DIRECTIONS[str(rng.choice(list(DIRECTIONS)))]
    return d, float(rng.uniform(*cfg.speed)), int(rng.choice([2, 4, 6, frames]))


def _spatial(rng, cfg, frames):
    desc = _random_desc(rng)
    kind = str(rng.choice(["extreme", "relation", "corner", "near_anchor"]))
    if kind == "extreme":
        objs = _scene_with_set(rng, cfg, frames, desc, int(rng.integers(2, 4)))
        if objs is None:
            return None
        word, axis, sign = [("leftmost", 0, 1), ("rightmost", 0, -1), ("topmost", 1, 1),
                            ("bottommost", 1, -1)][int(rng.integers(4))]
        mem = [i for i, o in enumerate(objs) if _matches(o, desc)]
        vals = sorted((sign * (objs[i].x if axis == 0 else objs[i].y), i) for i in mem)
        if vals[1][0] - vals[0][0] < 12:
            return None
        return objs, vals[0][1], f"the {word} {_desc_words(desc)}", _roles(mem)
    if kind == "corner":
        objs = _scene_with_set(rng, cfg, frames, desc, int(rng.integers(2, 4)))
        if objs is None:
            return None
        name = str(rng.choice(list(CORNERS)))
        cx, cy = (v * cfg.size for v in CORNERS[name])
        mem = [i for i, o in enumerate(objs) if _matches(o, desc)]
        d = sorted((math.hypot(objs[i].x - cx, objs[i].y - cy), i) for i in mem)
        if d[1][0] - d[0][0] < 15:
            return None
        return objs, d[0][1], f"the {_desc_words(desc)} nearest the {name} corner", _roles(mem)
    # relations to a unique anchor
    objs = _scene_with_set(rng, cfg, frames, desc, int(rng.integers(2, 4)))
    if objs is None:
        return None
    mem, anchors = _members_and_anchors(objs, desc)
    if not anchors:
        return None
    ai = int(rng.choice(anchors))
    a = objs[ai]
    aw = f"{a.color} {a.shape}"
    if kind == "near_anchor":
        d = sorted((math.hypot(objs[i].x - a.x, objs[i].y - a.y), i) for i in mem)
        if d[1][0] - d[0][0] < 15:
            return None
        return objs, d[0][1], f"the {_desc_words(desc)} nearest to the {aw}", _roles(mem, ai)
    rel, axis, sign = [("left of", 0, -1), ("right of", 0, 1), ("above", 1, -1),
                       ("below", 1, 1)][int(rng.integers(4))]
    side = [sign * ((objs[i].x - a.x) if axis == 0 else (objs[i].y - a.y)) for i in mem]
    yes = [i for i, s in zip(mem, side) if s > 10]
    no_margin = all(s < -10 for i, s in zip(mem, side) if i not in yes)
    if len(yes) != 1 or not no_margin:
        return None
    return objs, yes[0], f"the {_desc_words(desc)} {rel} the {aw}", _roles(mem, ai)


def _distinct_radii(rng, cfg, n, gap=4.0):
    for _ in range(50):
        r = np.sort(rng.uniform(cfg.min_radius, cfg.max_radius, n))
        if n < 2 or np.diff(r).min() >= gap:
            return [float(v) for v in rng.permutation(r)]
    return None


def _ordinal(rng, cfg, frames):
    desc = _random_desc(rng)
    kind = str(rng.choice(["largest", "smallest", "second_largest", "second_from"]))
    n = int(rng.integers(3, 5)) if kind.startswith("second") else int(rng.integers(2, 4))
    radii = _distinct_radii(rng, cfg, n)
    if radii is None:
        return None
    objs = _scene_with_set(rng, cfg, frames, desc, n, radii=radii)
    if objs is None:
        return None
    mem = [i for i, o in enumerate(objs) if _matches(o, desc)]
    dw = _desc_words(desc)
    if kind in ("largest", "smallest", "second_largest"):
        order = sorted(mem, key=lambda i: -objs[i].r)
        if kind == "largest":
            return objs, order[0], f"the largest {dw}", _roles(mem)
        if kind == "smallest":
            return objs, order[-1], f"the smallest {dw}", _roles(mem)
        return objs, order[1], f"the second largest {dw}", _roles(mem)
    side, axis = [("left", 0), ("top", 1)][int(rng.integers(2))]
    vals = sorted(((objs[i].x if axis == 0 else objs[i].y), i) for i in mem)
    if min(b[0] - a[0] for a, b in zip(vals, vals[1:])) < 12:
        return None
    return objs, vals[1][1], f"the second {dw} from the {side}", _roles(mem)


def _reasoning(rng, cfg, frames):
    kind = str(rng.choice(["same_colour", "same_shape", "larger_than", "farthest"]))
    if kind in ("same_colour", "same_shape"):
        # reference set: a shape (same colour) or a colour (same shape); exactly one member shares
        # the property with a unique anchor outside the set
        for _ in range(10):
            objs: list[_Obj] = []
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
            ok = all(_place(rng, objs, sh, co, cfg, frames) is not None for co, sh in members)
            ok = ok and _place(rng, objs, anchor[1], anchor[0], cfg, frames) is not None
            if not ok:
                continue
            n_total = int(rng.integers(max(cfg.min_objects, len(objs)), cfg.max_objects + 1))
            while len(objs) < n_total:
                co, sh = str(rng.choice(COLOR_NAMES)), str(rng.choice(SHAPES))
                if kind == "same_colour" and (sh == members[0][1] or co == anchor[0]):
                    continue
                if kind == "same_shape" and (co == members[0][0] or sh == anchor[1]):
                    continue
                if _place(rng, objs, sh, co, cfg, frames) is None:
                    break
            ai = len(members)
            if not _unique_attr(objs, objs[ai]):
                continue
            return objs, 0, words, _roles(range(ai), ai)
        return None
    desc = _random_desc(rng)
    n = int(rng.integers(2, 4))
    radii = _distinct_radii(rng, cfg, n + 1) if kind == "larger_than" else None
    if kind == "larger_than" and radii is None:
        return None
    objs = _scene_with_set(rng, cfg, frames, desc, n, radii=None if radii is None else radii[:n])
    if objs is None:
        return None
    mem, anchors = _members_and_anchors(objs, desc)
    if not anchors:
        return None
    ai = int(rng.choice(anchors))
    a = objs[ai]
    aw = f"{a.color} {a.shape}"
    if kind == "farthest":
        d = sorted((-math.hypot(objs[i].x - a.x, objs[i].y - a.y), i) for i in mem)
        if d[1][0] - d[0][0] < 15:
            return None
        return objs, d[0][1], f"find the {_desc_words(desc)} farthest from the {aw}", _roles(mem, ai)
    bigger = [i for i in mem if objs[i].r > a.r + 3]
    smaller = [i for i in mem if objs[i].r < a.r - 3]
    if len(bigger) == 1 and len(smaller) == len(mem) - 1:
        return objs, bigger[0], f"find the {_desc_words(desc)} that is larger than the {aw}", _roles(mem, ai)
    if len(smaller) == 1 and len(bigger) == len(mem) - 1:
        return objs, smaller[0], f"find the {_desc_words(desc)} that is smaller than the {aw}", _roles(mem, ai)
    return None


def _shuffled_set(rng, cfg, frames, desc, motions, text):
    """Place the set of objects matching `desc` with `motions` in random order; the target is the
    object that got motions[0]. Returns (objects, target index, text) or None."""
    order = rng.permutation(len(motions))
    objs = _scene_with_set(rng, cfg, frames, desc, len(motions), motions=[motions[i] for i in order])
    if objs is None:
        return None
    return objs, int(np.argmin(order)), text, _roles(range(len(motions)))


def _motion(rng, cfg, frames):
    desc = _random_desc(rng)
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
        text = f"the {_desc_words(desc)} that moves {d}"
    elif kind == "static":
        motions = [((0, 0), 0.0, 0)] + [(DIRECTIONS[str(rng.choice(dirs))],
                                         float(rng.uniform(*cfg.speed)), frames) for _ in range(n - 1)]
        text = f"the {_desc_words(desc)} that does not move"
    else:
        sp = np.sort(rng.uniform(1.5, cfg.speed[1] + 1, n))[::-1]
        if n > 1 and sp[0] - sp[1] < 2.5:
            return None
        motions = [(DIRECTIONS[str(rng.choice(dirs))], float(s), frames) for s in sp]
        text = f"the {_desc_words(desc)} that moves fastest"
    return _shuffled_set(rng, cfg, frames, desc, motions, text)


def _temporal(rng, cfg, frames):
    desc = _random_desc(rng)
    kind = str(rng.choice(["stops_first", "keeps_moving"]))
    n = int(rng.integers(2, 4))
    dirs = list(DIRECTIONS)
    if kind == "stops_first":
        stops = sorted(rng.choice([4, 6, frames], size=n - 1).tolist())
        motions = [(DIRECTIONS[str(rng.choice(dirs))], float(rng.uniform(*cfg.speed)), 2)]
        motions += [(DIRECTIONS[str(rng.choice(dirs))], float(rng.uniform(*cfg.speed)), int(s))
                    for s in stops]
        text = f"the {_desc_words(desc)} that stops first"
    else:
        motions = [(DIRECTIONS[str(rng.choice(dirs))], float(rng.uniform(*cfg.speed)), frames)]
        motions += [(DIRECTIONS[str(rng.choice(dirs))], float(rng.uniform(*cfg.speed)),
                     int(rng.choice([2, 4]))) for _ in range(n - 1)]
        text = f"the {_desc_words(desc)} that keeps moving"
    return _shuffled_set(rng, cfg, frames, desc, motions, text)


_IMAGE_GEN = {"attribute": _attribute, "spatial": _spatial, "ordinal": _ordinal,
              "reasoning": _reasoning}
_VIDEO_GEN = {"attribute": _attribute, "motion": _motion, "temporal": _temporal}
IMAGE_WEIGHTS = {"attribute": 0.15, "spatial": 0.3, "ordinal": 0.3, "reasoning": 0.25}
VIDEO_WEIGHTS = {"attribute": 0.15, "motion": 0.5, "temporal": 0.35}


def make_sample(split: str, index: int, task: str = "image", *, seed_offset: int = 0,
                config: BenchmarkConfig | None = None, family: str | None = None,
                family_weights: dict[str, float] | None = None, with_labels: bool = False) -> Sample:
    """Generate sample ``index`` of ``split`` (a pure function of its arguments).

    Args:
        split: "train", "val" or "test" (disjoint seed ranges).
        index: sample index >= 0 within the split.
        task: "image" (one frame) or "video" (``config.frames`` frames).
        seed_offset: shifts the split's seed range (fresh scenes of the same split).
        config: benchmark parameters (`BenchmarkConfig()` by default).
        family: force one expression family; otherwise drawn from ``family_weights``.
        family_weights: family -> probability (the task's defaults if None).
        with_labels: also return the (T, S, S) int16 object label map in ``meta["labels"]``
            (0 = background, i + 1 = ``meta["objects"][i]``), e.g. for dense training targets.
    Returns:
        `Sample` with frames (T, S, S, 3) uint8, gt_masks (T, S, S) bool, family label and meta
        {"seed", "split", "index", "objects": [...], "target": i, "members": [...],
        "anchor": i or None}: ``members`` are the objects the expression's description matches
        (the set it picks the target from, target included), ``anchor`` the object it relates
        them to ("... left of the blue square"), if any.
    """
    if task not in _TASK_CODE:
        raise ValueError(f"task must be 'image' or 'video', got {task!r}")
    cfg = config or BenchmarkConfig()
    seed = seed_for(split, index, seed_offset)
    gens = _IMAGE_GEN if task == "image" else _VIDEO_GEN
    weights = family_weights or (IMAGE_WEIGHTS if task == "image" else VIDEO_WEIGHTS)
    if family is not None and family not in gens:
        raise ValueError(f"family {family!r} does not exist for task {task!r}; "
                         f"choose one of {sorted(gens)}")
    frames = 1 if task == "image" else cfg.frames
    rng = np.random.default_rng([seed, _TASK_CODE[task]])
    names = sorted(weights)
    p = np.array([weights[n] for n in names], float)
    if (p < 0).any() or p.sum() <= 0 or any(n not in gens for n in names):
        raise ValueError(f"family_weights must map families of {sorted(gens)} to weights >= 0")
    fam = family or str(rng.choice(names, p=p / p.sum()))
    for _ in range(500):
        out = gens[fam](rng, cfg, frames)
        if out is not None:
            break
    else:  # pragma: no cover - generators succeed within a few tries
        raise RuntimeError(f"could not generate a {fam} scene for seed {seed}")
    objs, target, text, roles = out
    video, labels = _render(rng, objs, frames, cfg.size)
    masks = labels == target + 1
    meta = {"seed": seed, "split": split, "index": int(index) + int(seed_offset),
            "target": int(target), "members": roles["members"], "anchor": roles["anchor"],
            "objects": [{"shape": o.shape, "color": o.color, "radius": o.r, "x": o.x, "y": o.y,
                         "vx": o.vx, "vy": o.vy, "stop": o.stop} for o in objs]}
    if with_labels:
        meta["labels"] = labels
    return Sample(sample_id=f"{split}-{task}-{int(index) + int(seed_offset)}", frames=video,
                  instruction=text, gt_masks=masks, task=task, family=fam, meta=meta)


def object_cover(labels: np.ndarray, n_objects: int, cell: int) -> np.ndarray:
    """Share of each grid cell that each object covers.

    Args:
        labels: (T, S, S) int object label map (0 = background, i + 1 = object i), as
            ``make_sample(..., with_labels=True)`` returns in ``meta["labels"]``.
        n_objects: number of objects O.
        cell: cell (patch) side in pixels; G = S // cell (pixels beyond G * cell are ignored).
    Returns:
        (T, O, G*G) float32 fractions in [0, 1].
    """
    T, H, W = labels.shape
    g = min(H, W) // cell
    lab = np.asarray(labels[:, :g * cell, :g * cell], dtype=np.int64)
    rows = np.arange(g * cell) // cell
    patch = (rows[:, None] * g + rows[None, :])[None]  # (1, g*cell, g*cell) cell index of each pixel
    k = n_objects + 1
    flat = (np.arange(T)[:, None, None] * (g * g) + patch) * k + lab
    counts = np.bincount(flat.ravel(), minlength=T * g * g * k).reshape(T, g * g, k)
    return (counts[..., 1:].transpose(0, 2, 1) / float(cell * cell)).astype(np.float32)


def make_samples(split: str, n: int, task: str = "image", *, seed_offset: int = 0,
                 config: BenchmarkConfig | None = None, **kw) -> list[Sample]:
    """The first ``n`` samples of ``split`` (see `make_sample`)."""
    return [make_sample(split, i, task, seed_offset=seed_offset, config=config, **kw)
            for i in range(n)]


def tokenize_words(text: str) -> list[str]:
    """Lower-case words of an instruction; raises ValueError for words outside `VOCAB_WORDS`."""
    words = text.lower().split()
    bad = [w for w in words if w not in _VOCAB_SET]
    if bad:
        raise ValueError(f"instruction {text!r} has words outside the benchmark vocabulary: {bad}")
    return words


_VOCAB_SET = frozenset(VOCAB_WORDS)
