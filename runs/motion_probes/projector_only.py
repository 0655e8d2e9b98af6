"""Can the projector alone learn the motion words from the temporal patch's inputs?

The point stage's weights (``runs/point_seed2/final``) widened to ``temporal_patch=2`` (`widen_state`:
the new input columns start at zero); the ViT features of 150 train / 40 val videos are computed
once; then only the projector trains (AdamW, the learning rate given, 400 steps of 2,048 tokens)
toward the depth-0 word alignment (colour, shape and motion words through the fixed word
embeddings). Prints the val motion-word accuracy (argmax over the five motion words, object tokens).

    .venv/bin/python runs/motion_probes/projector_only.py 1e-3
"""
import sys

import torch
import torch.nn.functional as F
from evtp.data.synthetic import make_sample
from evtp.data.synthetic_scene import DIRECTIONS
from evtp.models.reference.model import frames_to_tensor
from evtp.models.reference.saving import load_pretrained
from evtp.models.reference.train import motion_words, object_cover, widen_state, align_targets, patch_targets
from evtp.models.reference import ReferenceIVS, ReferenceConfig
torch.set_num_threads(1); torch.manual_seed(0)
base = load_pretrained("runs/point_seed2/final")
cfg = ReferenceConfig.from_json({**base.cfg.to_json(), "temporal_patch": 2, "align_motion": True})
m = ReferenceIVS(cfg); m.load_state_dict(widen_state(m, base.state_dict())); m.eval()
words = torch.tensor([m.tok.ids[w] for w in (*DIRECTIONS, "not")])
def data(split, n):
    X, Y, C = [], [], []
    with torch.no_grad():
        for i in range(n):
            s = make_sample(split, i, "video", with_labels=True)
            fr = frames_to_tensor(s.frames, 256); ids = m.lm_frame_ids(8)
            vit, _ = m.encode_frames(fr)
            a = [min(f, 6) for f in ids]; b = [x + 1 for x in a]
            X.append(torch.cat([vit[0, ids], vit[0, b] - vit[0, a]], -1).flatten(0, 1))
            cov = object_cover(s, 16)
            Y.append(motion_words(m, [s], [cov], ids)[0])
            C.append(align_targets(m, patch_targets([s], [cov]), ids)[:, 0])
    return torch.cat(X), torch.cat(Y), torch.cat(C, 1)
Xtr, Ytr, Ctr = data("train", 150); Xte, Yte, Cte = data("val", 40)
E = m.lm.get_input_embeddings().weight.detach()
opt = torch.optim.AdamW(m.projector.parameters(), float(sys.argv[1]), weight_decay=0.05)
def acc(X, Y):
    with torch.no_grad():
        lg = (m.projector(X) @ E.T / E.shape[1] ** 0.5)
        on = Y >= 0
        return (words[lg[on][:, words].argmax(-1)] == Y[on]).float().mean().item()
print("start", acc(Xte, Yte))
for step in range(400):
    idx = torch.randint(len(Xtr), (2048,))
    lg = m.projector(Xtr[idx]) @ E.T / E.shape[1] ** 0.5
    loss = F.cross_entropy(lg, Ytr[idx], ignore_index=-100) + sum(F.cross_entropy(lg, c[idx], ignore_index=-100) for c in Ctr)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 100 == 99: print(step + 1, round(loss.item(), 3), "val motion acc", round(acc(Xte, Yte), 3), flush=True)
