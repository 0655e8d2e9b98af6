"""The point readout's frozen, non-learned promptable segmenter and its video tracker.

Real point-readout pipelines (Seg-Zero, VisionReasoner) hand the point the LM wrote to SAM2, which
returns the object under it and propagates it through a video with its memory. On the synthetic
benchmark's scenes an exact stand-in exists without learning: every object is painted in one colour
under a brightness pattern (shading; stripes / checker when textured) that keeps its chromaticity
up to uint8 rounding (``evtp.data.synthetic_scene.render``), on a noisy background of low
saturation, and objects never touch. A saturated seed's object is the connected region of saturated
pixels with the seed's chromaticity; a faint seed's (the hard family's desaturated, always textured
objects) is the region within a tighter tolerance, if it is textured and uniform in chromaticity up
to rounding. The generator keeps the background touching a faint object out of its colour
(``faint_outline_clear``). This reproduces the ground-truth mask exactly on every split
(`evtp.models.reference.segmenter_exactness`; tests/test_reference_readouts.py). `track` follows
that object through later frames by the same colour test and overlap with the previous frame's
mask, as SAM2's memory follows it. Nothing here reads labels, instructions or ground truth.

Shapes: frame (H, W, 3) uint8; masks (H, W) bool; point (x, y) in pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

MIN_SATURATION = 0.55  # (max - min) / max of RGB: object pixels >= 0.62, background pixels < 0.55 in 99.99 %
MIN_AREA = 20  # px; a smaller same-colour region is background clutter, not an object
CHROMA_TOLERANCE = 0.02  # max |r/s - r0/s0| over channels (s = r + g + b): shading keeps chromaticity
MAX_SPEED = 12  # px per frame a tracked object may move (the benchmark's objects move 4-7)
SATURATED = 0.62  # a seed this saturated is a plain-coloured object's (faint objects stay < 0.615)
# faint objects (hard low_saliency: saturation 0.24-0.61, always striped / checkered)
FAINT_SATURATION = 0.15  # seeds below this are grey (background, the long line)
FAINT_TOLERANCE = 0.008  # faint pixels' chromaticity lies within 0.0034 of the object's mean
ROUNDING = 1.0  # max |chroma - region mean| * (r + g + b) of a faint object: uint8 rounding only (<= 0.62)
TEXTURE_RATIO = 1.2  # brightest / darkest pixel of a faint region: texture >= 1.27, flat clutter ~1.0


def _chroma(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> chromaticity (H, W, 3) float32 and saturation (H, W) float32."""
    f = frame.astype(np.float32)
    s = f.sum(-1, keepdims=True)
    mx, mn = f.max(-1), f.min(-1)
    return f / np.maximum(s, 1.0), (mx - mn) / np.maximum(mx, 1.0)


def _same_colour(frame: np.ndarray, ref: np.ndarray, faint: bool = False, chroma_sat=None) -> np.ndarray:
    """(H, W) bool: pixels of ``frame`` whose chromaticity is within tolerance of ``ref`` (3,)
    (the faint tolerance and saturation floor when ``faint``); ``chroma_sat``: `_chroma(frame)`."""
    chroma, sat = _chroma(frame) if chroma_sat is None else chroma_sat
    tol, floor = (FAINT_TOLERANCE, FAINT_SATURATION) if faint else (CHROMA_TOLERANCE, MIN_SATURATION)
    return (np.abs(chroma - ref).max(-1) <= tol) & (sat >= floor)


def _is_object(frame: np.ndarray, region: np.ndarray, faint: bool) -> bool:
    """A same-colour region is an object: large enough and, when faint, textured (a flat clutter
    dot or line of the same low saturation is not)."""
    if region.sum() < MIN_AREA:
        return False
    if not faint:
        return True
    f = frame[region].astype(np.float32)
    brightness = f.sum(-1)
    chroma = f / np.maximum(brightness[:, None], 1.0)
    rounding = float((np.abs(chroma - chroma.mean(0)).max(-1) * brightness).max())
    return rounding <= ROUNDING and float(brightness.max()) >= TEXTURE_RATIO * max(float(brightness.min()), 1.0)


