"""A procedurally generated instructed-segmentation benchmark (images and short videos).

In the spirit of CLEVR-Ref+: controlled scenes of coloured shapes on a textured, cluttered
background, each with one referring expression whose answer needs spatial, ordinal, comparative,
reasoning or (for video) motion / temporal understanding, and the exact ground-truth mask(s).

Design points:

* Deterministic: a sample is a pure function of ``(split, task, index, difficulty, textured)``;
  the split's seed range (`SPLIT_BASE`) plus the index (and an optional ``seed_offset``) gives the
  RNG seed. train, val and test use disjoint seed ranges; the two difficulties draw from separate
  random streams of the same seed.
* Exact masks: shapes are rasterised without anti-aliasing into an integer label map and the RGB
  image is painted from that map, so a mask is exactly the pixels of its object. Objects never
  overlap (in any frame of a video).
* Distractors: every non-attribute expression refers to a *reference set* ("circle", "red square",
  "blue shape") of at least two objects, so the words alone never single out the target; the
  relation (left of, largest, same colour as, moves down, stops first ...) must be read from the
  image. Attribute expressions ("the red triangle", unique in the scene) are the easy family.

Difficulty ``"standard"`` (`evtp.data.synthetic_families`): image families ``attribute``,
``spatial``, ``ordinal``, ``reasoning``; video families ``attribute``, ``motion``, ``temporal``.
Difficulty ``"hard"`` (`evtp.data.synthetic_hard`): image families ``background``,
``low_saliency``, ``small``, ``dense``; video families ``low_saliency``, ``small``, ``dense``.
``textured=True`` gives every plain object a texture that moves with it; `shuffle_frames` is the
frame-order control of a video.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from evtp.data.synthetic_families import (IMAGE_FAMILIES, IMAGE_GENERATORS, IMAGE_WEIGHTS, VIDEO_FAMILIES,
                                          VIDEO_GENERATORS, VIDEO_WEIGHTS)
from evtp.data.synthetic_hard import (HARD_IMAGE_FAMILIES, HARD_IMAGE_GENERATORS, HARD_IMAGE_WEIGHTS,
                                      HARD_VIDEO_FAMILIES, HARD_VIDEO_GENERATORS, HARD_VIDEO_WEIGHTS,
                                      HARD_VOCAB_WORDS, paint_background)
from evtp.data.synthetic_scene import (COLOR_NAMES, COLORS, CORNERS, DIRECTIONS, SHAPES, BenchmarkConfig, Look,
                                       faint_outline_clear, random_texture, render)
from evtp.data.types import Sample

__all__ = ["SHAPES", "COLORS", "COLOR_NAMES", "DIRECTIONS", "CORNERS", "BenchmarkConfig", "Look",
           "IMAGE_FAMILIES", "VIDEO_FAMILIES", "IMAGE_WEIGHTS", "VIDEO_WEIGHTS", "HARD_IMAGE_FAMILIES",
           "HARD_VIDEO_FAMILIES", "HARD_IMAGE_WEIGHTS", "HARD_VIDEO_WEIGHTS", "DIFFICULTIES", "SPLIT_BASE",
           "SPLIT_SIZE", "VOCAB_WORDS", "HARD_VOCAB_WORDS", "ALL_VOCAB_WORDS", "seed_for", "sample_id",
           "families", "make_sample", "make_samples", "shuffle_frames", "object_cover", "tokenize_words"]

DIFFICULTIES = ("standard", "hard")

# Disjoint seed ranges per split; a split's index i (plus seed_offset) maps to base + i.
SPLIT_BASE = {"train": 0, "val": 2_000_000_000, "test": 3_000_000_000}
SPLIT_SIZE = 1_000_000_000
_TASK_CODE = {"image": 1, "video": 2}
# extra entropy words of the random streams: a hard scene, the textures of `textured`, the frame
# permutation of `shuffle_frames` (the standard scene stream is [seed, task code])
_HARD_STREAM, _TEXTURE_STREAM, _SHUFFLE_STREAM = 3, 4, 5

# Every word a standard template can produce, in a fixed order: the reference model's tokenizer
# vocabulary. The hard families add `HARD_VOCAB_WORDS`; `ALL_VOCAB_WORDS` keeps the standard words'
# positions and appends them.
VOCAB_WORDS = tuple(sorted(set(
    list(SHAPES) + list(COLOR_NAMES) + list(DIRECTIONS) +
    "the shape left right of above below nearest to top bottom corner leftmost rightmost topmost "
    "bottommost largest smallest second from which that has same colour as is larger smaller "
    "than farthest moves does not move fastest stops first last keeps moving find".split())))
ALL_VOCAB_WORDS = VOCAB_WORDS + tuple(w for w in HARD_VOCAB_WORDS if w not in VOCAB_WORDS)


def seed_for(split: str, index: int, seed_offset: int = 0) -> int:
    """The RNG seed of sample ``index`` of ``split`` (raises for unknown splits / out of range)."""
    if split not in SPLIT_BASE:
        raise ValueError(f"split must be one of {sorted(SPLIT_BASE)}, got {split!r}")
    i = int(index) + int(seed_offset)
    if not 0 <= i < SPLIT_SIZE:
        raise ValueError(f"index + seed_offset = {i} lies outside the split's range [0, {SPLIT_SIZE})")
    return SPLIT_BASE[split] + i


def sample_id(split: str, task: str, index: int, *, difficulty: str = "standard", textured: bool = False,
              shuffled: bool = False) -> str:
    """The id of a sample: ``{split}-{task}[-hard][-textured][-shuffled]-{index}`` (index includes
    the seed offset), e.g. ``test-image-7``, ``test-image-hard-7``, ``val-video-textured-shuffled-3``."""
    tags = [t for t, on in (("hard", difficulty == "hard"), ("textured", textured), ("shuffled", shuffled)) if on]
    return "-".join([split, task, *tags, str(int(index))])


def families(task: str, difficulty: str = "standard") -> dict:
    """family name -> generator of ``task`` at ``difficulty``, and the default family weights."""
    _check_task_difficulty(task, difficulty)
    if difficulty == "hard":
        return (HARD_IMAGE_GENERATORS, HARD_IMAGE_WEIGHTS) if task == "image" else \
            (HARD_VIDEO_GENERATORS, HARD_VIDEO_WEIGHTS)
    return (IMAGE_GENERATORS, IMAGE_WEIGHTS) if task == "image" else (VIDEO_GENERATORS, VIDEO_WEIGHTS)


def _check_task_difficulty(task: str, difficulty: str) -> None:
    if task not in _TASK_CODE:
        raise ValueError(f"task must be 'image' or 'video', got {task!r}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")


def _choose_family(rng, gens: dict, weights: dict, family: str | None, task: str, difficulty: str) -> str:
    if family is not None and family not in gens:
        raise ValueError(f"family {family!r} does not exist for task {task!r} at difficulty {difficulty!r}; "
                         f"choose one of {sorted(gens)}")
    names = sorted(weights)
    p = np.array([weights[n] for n in names], float)
    if (p < 0).any() or p.sum() <= 0 or any(n not in gens for n in names):
        raise ValueError(f"family_weights must map families of {sorted(gens)} to weights >= 0")
    return family or str(rng.choice(names, p=p / p.sum()))


def make_sample(split: str, index: int, task: str = "image", *, seed_offset: int = 0,
                config: BenchmarkConfig | None = None, family: str | None = None,
                family_weights: dict[str, float] | None = None, with_labels: bool = False,
                difficulty: str = "standard", textured: bool = False) -> Sample:
    """Generate sample ``index`` of ``split`` (a pure function of its arguments).

    Args:
        split: "train", "val" or "test" (disjoint seed ranges).
        index: sample index >= 0 within the split.
        task: "image" (one frame) or "video" (``config.frames`` frames).
        seed_offset: shifts the split's seed range (fresh scenes of the same split).
        config: benchmark parameters (`BenchmarkConfig()` by default; the hard families derive
            their small / dense variants from it).
        family: force one expression family; otherwise drawn from ``family_weights``.
        family_weights: family -> probability (the task's and difficulty's defaults if None).
        with_labels: also return the (T, S, S) int16 object label map in ``meta["labels"]``
            (0 = background, i + 1 = ``meta["objects"][i]``), e.g. for dense training targets.
        difficulty: "standard" or "hard" (see the module docstring).
        textured: give every object without a `Look` of its own a stripes / checker texture that
            moves with it. The scene, instruction and masks are those of ``textured=False``.
    Returns:
        `Sample` with frames (T, S, S, 3) uint8, gt_masks (T, S, S) bool, family label and meta
        {"seed", "split", "index", "difficulty", "textured", "n_objects", "objects": [...],
        "target": i, "members": [...], "anchor": i or None}: ``members`` are the objects the
        expression's description matches (the set it picks the target from, target included),
        ``anchor`` the object it relates them to ("... left of the blue square"), if any. Hard
        samples add "kind" (the template or base family), "background" (the background feature
        an expression refers to, or None) and each object's "look" (`Look.describe`, or None for
        plain); textured samples add each object's "look".
    """
    _check_task_difficulty(task, difficulty)
    cfg = config or BenchmarkConfig()
    seed = seed_for(split, index, seed_offset)
    gens, default_weights = families(task, difficulty)
    frames = 1 if task == "image" else cfg.frames
    stream = [seed, _TASK_CODE[task]] + ([_HARD_STREAM] if difficulty == "hard" else [])
    rng = np.random.default_rng(stream)
    fam = _choose_family(rng, gens, family_weights or default_weights, family, task, difficulty)
    for _ in range(500):
        out = gens[fam](rng, cfg, frames)
        if out is not None:
            break
    else:  # pragma: no cover - generators succeed within a few tries
        raise RuntimeError(f"could not generate a {fam} {difficulty} scene for seed {seed}")
    objs, target, text, roles = out[:4]
    extras = out[4] if len(out) > 4 else {}
    looks = list(extras.get("looks") or [None] * len(objs))
    if textured:
        tex_rng = np.random.default_rng(stream + [_TEXTURE_STREAM])
        looks = [look if look is not None else random_texture(tex_rng) for look in looks]
    for _ in range(100):  # a faint object's outline must stand out in colour (`faint_outline_clear`)
        bg = paint_background(rng, cfg.size, extras.get("background")) if difficulty == "hard" else None
        video, labels = render(rng, objs, frames, cfg.size, looks=looks, bg=bg)
        if faint_outline_clear(video, labels, looks):
            break
    else:  # pragma: no cover - a redraw succeeds within a few tries
        raise RuntimeError(f"could not paint seed {seed}'s faint objects apart from the background")
    meta = {"seed": seed, "split": split, "index": int(index) + int(seed_offset),
            "target": int(target), "members": roles["members"], "anchor": roles["anchor"],
            "objects": [{"shape": o.shape, "color": o.color, "radius": o.r, "x": o.x, "y": o.y,
                         "vx": o.vx, "vy": o.vy, "stop": o.stop} for o in objs],
            "difficulty": difficulty, "textured": bool(textured), "n_objects": len(objs)}
    if difficulty == "hard" or textured:
        for o, look in zip(meta["objects"], looks):
            o["look"] = None if look is None else look.describe()
    if difficulty == "hard":
        meta["kind"], meta["background"] = extras["kind"], extras.get("background")
    if with_labels:
        meta["labels"] = labels
    sid = sample_id(split, task, int(index) + int(seed_offset), difficulty=difficulty, textured=textured)
    return Sample(sample_id=sid, frames=video, instruction=text, gt_masks=labels == target + 1, task=task,
                  family=fam, meta=meta)


def shuffle_frames(sample: Sample) -> Sample:
    """The frame-order control of a video sample: the same clip, instruction and object, with its
    frames (and masks, and ``meta["labels"]`` if present) in a fixed random order that is neither
    the original nor its reverse. ``meta["frame_order"][j]`` is the original index of frame j.
    The permutation is a pure function of the sample's seed and difficulty."""
    T = sample.frames.shape[0]
    if sample.task != "video" or T < 3:
        raise ValueError(f"shuffle_frames needs a video of >= 3 frames, got a {sample.task} of {T} frame(s)")
    if "frame_order" in sample.meta:
        raise ValueError(f"sample {sample.sample_id} is already frame-shuffled")
    hard = [_HARD_STREAM] if sample.meta.get("difficulty") == "hard" else []
    rng = np.random.default_rng([int(sample.meta["seed"]), _TASK_CODE["video"], *hard, _SHUFFLE_STREAM])
    identity = np.arange(T)
    order = rng.permutation(T)
    while np.array_equal(order, identity) or np.array_equal(order, identity[::-1]):
        order = rng.permutation(T)
    meta = dict(sample.meta, frame_order=[int(i) for i in order])
    if "labels" in meta:
        meta["labels"] = meta["labels"][order]
    sid = sample_id(meta["split"], "video", meta["index"], difficulty=meta.get("difficulty", "standard"),
                    textured=bool(meta.get("textured")), shuffled=True)
    return replace(sample, sample_id=sid, frames=sample.frames[order],
                   gt_masks=None if sample.gt_masks is None else sample.gt_masks[order], meta=meta)


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


def tokenize_words(text: str, vocabulary: tuple[str, ...] = VOCAB_WORDS) -> list[str]:
    """Lower-case words of an instruction; raises ValueError for words outside ``vocabulary``
    (`VOCAB_WORDS` by default; `ALL_VOCAB_WORDS` also covers the hard families)."""
    words = text.lower().split()
    vocab = _VOCAB_SET if vocabulary is VOCAB_WORDS else frozenset(vocabulary)
    bad = [w for w in words if w not in vocab]
    if bad:
        raise ValueError(f"instruction {text!r} has words outside the benchmark vocabulary: {bad}")
    return words


_VOCAB_SET = frozenset(VOCAB_WORDS)
