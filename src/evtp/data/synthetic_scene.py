"""Scenes of the synthetic benchmark: objects, their placement, reference sets and rendering.

The building blocks every expression family (`evtp.data.synthetic_families`,
`evtp.data.synthetic_hard`) composes: `SceneObject` (a coloured shape with a constant velocity
until its stop frame), `place` (non-overlapping placement in every frame), the reference-set
helpers (a description ``(colour, shape)`` with either part None matches a set of objects), and
`render` (exact label maps, RGB painted from them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

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
class SceneObject:
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


# ----------------------------------------------------------------------------------------------
# rendering

def polygon(shape: str, x: float, y: float, r: float) -> np.ndarray | None:
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


def draw_object(label: np.ndarray, obj: SceneObject, value: int, t: int) -> None:
    x, y = obj.pos(t)
    if obj.shape == "circle":
        cv2.circle(label, (int(round(x)), int(round(y))), int(round(obj.r)), value, -1, cv2.LINE_8)
    else:
        cv2.fillPoly(label, [polygon(obj.shape, x, y, obj.r)], value, cv2.LINE_8)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
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


TEXTURES = ("stripes", "checker")


@dataclass(frozen=True)
class Look:
    """How an object's interior is painted beyond its named colour.

    Attributes:
        saturation: 1 = the named colour, 0 = its grey (the colour is mixed toward its mean).
        texture: None (plain), "stripes" or "checker": a brightness pattern fixed to the object
            (in its own coordinates), so that it moves with the object and a moving object's
            interior changes under a fixed patch grid.
        period: pattern period in pixels.  angle: stripe direction in radians.
        contrast: the pattern multiplies the brightness by 1 +- contrast.
    """

    saturation: float = 1.0
    texture: str | None = None
    period: float = 8.0
    angle: float = 0.0
    contrast: float = 0.0

    def gain(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """(N,) brightness factors at pixel offsets (dx, dy) from the object's centre."""
        u = dx * math.cos(self.angle) + dy * math.sin(self.angle)
        wave = np.sin(2 * math.pi * u / self.period)
        if self.texture == "checker":
            v = -dx * math.sin(self.angle) + dy * math.cos(self.angle)
            wave = wave * np.sin(2 * math.pi * v / self.period)
        elif self.texture != "stripes":
            return np.ones_like(u)
        return 1.0 + self.contrast * np.where(wave >= 0, 1.0, -1.0)

    def describe(self) -> dict:
        return {"saturation": self.saturation, "texture": self.texture, "period": self.period,
                "angle": self.angle, "contrast": self.contrast}


def random_texture(rng: np.random.Generator, saturation: float = 1.0,
                   contrast: tuple[float, float] = (0.18, 0.3)) -> Look:
    """A random stripes / checker `Look` (period 5-9 px)."""
    return Look(saturation=saturation, texture=str(rng.choice(TEXTURES)), period=float(rng.uniform(5, 9)),
                angle=float(rng.uniform(0, math.pi)), contrast=float(rng.uniform(*contrast)))


