"""The reference model's modules: the vision encoder, the promptable mask decoder, the LM builder
and the prompt's spreading of per-token logits over the grid (`token_heat`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from evtp.models.reference.config import ReferenceConfig, WordTokenizer

# ----------------------------------------------------------------------------------------------
# vision encoder

class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor, want_attention: bool = False):
        B, N, D = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(B, N, D))
        x = x + self.mlp(self.n2(x))
        received = None
        if want_attention:  # attention each token receives, averaged over heads and queries
            w = torch.softmax(q.float() @ k.float().transpose(-1, -2) / math.sqrt(D // self.heads), -1)
            received = w.mean(dim=(1, 2))
        return x, received


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position code (G*G, dim): half the channels encode the row, half the
    column (as in MAE); a strong, learning-free position signal in every visual token."""
    q = dim // 4
    freq = 1.0 / (100.0 ** (torch.arange(q, dtype=torch.float32) / max(q, 1)))
    r, c = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                          indexing="ij")
    parts = []
    for a in (r.reshape(-1), c.reshape(-1)):
        ang = a[:, None] * freq[None]
        parts += [torch.sin(ang), torch.cos(ang)]
    out = torch.cat(parts, -1)
    return F.pad(out, (0, dim - out.shape[1]))


def patch_embedding(cfg: ReferenceConfig) -> nn.Module:
    """(B, 3, S, S) -> (B, Dv, G, G): a convolutional stem of log2(patch) stride-2 3 x 3
    convolutions, channels doubling up to the ViT width (Xiao et al. 2021, "Early convolutions help
    transformers see better")."""
    n = int(round(math.log2(cfg.patch)))
    if 2 ** n != cfg.patch:
        raise ValueError(f"a conv stem needs a power-of-two patch size, got {cfg.patch}")
    widths = [max(cfg.vit_dim >> (n - 1 - i), 8) for i in range(n)]
    layers, c_in = [], 3
    for i, c in enumerate(widths):
        layers += [nn.Conv2d(c_in, c, 3, 2, 1)] + ([nn.GELU()] if i < n - 1 else [])
        c_in = c
    return nn.Sequential(*layers)


class ViT(nn.Module):
    """Patch embedding + learned absolute positions + pre-norm transformer blocks.

    (B, 3, S, S) -> (B, G*G, Dv) features and optionally (B, G*G) received attention of the last
    block (a cheap saliency score for score-based pruning methods).
    """

    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        self.patch = patch_embedding(cfg)
        self.pos = nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid, cfg.vit_dim))
        self.register_buffer("pos_fixed", sincos_2d(cfg.grid, cfg.vit_dim)[None], persistent=False)
        self.blocks = nn.ModuleList(_Block(cfg.vit_dim, cfg.vit_heads, cfg.vit_mlp)
                                    for _ in range(cfg.vit_layers))
        self.norm = nn.LayerNorm(cfg.vit_dim)

    def forward(self, x: torch.Tensor, want_scores: bool = False):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos_fixed + self.pos
        received = None
        for i, blk in enumerate(self.blocks):
            x, r = blk(x, want_scores and i == len(self.blocks) - 1)
            received = r if r is not None else received
        return self.norm(x), received


# ----------------------------------------------------------------------------------------------
# mask decoder

