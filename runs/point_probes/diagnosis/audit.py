import torch, numpy as np, torch.nn.functional as F
torch.set_num_threads(1)
from evtp.models.reference import ReferenceIVS, ReferenceConfig
from evtp.models.reference.train import make_batch, family_weights, losses, point_targets, _start, TrainConfig
from evtp.data.synthetic import make_sample
ck = torch.load('runs/point_attn/ckpt.pt', map_location='cpu', weights_only=False)
cfg = ReferenceConfig.from_json(ck['config'])
m = ReferenceIVS(cfg); m.load_state_dict(ck['model']); m.eval()
tok = m.tok
xs, ys = m.location_ids('x'), m.location_ids('y')
print('x ids', xs, 'y ids', ys, 'vocab', len(tok.vocab), tok.vocab[xs.start], tok.vocab[ys.stop-1])
w = family_weights('image', 1.0, 0.12)
b = make_batch(m, 'image', 0, 6, w)
samples = [make_sample('train', i, 'image', family_weights=w, with_labels=True) for i in range(6)]
for s, p in zip(samples, b.point):
    o = s.meta['objects'][s.meta['target']]
    print(s.instruction, '| target centre px', round(o['x']), round(o['y']), '-> cell', int(o['x']*16/256), int(o['y']*16/256), '| point bins', p.tolist(),
          '| mask at bin centre', bool(s.gt_masks[0][int((p[1]+.5)*16), int((p[0]+.5)*16)]))
with torch.no_grad():
    out = m.forward_train(b.frames, b.text, None, point_bins=b.point)
    ce = F.cross_entropy(out.point_logits.flatten(0,1), b.point.flatten())
    print('point CE (eval mode)', ce.item(), 'x acc', (out.point_logits[:,0].argmax(-1)==b.point[:,0]).float().mean().item(),
          'y acc', (out.point_logits[:,1].argmax(-1)==b.point[:,1]).float().mean().item())
    # sequence
    extra = b.point[:, :1] + xs.start
    inp = m.build_inputs(m.visual_tokens(m.encode_frames(b.frames)[0]), None, b.text, extra_ids=extra)
    print('seq len', inp.embeds.shape[1], 'visual_start', inp.visual_start, 'last', inp.last.tolist())
    print('pos ids tail (t,h,w):', inp.position_ids[:, 0, -4:].tolist(), 'attn tail', inp.attention_mask[0, -4:].tolist())
    # embeddings of the last two positions equal [SEG] and <x_target>?
    E = m.lm.get_input_embeddings().weight
    print('SEG emb match', torch.allclose(inp.embeds[:, -2], E[tok.seg].expand(6, -1)),
          '<x> emb match', torch.allclose(inp.embeds[:, -1], E[extra[:, 0]]))
    # inference decode vs training logits
    r = m.run(b.frames, b.text, keep=1.0, readout='point')
    print('inference point px', r['point'].tolist())
    print('train argmax bins ', torch.stack([out.point_logits[:,0].argmax(-1), out.point_logits[:,1].argmax(-1)],-1).tolist())
    # x logits from inference path
    full = m.build_inputs(m.visual_tokens(m.encode_frames(b.frames)[0]), None, b.text)
    o1 = m.lm_forward(full.without_last(), use_cache=True)
    st = m.lm(inputs_embeds=full.embeds[:, -1:], position_ids=full.position_ids[..., -1:], attention_mask=full.attention_mask,
              past_key_values=o1.past_key_values, use_cache=True)
    xl_inf = m.lm_head(st.last_hidden_state[:, -1])[:, xs]
    print('x logits train vs inference max abs diff', (xl_inf - out.point_logits[:, 0]).abs().max().item())
    print('x logit std over bins per sample', out.point_logits[:,0].std(-1).tolist())
    print('softmax x (sample 0)', F.softmax(out.point_logits[0,0],-1).numpy().round(3))
# gradients
m.train()
out = m.forward_train(b.frames, b.text, None, point_bins=b.point)
ce = F.cross_entropy(out.point_logits.flatten(0,1), b.point.flatten())
ce.backward()
Eg = m.lm.get_input_embeddings().weight.grad; Hg = m.lm_head.weight.grad
print('grad norm embed rows x', Eg[xs].norm().item(), 'y', Eg[ys].norm().item(), 'lm_head rows x', Hg[xs].norm().item(), 'y', Hg[ys].norm().item())
tot = sum(p.grad.norm()**2 for p in m.parameters() if p.grad is not None)**.5
print('total grad norm of point CE alone', tot.item())
for n, p in m.named_parameters():
    if p.grad is not None and 'layers.5' in n and 'o_proj' in n: print(n, p.grad.norm().item())
print('requires_grad embed/lm_head', m.lm.get_input_embeddings().weight.requires_grad, m.lm_head.weight.requires_grad)
print('lm_head row norms words', m.lm_head.weight[:xs.start].norm(dim=1).mean().item(), 'x', m.lm_head.weight[xs].norm(dim=1).mean().item(), 'y', m.lm_head.weight[ys].norm(dim=1).mean().item())
print('embed row norms words', E[:xs.start].norm(dim=1).mean().item(), 'x', E[xs].norm(dim=1).mean().item())
# optimiser groups
ids = {id(p): n for n, p in m.named_parameters()}
print('ckpt opt groups sizes', [len(g['params']) for g in ck['opt']['param_groups']], 'lr', [g['lr'] for g in ck['opt']['param_groups']])
# full loss grad share: total loss vs point loss gradient on last layer
m.zero_grad()
ls = losses(m, b, True)
print({k: round(float(v), 3) for k, v in ls.items()})
