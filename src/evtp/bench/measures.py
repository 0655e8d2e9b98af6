"""What the reference benchmarks measure per run: accuracy, where the kept tokens lie, coverage
and the timed components (`evtp bench reference`, `evtp bench throughput`).

Tokens are located on the patch grid of the frames the language model reads: ``kept`` (K,)
indices into ``positions`` (N, 2) rows/cols or (N, 3) LM-frame/row/col, ``lm_frames`` the raw
frame index of each LM frame, ``patch`` the patch size in pixels.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from evtp.data.patches import patch_shares
from evtp.pruning import resolve_budget

COMPONENTS = ("vision", "selection", "lm_prefill", "decode", "mask_decoder", "total")


def method_free(keep) -> bool:
    """keep 0 (no visual tokens) and keep 1.0 (all) give the same run for every method
    (`evtp.pruning.Budget.trivial`)."""
    return resolve_budget(keep).trivial


def mllm_ms(timings: dict[str, float]) -> float:
    """The MLLM part of one run: selection + LM prefill + the ``[SEG]`` decode step (a component
    missing from ``timings`` counts 0)."""
    return timings.get("selection", 0.0) + timings.get("lm_prefill", 0.0) + timings.get("decode", 0.0)


def kept_cells(kept: np.ndarray, positions: np.ndarray, lm_frames: list[int]):
    """Frame, row and column of each kept token: kept (K,), positions (N, 2) or (N, 3)."""
    pos = positions[kept]
    if pos.shape[1] == 2:
        return np.zeros(len(pos), int), pos[:, 0], pos[:, 1]
    return np.asarray(lm_frames)[pos[:, 0]], pos[:, 1], pos[:, 2]


def target_hit(kept: np.ndarray, positions: np.ndarray, gt: np.ndarray, lm_frames: list[int],
               patch: int, min_share: float = 0.25) -> bool:
    """Whether at least one kept token lies on the target: its patch has >= ``min_share`` of its
    pixels on the ground-truth mask of its frame. kept (K,), positions (N, P), gt (T, H, W)."""
    if kept.size == 0:
        return False
    f, r, c = kept_cells(kept, positions, lm_frames)
    return bool((patch_shares(gt, patch)[f, r, c] >= min_share).any())


def object_hits(kept: np.ndarray, positions: np.ndarray, cover: np.ndarray, objects: list[int],
                lm_frames: list[int], min_share: float = 0.25) -> float | None:
    """Share of the given objects that at least one kept token lies on (as in `target_hit`).

    cover (T, O, G*G): share of each cell each object covers (`evtp.data.synthetic.object_cover`);
    objects: object indices. Returns None for an empty list.
    """
    if not objects:
        return None
    if kept.size == 0:
        return 0.0
    f, r, c = kept_cells(kept, positions, lm_frames)
    g = int(round(math.sqrt(cover.shape[-1])))
    on = cover[f][:, objects, :][np.arange(len(f)), :, r * g + c] >= min_share  # (K, len(objects))
    return float(on.any(0).mean())


def on_objects_share(kept: np.ndarray, positions: np.ndarray, cover: np.ndarray, lm_frames: list[int],
                     min_share: float = 0.25) -> float | None:
    """Share of the kept tokens that lie on some object (>= ``min_share`` of their patch's pixels
    on one object, as in `target_hit`); None when nothing is kept. cover as in `object_hits`."""
    if kept.size == 0:
        return None
    f, r, c = kept_cells(kept, positions, lm_frames)
    g = int(round(math.sqrt(cover.shape[-1])))
    return float((cover[f, :, r * g + c] >= min_share).any(1).mean())


def pointer_hit(kept: np.ndarray, token_logits: np.ndarray, positions: np.ndarray, gt: np.ndarray,
                lm_frames: list[int], patch: int, min_share: float = 0.25) -> bool | None:
    """Whether the LM points at the target: the kept token with the highest target logit (the
    pointer the mask decoder's prompt is built from) lies on the target in its frame (as in
    `target_hit`). kept (K,), token_logits (K,). None when nothing is kept."""
    if kept.size == 0:
        return None
    top = kept[int(np.argmax(token_logits))]
    return target_hit(np.array([top]), positions, gt, lm_frames, patch, min_share)


def reference_set(meta: dict) -> list[int]:
    """Objects an expression refers to: its reference set (``members``, target included) and its
    anchor object, if any."""
    objs = set(meta.get("members") or [meta["target"]])
    if meta.get("anchor") is not None:
        objs.add(meta["anchor"])
    return sorted(objs)


def sample_metrics(task: str, pred: np.ndarray, gt: np.ndarray) -> dict:
    from evtp.metrics import image_sample_metrics, video_sample_metrics

    if task == "image":
        return image_sample_metrics(pred, gt)
    return video_sample_metrics(pred, gt)


def coverage_measures(visual: torch.Tensor, positions: torch.Tensor, kept: np.ndarray) -> dict:
    from evtp.coverage import mean_nearest_distance, spatial_coverage

    if kept.size == 0:
        return {}
    k = torch.as_tensor(kept, dtype=torch.long)
    x = visual.float()
    out = {"mean_nn_feature": float(mean_nearest_distance(x, k, metric="feature")),
           "spatial_r1": float(spatial_coverage(positions, k, r=1))}
    try:
        out["mean_nn_combined"] = float(mean_nearest_distance(x, k, positions, metric="combined"))
    except (TypeError, ValueError):  # pragma: no cover - older coverage module
        pass
    return out
