"""The models the reference benchmarks run, and the digest that ties their records to weights."""
from __future__ import annotations

import hashlib

import torch


def load_bench_model(weights: str | None):
    """The model a benchmark runs: the shipped weights (None), a weights directory, or
    "random-tiny", a tiny untrained model (seed 0) for tests of the benchmarks themselves."""
    from evtp.models.reference import ReferenceConfig, ReferenceIVS, load_pretrained

    if weights != "random-tiny":
        return load_pretrained(weights)
    torch.manual_seed(0)
    return ReferenceIVS(ReferenceConfig(vit_dim=32, vit_layers=1, vit_heads=2, vit_mlp=64, lm_dim=32,
                                        lm_layers=1, lm_heads=2, lm_mlp=64, dec_dim=8, role_layer=0,
                                        align_layers=(0, 1))).eval()


def weights_digest(model: torch.nn.Module) -> str:
    """Short SHA-256 of a model's state (names + values): records of other weights never resume."""
    h = hashlib.sha256()
    for name, v in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
