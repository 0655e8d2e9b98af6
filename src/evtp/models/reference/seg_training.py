"""Training of the `seg` readout's promptable decoder and prompt (stages of `evtp.models.reference.train`).

Two steps, as LISA / Sa2VA build on a pretrained, promptable SAM:

* **Decoder pretraining** (stage ``"seg_decoder"``, ``--seg-decoder-minutes``): the decoder
  (`evtp.models.reference.prompt_decoder.PromptableMaskDecoder`) and its geometry prompt encoder
  learn to segment the object a ground-truth prompt (the target's innermost point and box in
  frame 0) points at; BCE + Dice on the masks. The ViT's features are read, not trained. No word
  reaches the decoder, so it learns to segment where it is pointed, not which object is named.
* **Prompt learning** (stage ``"full"``): the decoder and the ViT it reads are frozen; the LM, the
  projector and ``seg_proj`` learn to make, from ``[SEG]``'s state, a prompt that gives the
  target's mask through the frozen decoder (BCE + Dice), with the geometry encoder's prompt of the
  same target as an auxiliary target for the projected state (mean squared error relative to the
  target prompt's mean square), beside the model's other losses.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SEG_MASK_WEIGHT = 1.0  # BCE + Dice of the seg readout's masks in the prompt-learning stage
SEG_PROMPT_WEIGHT = 1.0  # the projected [SEG] state toward the ground-truth geometry prompt


def bce_dice(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, T, h, w), target (B, T, h, w) area fractions in [0, 1] -> (mean BCE, mean Dice
    loss over the B x T masks, smoothed by 1)."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p, t = torch.sigmoid(logits).flatten(2), target.flatten(2)
    dice = (1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)).mean()
    return bce, dice


def set_trainable(model, stage: str) -> None:
    """What learns in ``stage`` of a model with the seg readout (nothing changes without it):
    "seg_decoder": the decoder (the ViT is read under no_grad); "full": neither the decoder nor the
    ViT whose features it reads (frozen, as LISA freezes SAM and the vision encoder); "vit": the ViT."""
    if model.seg_decoder is None:
        return
    model.seg_decoder.requires_grad_(stage == "seg_decoder")
    model.vit.requires_grad_(stage != "full")


def decoder_losses(model, batch) -> dict[str, torch.Tensor]:
    """Stage "seg_decoder": the decoder prompted by the ground-truth geometry alone; "loss" = BCE + Dice."""
    frames = batch.frames
    with torch.no_grad():
        vit, _ = model.encode_frames(frames)
    prompt = model.seg_decoder.geometry_prompt(batch.geometry)
    logits = model.seg_decoder.teacher_forced(vit, frames, prompt, batch.prev_masks if frames.shape[1] > 1 else None)
    bce, dice = bce_dice(logits, batch.masks)
    return {"loss": bce + dice, "seg_bce": bce, "seg_dice": dice}


def seg_losses(model, out, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Stage "full": the seg readout's losses on `forward_train`'s outputs -> (named losses, their
    weighted sum to add to the total)."""
    bce, dice = bce_dice(out.seg_masks, batch.masks)
    with torch.no_grad():
        target = model.seg_decoder.geometry_prompt(batch.geometry).float()
    prompt = F.mse_loss(out.seg_prompt.float(), target) / target.pow(2).mean().clamp_min(1e-6)
    return ({"seg_bce": bce, "seg_dice": dice, "seg_prompt": prompt},
            SEG_MASK_WEIGHT * (bce + dice) + SEG_PROMPT_WEIGHT * prompt)


@torch.no_grad()
def gt_prompt_masks(model, sample) -> np.ndarray:
    """The decoder prompted by the sample's ground-truth geometry (its target in frame 0), as at
    inference (frame t > 0 prompted by frame t-1's predicted mask): -> (T, S, S) bool."""
    from evtp.models.reference.model import frames_to_tensor
    from evtp.models.reference.prompt_decoder import prompt_geometry

    frames = frames_to_tensor(sample.frames, model.cfg.image_size).to(model.pixel_mean.device)
    vit, _ = model.encode_frames(frames)
    geometry = prompt_geometry(sample.gt_masks[:1]).to(frames.device)
    prompt = model.seg_decoder.geometry_prompt(geometry.to(model.pixel_mean.dtype))
    return model.decode_seg_masks(vit, frames, prompt)[0].cpu().numpy()


def gt_prompt_val(model, n_image: int, n_video: int) -> dict[str, float]:
    """cIoU and mean IoU of the decoder with ground-truth prompts on the first val images / videos
    (all frames): ``val_{image,video}_{ciou,miou}_gt_prompt``."""
    from evtp.data.synthetic import make_sample

    was_training = model.training
    model.eval()
    res = {}
    for task, n in (("image", n_image), ("video", n_video)):
        inter = union = 0.0
        ious = []
        for i in range(n):
            s = make_sample("val", i, task)
            pred = gt_prompt_masks(model, s)
            it, un = np.logical_and(pred, s.gt_masks).sum(), np.logical_or(pred, s.gt_masks).sum()
            inter, union = inter + it, union + un
            ious.append(it / max(un, 1))
        if n:
            res[f"val_{task}_ciou_gt_prompt"] = float(inter / max(union, 1))
            res[f"val_{task}_miou_gt_prompt"] = float(np.mean(ious))
    model.train(was_training)
    return res
