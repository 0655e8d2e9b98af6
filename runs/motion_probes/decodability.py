"""Is an object's motion between frames a and a+1 decodable from what a temporal-patch token can see?

A screening probe (issue 21, item 3). For every LM video token on an object (>= 25 % of its patch;
frames ``lm_frames``, a = min(f, T-2), b = a + 1), the target is the motion word the ``align_motion``
loss trains toward (left / right / up / down / "not"). A 2-layer MLP is fitted on train videos and
scored on val videos, for four inputs:

- ``vit_local``: what ``temporal_patch=2`` gives the projector, [v_f, v_b - v_a] of the token's patch
  (the frozen ViT of the given weights);
- ``vit_3x3``: the same for the 3 x 3 patches around it (what one attention hop over neighbours
  could gather);
- ``pixel_local``: the patch's pixels in frames a and b (8 x 8 x 3 each), i.e. a pixel-level temporal
  patch as Qwen2-VL's patch embedding sees it;
- ``pixel_3x3``: the same over the 3 x 3 patches.

Scored overall, on "interior" tokens (all 3 x 3 neighbours on the same object in frame f) and on
"edge" tokens, beside the majority-class rate. Plain and textured objects.

    .venv/bin/python runs/motion_probes/decodability.py --weights runs/point_seed2/final
"""
import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from evtp.data.synthetic import make_sample
from evtp.models.reference.model import frames_to_tensor
from evtp.models.reference.saving import load_pretrained
from evtp.models.reference.train import motion_words, object_cover


def neighbourhood(x: torch.Tensor, g: int) -> torch.Tensor:
    """x (F, G*G, D) -> (F, G*G, 9*D): each patch's 3 x 3 neighbourhood (zeros outside the image)."""
    Fn, _, D = x.shape
    grid = x.view(Fn, g, g, D).permute(0, 3, 1, 2)
    cols = F.unfold(grid, 3, padding=1)  # (F, D*9, G*G)
    return cols.transpose(1, 2)


@torch.no_grad()
def features(model, split: str, n: int, textured: bool):
    cfg = model.cfg
    g, p = cfg.grid, cfg.patch
    out = {k: [] for k in ("vit_local", "vit_3x3", "pixel_local", "pixel_3x3")}
    ys, interior = [], []
    for i in range(n):
        s = make_sample(split, i, "video", with_labels=True, textured=textured)
        fr = frames_to_tensor(s.frames, cfg.image_size)  # (1, T, 3, S, S)
        T = fr.shape[1]
        ids = model.lm_frame_ids(T)
        a = [min(f, T - 2) for f in ids]
        b = [x + 1 for x in a]
        vit, _ = model.encode_frames(fr)
        vit = vit[0]  # (T, G*G, Dv)
        local = torch.cat([vit[ids], vit[b] - vit[a]], -1)  # (F, G*G, 2Dv)
        pix = F.avg_pool2d(fr[0], 2)  # (T, 3, S/2, S/2): 8 x 8 per patch
        pp = p // 2
        patches = pix.unfold(2, pp, pp).unfold(3, pp, pp)  # (T, 3, G, G, pp, pp)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(T, g * g, -1)
        plocal = torch.cat([patches[a], patches[b]], -1)
        cover = object_cover(s, p)
        words = motion_words(model, [s], [cover], ids)[0].view(len(ids), g * g)
        owner = cover[ids].argmax(1)  # (F, G*G)
        on = cover[ids].max(1).values >= 0.25
        nb_owner = neighbourhood(owner[..., None].float(), g)  # (F, G*G, 9)
        nb_on = neighbourhood(on[..., None].float(), g)
        inside = ((nb_owner == owner[..., None].float()) & (nb_on > 0)).all(-1)
        keep = words >= 0
        out["vit_local"].append(local[keep])
        out["vit_3x3"].append(neighbourhood(local, g)[keep])
        out["pixel_local"].append(plocal[keep])
        out["pixel_3x3"].append(neighbourhood(plocal, g)[keep])
        ys.append(words[keep])
        interior.append(inside[keep])
    return {k: torch.cat(v) for k, v in out.items()}, torch.cat(ys), torch.cat(interior)


def fit_score(xtr, ytr, xte, yte, steps: int = 600) -> torch.Tensor:
    torch.manual_seed(0)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-4
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    classes = torch.unique(ytr)
    lut = {int(c): i for i, c in enumerate(classes)}
    ytr_i = torch.tensor([lut[int(c)] for c in ytr])
    net = torch.nn.Sequential(torch.nn.Linear(xtr.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, len(classes)))
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-2)
    for step in range(steps):
        idx = torch.randint(len(xtr), (1024,))
        loss = F.cross_entropy(net(xtr[idx]), ytr_i[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = classes[net(xte).argmax(-1)]
    return pred == yte


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_pretrained(args.weights)
    model.eval()
    res = {}
    for textured in (False, True):
        ftr, ytr, _ = features(model, "train", args.train, textured)
        fte, yte, inside = features(model, "val", args.val, textured)
        maj = (yte == torch.mode(ytr).values).float().mean().item()
        row = {"tokens_train": len(ytr), "tokens_val": len(yte), "interior_share": inside.float().mean().item(),
               "majority": maj}
        for name in ftr:
            ok = fit_score(ftr[name], ytr, fte[name], yte)
            row[name] = {"all": ok.float().mean().item(), "interior": ok[inside].float().mean().item(),
                         "edge": ok[~inside].float().mean().item()}
        key = "textured" if textured else "plain"
        res[key] = row
        print(key, json.dumps(row), flush=True)
    if args.out:
        json.dump(res, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
