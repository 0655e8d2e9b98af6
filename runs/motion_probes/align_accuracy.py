"""How well a model's visual tokens speak their object's motion word (the ``align_motion`` target).

For every LM video token on an object (>= 25 % of its patch) of the first ``--videos`` val videos,
the argmax over the five motion words ("left", "right", "up", "down", "not") of the token's
word-space logits at each alignment depth, against the target `train.motion_words` gives; beside
it the majority word's rate. A model trained without ``align_motion`` reads as a control.

    .venv/bin/python runs/motion_probes/align_accuracy.py runs/probe2_motion/final runs/probe2_control/final
"""
import json
import sys

import torch

from evtp.data.synthetic import make_sample
from evtp.data.synthetic_scene import DIRECTIONS
from evtp.models.reference.model import frames_to_tensor
from evtp.models.reference.saving import load_pretrained
from evtp.models.reference.train import motion_words, object_cover


@torch.no_grad()
def accuracy(weights: str, videos: int) -> dict:
    model = load_pretrained(weights)
    model.eval()
    words = torch.tensor([model.tok.ids[w] for w in (*DIRECTIONS, "not")])
    hits, total, counts = None, 0, torch.zeros(len(words))
    for i in range(videos):
        s = make_sample("val", i, "video", with_labels=True)
        fr = frames_to_tensor(s.frames, model.cfg.image_size)
        ids = model.lm_frame_ids(fr.shape[1])
        target = motion_words(model, [s], [object_cover(s, model.cfg.patch)], ids)[0]
        prev = torch.zeros(1, fr.shape[1], model.cfg.image_size // 4, model.cfg.image_size // 4)
        out = model.forward_train(fr, [model.tok.encode(s.instruction)], prev)
        logits = out.align_logits[:, 0][..., words]  # (A, N, 5)
        on = target >= 0
        pred = words[logits.argmax(-1)]  # (A, N)
        h = (pred[:, on] == target[on]).sum(-1)
        hits = h if hits is None else hits + h
        total += int(on.sum())
        counts += (target[on][:, None] == words[None]).sum(0)
    return {"weights": weights, "tokens": total, "majority": float(counts.max() / total),
            "depths": list(model.cfg.align_layers), "accuracy": [round(float(x) / total, 3) for x in hits]}


if __name__ == "__main__":
    torch.set_num_threads(1)
    for w in sys.argv[1:]:
        print(json.dumps(accuracy(w, 60)), flush=True)
