"""Tiny random reference IVS models for tests (`evtp.models.reference`): the shipped weights' code
path (`ReferenceConfig`'s defaults: M-RoPE at base 50, 16 location bins per axis, the role head and
word-space alignment) with the widths and depths shrunk."""
from __future__ import annotations

import torch

from evtp.models.reference import ReferenceConfig, ReferenceIVS

# sizes only: ViT 32 wide and 1 block, LM 32 wide with 2 layers, decoder 8 wide; the role head
# and the alignment at depths this LM has (the shipped 6-layer LM: role after layer 3, alignment
# at 0, 1, 3, 5)
TINY_REFERENCE = dict(vit_dim=32, vit_layers=1, vit_heads=2, vit_mlp=64, lm_dim=32, lm_layers=2, lm_heads=2,
                      lm_mlp=64, dec_dim=8, role_layer=1, align_layers=(0, 1))


def tiny_reference(**overrides) -> ReferenceIVS:
    """A `ReferenceIVS` of `TINY_REFERENCE` sizes with ``overrides`` applied, seeded (torch seed 0)
    and in eval mode."""
    torch.manual_seed(0)
    return ReferenceIVS(ReferenceConfig(**{**TINY_REFERENCE, **overrides})).eval()