def render(rng: np.random.Generator, objs: list[SceneObject], frames: int, size: int, *,
           looks: list[Look | None] | None = None, bg: np.ndarray | None = None):
    """Paint a scene.

    Args:
        objs: the objects (label i + 1 = ``objs[i]``; later objects are drawn over earlier ones).
        looks: per object, a `Look` or None (plain: named colour, mild vertical shading).
        bg: (S, S, 3) float background; None draws `background` from ``rng``.
    Returns:
        frames (T, S, S, 3) uint8 and labels (T, S, S) int16 (0 = background, i+1 = obj i).
    """
    bg = background(rng, size) if bg is None else bg
    cols = [np.clip(np.array(COLORS[o.color], np.float32) + rng.uniform(-14, 14, 3), 0, 255)
            for o in objs]
    shade = [rng.uniform(0.85, 1.0) for _ in objs]
    looks = looks or [None] * len(objs)
    for i, look in enumerate(looks):
        if look is not None and look.saturation != 1.0:
            cols[i] = cols[i].mean() + look.saturation * (cols[i] - cols[i].mean())
    out = np.empty((frames, size, size, 3), np.uint8)
    labels = np.zeros((frames, size, size), np.int16)
    yy = np.arange(size, dtype=np.float32)[:, None]
    for t in range(frames):
        lab = labels[t]
        for i, o in enumerate(objs):
            draw_object(lab, o, i + 1, t)
        img = bg.copy()
        for i, o in enumerate(objs):
            m = lab == i + 1
            if not m.any():
                continue
            x, y = o.pos(t)
            # mild vertical shading inside the object (not flat colour, still clearly saturated)
            g = 1.0 - (1.0 - shade[i]) * np.clip((yy - (y - o.r)) / max(2 * o.r, 1), 0, 1)
            g = np.broadcast_to(g, (size, size))[m][:, None]
            if looks[i] is not None and looks[i].texture is not None:
                ys, xs = np.nonzero(m)
                g = g * looks[i].gain(xs - x, ys - y)[:, None]
            paint = cols[i][None, :] * g
            # a textured bright stripe may exceed 255: scale the pixel down as a whole (its colour's
            # chromaticity kept) instead of clipping channels apart; plain objects never reach 255
            img[m] = paint / np.maximum(paint.max(-1, keepdims=True) / 255.0, 1.0)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out, labels


FAINT_OUTLINE_MARGIN = 0.012  # chromaticity gap between a faint object and the background it touches


def faint_outline_clear(video: np.ndarray, labels: np.ndarray, looks: list[Look | None]) -> bool:
    """Whether every desaturated object (``Look.saturation < 1``) differs in chromaticity (rgb / sum)
    by more than `FAINT_OUTLINE_MARGIN` (max over channels, from its mean) from each background
    pixel 4-adjacent to it, in every frame. A faint colour can equal the noisy background's colour
    at single pixels; the generator redraws the background (and colour jitter) until it does not
    touch the object there, so that a point prompt's object is decidable from pixels (see
    `evtp.models.reference.segmenter`). Plain-coloured objects are not checked."""
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
    for i, look in enumerate(looks):
        if look is None or look.saturation >= 1.0:
            continue
        for frame, lab in zip(video, labels):
            m = lab == i + 1
            if not m.any():
                continue
            ring = cv2.dilate(m.astype(np.uint8), cross).astype(bool) & (lab == 0)
            f = frame.astype(np.float32)
            chroma = f / np.maximum(f.sum(-1, keepdims=True), 1.0)
            if (np.abs(chroma[ring] - chroma[m].mean(0)).max(-1) <= FAINT_OUTLINE_MARGIN).any():
                return False
    return True


# ----------------------------------------------------------------------------------------------
# scenes

def fits(o: SceneObject, others: list[SceneObject], frames: int, size: int, gap: float = 4.0) -> bool:
    for t in range(frames):
        x, y = o.pos(t)
        if x - o.r < 2 or y - o.r < 2 or x + o.r > size - 3 or y + o.r > size - 3:
            return False
        for p in others:
            px, py = p.pos(t)
            if math.hypot(x - px, y - py) < o.r + p.r + gap:
                return False
    return True


def place(rng, objs: list[SceneObject], shape: str, color: str, cfg: BenchmarkConfig, frames: int,
           motion=None, r: float | None = None, tries: int = 60) -> SceneObject | None:
    for _ in range(tries):
        rr = float(r if r is not None else rng.uniform(cfg.min_radius, cfg.max_radius))
        o = SceneObject(shape, color, rr, float(rng.uniform(rr + 2, cfg.size - rr - 3)),
                 float(rng.uniform(rr + 2, cfg.size - rr - 3)))
        if motion is not None:
            (dx, dy), speed, stop = motion
            o.vx, o.vy, o.stop = dx * speed, dy * speed, stop
        if fits(o, objs, frames, cfg.size):
            objs.append(o)
            return o
    return None


def matches(o: SceneObject, desc: tuple[str | None, str | None]) -> bool:
    color, shape = desc
    return (color is None or o.color == color) and (shape is None or o.shape == shape)


