"""Saving and loading the reference model: fp16 safetensors + a JSON of config and meta."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from evtp.models.reference.config import ReferenceConfig
from evtp.models.reference.model import ReferenceIVS, ReferencePredictOptions
from evtp.settings import parse_device, parse_dtype

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"


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


def load_pretrained(weights: str | Path | None = None, *, threads: int | None = None,
                    dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu") -> ReferenceIVS:
    """Load the shipped reference model (no network): ``weights`` is a directory holding
    ``reference.safetensors`` + ``reference.json`` (default: the package's ``evtp/weights``).
    ``device``: "cpu" (default), "cuda", "cuda:N" or "auto" (CUDA when present); ``dtype``: a
    floating torch dtype or its name ("float32", "bfloat16", "float16"). Both are checked before
    anything is read."""
    from safetensors.torch import load_file

    dev, dtype = parse_device(device), parse_dtype(dtype)
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


load_pretrained.predict_options = ReferencePredictOptions
