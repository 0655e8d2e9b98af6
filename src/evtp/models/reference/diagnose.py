"""Where the reference model's errors come from, per expression family (`evtp diagnose reference`;
the dense readout: it inspects the heat-map prompt).

Four measures on the validation split (never the test split), each per family and overall:

- ``full``: cIoU (images) or frame-pooled cIoU (videos) at full visual tokens;
- ``keep0``: the same with no visual tokens in the LM (the precondition: must fall to <= 50 %);
- ``oracle``: the mask decoder given a *ground-truth* prompt (heat logits +5 on every patch the
  target covers by >= 25 % of the first frame, -5 elsewhere) instead of the LM's, on the same
  features and with the same frame-to-frame memory. It bounds what a perfect LM would reach, so
  ``full`` far below ``oracle`` means the LM points at the wrong place, not that the decoder
  cannot draw the mask;
- ``chance``: the same cIoU for a guesser that picks one of the scene's objects uniformly at
  random and returns its exact mask (expected intersection over expected union): the floor that
  ``keep0`` should be compared with, about 1 / (objects per scene);
- ``hit``: share of samples whose LM prompt peaks on the target (arg-max of the heat logits on a
  target patch), and ``token_hit``: the same for the per-visual-token logits alone;
- where the prompt peaks when it misses: ``peak_member`` on another member of the expression's
  reference set (the description matched, the comparison - leftmost, second largest, moves down -
  went wrong), ``peak_other`` on an object outside the set (the description itself was misread),
  ``peak_background`` on no object (a patch no object covers by >= 25 %). With ``hit`` they sum
  to 1;
- ``full_when_hit``: the full-token cIoU over the samples whose prompt peaks on the target (how
  well the decoder draws the mask from the LM's prompt when it points at the right object).

Prints a markdown table; ``--out`` also writes it as JSON.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from evtp.data.patches import patch_shares
from evtp.data.synthetic import make_sample, object_cover
from evtp.metrics.image import intersection_union
from evtp.models.reference import ReferenceIVS, frames_to_tensor, load_pretrained

ORACLE_LOGIT = 5.0


def target_patches(gt_mask: np.ndarray, patch: int) -> torch.Tensor:
    """(S, S) bool mask -> (G*G,) bool: patches the target covers by >= 25 % (as `target_hit`)."""
    return torch.from_numpy(patch_shares(gt_mask[None], patch)[0] >= 0.25).flatten()


PEAK_KINDS = ("hit", "peak_member", "peak_other", "peak_background")


def peak_kind(meta: dict, patch: int, cell: int) -> str:
    """Where a prompt peaking on grid ``cell`` of the first frame lies (one of `PEAK_KINDS`):
    "hit" if the target covers >= 25 % of the cell, else the object covering most of it (>= 25 %)
    is another member of the reference set ("peak_member") or not ("peak_other"), or no object
    covers that much ("peak_background"). meta: a sample's meta with ``labels``."""
    cover = object_cover(meta["labels"][:1], len(meta["objects"]), patch)[0][:, cell]  # (O,)
    if cover[meta["target"]] >= 0.25:
        return "hit"
    obj = int(cover.argmax())
    if cover[obj] < 0.25:
        return "peak_background"
    return "peak_member" if obj in meta["members"] else "peak_other"


@torch.no_grad()
def oracle_masks(model: ReferenceIVS, frames: torch.Tensor, on_target: torch.Tensor) -> np.ndarray:
    """The decoder's masks from a ground-truth prompt.

    frames (1, T, 3, S, S) in [0, 1], on_target (G*G,) bool -> (T, S, S) bool masks, decoded frame
    by frame exactly as `ReferenceIVS.run` does (`ReferenceIVS.decode_masks`).
    """
    vit, _ = model.encode_frames(frames)
    heat = torch.where(on_target, ORACLE_LOGIT, -ORACLE_LOGIT).float()[None]
    return model.decode_masks(vit, frames, heat)[0].numpy()