def desc_words(desc: tuple[str | None, str | None]) -> str:
    color, shape = desc
    if shape is None:
        return f"{color} shape"
    return f"{color} {shape}" if color else shape


def random_desc(rng) -> tuple[str | None, str | None]:
    u = rng.random()
    if u < 0.5:
        return None, str(rng.choice(SHAPES))
    if u < 0.8:
        return str(rng.choice(COLOR_NAMES)), str(rng.choice(SHAPES))
    return str(rng.choice(COLOR_NAMES)), None


def fill_desc(rng, desc, exclude=()) -> tuple[str, str]:
    """Concrete (colour, shape) for a member of the reference set ``desc``."""
    color, shape = desc
    while True:
        c = color or str(rng.choice(COLOR_NAMES))
        s = shape or str(rng.choice(SHAPES))
        if (c, s) not in exclude:
            return c, s


def unique_attr(objs: list[SceneObject], o: SceneObject) -> bool:
    return sum(p.color == o.color and p.shape == o.shape for p in objs) == 1


def members_and_anchors(objs: list[SceneObject], desc) -> tuple[list[int], list[int]]:
    """Indices of the objects matching `desc`, and of the others that a unique attribute names."""
    mem = [i for i, o in enumerate(objs) if matches(o, desc)]
    return mem, [i for i, o in enumerate(objs) if i not in mem and unique_attr(objs, o)]


def pick_anchor(rng, objs: list[SceneObject], desc):
    """(members of `desc`, a random anchor's index, the anchor, its words "colour shape"), the
    anchor drawn from the non-members a unique attribute names; None when there is none."""
    mem, anchors = members_and_anchors(objs, desc)
    if not anchors:
        return None
    ai = int(rng.choice(anchors))
    a = objs[ai]
    return mem, ai, a, f"{a.color} {a.shape}"


def non_member(rng, desc) -> tuple[str, str]:
    while True:
        c, s = str(rng.choice(COLOR_NAMES)), str(rng.choice(SHAPES))
        if not matches(SceneObject(s, c, 1, 0, 0), desc):
            return c, s


def scene_with_set(rng, cfg: BenchmarkConfig, frames: int, desc, n_members: int, motions=None,
                    radii=None):
    """Objects: ``n_members`` members of ``desc`` (first ones in the list) plus non-members."""
    n_total = int(rng.integers(max(cfg.min_objects, n_members + 1), cfg.max_objects + 1))
    objs: list[SceneObject] = []
    for i in range(n_members):
        c, s = fill_desc(rng, desc)
        if place(rng, objs, s, c, cfg, frames, None if motions is None else motions[i],
                  None if radii is None else radii[i]) is None:
            return None
    while len(objs) < n_total:
        c, s = non_member(rng, desc)
        # distractors outside the set: moving or not at random in videos
        mot = None
        if frames > 1 and rng.random() < 0.5:
            d = DIRECTIONS[str(rng.choice(list(DIRECTIONS)))]
            mot = (d, float(rng.uniform(*cfg.speed)), int(rng.choice([2, 4, 6, frames])))
        if place(rng, objs, s, c, cfg, frames, mot) is None:
            break
    return objs


def roles(members, anchor: int | None = None) -> dict:
    """An expression's structure: the reference set it picks the target from (``members``, the
    objects its description matches, target included) and the object it relates them to."""
    return {"members": sorted(int(i) for i in members), "anchor": None if anchor is None else int(anchor)}


def random_motion(rng, cfg, frames):
    if rng.random() < 0.35:
        return ((0, 0), 0.0, 0)
    d = DIRECTIONS[str(rng.choice(list(DIRECTIONS)))]
    return d, float(rng.uniform(*cfg.speed)), int(rng.choice([2, 4, 6, frames]))


def distinct_radii(rng, cfg, n, gap=4.0):
    for _ in range(50):
        r = np.sort(rng.uniform(cfg.min_radius, cfg.max_radius, n))
        if n < 2 or np.diff(r).min() >= gap:
            return [float(v) for v in rng.permutation(r)]
    return None

