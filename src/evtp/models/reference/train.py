"""Training of the reference IVS model (`evtp train`, `evtp.cli.train`) on the synthetic benchmark (CPU, resumable).

The shipped weights' commands are in their meta (``history``) and in docs/reference_model.md.
Training always uses full visual tokens (pruning is applied only at inference). It writes, under
``--out``: ``ckpt.pt`` (model + optimiser + step + elapsed time, replaced atomically every
``--ckpt-minutes``), ``log.jsonl`` (losses, learning rate and periodic validation), and at the end
``final/reference.{safetensors,json}``. Re-running the same command resumes from ``ckpt.pt``;
re-running it with a larger ``--minutes`` continues a finished run, with stage 2's schedule
re-stretched over the new budget (the learning rate rises again, as in a warm restart). Every
invocation is recorded in ``history`` (checkpoint and the weights' meta), so the weights say
exactly which commands made them.

Stages: vision pretraining (the ViT and its per-patch attribute head alone, ``--vit-minutes``);
for a model with the "seg" readout, its promptable decoder's pretraining on ground-truth prompts
(``--seg-decoder-minutes``, `evtp.models.reference.seg_training`; the decoder and the ViT are frozen
after it); projector alignment (``--align-minutes``, `projector_align_losses`: the projector alone,
on video batches, toward the word alignment of its output; LLaVA's stage-1 projector alignment,
which teaches a projector widened by ``--init`` what its new inputs mean before the LM trains on
them); then the whole model for the rest of ``--minutes``. Stage 2's learning rate follows warm-up +
cosine decay over its *progress*, max(stage-2 steps / steps, stage-2 elapsed / stage-2 budget): on
a slow or shared machine the schedule still completes within the time budget instead of being cut
off at a high learning rate.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evtp.data.synthetic import (
    COLOR_NAMES,
    DIRECTIONS,
    IMAGE_WEIGHTS,
    SHAPES,
    VIDEO_WEIGHTS,
    make_sample,
)
from evtp.data.synthetic import object_cover as synthetic_object_cover
from evtp.models.reference import (
    N_COLOR_CLASSES,
    ReferenceConfig,
    ReferenceIVS,
    frames_to_tensor,
    record_check,
    save_model,
)
from evtp.models.reference import seg_training
from evtp.settings import SettingsError, parse_device


def family_weights(task: str, progress: float, curriculum: float) -> dict[str, float]:
    """Curriculum: attribute expressions dominate the first ``curriculum`` share of training."""
    base = dict(IMAGE_WEIGHTS if task == "image" else VIDEO_WEIGHTS)
    if progress < curriculum:
        rest = sum(v for k, v in base.items() if k != "attribute")
        return {k: (0.5 if k == "attribute" else 0.5 * v / rest) for k, v in base.items()}
    return base


@dataclass
class TrainBatch:
    """One training batch (`make_batch`).

    Attributes:
        frames: (B, T, 3, S, S) float in [0, 1].
        text: B instruction token-id lists.
        masks: (B, T, S/4, S/4) ground-truth masks at 1/4 resolution (area fractions).
        prev_masks: the same shifted by one frame (index t holds frame t-1; t = 0 holds frame 0).
        heat: (B, G*G) heat target (the target's patch shares in frame 0, summing to 1).
        dense: (B, T, G*G, 3) long, the ViT's per-patch targets (`patch_targets`).
        on_target: (B, N) float, whether each LM visual token lies >= 25 % on the target.
        roles: (B, N, 2) float `role_targets`, or None when the model has no role head.
        motion_words: (B, N) long `motion_words`, or None (images, or no ``align_motion``).
        point: (B, 2) long `point_targets` (the location tokens' bins), or None without "point".
        geometry: (B, 6) float, the target's ground-truth point and box in frame 0
            (`prompt_decoder.prompt_geometry`), or None without "seg".
    """

    frames: torch.Tensor
    text: list[list[int]]
    masks: torch.Tensor
    prev_masks: torch.Tensor
    heat: torch.Tensor
    dense: torch.Tensor
    on_target: torch.Tensor
    roles: torch.Tensor | None = None
    motion_words: torch.Tensor | None = None
    point: torch.Tensor | None = None
    geometry: torch.Tensor | None = None

    def to(self, device: torch.device) -> "TrainBatch":
        """The batch with every tensor on ``device``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return TrainBatch(**{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                             for k, v in values.items()})


SEED_DATA_STRIDE = 10_000_000
"""Train-split indices between the data streams of consecutive ``--seed`` values."""
SEED_STREAMS = 100
"""Seeds 0 .. SEED_STREAMS - 1 each have their own data stream."""


def data_start(seed: int) -> int:
    """First train-split index of seed ``seed``'s data stream (images and videos alike)."""
    if not 0 <= seed < SEED_STREAMS:
        raise SettingsError(f"--seed must lie in [0, {SEED_STREAMS}) (the train split holds {SEED_STREAMS} "
                            f"streams of {SEED_DATA_STRIDE:,} samples), got {seed}")
    return seed * SEED_DATA_STRIDE


def make_batch(model: ReferenceIVS, task: str, start: int, n: int, weights: dict[str, float]) -> TrainBatch:
    """Training batch of samples start .. start+n-1 of the train split (family mix ``weights``)."""
    samples = [make_sample("train", start + i, task, family_weights=weights, with_labels=True)
               for i in range(n)]
    frames = torch.cat([frames_to_tensor(s.frames, model.cfg.image_size) for s in samples])
    gt = torch.from_numpy(np.stack([s.gt_masks for s in samples])).float()
    g4 = F.avg_pool2d(gt, 4)
    prev = torch.cat([g4[:, :1], g4[:, :-1]], 1)
    cell = model.cfg.patch
    heat = F.avg_pool2d(gt[:, 0:1], cell).flatten(1)
    heat = heat / heat.sum(-1, keepdim=True).clamp_min(1e-6)
    text = [model.tok.encode(s.instruction) for s in samples]
    lm_ids = model.lm_frame_ids(gt.shape[1])
    covers = [object_cover(s, cell) for s in samples]
    on_target = torch.stack([c[lm_ids, s.meta["target"]] for c, s in zip(covers, samples)])
    on_target = (on_target >= 0.25).float().flatten(1)  # (B, F*G*G)
    roles = role_targets(samples, covers, lm_ids) if model.role_aux is not None else None
    motion = (motion_words(model, samples, covers, lm_ids)
              if model.cfg.align_motion and gt.shape[1] > 1 else None)
    point = point_targets(gt[:, 0].numpy(), model.cfg.point_bins) if "point" in model.cfg.readouts else None
    geometry = None
    if model.seg_decoder is not None:
        from evtp.models.reference.prompt_decoder import prompt_geometry

        geometry = prompt_geometry(gt[:, 0].numpy() > 0.5)
    return TrainBatch(frames, text, g4, prev, heat, patch_targets(samples, covers), on_target, roles, motion, point,
                      geometry)


def token_location_targets(model: ReferenceIVS, n: int) -> torch.Tensor:
    """(1, N, 2) long: the location-token bins (x, y) of the centre of each of the N visual tokens'
    cells (frames repeat the grid)."""
    g, cell, bins = model.cfg.grid, model.cfg.patch, model.cfg.point_bins
    pos = model.token_positions(max(n // (g * g), 1))[:, -2:]  # (N, 2) row, col
    centre = (pos.flip(-1).float() + 0.5) * cell  # (x, y) px
    return (centre * bins / model.cfg.image_size).long()[None]


def point_targets(masks: np.ndarray, bins: int) -> torch.Tensor:
    """The location tokens' targets: masks (B, S, S) (the target in frame 0) -> (B, 2) long
    (x bin, y bin) of its innermost pixel (the maximum of the distance transform: inside the object
    even for stars, and as far from its edge as it gets), with ``bins`` bins per axis."""
    import cv2

    out = []
    for m in masks:
        dist = cv2.distanceTransform(np.pad(m.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(dist.argmax()), dist.shape)
        out.append([int((x + 0.5) * bins / m.shape[1]), int((y + 0.5) * bins / m.shape[0])])
    return torch.tensor(out, dtype=torch.long)


def object_cover(sample, cell: int) -> torch.Tensor:
    """(T, O, G*G): share of each patch that each of the sample's O objects covers (needs the
    sample's ``meta["labels"]``, i.e. ``make_sample(..., with_labels=True)``)."""
    return torch.from_numpy(synthetic_object_cover(sample.meta["labels"], len(sample.meta["objects"]), cell))


def role_targets(samples, covers: list[torch.Tensor], lm_ids: list[int]) -> torch.Tensor:
    """(B, N, 2) float: whether each LM visual token (frames ``lm_ids``) lies >= 25 % on a member
    of the expression's reference set, and on its anchor object (all 0 when it has none)."""
    out = []
    for s, cover in zip(samples, covers):
        on = cover[lm_ids] >= 0.25  # (F, O, G*G)
        member = on[:, s.meta["members"]].any(1)
        anchor = on[:, s.meta["anchor"]] if s.meta["anchor"] is not None else torch.zeros_like(member)
        out.append(torch.stack([member, anchor], -1).flatten(0, 1))
    return torch.stack(out).float()


def motion_words(model: ReferenceIVS, samples, covers: list[torch.Tensor], lm_ids: list[int]) -> torch.Tensor:
    """(B, N) long: for each LM video token (frames ``lm_ids``) on an object (>= 25 % of its
    patch), the token id of the word for that object's motion between frames a = min(f, T-2) and
    a + 1 — its direction ("left", "right", "up", "down"), or "not" when it stands still there;
    -100 (ignored) on background."""
    word_of = {v: model.tok.ids[k] for k, v in DIRECTIONS.items()}
    still = model.tok.ids["not"]
    out = []
    for s, cover in zip(samples, covers):
        T = s.meta["labels"].shape[0]
        table = []
        for f in lm_ids:
            a = min(f, T - 2)
            table.append([word_of[(int(np.sign(o["vx"])), int(np.sign(o["vy"])))]
                          if (o["vx"] or o["vy"]) and a + 1 <= o["stop"] else still
                          for o in s.meta["objects"]])
        table = torch.tensor(table, dtype=torch.long)  # (F, O)
        share, idx = cover[lm_ids].max(1)  # (F, G*G)
        words = table.gather(1, idx)
        out.append(torch.where(share >= 0.25, words, torch.full_like(words, -100)).flatten())
    return torch.stack(out)


def patch_targets(samples, covers: list[torch.Tensor]) -> torch.Tensor:
    """Dense ViT targets (B, T, G*G, 3) long: colour class, shape class (0 = background) and
    radius in px (0 on background) of the object covering >= 25 % of each patch (covers: the
    samples' `object_cover`)."""
    out = []
    for s, cover in zip(samples, covers):
        k = len(s.meta["objects"]) + 1
        share, idx = cover.max(1)
        idx = torch.where(share >= 0.25, idx + 1, torch.zeros_like(idx))
        table = torch.zeros(k, 3, dtype=torch.long)
        for i, o in enumerate(s.meta["objects"]):
            table[i + 1] = torch.tensor([COLOR_NAMES.index(o["color"]) + 1, SHAPES.index(o["shape"]) + 1,
                                         int(round(o["radius"]))])
        out.append(table[idx])
    return torch.stack(out)


TOKEN_WEIGHT = 1.0  # the per-visual-token target loss: the LM's dense grounding signal
ROLE_WEIGHT = 0.5  # the intermediate layer's reference-set / anchor loss (cfg.role_layer)
ALIGN_WEIGHT = 1.0  # word-space alignment of the visual tokens, per depth in cfg.align_layers
DENSE_WEIGHT = 1.0  # the ViT's per-patch attribute loss (keeps the pretrained features)
POINT_WEIGHT = 1.0  # cross-entropy of the two location tokens ("point" readout)
SEG_ATTENTION_WEIGHT = 1.0  # [SEG]'s last-layer attention toward the target (--seg-attention)
LOCATION_WEIGHT = 1.0  # every visual token read as its own location tokens, per depth


def dense_loss(aux: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Per-patch attribute loss of the ViT head: aux (B, T, G*G, C+S+1) logits / size, dense
    (B, T, G*G, 3) targets (colour class, shape class, radius; 0 = background)."""
    nc = N_COLOR_CLASSES
    col = F.cross_entropy(aux[..., :nc].flatten(0, 2), dense[..., 0].flatten())
    on = dense[..., 1] > 0
    # shape over all patches (object vs background) plus over object patches alone: objects cover
    # ~10 % of the patches, and averaged over all of them the shape signal is too weak to learn
    shp = F.cross_entropy(aux[..., nc:-1].flatten(0, 2), dense[..., 1].flatten())
    if not bool(on.any()):
        return col + shp + aux.sum() * 0
    shp = shp + F.cross_entropy(aux[..., nc:-1][on], dense[..., 1][on])
    size = F.smooth_l1_loss(aux[..., -1][on], dense[..., 2][on].float() / 10.0)
    return col + shp + size


def projector_align_losses(model: ReferenceIVS, batch: TrainBatch) -> dict[str, torch.Tensor]:
    """Stage "align": the projector alone. Its output (the visual tokens the LM reads, depth 0 of
    ``cfg.align_layers``), read through the LM's word embeddings (held fixed here), is trained toward
    each object token's colour and shape words and, with ``align_motion``, its motion word
    (`align_loss`); the ViT runs without gradients."""
    with torch.no_grad():
        vit, _ = model.encode_frames(batch.frames)
    logits = model.word_logits(model.visual_tokens(vit), fixed_words=True)[None]  # (1, B, N, V)
    a = align_loss(logits, batch_word_targets(model, batch))
    return {"loss": a, "align": a}


def vit_losses(model: ReferenceIVS, batch: TrainBatch) -> dict[str, torch.Tensor]:
    """Stage 1 (vision pretraining): the ViT and its per-patch attribute head alone."""
    vit, _ = model.encode_frames(batch.frames)
    d = dense_loss(model.vit_aux(vit).float(), batch.dense)
    return {"loss": d, "dense": d}


def align_targets(model: ReferenceIVS, dense: torch.Tensor, lm_ids: list[int]) -> torch.Tensor:
    """Word targets of the LM's visual tokens: dense (B, T, G*G, 3) `patch_targets` -> (2, B, N)
    long, the token ids of the colour word and of the shape word of the object under each token
    of frames ``lm_ids`` (-100, i.e. ignored, on background)."""
    words = [torch.tensor([-100] + [model.tok.ids[w] for w in names], dtype=torch.long, device=dense.device)
             for names in (COLOR_NAMES, SHAPES)]
    d = dense[:, lm_ids].flatten(1, 2)  # (B, N, 3)
    return torch.stack([words[0][d[..., 0]], words[1][d[..., 1]]])


def batch_word_targets(model: ReferenceIVS, batch: TrainBatch) -> torch.Tensor:
    """The word-space alignment's targets of a batch's LM visual tokens: (W, B, N) long, the
    colour and shape words (`align_targets`) and, when the batch has them, the motion words."""
    targets = align_targets(model, batch.dense, model.lm_frame_ids(batch.frames.shape[1]))
    if batch.motion_words is None:
        return targets
    return torch.cat([targets, batch.motion_words[None]])


def align_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (A, B, N, V) at A depths, targets (W, B, N) word ids (colour, shape[, motion];
    -100 = none) -> the sum over depths and words of the cross-entropies (softmax over the whole
    vocabulary)."""
    flat = logits.float().flatten(1, 2)  # (A, B*N, V)
    total = logits.new_zeros(())
    for t in targets.flatten(1):  # one word row at a time
        if bool((t >= 0).any()):
            total = total + sum(F.cross_entropy(lg, t, ignore_index=-100) for lg in flat)
    return total + logits.sum() * 0


def location_loss(logits: torch.Tensor, cells: torch.Tensor, on_object: torch.Tensor) -> torch.Tensor:
    """The location alignment: logits (A, B, N, 2, bins) of every visual token at A depths over the
    ``<x*>`` / ``<y*>`` tokens, cells (1, N, 2) long their own bins, on_object (B, N) bool whether a
    token lies on an object -> the sum over depths of (mean cross-entropy over background tokens +
    mean over object tokens). The two means are taken apart because ~90 % of the tokens are plain
    background, whose only feature is their position: a mean over all tokens is low while the
    object tokens, the ones ``[SEG]`` reads, carry no location at all."""
    A, B, N = logits.shape[:3]
    ce = F.cross_entropy(logits.float().flatten(0, 3), cells.expand(A, B, -1, -1).flatten(),
                         reduction="none").view(A, B, N, 2).sum(-1)  # (A, B, N), x + y
    total = logits.new_zeros((), dtype=torch.float32)
    for group in (~on_object, on_object):
        if bool(group.any()):
            total = total + ce[:, group].mean(-1).sum() / 2
    return total


def losses(model: ReferenceIVS, batch: TrainBatch, seg_attention: bool = False) -> dict[str, torch.Tensor]:
    """Stage 2: every loss of the whole model on one batch; "loss" is their weighted sum.
    ``seg_attention``: also supervise ``[SEG]``'s attention (first head of the last LM layer)
    toward the visual tokens on the target (training-only)."""
    frames = batch.frames
    out = model.forward_train(frames, batch.text, batch.prev_masks if frames.shape[1] > 1 else None,
                              point_bins=batch.point, seg_attention=seg_attention)
    logits = out.masks.float()
    bce = F.binary_cross_entropy_with_logits(logits, batch.masks)
    p = torch.sigmoid(logits).flatten(2)
    t = batch.masks.flatten(2)
    dice = (1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)).mean()
    heat = -(batch.heat * torch.log_softmax(out.heat.float(), -1)).sum(-1).mean()
    seg = F.cross_entropy(out.seg_logits.float(),
                          torch.full((frames.shape[0],), model.tok.seg, dtype=torch.long, device=frames.device))
    dense = dense_loss(out.vit_aux.float(), batch.dense)
    tok = F.binary_cross_entropy_with_logits(out.token_logits.float(), batch.on_target,
                                             pos_weight=torch.tensor(10.0, device=frames.device))
    total = bce + dice + 0.5 * heat + 0.1 * seg + DENSE_WEIGHT * dense + TOKEN_WEIGHT * tok
    ls = {"bce": bce, "dice": dice, "heat": heat, "seg": seg, "dense": dense, "token": tok}
    if out.point_logits is not None:
        ls["point"] = F.cross_entropy(out.point_logits.float().flatten(0, 1), batch.point.flatten())
        total = total + POINT_WEIGHT * ls["point"]
    if out.token_location_logits is not None:
        on_object = batch.dense[:, model.lm_frame_ids(frames.shape[1]), :, 1].flatten(1) > 0  # (B, N)
        ls["location"] = location_loss(out.token_location_logits, token_location_targets(
            model, out.token_location_logits.shape[2]).to(frames.device), on_object)
        total = total + LOCATION_WEIGHT * ls["location"]
    if out.seg_masks is not None:
        named, weighted = seg_training.seg_losses(model, out, batch)
        ls.update(named)
        total = total + weighted
    if out.seg_attention is not None:
        want = batch.on_target / batch.on_target.sum(-1, keepdim=True).clamp_min(1.0)
        ls["seg_attention"] = -(want * torch.log(out.seg_attention.float() + 1e-6)).sum(-1).mean()
        total = total + SEG_ATTENTION_WEIGHT * ls["seg_attention"]
    if out.role_logits is not None:
        ls["role"] = F.binary_cross_entropy_with_logits(out.role_logits.float(), batch.roles,
                                                        pos_weight=torch.tensor([5.0, 10.0], device=frames.device))
        total = total + ROLE_WEIGHT * ls["role"]
    if out.align_logits is not None:
        ls["align"] = align_loss(out.align_logits, batch_word_targets(model, batch))
        total = total + ALIGN_WEIGHT * ls["align"]
    return {"loss": total, **ls}


@torch.no_grad()
def quick_val(model: ReferenceIVS, n_image: int, n_video: int) -> dict[str, float]:
    """cIoU and mean IoU on the first n_image val images and n_video val videos (over all frames),
    with full visual tokens and with none (``_keep0``: the check that the LM's tokens matter)."""
    model.eval()
    res = {}
    for task, n in (("image", n_image), ("video", n_video)):
        for keep, suffix in ((1.0, ""), (0, "_keep0")):
            inter = union = 0.0
            js = []
            for i in range(n):
                s = make_sample("val", i, task)
                pred = model.predict(s, keep=keep)
                it = np.logical_and(pred.masks, s.gt_masks).sum()
                un = np.logical_or(pred.masks, s.gt_masks).sum()
                inter, union = inter + it, union + un
                js.append(it / max(un, 1))
            if n:
                res[f"val_{task}_ciou{suffix}"] = float(inter / max(union, 1))
                res[f"val_{task}_miou{suffix}"] = float(np.mean(js))
    model.train()
    return res


def widen_state(model: ReferenceIVS, state: dict) -> dict:
    """A checkpoint's state for ``model`` whose matrices extend the checkpoint's along one axis, so
    that the warm start computes the checkpoint's function at step 0:

    - more rows (the location tokens appended after the words: the embedding and ``lm_head``): the
      checkpoint's rows are copied, the new rows keep the model's initialisation;
    - more columns (the projector's input widened by ``temporal_patch`` 2 from ``vit_dim`` to
      ``2 * vit_dim``): the checkpoint's columns are copied, the new ones are zero, so the new
      inputs contribute nothing until training moves them.

    Other shape mismatches are left for ``load_state_dict`` to refuse."""
    own = model.state_dict()
    out = dict(state)
    for k, v in state.items():
        if k not in own or own[k].shape == v.shape or own[k].dim() != 2 or v.dim() != 2:
            continue
        w = own[k]
        if w.shape[1] == v.shape[1] and w.shape[0] > v.shape[0]:
            w = w.clone()
            w[:v.shape[0]] = v
            out[k] = w
        elif w.shape[0] == v.shape[0] and w.shape[1] > v.shape[1]:
            w = torch.zeros_like(w)
            w[:, :v.shape[1]] = v
            out[k] = w
    return out


def lr_at(progress: float, base: float, warmup: float) -> float:
    if progress < warmup:
        return base * max(progress / warmup, 0.02)
    q = (progress - warmup) / max(1e-9, 1 - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(q, 1.0))))


def _recipe(args: dict) -> dict:
    """An invocation's arguments without where it wrote (``--out``, ``--export``)."""
    return {k: v for k, v in args.items() if k not in ("out", "export")}


def read_config(path: str) -> dict:
    """``--config``'s JSON object of `ReferenceConfig` overrides, checked before anything is built:
    a missing or unreadable file, a non-object, an unknown key or a value the model refuses each
    raise `SettingsError` (one line)."""
    try:
        overrides = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SettingsError(f"--config {path}: {err}") from None
    if not isinstance(overrides, dict):
        raise SettingsError(f"--config {path}: expected a JSON object of ReferenceConfig fields, "
                            f"got {type(overrides).__name__}")
    known = {f.name for f in fields(ReferenceConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SettingsError(f"--config {path}: unknown ReferenceConfig field(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
    try:
        ReferenceIVS(ReferenceConfig.from_json({**ReferenceConfig().to_json(), **overrides}))
    except (TypeError, ValueError) as err:
        raise SettingsError(f"--config {path}: {err}") from None
    return overrides


def check_seg_stage(args: "TrainConfig") -> None:
    """`SettingsError` (before anything is written) for a seg decoder stage the run cannot have:
    ``--seg-decoder-minutes`` for a model without the "seg" readout, or a new "seg" run without that
    stage whose ``--init`` weights hold no pretrained decoder (it would stay frozen untrained). A
    resumed run is judged by its checkpoint's configuration."""
    ckpt = Path(args.out) / "ckpt.pt"
    if ckpt.exists():
        cfg = ReferenceConfig.from_json(torch.load(ckpt, map_location="cpu", weights_only=False)["config"])
    else:
        cfg = ReferenceConfig.from_json({**ReferenceConfig().to_json(),
                                         **(read_config(args.config) if args.config else {})})
    if args.seg_decoder_minutes > 0 and "seg" not in cfg.readouts:
        raise SettingsError(f"--seg-decoder-minutes {args.seg_decoder_minutes} pretrains the 'seg' readout's "
                            f"decoder, but this model's readouts are {list(cfg.readouts)}; add 'seg' to the "
                            "config's readouts or drop the flag")
    if "seg" in cfg.readouts and args.seg_decoder_minutes == 0 and not ckpt.exists():
        if args.init and not Path(args.init).is_file():
            raise SettingsError(f"--init {args.init}: no such checkpoint")
        init = torch.load(args.init, map_location="cpu", weights_only=False)["model"] if args.init else {}
        if not any(k.startswith("seg_decoder.") for k in init):
            raise SettingsError("the 'seg' readout's decoder is frozen after its pretraining on ground-truth "
                                "prompts, and neither --seg-decoder-minutes nor --init's weights give it one; "
                                "pass --seg-decoder-minutes > 0 (or --init a checkpoint that has it)")


@dataclass
class TrainConfig:
    """One `evtp train` invocation (`evtp.cli.train` builds it from the command line; the field
    names are the flags' and are recorded in the weights' ``history``).

    Attributes:
        out: run directory (checkpoints, logs, final weights).
        steps: maximum optimiser steps of stage 2.
        minutes: wall-clock budget of both stages; stage 2's schedule completes by min(steps, minutes).
        vit_minutes: stage 1, minutes of vision pretraining (ViT + per-patch attribute head alone).
        seg_decoder_minutes: then, minutes of the "seg" readout's decoder pretraining on ground-truth
            prompts (`seg_training`); after it the decoder and the ViT are frozen.
        align_minutes: then, minutes of projector alignment (`projector_align_losses`), on
            ``video_batch`` videos per step.
        batch / video_batch: images per image step / videos per video step.
        video_every: every n-th step is a video step (0: none).
        lr / warmup / curriculum: peak learning rate, warm-up share of progress, share of progress
            in which attribute expressions dominate.
        threads / device / seed: torch CPU threads, "cpu" / "cuda" / "cuda:N" / "auto", and the
            seed: of torch (initialisation) and of the data stream, which starts at train-split
            index ``seed * SEED_DATA_STRIDE`` (`data_start`; seed 0 reads from index 0).
        ckpt_minutes / val_every: minutes between checkpoints, steps between quick validations (0: never).
        export: also copy the final weights into this directory.
        config: JSON file of `ReferenceConfig` overrides (new runs).
        init: start a new run from the model weights of this ``ckpt.pt`` (`widen_state`).
        seg_attention: supervise ``[SEG]``'s last-layer attention toward the target (`losses`).
    """

    out: str = "runs/reference"
    steps: int = 100000
    minutes: float = 38.0
    vit_minutes: float = 6.0
    seg_decoder_minutes: float = 0.0
    align_minutes: float = 0.0
    batch: int = 12
    video_batch: int = 3
    video_every: int = 3
    lr: float = 1e-3
    warmup: float = 0.04
    curriculum: float = 0.12
    threads: int = 2
    device: str = "cpu"
    seed: int = 0
    ckpt_minutes: float = 4.0
    val_every: int = 300
    export: str | None = None
    config: str | None = None
    init: str | None = None
    seg_attention: bool = False

    def __post_init__(self):
        if self.steps < 1 or self.minutes <= 0 or self.batch < 1 or self.video_batch < 1:
            raise SettingsError("--steps, --minutes, --batch and --video-batch must be positive")
        if not 0 <= self.vit_minutes < self.minutes:
            raise SettingsError("--vit-minutes must be >= 0 and below --minutes")
        if not 0 <= self.seg_decoder_minutes < self.minutes - self.vit_minutes:
            raise SettingsError(f"--seg-decoder-minutes must be >= 0 and below --minutes - --vit-minutes "
                                f"({self.minutes} - {self.vit_minutes}), got {self.seg_decoder_minutes}")
        rest = self.minutes - self.vit_minutes - self.seg_decoder_minutes
        if not 0 <= self.align_minutes < rest:
            raise SettingsError(f"--align-minutes must be >= 0 and below --minutes - --vit-minutes - "
                                f"--seg-decoder-minutes ({rest:g}), got {self.align_minutes}")
        data_start(self.seed)


@dataclass
class _Run:
    """A run's state between steps: what ``ckpt.pt`` holds (`_save_ckpt`) besides the arguments.

    Attributes:
        model / opt / cfg: the model, its AdamW optimiser and its configuration.
        step: optimiser steps taken (all stages); vit_steps: those of stage 1; seg_decoder_steps:
            those of the seg decoder's pretraining; align_steps: those of projector alignment.
        elapsed: seconds of training so far (validation and checkpointing included).
        n_image / n_video: train-split images / videos consumed (the next batch starts there).
        history: every invocation that trained it (``{"args", "from_step", "from_minute"}``).
    """

    model: ReferenceIVS
    opt: torch.optim.Optimizer
    cfg: ReferenceConfig
    step: int = 0
    elapsed: float = 0.0
    vit_steps: int = 0
    seg_decoder_steps: int = 0
    align_steps: int = 0
    n_image: int = 0
    n_video: int = 0
    history: list[dict] = field(default_factory=list)

    @property
    def full_steps(self) -> int:
        """Steps of the last stage, the whole model's."""
        return self.step - self.vit_steps - self.seg_decoder_steps - self.align_steps


def _start(args: TrainConfig, out: Path, device: torch.device) -> tuple[_Run, bool]:
    """A new run (from ``--config`` overrides, or ``--init``'s weights), or the one in
    ``out/ckpt.pt`` resumed; and whether it was resumed. Seeds torch before building the model."""
    overrides = read_config(args.config) if args.config else {}
    torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        cfg = ReferenceConfig.from_json(ck["config"])
    else:
        ck = None
        cfg = ReferenceConfig.from_json({**ReferenceConfig().to_json(), **overrides})
    torch.manual_seed(args.seed)
    model = ReferenceIVS(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    run = _Run(model, opt, cfg)
    if ck is None and args.init:
        init = torch.load(args.init, map_location="cpu", weights_only=False)
        missing, unexpected = model.load_state_dict(widen_state(model, init["model"]), strict=False)
        if unexpected:
            raise SettingsError(f"--init {args.init}: unexpected parameters {unexpected[:5]}")
        print(f"initialised from {args.init} (step {init['step']}, {init['elapsed'] / 60:.1f} min); "
              f"new parameters: {missing}", flush=True)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        run.step, run.elapsed, run.vit_steps = ck["step"], ck["elapsed"], ck.get("vit_steps", 0)
        run.seg_decoder_steps = ck.get("seg_decoder_steps", 0)
        run.align_steps = ck.get("align_steps", 0)
        # checkpoints from before the history existed: their last invocation's arguments
        run.history = ck.get("history") or [{"args": _recipe(ck.get("args") or {}), "from_step": None,
                                             "from_minute": None}]
        run.n_image, run.n_video = ck.get("n_image", 0), ck.get("n_video", 0)
        print(f"resumed from {ckpt_path} at step {run.step} ({run.elapsed / 60:.1f} min)", flush=True)
    return run, ck is not None


def _save_ckpt(run: _Run, out: Path) -> None:
    """Write ``out/ckpt.pt`` atomically (through ``ckpt.pt.tmp``)."""
    tmp = out / "ckpt.pt.tmp"
    torch.save({"model": run.model.state_dict(), "opt": run.opt.state_dict(), "step": run.step,
                "elapsed": run.elapsed, "vit_steps": run.vit_steps, "config": run.cfg.to_json(),
                "n_image": run.n_image, "n_video": run.n_video, "history": run.history,
                "seg_decoder_steps": run.seg_decoder_steps, "align_steps": run.align_steps}, tmp)
    os.replace(tmp, out / "ckpt.pt")


def _schedule(args: TrainConfig, run: _Run) -> tuple[str, float, float] | None:
    """(stage: "vit", "seg_decoder", "align" or "full"; learning rate; the full stage's progress
    (0 before it)) of the next step, or None once that progress reaches 1 (see the module docstring)."""
    budget, vit_budget = args.minutes * 60, args.vit_minutes * 60
    if run.elapsed < vit_budget:  # vision pretraining: warm-up over its first 10 %, then the peak LR
        return "vit", args.lr * min(1.0, max(run.elapsed / (0.1 * vit_budget), 0.02)), 0.0
    start = vit_budget + args.seg_decoder_minutes * 60
    if run.elapsed < start:  # the seg decoder's pretraining: its own warm-up and cosine decay
        return "seg_decoder", lr_at((run.elapsed - vit_budget) / (start - vit_budget), args.lr, 0.1), 0.0
    align_start, start = start, start + args.align_minutes * 60
    if run.elapsed < start:  # projector alignment: its own warm-up and cosine decay
        return "align", lr_at((run.elapsed - align_start) / (start - align_start), args.lr, 0.1), 0.0
    progress = max(run.full_steps / args.steps, (run.elapsed - start) / (budget - start))
    if progress >= 1.0:
        return None
    return "full", lr_at(progress, args.lr, args.warmup), progress


def _train_step(args: TrainConfig, run: _Run, device: torch.device, stage: str, lr: float,
                progress: float) -> tuple[str, dict[str, torch.Tensor]]:
    """One optimiser step of ``stage`` at ``lr`` on the next image (or, every ``video_every``-th
    step after stage 1, and every step of projector alignment, video) batch; advances the step and
    sample counters (not ``elapsed``). Returns the step's task ("vit", "image" or "video";
    "decoder_image" / "decoder_video" in the seg decoder's pretraining; "align") and its losses
    (`vit_losses` / `seg_training.decoder_losses` / `projector_align_losses` / `losses`)."""
    for g in run.opt.param_groups:
        g["lr"] = lr
    stage1 = stage == "vit"
    video = stage == "align" or (not stage1 and args.video_every > 0
                                 and run.step % args.video_every == args.video_every - 1)
    task = "vit" if stage1 else "align" if stage == "align" else "video" if video else "image"
    w = family_weights("video" if video else "image", progress, args.curriculum)
    if video:
        batch = make_batch(run.model, "video", data_start(args.seed) + run.n_video, args.video_batch, w)
        run.n_video += args.video_batch
    else:
        batch = make_batch(run.model, "image", data_start(args.seed) + run.n_image, args.batch, w)
        run.n_image += args.batch
    batch = batch.to(device)
    seg_training.set_trainable(run.model, stage)
    if stage == "seg_decoder":
        ls, task = seg_training.decoder_losses(run.model, batch), f"decoder_{task}"
    elif stage == "align":
        ls = projector_align_losses(run.model, batch)
    else:
        ls = vit_losses(run.model, batch) if stage1 else losses(run.model, batch, args.seg_attention)
    run.vit_steps += int(stage1)
    run.seg_decoder_steps += int(stage == "seg_decoder")
    run.align_steps += int(stage == "align")
    run.opt.zero_grad(set_to_none=True)
    ls["loss"].backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.opt.step()
    run.step += 1
    return task, ls


def _log(log, rec: dict) -> None:
    """Print ``rec`` as one JSON line and append it to ``log`` (log.jsonl)."""
    print(json.dumps(rec), flush=True)
    log.write(json.dumps(rec) + "\n")
    log.flush()


def _finish(args: TrainConfig, run: _Run, out: Path, log) -> None:
    """Final checkpoint, ``out/final`` weights (+ their meta and fixed check), the closing
    log record with a larger quick validation, and the ``--export`` copy."""
    _save_ckpt(run, out)
    start = data_start(args.seed)
    meta = {"steps": run.step, "vit_pretrain_steps": run.vit_steps, "train_minutes": round(run.elapsed / 60, 1),
            "train_images": run.n_image, "train_videos": run.n_video, "recipe": run.history[-1]["args"],
            "history": run.history,
            "train_seeds": (f"train split indices {start} + 0..train_images-1 (images) "
                            f"and {start} + 0..train_videos-1 (videos)")}
    seg = run.model.seg_decoder is not None
    if seg:
        meta["seg_decoder_steps"] = run.seg_decoder_steps
    if run.align_steps:
        meta["align_steps"] = run.align_steps
    run.model.eval()
    final = out / "final"
    save_model(run.model, final, meta)
    record_check(final)  # the fixed accuracy check the tests re-compute on the shipped weights
    rec = {"done": True, **meta, **quick_val(run.model, 96, 16),
           **(seg_training.gt_prompt_val(run.model, 96, 16) if seg else {})}
    log.write(json.dumps(rec) + "\n")
    log.close()
    print(json.dumps(rec), flush=True)
    if args.export:
        Path(args.export).mkdir(parents=True, exist_ok=True)
        for f in final.iterdir():
            shutil.copy2(f, Path(args.export) / f.name)


def train(args: TrainConfig) -> int:
    """Run (or resume) the training described by ``args`` (see the module docstring)."""
    device = parse_device(args.device, "--device")
    out = Path(args.out)
    run, resumed = _start(args, out, device)
    recipe = _recipe(asdict(args))
    if resumed and (run.elapsed >= args.minutes * 60 or run.full_steps >= args.steps):
        if (out / "final" / "reference.safetensors").is_file():
            print(f"{out} is already trained past this budget ({run.elapsed / 60:.1f} min, step {run.step}); "
                  "nothing to do (raise --minutes to continue it)", flush=True)
            return 0
    elif not run.history or run.history[-1]["args"] != recipe:  # a plain resume is the same invocation
        run.history.append({"args": recipe, "from_step": run.step, "from_minute": round(run.elapsed / 60, 2)})
    run.model.train()
    log = open(out / "log.jsonl", "a")
    t_last_ckpt = time.time()
    running: dict[str, float] = {}  # exponential moving averages of the losses, "<task>_<loss>"
    while True:
        t0 = time.time()
        next_step = _schedule(args, run)
        if next_step is None:
            break
        stage, lr, progress = next_step
        task, ls = _train_step(args, run, device, stage, lr, progress)
        run.elapsed += time.time() - t0
        for k, v in ls.items():
            key = f"{task}_{k}"
            v = float(v.detach())
            running[key] = 0.9 * running.get(key, v) + 0.1 * v
        if run.step % 20 == 0:
            _log(log, {"step": run.step, "elapsed_min": round(run.elapsed / 60, 2), "lr": lr,
                       **{k: round(v, 4) for k, v in running.items()}})
        stage_steps = run.seg_decoder_steps if stage == "seg_decoder" else run.full_steps
        if args.val_every and stage in ("seg_decoder", "full") and stage_steps % args.val_every == 0:
            tv = time.time()
            val = seg_training.gt_prompt_val if stage == "seg_decoder" else quick_val
            rec = {"step": run.step, "elapsed_min": round(run.elapsed / 60, 2), **val(run.model, 48, 8)}
            rec["val_seconds"] = round(time.time() - tv, 1)
            _log(log, rec)
        if time.time() - t_last_ckpt > args.ckpt_minutes * 60:
            _save_ckpt(run, out)
            t_last_ckpt = time.time()
    _finish(args, run, out, log)
    return 0