class MaskDecoder(nn.Module):
    """Promptable mask decoder.

    prompt: h_seg (B, Dl) -> a position term over the first frame's grid (B, G*G); `pointer`: h_seg
    and the kept visual tokens (B, K, Dl) -> (B, K) logits that `token_heat` spreads over the grid.
    The heat map is their sum: the prompt points only at tokens the LM read.
    image side: vit (B*T, G*G, Dv) and frames (B*T, 3, S, S) -> features (B*T, C, S/4, S/4).
    mask logits for frame t: f(features_t, location map_t) -> (B, S/4, S/4), where the
    location map of frame 0 is the heat map and of frame t > 0 the previous frame's mask.
    """

    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        c, self.grid = cfg.dec_dim, cfg.grid
        self.heat = nn.Sequential(nn.Linear(cfg.lm_dim, cfg.lm_dim), nn.GELU(),
                                  nn.Linear(cfg.lm_dim, cfg.grid * cfg.grid))
        self.heat_q = nn.Linear(cfg.lm_dim, 64)
        self.heat_k = nn.Linear(cfg.lm_dim, 64)  # keys from the LM's output states of visual tokens
        self.heat_k_in = nn.Linear(cfg.lm_dim, 64)  # keys from the visual tokens the LM read
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 4, 4), nn.GELU(), nn.Conv2d(24, c, 3, padding=1))
        self.vit_in = nn.Conv2d(cfg.vit_dim, c, 1)
        self.fuse = nn.Conv2d(2 * c + 1, c, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1),
                                  nn.GELU(), nn.Conv2d(c, 1, 1))

    def image_features(self, vit: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """vit (M, G*G, Dv), frames (M, 3, S, S) -> (M, 2C, S/4, S/4)."""
        M, _, D = vit.shape
        g = self.grid
        v = self.vit_in(vit.transpose(1, 2).reshape(M, D, g, g))
        pix = self.stem(frames.to(self.vit_in.weight.dtype))
        v = F.interpolate(v, size=pix.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([pix, v], 1)

    def prompt(self, h_seg: torch.Tensor) -> torch.Tensor:
        """h_seg (B, Dl) -> position heat logits (B, G*G) read from [SEG] alone."""
        return self.heat(h_seg)

    def pointer(self, h_seg: torch.Tensor, h_vis: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        """How strongly [SEG] points at each visual token the LM read: h_seg (B, Dl), the LM's
        final states h_vis (B, K, Dl) and input embeddings v_in (B, K, Dl) of the kept visual
        tokens -> logits (B, K)."""
        return (self.heat_q(h_seg)[:, None, :] * (self.heat_k(h_vis) + self.heat_k_in(v_in))).sum(-1) / 8.0

    def heat_map(self, heat_logits: torch.Tensor, size: int) -> torch.Tensor:
        """(B, G*G) -> (B, 1, size, size) in [0, 1] (max-normalised probabilities)."""
        p = torch.softmax(heat_logits.float(), -1)
        p = (p / p.amax(-1, keepdim=True).clamp_min(1e-6)).view(-1, 1, self.grid, self.grid)
        return F.interpolate(p, size=(size, size), mode="bilinear", align_corners=False)

    def decode(self, feats: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """feats (M, 2C, h, w), loc (M, 1, h, w) -> logits (M, h, w)."""
        x = F.gelu(self.fuse(torch.cat([feats, loc.to(feats.dtype)], 1)))
        return self.body(x).squeeze(1)


def memory_map(mask_prob: torch.Tensor) -> torch.Tensor:
    """Previous-frame memory for the next frame's location map: (M, h, w) prob -> (M, 1, h, w),
    dilated by a 5 x 5 max filter so that a moving object stays inside it."""
    return F.max_pool2d(mask_prob.unsqueeze(1).float(), 5, 1, 2)


# ----------------------------------------------------------------------------------------------
# the model

def mrope_section(cfg: ReferenceConfig) -> list[int]:
    """M-RoPE's (t, h, w) split of each head's head_dim / 2 frequency pairs (see the config)."""
    half = cfg.lm_dim // cfg.lm_heads // 2
    if cfg.lm_mrope_section is None:
        t = max(1, half // 6)
        return [t, (half - t) // 2, half - t - (half - t) // 2]
    if len(cfg.lm_mrope_section) != 3 or sum(cfg.lm_mrope_section) != half or min(cfg.lm_mrope_section) < 1:
        raise ValueError(f"lm_mrope_section must be 3 positive numbers summing to head_dim / 2 = {half}, "
                         f"got {cfg.lm_mrope_section}")
    return list(cfg.lm_mrope_section)


def language_model(cfg: ReferenceConfig, tok: WordTokenizer) -> nn.Module:
    """The decoder-only LM: Qwen2-VL's text model (transformers' ``Qwen2VLTextModel``) with
    multimodal RoPE (base ``lm_rope_theta``, sections `mrope_section`), sized by ``cfg``."""
    import transformers

    common = dict(vocab_size=len(cfg.token_vocab), hidden_size=cfg.lm_dim, intermediate_size=cfg.lm_mlp,
                  num_hidden_layers=cfg.lm_layers, num_attention_heads=cfg.lm_heads,
                  num_key_value_heads=cfg.lm_heads,
                  max_position_embeddings=len(cfg.lm_frames) * cfg.grid * cfg.grid + 64,
                  pad_token_id=tok.pad, bos_token_id=tok.bos, eos_token_id=tok.seg)
    rope = {"rope_type": "default", "rope_theta": float(cfg.lm_rope_theta), "mrope_section": mrope_section(cfg)}
    lm_cfg = transformers.Qwen2VLTextConfig(**common, rope_parameters=rope)
    lm_cfg._attn_implementation = "sdpa"
    return transformers.Qwen2VLTextModel(lm_cfg)


def token_heat(token_logits: torch.Tensor, kept: torch.Tensor, positions: torch.Tensor, grid: int) -> torch.Tensor:
    """The LM's per-visual-token target logits spread over the first frame's grid.

    Every grid cell takes the logit of its nearest kept token (Euclidean in grid cells) among the
    kept tokens of frame 0 (of any frame when none of frame 0 is kept); with no kept token at all
    the map is 0. So the prompt is as good as the kept tokens' coverage of the target.

    Args:
        token_logits: (B, K) float, kept: (B, K) long (-1 padding), positions: (N, P) long grid
            coordinates of all visual tokens (P = 2 or 3, frame first).
    Returns:
        (B, G*G) float.
    """
    B, K = kept.shape
    if K == 0:
        return token_logits.new_zeros((B, grid * grid))
    pos = positions[kept.clamp_min(0)]  # (B, K, P)
    rc = pos[..., -2:].float()
    valid = kept >= 0
    if pos.shape[-1] == 3:
        f0 = valid & (pos[..., 0] == 0)
        valid = torch.where(f0.any(1, keepdim=True), f0, valid)
    r, c = torch.meshgrid(torch.arange(grid, device=kept.device), torch.arange(grid, device=kept.device),
                          indexing="ij")
    cells = torch.stack([r.reshape(-1), c.reshape(-1)], -1).float()  # (G*G, 2)
    d = torch.cdist(cells[None].expand(B, -1, -1), rc)  # (B, G*G, K)
    d = d.masked_fill(~valid[:, None, :], float("inf"))
    near = d.argmin(-1)  # (B, G*G)
    out = token_logits.gather(1, near)
    return torch.where(valid.any(1, keepdim=True), out, torch.zeros_like(out))
