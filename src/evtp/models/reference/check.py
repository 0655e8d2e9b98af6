"""The fixed accuracy check recorded in the weights' JSON and re-computed by the tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evtp.models.reference.model import ReferenceIVS
from evtp.models.reference.saving import load_pretrained


def fixed_check(model: ReferenceIVS, n_image: int = 12, n_video: int = 2, keep=1.0,
                readout: str | None = None) -> dict:
    """Accuracy on a small fixed sample (val split images 0..n_image-1, videos 0..n_video-1) at
    ``keep`` (with `evtp` below 1.0) with ``readout`` (None: the weights' primary one): the numbers
    recorded in the weights' JSON and re-checked by the tests. Returns {"image_ciou"} plus
    "video_jf" when n_video > 0."""
    from evtp.data.synthetic import make_sample
    from evtp.metrics import ciou_giou, j_and_f

    preds, gts = [], []
    for i in range(n_image):
        s = make_sample("val", i, "image")
        preds.append(model.predict(s, method="evtp", keep=keep, readout=readout).masks.squeeze(0))
        gts.append(s.gt_masks.squeeze(0))
    ciou, _ = ciou_giou(preds, gts)
    jfs = []
    for i in range(n_video):
        s = make_sample("val", i, "video")
        jfs.append(j_and_f(model.predict(s, method="evtp", keep=keep, readout=readout).masks, s.gt_masks)[2])
    out = {"image_ciou": float(ciou)}
    if jfs:
        out["video_jf"] = float(np.mean(jfs))
    return out


def record_check(directory: str | Path, n_image: int = 12, n_video: int = 6) -> dict:
    """Compute `fixed_check` on the weights saved in ``directory`` (loaded back as the tests load
    them: fp16 file -> fp32) at full tokens and with no visual tokens, and store it in the JSON's
    ``meta["check"]`` (the values ``tests/test_reference_weights.py`` re-computes): "full" / "none"
    with the primary readout, and the same for every readout under "readouts". Returns it."""
    d = Path(directory)
    model = load_pretrained(d)
    per = {r: {"full": fixed_check(model, n_image, n_video, keep=1.0, readout=r),
               "none": fixed_check(model, n_image, 0, keep=0, readout=r)} for r in model.cfg.readouts}
    primary = model.cfg.readouts[0]
    check = {"split": "val", "n_image": n_image, "n_video": n_video, "readout": primary,
             "full": per[primary]["full"], "none": per[primary]["none"], "readouts": per,
             "how": "evtp.models.reference.fixed_check(model, n_image, n_video, keep, readout)"}
    info = json.loads((d / "reference.json").read_text())
    info["meta"]["check"] = check
    (d / "reference.json").write_text(json.dumps(info, indent=1) + "\n")
    return check
