"""Tiny random reference IVS models for tests (`evtp.models.reference`): the widths and depths
shrunk, every code-path switch left to the caller."""
from __future__ import annotations

import torch

from evtp.models.reference import ReferenceConfig, ReferenceIVS

# sizes only: ViT 32 wide and 1 block, LM 32 wide with 2 layers, decoder 8 wide, the role head
# after LM layer 1
TINY_REFERENCE = dict(vit_dim=32, vit_layers=1, vit_heads=2, vit_mlp=64, lm_dim=32, lm_layers=2, lm_heads=2,
                      lm_mlp=64, dec_dim=8, role_layer=1)
# the shipped weights' LM code path: Qwen2-VL's M-RoPE at base 50 and 16 location bins per axis
SHIPPED_LM_PATH = dict(lm_rope="mrope", lm_rope_theta=50.0, point_bins=16)


def tiny_reference(**overrides) -> ReferenceIVS:
    """A `ReferenceIVS` of `TINY_REFERENCE` sizes with ``overrides`` applied, seeded (torch seed 0)
    and in eval mode."""
    torch.manual_seed(0)
    return ReferenceIVS(ReferenceConfig(**{**TINY_REFERENCE, **overrides})).eval()
