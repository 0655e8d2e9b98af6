import torch, numpy as np, torch.nn.functional as F, time
torch.set_num_threads(1); torch.manual_seed(0)
from evtp.models.reference import ReferenceIVS, ReferenceConfig
from evtp.models.reference.train import make_batch, family_weights
ck = torch.load(__import__('sys').argv[1], map_location='cpu', weights_only=False)
m = ReferenceIVS(ReferenceConfig.from_json(ck['config'])); m.load_state_dict(ck['model']); m.eval()
xs, ys = m.location_ids('x'), m.location_ids('y')
w = family_weights('image', 1.0, 0.12)
def collect(start, n):
    H, P, T, HM = [], [], [], []
    stats = dict(own=0, own_n=0, tgt=0, seg=0)
    for s0 in range(start, start + n, 12):
        b = make_batch(m, 'image', s0, 12, w)
        with torch.no_grad():
            vit, _ = m.encode_frames(b.frames); vis = m.visual_tokens(vit)
            inp = m.build_inputs(vis, None, b.text, extra_ids=b.point[:, :1] + xs.start)
            o = m.lm_forward(inp, prefix_len=inp.embeds.shape[1] - 2, output_hidden_states=True)
            h = o.last_hidden_state; vs = inp.visual_start
            hv = h[:, vs:vs + 256]
            seg = h[:, -2]
            # oracle (a): the visual token at the target cell, its final state read by the x/y heads
            cell = b.point[:, 1] * 16 + b.point[:, 0]
            ht = hv[torch.arange(12), cell]
            ax = m.lm_head(ht)[:, xs].argmax(-1); ay = m.lm_head(ht)[:, ys].argmax(-1)
            stats['tgt'] += int(((ax == b.point[:, 0]) & (ay == b.point[:, 1])).sum())
            # every visual token's own cell
            lx = m.lm_head(hv)[..., xs].argmax(-1); ly = m.lm_head(hv)[..., ys].argmax(-1)
            ar = torch.arange(256); stats['own'] += int(((lx == ar % 16) & (ly == ar // 16)).sum()); stats['own_n'] += 12 * 256
            sx = m.lm_head(seg)[:, xs].argmax(-1); sy = m.lm_head(h[:, -1])[:, ys].argmax(-1)
            stats['seg'] += int(((sx == b.point[:, 0]) & (sy == b.point[:, 1])).sum())
            H.append(torch.stack([hs[:, -2] for hs in o.hidden_states], 1))  # (B, layers+1, D) SEG state per depth
            on = b.on_target / b.on_target.sum(-1, keepdim=True).clamp_min(1)
            HM.append(torch.einsum('bn,bnd->bd', on, hv))  # mean target-token final state
            P.append(b.point)
    return torch.cat(H), torch.cat(HM), torch.cat(P), stats
t = time.time()
Htr, HMtr, Ptr, st_tr = collect(0, 600)
Hva, HMva, Pva, st_va = collect(10**6, 300)
print('collect s', round(time.time() - t), 'val stats n=300', st_va, 'own-cell acc', st_va['own'] / st_va['own_n'])
def probe(Xtr, Ytr, Xva, Yva, epochs=300):
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-5
    Xtr, Xva = (Xtr - mu) / sd, (Xva - mu) / sd
    res = []
    for a in range(2):
        lin = torch.nn.Linear(Xtr.shape[1], 16)
        opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(epochs):
            opt.zero_grad(); l = F.cross_entropy(lin(Xtr), Ytr[:, a]); l.backward(); opt.step()
        with torch.no_grad():
            res.append((round(l.item(), 3), round(F.cross_entropy(lin(Xva), Yva[:, a]).item(), 3), round((lin(Xva).argmax(-1) == Yva[:, a]).float().mean().item(), 3)))
    return res
prior = [round(float(-(torch.bincount(Ptr[:, a], minlength=16).float().add(.5).div(len(Ptr) + 8).log()[Pva[:, a]]).mean()), 3) for a in range(2)]
print('prior CE on val (x, y)', prior)
for d in range(Htr.shape[1]):
    print('SEG state after layer', d, '(train CE, val CE, val acc) x,y:', probe(Htr[:, d], Ptr, Hva[:, d], Pva))
print('mean target-token final state:', probe(HMtr, Ptr, HMva, Pva))
