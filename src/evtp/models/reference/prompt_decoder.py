"""The `seg` readout's class-agnostic promptable mask decoder (LISA / Sa2VA style, SAM-like and small).

LISA and Sa2VA hand SAM / SAM2 one prompt: the ``[SEG]`` token's last hidden state, projected by an
MLP (LISA's ``text_hidden_fcs``) to the segmenter's prompt width. This module is that segmenter at
the reference model's size, built from SAM's public structure:

* **Image features** of every frame at 1/4 resolution that do not depend on pruning: a convolutional
  pixel stem plus the ViT's patch features (upsampled), its own copies of what the dense decoder
  reads, with a fixed Fourier position code added to the keys (SAM's dense positional encoding).
* **A dense prompt** (SAM's mask input): on video frames t > 0 the previous frame's mask (dilated,
  `memory_map`), the memory SAM2 propagates; a learned "no mask" embedding on frame 0 / images.
* **Two-way transformer** (SAM's ``TwoWayTransformer``, ``seg_layers`` blocks): an output token and
  the one prompt token attend to each other, then to the image, and the image attends back to them.
* **Mask head**: the output token through an MLP (SAM's hypernetwork) dotted with every pixel's
  feature, refined by two convolutions over (features, that map) -> mask logits at 1/4 resolution.
* **Geometry prompt encoder** (SAM's prompt encoder, training-only): the ground truth's point (its
  innermost pixel) and box in frame 0 -> one prompt token, the Fourier code of each of the three
  points plus a learned embedding per kind, through an MLP. The decoder is pretrained on these
  prompts and then frozen: it only ever learns to segment *where* a prompt points, never from
  words, so it cannot pick objects by colour words on its own.

Shapes (M = batch x frames, d = ``seg_dim``, h = w = S/4):

    vit (M, G*G, Dv), frames (M, 3, S, S)  ->  features (M, d, h, w)
    prompt (M, d), memory (M, 1, h, w)     ->  mask logits (M, h, w)
    geometry (B, 6) = (px, py, x0, y0, x1, y1) in [0, 1]  ->  prompt (B, d)
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evtp.models.reference.config import ReferenceConfig
from evtp.models.reference.modules import memory_map


def fourier_positions(coords: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed Fourier code of points: coords (..., 2) (x, y) in [0, 1] -> (..., dim), sines and
    cosines of each coordinate at ``dim // 4`` frequencies from pi to 32 pi (periods of the whole
    image down to 1/16 of it), zero-padded to ``dim``."""
    n = max(dim // 4, 1)
    freq = math.pi * 2.0 ** torch.linspace(0, 5, n, device=coords.device)
    ang = coords.float()[..., None] * freq  # (..., 2, n)
    out = torch.cat([torch.sin(ang), torch.cos(ang)], -1).flatten(-2)
    return F.pad(out, (0, dim - out.shape[-1]))


def grid_positions(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """The Fourier code of every cell centre of an h x w grid: (1, h*w, dim), raster order."""
    ys, xs = torch.meshgrid((torch.arange(h, device=device) + 0.5) / h, (torch.arange(w, device=device) + 0.5) / w,
                            indexing="ij")
    return fourier_positions(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1), dim)[None]


def prompt_geometry(masks: np.ndarray) -> torch.Tensor:
    """The ground-truth geometry prompt: masks (B, H, W) bool (the target in frame 0) -> (B, 6)
    float (px, py, x0, y0, x1, y1) in [0, 1]: the target's innermost pixel (the maximum of its
    distance transform, inside the object even for stars) and its box (pixel edges). An empty mask
    gives the image centre and an empty box at it."""
    import cv2

    out = []
    for m in masks:
        H, W = m.shape
        if not m.any():
            out.append([0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
            continue
        dist = cv2.distanceTransform(np.pad(m.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(dist.argmax()), dist.shape)
        ys, xs = np.nonzero(m)
        out.append([(x + 0.5) / W, (y + 0.5) / H, xs.min() / W, ys.min() / H, (xs.max() + 1) / W, (ys.max() + 1) / H])
    return torch.tensor(out, dtype=torch.float32)


class _Attention(nn.Module):
    """Multi-head attention with separate query, key and value inputs: q (M, Q, d), k and v
    (M, K, d) -> (M, Q, d)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        M, Q, d = q.shape

        def split(x):
            return x.view(M, x.shape[1], self.heads, d // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(self.q(q)), split(self.k(k)), split(self.v(v)))
        return self.out(a.transpose(1, 2).reshape(M, Q, d))


class TwoWayBlock(nn.Module):
    """SAM's two-way attention block: token self-attention, tokens -> image, token MLP, image ->
    tokens (post-norm). The tokens' own code (``token_pe``, the initial tokens) and the image's
    position code are added to queries and keys at every attention, as in SAM."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn, self.to_image, self.to_tokens = (_Attention(dim, heads) for _ in range(3))
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))

    def forward(self, tokens, token_pe, image, image_pe):
        """tokens (M, 2, d), token_pe (M, 2, d), image (M, hw, d), image_pe (1, hw, d) -> (tokens, image)."""
        q = tokens + token_pe
        tokens = self.norms[0](tokens + self.self_attn(q, q, tokens))
        keys = image + image_pe
        tokens = self.norms[1](tokens + self.to_image(tokens + token_pe, keys, image))
        tokens = self.norms[2](tokens + self.mlp(tokens))
        image = self.norms[3](image + self.to_tokens(keys, tokens + token_pe, tokens))
        return tokens, image


class GeometryPromptEncoder(nn.Module):
    """Training-only: a ground-truth point and box -> one prompt token (see the module docstring).
    geometry (B, 6) in [0, 1] -> (B, d)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.kind = nn.Parameter(torch.randn(3, dim))  # point, box top-left, box bottom-right
        self.mlp = nn.Sequential(nn.Linear(3 * dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, geometry: torch.Tensor) -> torch.Tensor:
        pts = geometry.view(geometry.shape[0], 3, 2)
        code = fourier_positions(pts, self.dim).to(self.kind.dtype) + self.kind
        return self.mlp(code.flatten(1))


def seg_projection(cfg: ReferenceConfig) -> nn.Module:
    """LISA's ``text_hidden_fcs``: the ``[SEG]`` hidden state (B, Dl) -> the decoder's prompt (B, d)."""
    return nn.Sequential(nn.Linear(cfg.lm_dim, cfg.lm_dim), nn.ReLU(), nn.Linear(cfg.lm_dim, cfg.seg_dim))


class PromptableMaskDecoder(nn.Module):
    """The class-agnostic promptable mask decoder of the `seg` readout (see the module docstring)."""

    def __init__(self, cfg: ReferenceConfig):
        super().__init__()
        d = cfg.seg_dim
        if d < 4 or d % cfg.seg_heads or cfg.seg_layers < 1:
            raise ValueError(f"seg_dim must be >= 4 and divisible by seg_heads, seg_layers >= 1; got "
                             f"seg_dim={d}, seg_heads={cfg.seg_heads}, seg_layers={cfg.seg_layers}")
        self.dim, self.grid = d, cfg.grid
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4), nn.GELU(), nn.Conv2d(16, d, 3, padding=1))
        self.vit_in = nn.Conv2d(cfg.vit_dim, d, 1)
        self.feature_norm = nn.LayerNorm(d)
        self.memory_in = nn.Sequential(nn.Conv2d(1, d // 2, 3, padding=1), nn.GELU(), nn.Conv2d(d // 2, d, 1))
        self.no_memory = nn.Parameter(torch.zeros(d))
        self.output_token = nn.Parameter(torch.randn(d) * 0.1)
        self.blocks = nn.ModuleList(TwoWayBlock(d, cfg.seg_heads) for _ in range(cfg.seg_layers))
        self.final = _Attention(d, cfg.seg_heads)
        self.final_norm = nn.LayerNorm(d)
        self.hyper = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.head = nn.Sequential(nn.Conv2d(d + 1, d, 3, padding=1), nn.GELU(), nn.Conv2d(d, 1, 1))
        self.geometry_prompt = GeometryPromptEncoder(d)

    def image_features(self, vit: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """vit (M, G*G, Dv), frames (M, 3, S, S) in [0, 1] -> (M, d, S/4, S/4)."""
        M, _, D = vit.shape
        g = self.grid
        pix = self.stem(frames.to(self.vit_in.weight.dtype))
        v = self.vit_in(vit.transpose(1, 2).reshape(M, D, g, g).to(self.vit_in.weight.dtype))
        x = pix + F.interpolate(v, size=pix.shape[-2:], mode="bilinear", align_corners=False)
        return self.feature_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, feats: torch.Tensor, prompt: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """feats (M, d, h, w), prompt (M, d), memory (M, 1, h, w) in [0, 1] or None -> logits (M, h, w)."""
        M, d, h, w = feats.shape
        dense = self.memory_in(memory.to(feats.dtype)) if memory is not None else self.no_memory[:, None, None]
        image = (feats + dense).flatten(2).transpose(1, 2)  # (M, hw, d)
        image_pe = grid_positions(h, w, d, feats.device).to(feats.dtype)
        tokens = torch.stack([self.output_token.expand(M, d), prompt.to(feats.dtype)], 1)
        token_pe = tokens
        for block in self.blocks:
            tokens, image = block(tokens, token_pe, image, image_pe)
        tokens = self.final_norm(tokens + self.final(tokens + token_pe, image + image_pe, image))
        img = image.transpose(1, 2).reshape(M, d, h, w)
        dot = torch.einsum("mdhw,md->mhw", img, self.hyper(tokens[:, 0]))[:, None] / math.sqrt(d)
        return (dot + self.head(torch.cat([img, dot], 1))).squeeze(1)

    def teacher_forced(self, vit: torch.Tensor, frames: torch.Tensor, prompt: torch.Tensor,
                       prev_masks: torch.Tensor | None) -> torch.Tensor:
        """Training: vit (B, T, G*G, Dv), frames (B, T, 3, S, S), prompt (B, d), prev_masks
        (B, T, h, w) ground truth of the previous frame at index t (None for images) -> logits
        (B, T, h, w); frame 0 unprompted by a mask, frame t > 0 by frame t-1's ground truth (dilated).
        The image features carry no gradient when neither the ViT nor this decoder learns."""
        B, T = frames.shape[:2]
        learns = vit.requires_grad or self.stem[0].weight.requires_grad
        with torch.set_grad_enabled(torch.is_grad_enabled() and learns):
            feats = self.image_features(vit.flatten(0, 1), frames.flatten(0, 1))
        feats = feats.view(B, T, *feats.shape[1:])
        first = self(feats[:, 0], prompt)[:, None]
        if T == 1:
            return first
        mem = memory_map(prev_masks[:, 1:].flatten(0, 1))
        rest = self(feats[:, 1:].flatten(0, 1), prompt.repeat_interleave(T - 1, 0), mem)
        return torch.cat([first, rest.view(B, T - 1, *rest.shape[1:])], 1)

    def segment_clip(self, feats: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Inference, frame by frame: feats (B, T, d, h, w), prompt (B, d) -> logits (B, T, h, w);
        frame t > 0 is also prompted by frame t-1's predicted mask (dilated, `memory_map`)."""
        logits, memory = [], None
        for t in range(feats.shape[1]):
            lg = self(feats[:, t], prompt, memory)
            logits.append(lg)
            memory = memory_map(torch.sigmoid(lg.float()))
        return torch.stack(logits, 1)
