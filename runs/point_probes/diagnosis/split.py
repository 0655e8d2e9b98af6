import torch, torch.nn.functional as F
torch.set_num_threads(1)
from evtp.models.reference import ReferenceIVS, ReferenceConfig
from evtp.models.reference.train import make_batch, family_weights
ck = torch.load(__import__('sys').argv[1], map_location='cpu', weights_only=False)
m = ReferenceIVS(ReferenceConfig.from_json(ck['config'])); m.load_state_dict(ck['model']); m.eval()
xs, ys = m.location_ids('x'), m.location_ids('y')
w = family_weights('image', 1.0, 0.12)
acc = {}
for s0 in range(10**6, 10**6 + 96, 12):
    b = make_batch(m, 'image', s0, 12, w)
    with torch.no_grad():
        out = m.forward_train(b.frames, b.text, None, point_bins=b.point)
    tl = out.token_location_logits  # (A+1, B, N, 2, bins)
    ar = torch.arange(256)
    ok = (tl[..., 0, :].argmax(-1) == ar % 16) & (tl[..., 1, :].argmax(-1) == ar // 16)  # (A+1, B, N)
    obj = b.dense[:, 0, :, 1] > 0  # (B, N) on any object
    tgt = b.on_target.bool()
    for name, sel in (('background', ~obj), ('object', obj), ('target', tgt)):
        a = acc.setdefault(name, [0, 0])
        a[0] = a[0] + ok[:, sel].float().sum(-1); a[1] += int(sel.sum())
for k, (s, n) in acc.items():
    print(k, 'tokens', n, 'own-cell acc per depth', cfg := [round(float(v) / n, 3) for v in s], '(depths', list(m.cfg.align_layers) + ['final'], ')')
print('ViT params with pos:', [n for n, _ in m.vit.named_parameters() if 'pos' in n])
