"""The reference IVS model: ViT -> projector -> [pruning hook] -> decoder-only LM -> [SEG] -> mask decoder.

The architecture follows real instructed-segmentation MLLMs (LISA, Sa2VA) at a size that trains on
a CPU (see docs/reference_model.md):

* **Vision encoder**: a ViT over 16 x 16 patches (a 16 x 16 token grid per frame) with a
  convolutional stem, run on every frame.
* **Projector**: a 2-layer MLP from ViT width to LM width (the visual tokens the LM reads).
* **Pruning hook** (`select_visual_tokens`): between projector and LM, any `evtp.select_tokens`
  method. Kept tokens keep their original position ids (default) or are re-indexed contiguously.
* **Language model**: a decoder-only Llama (transformers ``LlamaModel``, RoPE) that reads
  ``[BOS] instruction visual tokens`` and emits ``[SEG]``; the ``[SEG]`` hidden state is the prompt.
  By default the prefix attends to itself bidirectionally (PaliGemma's prefix-LM mask), so every
  visual token can compare itself with all the others; ``lm_attention="causal"`` is LLaVA's mask.
* **Mask decoder** (promptable, SAM style): from the ``[SEG]`` hidden state it makes a point prompt
  (a heat map over the first frame's 16 x 16 grid: a position term read from ``[SEG]`` plus a
  pointer, ``[SEG]``'s query against the kept visual tokens' LM input and output states, spread to
  the nearest kept token) and an appearance embedding (FiLM), and
  segments, at 1/4 resolution, full-resolution features that do not depend on pruning (the ViT
  features of every frame plus a convolutional pixel stem). Later video frames are prompted by the
  previous frame's mask (a memory, as SAM2 propagates). It has no access to the instruction other
  than through ``[SEG]``, and it cannot compare objects globally, so deciding *which* object is the
  language model's job.

Shapes (B batch, T frames, F LM frames, G = 16 grid side, N = F * G * G visual tokens):

    frames (B, T, 3, S, S) float in [0, 1]   ->  vit (B, T, G*G, Dv)
    visual (B, N, Dl), positions (N, 3) or (N, 2)
    kept (B, K) long (-1 padding)             ->  LM input (B, 1 + K + L, Dl)
    h_seg (B, Dl)                             ->  heat (B, G*G), mask logits (B, T, S/4, S/4)
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evtp.data.synthetic import COLORS, SHAPES, VOCAB_WORDS
from evtp.data.types import Sample
from evtp.models.base import Prediction

SPECIALS = ("[PAD]", "[BOS]", "[SEG]", "[UNK]")
N_COLOR_CLASSES = len(COLORS) + 1  # + background
N_SHAPE_CLASSES = len(SHAPES) + 1
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass
class ReferenceConfig:
    """Plain-data model configuration (saved next to the weights as JSON)."""

    image_size: int = 256
    patch: int = 16
    frames: int = 8  # frames per video the mask decoder segments
    lm_frames: tuple[int, ...] = (0, 2, 4, 5, 7)  # video frames the LM reads (5, as Sa2VA: 1280 tokens)
    vit_dim: int = 128
    vit_layers: int = 2
    vit_heads: int = 4
    vit_mlp: int = 256
    # "conv": four stride-2 3x3 convolutions make the 16 x 16 patches (a convolutional stem, as in
    # Xiao et al. 2021, "Early convolutions help transformers see better"); "linear": one 16 x 16
    # linear patch embedding (the original ViT)
    vit_stem: str = "conv"
    lm_dim: int = 192
    lm_layers: int = 6
    lm_heads: int = 4
    lm_mlp: int = 512
    # "1d": Llama's rotary positions, one index per token (visual tokens in raster order, so a
    # token's left neighbour is 1 away and the one above it 16); "mrope": Qwen2-VL's multimodal
    # RoPE, visual tokens at (frame, row, column), each rotating its own share of every head's
    # frequencies (``lm_mrope_section``, pairs of dims for t, h, w), text at (i, i, i)
    # (measured in docs/reference_model.md; the shipped weights and `make train` use "mrope" via
    # configs/reference_mrope.json, the default stays "1d" so that older weights load as trained)
    lm_rope: str = "1d"
    # RoPE base. "1d": Qwen2's 1e6 rather than Llama-2's 1e4, so that the low-frequency half of
    # each head still matches content across 1,300 positions. "mrope": positions span only ~35
    # (instruction + 16 rows / columns); 50 gives the column section (the lowest frequencies)
    # 0.4-1.5 rad across the 16 columns, so that "left of" is a smooth function of the offset
    # (configs/reference_mrope.json)
    lm_rope_theta: float = 1e6
    # M-RoPE frequency pairs for (t, h, w), summing to head_dim / 2; None: a sixth to t (5 frames
    # need few), the rest to h and w (24 pairs at the default width: 4, 10, 10)
    lm_mrope_section: tuple[int, ...] | None = None
    dec_dim: int = 24
    # "prefix": the prefix ([BOS], instruction, visual tokens) attends to itself bidirectionally and
    # [SEG] attends to everything, as in PaliGemma's prefix-LM; "causal": LLaVA-style causal attention
    lm_attention: str = "prefix"
    # FiLM of the mask decoder by an appearance embedding read from [SEG]. Off by default: with it,
    # the decoder could pick objects by colour / shape from the words alone, i.e. choose the
    # object itself instead of segmenting what the LM's prompt points at
    appearance_prompt: bool = False
    # training-only intermediate supervision: after this LM layer (0 = none), a head reads every
    # visual token's state and predicts whether it lies on a member of the expression's reference
    # set and on its anchor object (the two steps a relational expression is solved in). Alone it
    # gave no gain in 27 minutes (docs/reference_model.md); the shipped recipe uses it (layer 3)
    role_layer: int = 0
    # training-only intermediate supervision for video: after this LM layer (0 = none), a head
    # reads every visual token's state and regresses the motion of the object under it (velocity
    # and the frame it stops at). A token sees its object in one frame only, so it must find the
    # same object in the other frames: the cross-frame link that motion and temporal expressions
    # need. In a 30-minute probe (layer 3) its loss hardly fell and validation accuracy dropped on
    # images and video (docs/reference_model.md); kept as an option so that the probe reproduces
    motion_layer: int = 0
    # frames per LM visual token, as Qwen2-VL's temporal patch: 1 = one frame; 2 = the token of
    # frame f also carries how the ViT features at its patch change to the next frame
    # (v[a+1] - v[a], a = min(f, T-2); zero for images), which makes local motion visible to the
    # LM without matching objects across frames. The ViT encodes every frame anyway (the mask
    # decoder reads them), so it costs only the projector's wider input
    temporal_patch: int = 1
    # training-only word-space alignment (LLaVA's projector-alignment idea, kept inside the LM):
    # at each listed depth (0 = the projector's output, i.e. the visual tokens the LM reads;
    # l >= 1 = the LM's state after layer l, through a parameter-free layer norm) every visual
    # token on an object is read through the LM's own input word-embedding matrix E,
    # ``logits = h @ E^T / sqrt(lm_dim)``, and trained toward its object's colour word and shape
    # word. Visual tokens then speak the words the instruction is made of, and keep them inside
    # the LM (docs/reference_model.md, "Reference model v2")
    align_layers: tuple[int, ...] = ()
    vocab: tuple[str, ...] = field(default_factory=lambda: SPECIALS + VOCAB_WORDS)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    def to_json(self) -> dict:
        d = asdict(self)
        d["lm_frames"] = list(self.lm_frames)
        if self.lm_mrope_section is not None:
            d["lm_mrope_section"] = list(self.lm_mrope_section)
        d["vocab"] = list(self.vocab)
        d["align_layers"] = list(self.align_layers)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ReferenceConfig":
        d = dict(d)
        d["lm_frames"] = tuple(d["lm_frames"])
        d["vocab"] = tuple(d["vocab"])
        if d.get("lm_mrope_section") is not None:
            d["lm_mrope_section"] = tuple(d["lm_mrope_section"])
        d.setdefault("lm_rope", "1d")
        d.setdefault("lm_attention", "causal")  # weights saved before these options existed
        d.setdefault("vit_stem", "linear")
        d.setdefault("lm_rope_theta", 1e4)
        d.setdefault("appearance_prompt", True)
        d.setdefault("role_layer", 0)
        d.setdefault("motion_layer", 0)
        d.setdefault("temporal_patch", 1)
        d["align_layers"] = tuple(d.get("align_layers", ()))
        return cls(**d)


class WordTokenizer:
    """Word-level tokenizer over the benchmark vocabulary (unknown words map to ``[UNK]``)."""

    def __init__(self, vocab: tuple[str, ...]):
        self.vocab = tuple(vocab)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad, self.bos, self.seg, self.unk = (self.ids[s] for s in SPECIALS)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, self.unk) for w in text.lower().split()]


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
    """(B, 3, S, S) -> (B, Dv, G, G): a linear 16 x 16 patch embedding or a convolutional stem of
    log2(patch) stride-2 3 x 3 convolutions (channels doubling up to the ViT width)."""
    if cfg.vit_stem == "linear":
        return nn.Conv2d(3, cfg.vit_dim, cfg.patch, cfg.patch)
    if cfg.vit_stem != "conv":
        raise ValueError(f"vit_stem must be 'conv' or 'linear', got {cfg.vit_stem!r}")
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

    prompt: h_seg (B, Dl) -> a position term over the first frame's grid (B, G*G) + FiLM (gamma,
    beta); `pointer`: h_seg and the kept visual tokens (B, K, Dl) -> (B, K) logits that `token_heat`
    spreads over the grid. The heat map is their sum: the prompt points only at tokens the LM read.
    image side: vit (B*T, G*G, Dv) and frames (B*T, 3, S, S) -> features (B*T, C, S/4, S/4).
    mask logits for frame t: f(features_t, location map_t, FiLM) -> (B, S/4, S/4), where the
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
        self.dec_dim = c
        self.film = nn.Sequential(nn.Linear(cfg.lm_dim, cfg.lm_dim), nn.GELU(), nn.Linear(cfg.lm_dim, 2 * c)) \
            if cfg.appearance_prompt else None
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
        pix = self.stem(frames)
        v = F.interpolate(v, size=pix.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([pix, v], 1)

    def prompt(self, h_seg: torch.Tensor):
        """h_seg (B, Dl) -> position heat logits (B, G*G) read from [SEG] alone, film (B, 2C)
        (zeros, i.e. no modulation, without ``appearance_prompt``)."""
        film = self.film(h_seg) if self.film is not None else h_seg.new_zeros(h_seg.shape[0], 2 * self.dec_dim)
        return self.heat(h_seg), film

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

    def decode(self, feats: torch.Tensor, loc: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """feats (M, 2C, h, w), loc (M, 1, h, w), film (M, 2C) -> logits (M, h, w)."""
        x = self.fuse(torch.cat([feats, loc.to(feats.dtype)], 1))
        gamma, beta = film.to(x.dtype).chunk(2, -1)
        x = F.gelu(x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None])
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
    """The decoder-only LM: transformers' ``LlamaModel`` (``lm_rope="1d"``) or Qwen2-VL's text
    model with multimodal RoPE (``"mrope"``), sized by ``cfg``."""
    import transformers

    common = dict(vocab_size=len(cfg.vocab), hidden_size=cfg.lm_dim, intermediate_size=cfg.lm_mlp,
                  num_hidden_layers=cfg.lm_layers, num_attention_heads=cfg.lm_heads,
                  num_key_value_heads=cfg.lm_heads,
                  max_position_embeddings=len(cfg.lm_frames) * cfg.grid * cfg.grid + 64,
                  pad_token_id=tok.pad, bos_token_id=tok.bos, eos_token_id=tok.seg)
    rope = {"rope_type": "default", "rope_theta": float(cfg.lm_rope_theta)}
    if cfg.lm_rope == "1d":
        lm_cfg = transformers.LlamaConfig(**common, rope_parameters=rope)
        model_cls = transformers.LlamaModel
    elif cfg.lm_rope == "mrope":
        section = mrope_section(cfg)
        lm_cfg = transformers.Qwen2VLTextConfig(**common, rope_parameters={**rope, "mrope_section": section})
        model_cls = transformers.Qwen2VLTextModel
    else:
        raise ValueError(f"lm_rope must be '1d' or 'mrope', got {cfg.lm_rope!r}")
    lm_cfg._attn_implementation = "sdpa"
    return model_cls(lm_cfg)


class ReferenceIVS(nn.Module):
    """The reference model (an `evtp.models.IVSModel`): see the module docstring."""

    name = "reference"

    def __init__(self, cfg: ReferenceConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ReferenceConfig()
        self.tok = WordTokenizer(cfg.vocab)
        self.vit = ViT(cfg)
        # the projector ends in a LayerNorm and the word embeddings start at unit scale, so that
        # visual and text tokens enter the LM's residual stream at comparable magnitudes
        if cfg.temporal_patch not in (1, 2):
            raise ValueError(f"temporal_patch must be 1 or 2, got {cfg.temporal_patch}")
        self.projector = nn.Sequential(nn.Linear(cfg.vit_dim * cfg.temporal_patch, cfg.lm_dim), nn.GELU(),
                                       nn.Linear(cfg.lm_dim, cfg.lm_dim), nn.LayerNorm(cfg.lm_dim))
        self.frame_embed = nn.Parameter(torch.zeros(max(len(cfg.lm_frames), 1), cfg.lm_dim))
        self.lm = language_model(cfg, self.tok)
        nn.init.normal_(self.lm.get_input_embeddings().weight, std=1.0)
        self.lm_head = nn.Linear(cfg.lm_dim, len(cfg.vocab), bias=False)
        self.decoder = MaskDecoder(cfg)
        # training-only dense head on the ViT: per-patch colour, shape and size of the object under
        # the patch (stands in for the pretraining of real MLLMs' vision encoders)
        self.vit_aux = nn.Linear(cfg.vit_dim, N_COLOR_CLASSES + N_SHAPE_CLASSES + 1)
        # training-only head on the LM's visual-token states: "is this token on the target?"
        self.token_aux = nn.Linear(cfg.lm_dim, 1)
        if not 0 <= cfg.role_layer <= cfg.lm_layers:
            raise ValueError(f"role_layer must be in 0 .. lm_layers={cfg.lm_layers}, got {cfg.role_layer}")
        # training-only head on an intermediate layer: (member of the reference set, anchor)
        self.role_aux = nn.Linear(cfg.lm_dim, 2) if cfg.role_layer else None
        if not 0 <= cfg.motion_layer <= cfg.lm_layers:
            raise ValueError(f"motion_layer must be in 0 .. lm_layers={cfg.lm_layers}, got {cfg.motion_layer}")
        # training-only head on an intermediate layer (video): the motion of the object under each
        # token, (vx, vy, stop) scaled as in `evtp.models.train.motion_targets`
        self.motion_aux = nn.Linear(cfg.lm_dim, 3) if cfg.motion_layer else None
        bad = [layer for layer in cfg.align_layers if not 0 <= layer <= cfg.lm_layers]
        if bad or len(set(cfg.align_layers)) != len(cfg.align_layers):
            raise ValueError(f"align_layers must be distinct depths in 0 .. lm_layers={cfg.lm_layers}, "
                             f"got {list(cfg.align_layers)}")
        self.register_buffer("pixel_mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    # -- pieces ---------------------------------------------------------------------------------
    def lm_frame_ids(self, T: int) -> list[int]:
        """Frames the LM reads for a clip of T frames (all of ``cfg.lm_frames`` below T; T = 1: [0])."""
        if T == 1:
            return [0]
        ids = [f for f in self.cfg.lm_frames if f < T]
        if not ids:
            raise ValueError(f"a video of {T} frames has none of the LM frames {self.cfg.lm_frames}")
        return ids

    def token_positions(self, n_frames: int, device=None) -> torch.Tensor:
        """Grid coordinates of the LM's visual tokens: (N, 2) (row, col) for one frame, else
        (N, 3) (frame, row, col) with frame = index among the LM frames."""
        g = self.cfg.grid
        r, c = torch.meshgrid(torch.arange(g, device=device), torch.arange(g, device=device), indexing="ij")
        rc = torch.stack([r.reshape(-1), c.reshape(-1)], -1)
        if n_frames == 1:
            return rc
        f = torch.arange(n_frames, device=device).repeat_interleave(g * g)[:, None]
        return torch.cat([f, rc.repeat(n_frames, 1)], -1)

    def encode_frames(self, frames: torch.Tensor, want_scores: bool = False):
        """frames (B, T, 3, S, S) in [0, 1] -> vit features (B, T, G*G, Dv), scores (B, T, G*G) or None."""
        B, T = frames.shape[:2]
        x = ((frames.flatten(0, 1) - self.pixel_mean) / self.pixel_std).to(self.pixel_mean.dtype)
        feats, rec = self.vit(x, want_scores)
        return feats.view(B, T, *feats.shape[1:]), None if rec is None else rec.view(B, T, -1)

    def visual_tokens(self, vit: torch.Tensor) -> torch.Tensor:
        """vit (B, T, G*G, Dv) -> projected LM-frame tokens (B, N, Dl) (see ``cfg.temporal_patch``)."""
        T = vit.shape[1]
        ids = self.lm_frame_ids(T)
        x = vit[:, ids]
        if self.cfg.temporal_patch == 2:
            a = [max(min(f, T - 2), 0) for f in ids]
            b = [min(i + 1, T - 1) for i in a]
            x = torch.cat([x, vit[:, b] - vit[:, a]], -1)  # zero for T = 1
        return self.projector(x.flatten(1, 2))

    def build_inputs(self, visual: torch.Tensor, kept: torch.Tensor | None, text_ids: list[list[int]],
                     *, contiguous: bool = False, append_seg: bool = True):
        """Assemble the LM input: ``[PAD]* [BOS] instruction <kept visual tokens> [SEG]``.

        The instruction comes first (left-padded to the batch's longest), so that every visual token
        can attend to it; the visual tokens and ``[SEG]`` then sit at the same indices in every row.

        Args:
            visual: (B, N, Dl) projected visual tokens (all of them).
            kept: (B, K) long kept indices (-1 padding), None = all tokens, or a (B, 0) tensor for
                no visual tokens at all.
            text_ids: B lists of instruction token ids.
            contiguous: re-index kept tokens ``s+1 .. s+K`` (s = the instruction's last position)
                instead of keeping their original ids: ``s + 1 + index`` with 1-D RoPE,
                ``s + 1 + (frame, row, column)`` with M-RoPE (where re-indexing gives every
                kept token ``(s+i, s+i, s+i)``, as text).
            append_seg: append the ``[SEG]`` token (training / single-pass inference).
        Returns:
            embeds (B, L, Dl), position_ids (B, L) (1-D RoPE) or (3, B, L) (M-RoPE: t, h, w),
            attention_mask (B, L) long, vis_start (int, index
            of the first visual token), last (B,) index of the final token (``[SEG]`` if appended,
            else the last visual token or, with none, the last instruction word).
        """
        B, N, D = visual.shape
        dev = visual.device
        if kept is None:
            kept = torch.arange(N, device=dev).expand(B, N)
        K = kept.shape[1]
        valid = kept >= 0
        idx = kept.clamp_min(0)
        vis = visual.gather(1, idx[..., None].expand(-1, -1, D))
        per_frame = self.cfg.grid * self.cfg.grid
        vis = vis + self.frame_embed[(idx // per_frame).clamp_max(self.frame_embed.shape[0] - 1)]
        heads = [[self.tok.bos] + list(t) for t in text_ids]
        L = max(len(h) for h in heads)
        tid = torch.full((B, L), self.tok.pad, dtype=torch.long, device=dev)
        tmask = torch.zeros((B, L), dtype=torch.long, device=dev)
        tpos = torch.zeros((B, L), dtype=torch.long, device=dev)
        for b, h in enumerate(heads):
            tid[b, L - len(h):] = torch.tensor(h, dtype=torch.long, device=dev)
            tmask[b, L - len(h):] = 1
            tpos[b, L - len(h):] = torch.arange(len(h), device=dev)
        text_end = tpos[:, -1:]  # (B, 1) position of the last instruction word
        mrope = self.cfg.lm_rope == "mrope"
        if mrope:
            tpos = tpos.expand(3, B, L)
        if contiguous:
            vpos = text_end + valid.long().cumsum(1)
            seg_pos = text_end + valid.sum(1, keepdim=True) + 1
            if mrope:
                vpos, seg_pos = vpos.expand(3, B, K), seg_pos.expand(3, B, 1)
        elif mrope:
            g = self.cfg.grid
            vpos = text_end + 1 + torch.stack([idx // per_frame, idx % per_frame // g, idx % g])
            seg_pos = (text_end + 1 + max(g, N // per_frame)).expand(3, B, 1)
        else:
            vpos = text_end + 1 + idx
            seg_pos = text_end + 1 + N
        emb_layer = self.lm.get_input_embeddings()
        parts, pos, attn = [emb_layer(tid), vis.to(emb_layer.weight.dtype)], [tpos, vpos], [tmask, valid.long()]
        if append_seg:
            parts.append(emb_layer(torch.full((B, 1), self.tok.seg, dtype=torch.long, device=dev)))
            pos.append(seg_pos)
            attn.append(torch.ones((B, 1), dtype=torch.long, device=dev))
        embeds, pos, attn = torch.cat(parts, 1), torch.cat(pos, -1), torch.cat(attn, 1)
        last = torch.full((B,), embeds.shape[1] - 1, dtype=torch.long, device=dev)
        return embeds, pos, attn, L, last

    def lm_mask(self, attn: torch.Tensor, prefix_len: int) -> torch.Tensor:
        """Attention mask for a full (prefill or training) pass.

        attn (B, L) long (1 = real token) -> the 2-D mask itself for ``lm_attention="causal"``, else
        a 4-D boolean mask (B, 1, L, L) (True = may attend): positions < ``prefix_len`` attend to
        every real prefix token, later ones (``[SEG]``) causally to everything before them.
        Padding rows attend to themselves only, so that no row is empty.
        """
        if self.cfg.lm_attention == "causal":
            return attn
        if self.cfg.lm_attention != "prefix":
            raise ValueError(f"lm_attention must be 'prefix' or 'causal', got {self.cfg.lm_attention!r}")
        L = attn.shape[1]
        ar = torch.arange(L, device=attn.device)
        allowed = (ar[None, :] < prefix_len) | (ar[None, :] <= ar[:, None])  # (L, L) query x key
        m = allowed[None] & attn.bool()[:, None, :]
        return (m | torch.eye(L, dtype=torch.bool, device=attn.device)[None])[:, None]

    def lm_forward(self, embeds, pos, attn, prefix_len: int | None = None, **kw):
        # always pass a mask: without one, transformers infers "packed sequences" from any jump in
        # position_ids (which pruning with original positions creates) and masks across them
        mask = self.lm_mask(attn, embeds.shape[1] if prefix_len is None else prefix_len)
        return self.lm(inputs_embeds=embeds, position_ids=pos, attention_mask=mask, **kw)

    def prompt(self, h_seg: torch.Tensor, h_vis: torch.Tensor, visual: torch.Tensor, kept: torch.Tensor,
               positions: torch.Tensor):
        """The decoder's prompt from the LM's outputs.

        Args:
            h_seg: (B, Dl) ``[SEG]`` state; h_vis: (B, K, Dl) the LM's final states of the kept
                visual tokens; visual: (B, N, Dl) all projected visual tokens; kept: (B, K) long
                (-1 padding); positions: (N, P) grid coordinates of all visual tokens.
        Returns:
            heat logits (B, G*G) (position term + the per-token logits spread by `token_heat`),
            film (B, 2C), per-token logits (B, K) (own target logit + the `[SEG]` pointer).
        """
        v_in = visual.gather(1, kept.clamp_min(0)[..., None].expand(-1, -1, visual.shape[-1]))
        token_logits = self.token_aux(h_vis).squeeze(-1) + self.decoder.pointer(h_seg, h_vis, v_in)
        heat, film = self.decoder.prompt(h_seg)
        return heat + token_heat(token_logits.float(), kept, positions, self.cfg.grid), film, token_logits

    # -- training forward -------------------------------------------------------------------------
    def forward_train(self, frames: torch.Tensor, text_ids: list[list[int]], prev_masks: torch.Tensor | None):
        """Full-token teacher-forced forward.

        Args:
            frames: (B, T, 3, S, S) float in [0, 1].
            text_ids: B instruction token-id lists.
            prev_masks: (B, T, S/4, S/4) float ground-truth masks of the previous frame for frames
                t >= 1 (index t holds frame t-1's mask), or None for images.
        Returns:
            dict with mask logits (B, T, S/4, S/4), heat logits (B, G*G), seg_logits (B, V) (the
            LM's next-token logits before ``[SEG]``), vit_aux (B, T, G*G, C) the ViT head's
            per-patch logits, token_logits (B, N) per visual token, with ``cfg.role_layer``
            role_logits (B, N, 2) (member of the reference set, anchor) from that layer, and with
            ``cfg.motion_layer`` motion (B, N, 3) (the motion of the object under each token).
        """
        B, T = frames.shape[:2]
        vit, _ = self.encode_frames(frames)
        visual = self.visual_tokens(vit)
        embeds, pos, attn, vs, last = self.build_inputs(visual, None, text_ids)
        mid = self.role_aux is not None or self.motion_aux is not None or any(self.cfg.align_layers)
        lm_out = self.lm_forward(embeds, pos, attn, prefix_len=embeds.shape[1] - 1, output_hidden_states=mid)
        h = lm_out.last_hidden_state
        ar = torch.arange(B, device=h.device)
        h_seg = h[ar, last]
        seg_logits = self.lm_head(h[ar, last - 1])
        all_kept = torch.arange(visual.shape[1], device=h.device).expand(B, -1)
        heat, film, token_logits = self.prompt(h_seg, h[:, vs:vs + visual.shape[1]], visual, all_kept,
                                               self.token_positions(len(self.lm_frame_ids(T)), h.device))
        feats = self.decoder.image_features(vit.flatten(0, 1), frames.flatten(0, 1))
        hw = feats.shape[-1]
        loc = self.decoder.heat_map(heat, hw)  # (B, 1, h, w)
        if T > 1:
            mem = memory_map(prev_masks[:, 1:].flatten(0, 1)).view(B, T - 1, 1, hw, hw)
            loc = torch.cat([loc[:, None], mem], 1).flatten(0, 1)
        logits = self.decoder.decode(feats, loc, film.repeat_interleave(T, 0)).view(B, T, hw, hw)
        out = {"masks": logits, "heat": heat, "seg_logits": seg_logits, "vit_aux": self.vit_aux(vit),
               "token_logits": token_logits}
        for head, layer, key in ((self.role_aux, self.cfg.role_layer, "role_logits"),
                                 (self.motion_aux, self.cfg.motion_layer, "motion")):
            if head is not None:
                h_mid = lm_out.hidden_states[layer][:, vs:vs + visual.shape[1]]
                out[key] = head(F.layer_norm(h_mid, h_mid.shape[-1:]))
        if self.cfg.align_layers:
            n = visual.shape[1]
            states = [visual if layer == 0 else
                      F.layer_norm(lm_out.hidden_states[layer][:, vs:vs + n], visual.shape[-1:])
                      for layer in self.cfg.align_layers]
            out["align_logits"] = torch.stack([self.word_logits(h) for h in states])
        return out

    def word_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Read states through the LM's input word embeddings: h (..., Dl) -> (..., V) logits
        ``h @ E^T / sqrt(Dl)`` (word embeddings are N(0, 1) and states unit-scale, so the raw
        products have a standard deviation of about sqrt(Dl))."""
        E = self.lm.get_input_embeddings().weight
        return h @ E.T.to(h.dtype) / math.sqrt(E.shape[1])

    # -- inference ------------------------------------------------------------------------------
    def select_visual_tokens(self, visual: torch.Tensor, positions: torch.Tensor, *, method: str,
                             keep, scores: torch.Tensor | None = None, generator=None,
                             **options) -> torch.Tensor:
        """The pruning hook: (B, N, Dl) visual tokens -> (B, K) kept indices (sorted, -1 padded).

        ``keep`` = 1.0 keeps everything (no selection call), ``keep`` = 0 keeps nothing (the
        ablation in which the LM sees no visual tokens), otherwise `evtp.select_tokens`.
        """
        from evtp.selection import METHODS, select_tokens

        B, N, _ = visual.shape
        if isinstance(keep, (int, float)) and not isinstance(keep, bool):
            if keep == 0:
                return torch.empty((B, 0), dtype=torch.long, device=visual.device)
            if isinstance(keep, float) and keep == 1.0 or (isinstance(keep, int) and keep == N):
                return torch.arange(N, device=visual.device).expand(B, N)
        if method not in METHODS:
            raise ValueError(f"unknown selection method {method!r}; known: {', '.join(sorted(METHODS))}")
        if not METHODS[method].wants_scores(options):
            scores = None
        pos = positions.expand(B, *positions.shape)
        return select_tokens(visual.float(), pos, keep=keep, method=method, scores=scores,
                             generator=generator, **options)

    @torch.no_grad()
    def run(self, frames: torch.Tensor, text_ids: list[list[int]], *, method: str = "evtp", keep=0.2,
            contiguous: bool = False, generator=None, timings: dict | None = None, **options):
        """Inference on a batch: prefill, decode ``[SEG]``, decode masks frame by frame.

        frames (B, T, 3, S, S) in [0, 1] -> dict(masks=(B, T, S, S) bool, kept=(B, K), seg=(B,) bool
        whether the LM's greedy next token was ``[SEG]``, heat=(B, G*G), token_logits=(B, K) the
        per-kept-token target logits of the prompt).
        """
        tm = timings if timings is not None else {}
        t0 = time.perf_counter()
        B, T = frames.shape[:2]
        from evtp.selection import METHODS

        spec = METHODS.get(method)
        want_scores = spec is not None and spec.wants_scores(options) and not _trivial_keep(keep)
        vit, rec = self.encode_frames(frames, want_scores=want_scores)
        visual = self.visual_tokens(vit)
        t1 = time.perf_counter()
        ids = self.lm_frame_ids(T)
        positions = self.token_positions(len(ids), visual.device)
        scores = None if rec is None else rec[:, ids].flatten(1)
        kept = self.select_visual_tokens(visual, positions, method=method, keep=keep, scores=scores,
                                         generator=generator, **options)
        t2 = time.perf_counter()
        e2, p2, a2, vs, _ = self.build_inputs(visual, kept, text_ids, contiguous=contiguous)
        embeds, pos, attn = e2[:, :-1], p2[..., :-1], a2[:, :-1]
        out = self.lm_forward(embeds, pos, attn, use_cache=True)
        h_last = out.last_hidden_state[:, -1]
        h_vis = out.last_hidden_state[:, vs:vs + kept.shape[1]]
        t3 = time.perf_counter()
        seg_pred = self.lm_head(h_last).argmax(-1) == self.tok.seg
        # decode: feed [SEG] (always: the benchmark asks for a mask) at its position
        h_seg = self.lm(inputs_embeds=e2[:, -1:], position_ids=p2[..., -1:], attention_mask=a2,
                        past_key_values=out.past_key_values, use_cache=True).last_hidden_state[:, -1]
        t4 = time.perf_counter()
        heat, film, token_logits = self.prompt(h_seg, h_vis, visual, kept, positions)
        masks = self.decode_masks(vit, frames, heat, film)
        t5 = time.perf_counter()
        for k, v in (("vision", t1 - t0), ("selection", t2 - t1), ("lm_prefill", t3 - t2),
                     ("decode", t4 - t3), ("mask_decoder", t5 - t4), ("total", t5 - t0)):
            tm[k] = tm.get(k, 0.0) + 1000 * v
        return {"masks": masks, "kept": kept, "seg": seg_pred, "heat": heat, "token_logits": token_logits,
                "visual": visual, "positions": positions}

    def decode_masks(self, vit: torch.Tensor, frames: torch.Tensor, heat: torch.Tensor,
                     film: torch.Tensor) -> torch.Tensor:
        """The mask decoder at inference, frame by frame: frame 0 is prompted by the heat map,
        frame t > 0 by frame t-1's predicted mask (dilated, `memory_map`).

        vit (B, T, G*G, Dv), frames (B, T, 3, S, S), heat logits (B, G*G), film (B, 2C) ->
        masks (B, T, S, S) bool.
        """
        B, T = frames.shape[:2]
        feats = self.decoder.image_features(vit.flatten(0, 1), frames.flatten(0, 1))
        hw = feats.shape[-1]
        feats = feats.view(B, T, *feats.shape[1:])
        loc = self.decoder.heat_map(heat, hw)
        logits = []
        for t in range(T):
            lg = self.decoder.decode(feats[:, t], loc, film)
            logits.append(lg)
            loc = memory_map(torch.sigmoid(lg.float()))
        S = frames.shape[-1]
        logits = torch.stack(logits, 1).float()
        return F.interpolate(logits, size=(S, S), mode="bilinear", align_corners=False) > 0

    def predict(self, sample: Sample, *, method: str = "evtp", keep=0.2, contiguous: bool = False,
                generator=None, **options: Any) -> Prediction:
        """Segment one `Sample` (an `IVSModel`)."""
        # any number of frames works: the LM reads the configured frames that exist
        frames = frames_to_tensor(sample.frames, self.cfg.image_size).to(self.pixel_mean.device)
        text = [self.tok.encode(sample.instruction)]
        tm: dict[str, float] = {}
        out = self.run(frames, text, method=method, keep=keep, contiguous=contiguous,
                       generator=generator, timings=tm, **options)
        masks = out["masks"].squeeze(0).cpu().numpy()
        H, W = sample.frames.shape[1:3]
        if (H, W) != masks.shape[1:]:
            import cv2
            masks = np.stack([cv2.resize(m.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
                              for m in masks]).astype(bool)
        kept = out["kept"].squeeze(0)
        token_logits = out["token_logits"].squeeze(0)[kept >= 0]
        kept = kept[kept >= 0]
        N = out["visual"].shape[1]
        return Prediction(masks=masks, tokens_kept=int(kept.numel()), tokens_total=int(N), timings_ms=tm,
                          extra={"kept": kept.cpu().numpy(), "positions": out["positions"].cpu().numpy(),
                                 "token_logits": token_logits.float().cpu().numpy(),
                                 "emitted_seg": bool(out["seg"].all()), "visual": out["visual"].squeeze(0)})


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


def _trivial_keep(keep) -> bool:
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        return False
    return keep == 0 or (isinstance(keep, float) and keep == 1.0)


def frames_to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (1, T, 3, size, size) float in [0, 1] (resized if needed)."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be a (T, H, W, 3) uint8 array, got "
                         f"{getattr(frames, 'shape', type(frames).__name__)}")
    if frames.shape[1:3] != (size, size):
        import cv2
        frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)


# ----------------------------------------------------------------------------------------------
# saving / loading

def save_model(model: ReferenceIVS, directory: str | Path, meta: dict | None = None,
               dtype: torch.dtype = torch.float16) -> None:
    """Write ``reference.safetensors`` (weights in ``dtype``) and ``reference.json`` (config + meta)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(d / "reference.safetensors"))
    (d / "reference.json").write_text(json.dumps({"config": model.cfg.to_json(), "meta": meta or {}},
                                                 indent=1) + "\n")


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` / "auto": CUDA when present, else the CPU; otherwise the named device, refused
    with a clear error when it is not available here."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch {torch.__version__} sees no CUDA "
                         "device here; use device=cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch floating dtype or one of `DTYPES`' names."""
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or a floating torch.dtype, got {dtype!r}")


def load_pretrained(weights: str | Path | None = None, *, threads: int | None = None,
                    dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu") -> ReferenceIVS:
    """Load the shipped reference model (no network): ``weights`` is a directory holding
    ``reference.safetensors`` + ``reference.json`` (default: the package's ``evtp/weights``).
    ``device``: "cpu" (default), "cuda", "cuda:N" or "auto" (CUDA when present); ``dtype``: a
    floating torch dtype or its name ("float32", "bfloat16", "float16"). Both are checked before
    anything is read."""
    from safetensors.torch import load_file

    dev, dtype = resolve_device(device), resolve_dtype(dtype)
    d = Path(weights) if weights is not None else WEIGHTS_DIR
    cfg_path, w_path = d / "reference.json", d / "reference.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(f"no reference model in {d}: expected reference.json and "
                                f"reference.safetensors (train one with `evtp train`)")
    if threads is not None:
        torch.set_num_threads(int(threads))
    info = json.loads(cfg_path.read_text())
    model = ReferenceIVS(ReferenceConfig.from_json(info["config"]))
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(w_path)).items()}
    model.load_state_dict(state)
    model.meta = info.get("meta", {})
    return model.eval().to(device=dev, dtype=dtype)


def fixed_check(model: ReferenceIVS, n_image: int = 12, n_video: int = 2, keep=1.0) -> dict:
    """Accuracy on a small fixed sample (val split images 0..n_image-1, videos 0..n_video-1) at
    ``keep`` (with `evtp` below 1.0): the numbers recorded in the weights' JSON and re-checked by the
    tests. Returns {"image_ciou"} plus "video_jf" when n_video > 0."""
    from evtp.data.synthetic import make_sample
    from evtp.metrics import ciou_giou, j_and_f

    preds, gts = [], []
    for i in range(n_image):
        s = make_sample("val", i, "image")
        preds.append(model.predict(s, method="evtp", keep=keep).masks.squeeze(0))
        gts.append(s.gt_masks.squeeze(0))
    ciou, _ = ciou_giou(preds, gts)
    jfs = []
    for i in range(n_video):
        s = make_sample("val", i, "video")
        jfs.append(j_and_f(model.predict(s, method="evtp", keep=keep).masks, s.gt_masks)[2])
    out = {"image_ciou": float(ciou)}
    if jfs:
        out["video_jf"] = float(np.mean(jfs))
    return out


def record_check(directory: str | Path, n_image: int = 12, n_video: int = 6) -> dict:
    """Compute `fixed_check` on the weights saved in ``directory`` (loaded back as the tests load
    them: fp16 file -> fp32) at full tokens and with no visual tokens, and store it in the JSON's
    ``meta["check"]`` (the values ``tests/test_reference_weights.py`` re-computes). Returns it."""
    d = Path(directory)
    model = load_pretrained(d)
    check = {"split": "val", "n_image": n_image, "n_video": n_video,
             "full": fixed_check(model, n_image, n_video, keep=1.0),
             "none": fixed_check(model, n_image, 0, keep=0),
             "how": "evtp.models.reference.fixed_check(model, n_image, n_video, keep)"}
    info = json.loads((d / "reference.json").read_text())
    info["meta"]["check"] = check
    (d / "reference.json").write_text(json.dumps(info, indent=1) + "\n")
    return check