def _isolated(chroma_sat, ref: np.ndarray, x: int, y: int) -> bool:
    """No 4-neighbour of (x, y) has its faint colour: a noise pixel, not an object's (a cheap early
    reject before the full-frame region)."""
    chroma, sat = chroma_sat
    H, W = sat.shape
    for nx, ny in ((x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)):
        if 0 <= nx < W and 0 <= ny < H and sat[ny, nx] >= FAINT_SATURATION and \
                np.abs(chroma[ny, nx] - ref).max() <= FAINT_TOLERANCE:
            return False
    return True


def _component_at(mask: np.ndarray, x: int, y: int) -> np.ndarray:
    """The 4-connected component of ``mask`` containing pixel (x, y) (empty if it is off)."""
    if not mask[y, x]:
        return np.zeros_like(mask)
    _, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    return comp == comp[y, x]


def _candidates(frame: np.ndarray, x: float, y: float, radius: float) -> list[tuple[int, int]]:
    """Coloured pixels within ``radius`` px of (x, y) (at least the pixel under it), nearest first."""
    H, W = frame.shape[:2]
    x0, x1 = max(int(np.floor(x - radius)), 0), min(int(np.floor(x + radius)), W - 1)
    y0, y1 = max(int(np.floor(y - radius)), 0), min(int(np.floor(y + radius)), H - 1)
    if x0 > x1 or y0 > y1:
        return []
    _, sat = _chroma(frame[y0:y1 + 1, x0:x1 + 1])
    ys, xs = np.nonzero(sat >= FAINT_SATURATION)
    order = np.argsort((xs + x0 + 0.5 - x) ** 2 + (ys + y0 + 0.5 - y) ** 2, kind="stable")
    return [(int(xs[i] + x0), int(ys[i] + y0)) for i in order]


def segment_at(frame: np.ndarray, x: float, y: float, radius: float = 0.0) -> np.ndarray:
    """The object under point (x, y): frame (H, W, 3) uint8 -> mask (H, W) bool.

    The seed is the object pixel nearest the point within ``radius`` px (the cell the LM's location
    tokens name; 0: the pixel under the point); the mask is the connected region of pixels with the
    seed's chromaticity. Empty when no object lies that close (a point on the background selects
    nothing)."""
    tried = np.zeros(frame.shape[:2], bool)
    chroma_sat = None
    for sx, sy in _candidates(frame, x, y, radius):
        if tried[sy, sx]:
            continue
        chroma_sat = chroma_sat or _chroma(frame)
        ref, sat = chroma_sat[0][sy, sx], chroma_sat[1][sy, sx]
        region = np.zeros_like(tried)
        for faint in (True, False) if sat < SATURATED else (False,):
            if (sat >= MIN_SATURATION or faint) and not (faint and _isolated(chroma_sat, ref, sx, sy)):
                region = _component_at(_same_colour(frame, ref, faint, chroma_sat), sx, sy)
                if _is_object(frame, region, faint):
                    return region
        tried |= region
        tried[sy, sx] = True
    return np.zeros(frame.shape[:2], bool)


def track(frames: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Propagate the object masked in frame 0 through the clip (SAM2's memory, exactly).

    frames (T, H, W, 3) uint8, first (H, W) bool -> masks (T, H, W) bool. In frame t the object is
    the same-colour component that overlaps frame t-1's mask dilated by `MAX_SPEED` most; the track
    ends (empty masks) when no such component exists."""
    T = frames.shape[0]
    out = np.zeros((T,) + first.shape, bool)
    out[0] = first
    if not first.any():
        return out
    chroma, sat = _chroma(frames[0])
    ref, faint = chroma[first].mean(0), bool(sat[first].mean() < SATURATED)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * MAX_SPEED + 1, 2 * MAX_SPEED + 1))
    for t in range(1, T):
        reach = cv2.dilate(out[t - 1].astype(np.uint8), k).astype(bool)
        n, comp = cv2.connectedComponents(_same_colour(frames[t], ref, faint).astype(np.uint8), connectivity=4)
        if n <= 1:
            break
        overlap = np.bincount(comp[reach], minlength=n)
        prev = np.bincount(comp[out[t - 1]], minlength=n)  # ties: the one covering the old mask
        overlap[0] = prev[0] = 0
        best = int(np.lexsort((prev, overlap))[-1]) if overlap.any() else 0
        if best == 0:
            break
        out[t] = comp == best
    return out