def diagnose(model: ReferenceIVS, task: str, n: int, seed_offset: int = 0) -> dict[str, dict[str, float]]:
    """Per-family (and ``"all"``) measures on the first ``n`` validation samples of ``task``."""
    sums: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    hits: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for i in range(n):
        s = make_sample("val", i, task, seed_offset=seed_offset, with_labels=True)
        frames = frames_to_tensor(s.frames, model.cfg.image_size)
        text = [model.tok.encode(s.instruction)]
        on = target_patches(s.gt_masks[0], model.cfg.patch)
        full = model.run(frames, text, keep=1.0, readout="dense")
        preds = {"full": full["masks"][0].numpy(),
                 "keep0": model.run(frames, text, keep=0, readout="dense")["masks"][0].numpy(),
                 "oracle": oracle_masks(model, frames, on)}
        first = full["kept"][0] < on.numel()  # the first frame's tokens
        where = peak_kind(s.meta, model.cfg.patch, int(full["heat"][0].argmax()))
        tok = full["token_logits"][0][first]
        guesses = [intersection_union(s.meta["labels"] == o + 1, s.gt_masks)
                   for o in range(len(s.meta["objects"]))]
        iu = {k: intersection_union(p, s.gt_masks) for k, p in preds.items()}
        if where == "hit":
            iu["full_when_hit"] = iu["full"]
        iu["chance"] = (float(np.mean([g[0] for g in guesses])), float(np.mean([g[1] for g in guesses])))
        for fam in (s.family, "all"):
            for k, (inter, union) in iu.items():
                sums[fam][k][0] += inter
                sums[fam][k][1] += union
            for kind in PEAK_KINDS:
                hits[fam][kind].append(where == kind)
            hits[fam]["token_hit"].append(bool(on[full["kept"][0][first][tok.argmax()]]))
    out = {}
    for fam in sorted(sums, key=lambda f: (f == "all", f)):
        row = {k: a / max(u, 1.0) for k, (a, u) in sums[fam].items()}
        row.update({k: float(np.mean(v)) for k, v in hits[fam].items()})
        row["n"] = len(hits[fam]["hit"])
        out[fam] = row
    return out


def table(task: str, res: dict[str, dict[str, float]]) -> str:
    """Markdown table of `diagnose`'s results."""
    lines = [f"### {task} (validation split)", "",
             "| family | n | cIoU full | cIoU keep 0 | keep 0 / full | cIoU random object | cIoU oracle prompt "
             "| prompt peak on target | token peak on target | cIoU full, peak on target "
             "| peak on another member | peak on a non-member | peak on background |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, r in res.items():
        ratio = r["keep0"] / r["full"] if r["full"] > 0 else float("nan")
        cells = [str(r["n"]), f"{r['full']:.3f}", f"{r['keep0']:.3f}", f"{ratio:.2f}", f"{r['chance']:.3f}",
                 f"{r['oracle']:.3f}",
                 f"{r['hit']:.2f}", f"{r['token_hit']:.2f}",
                 f"{r['full_when_hit']:.3f}" if "full_when_hit" in r else "-",
                 f"{r['peak_member']:.2f}", f"{r['peak_other']:.2f}", f"{r['peak_background']:.2f}"]
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_diagnosis(weights: str | None, images: int, videos: int, seed_offset: int = 0,
                  threads: int | None = None, out: str | None = None) -> dict:
    """`diagnose` on ``images`` val images and ``videos`` val videos of the weights in ``weights``
    (None: the shipped ones); prints the tables, writes the JSON to ``out`` if given, returns it."""
    model = load_pretrained(weights, threads=threads)
    res = {}
    for task, n in (("image", images), ("video", videos)):
        if n:
            res[task] = diagnose(model, task, n, seed_offset)
            print(table(task, res[task]) + "\n", flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=1))
    return res
