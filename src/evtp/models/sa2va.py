"""``sa2va``: Sa2VA checkpoints (``ByteDance/Sa2VA-*``) in `evtp eval`, pruned by `evtp.TokenPruner`.

    evtp eval --model sa2va --model-option path=ByteDance/Sa2VA-4B --model-option trust_remote_code=true \\
              --model-option device=cuda --model-option dtype=bfloat16 --dataset refcoco ...

Sa2VA ships its own code (``modeling_sa2va_chat.py``, loaded with ``trust_remote_code=True``):
the InternVL variants' ``Sa2VAChatModel`` and the Qwen variants' ``Sa2VAChatModelQwen`` (which
holds the HF ``Qwen2_5_VLForConditionalGeneration`` / ``Qwen3VLForConditionalGeneration`` as
``self.model``). The pipeline calls the checkpoint's own ``predict_forward(image= | video=,
text=, tokenizer=, processor=)`` — Sa2VA's prompt, tiling, five LLM frames of a video, every
frame to SAM2, ``[SEG]`` -> ``text_hidden_fcs`` -> SAM2 masks — with `evtp.TokenPruner` applied
around it: the family adapter (`evtp.integrations.families.sa2va` for the InternVL variants; the
Qwen2.5-VL / Qwen3-VL adapters for the wrapped HF model) prunes the visual tokens between the
feature scatter and the first decoder layer. One sample at a time, as Sa2VA itself runs.

Prompts are those of Sa2VA's evaluation scripts: ``"<image>\\n Please segment {} in this image."``
for images, ``"<image>\\nPlease segment {}."`` (``"<image>\\n {} Please respond with a
segmentation mask."`` for questions) for videos.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from evtp.data.types import Sample
from evtp.integrations.pruner import TokenPruner
from evtp.models.base import Prediction
from evtp.models.checkpoint import CheckpointError, expect_architecture, read_config
from evtp.settings import parse_device, parse_dtype

ARCHITECTURES = {"Sa2VAChatModel": "InternVL", "Sa2VAChatModelQwen": "Qwen"}
WHAT = "a Sa2VA checkpoint (ByteDance/Sa2VA-*)"
IMAGE_PROMPT = "<image>\n Please segment {} in this image."
VIDEO_PROMPT = "<image>\nPlease segment {}."
VIDEO_QUESTION_PROMPT = "<image>\n {} Please respond with a segmentation mask."


def prompt_for(sample: Sample) -> str:
    """Sa2VA's evaluation prompt for the sample's task."""
    text = sample.instruction.strip()
    if sample.task == "video":
        return (VIDEO_QUESTION_PROMPT if "?" in text else VIDEO_PROMPT).format(text)
    return IMAGE_PROMPT.format(text)


def _pil_frames(frames: np.ndarray):
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"sample.frames has shape {frames.shape}; expected (T, H, W, 3) uint8")
    return [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]


@dataclass
class Sa2VAIVS:
    """A loaded Sa2VA checkpoint behind `evtp.models.IVSModel`.

    Attributes:
        model: the checkpoint's ``Sa2VAChatModel`` / ``Sa2VAChatModelQwen`` (eval mode).
        tokenizer: its tokenizer; processor: its processor (Qwen variants) or None.
        variant: "InternVL" or "Qwen"; path: where it was loaded from.
    """

    model: Any
    tokenizer: Any
    processor: Any
    variant: str
    path: str
    name: str = "sa2va"
    timings_last: dict = field(default_factory=dict)

    @torch.no_grad()
    def predict(self, sample: Sample, *, method: str = "evtp", keep: float | int = 0.2, **options) -> Prediction:
        frames = np.asarray(sample.frames)
        pil = _pil_frames(frames)
        T, H, W = frames.shape[:3]
        media = {"video": pil} if sample.task == "video" else {"image": pil[0]}
        t0 = time.perf_counter()
        # keep=1.0 runs the pruner too: it then keeps every token (the output equals the unpatched
        # model's, tests/test_sa2va.py) and reports the visual-token count
        with TokenPruner(method, keep, **options)(self.model):
            out = self.model.predict_forward(**media, text=prompt_for(sample), tokenizer=self.tokenizer,
                                             processor=self.processor)
            lp = TokenPruner.last_pruning(self.model)
        total_ms = (time.perf_counter() - t0) * 1e3
        masks = out.get("prediction_masks") or []
        mask = None
        if masks:
            mask = np.asarray(masks[0]).astype(bool)
            if mask.shape != (T, H, W):
                raise ValueError(f"Sa2VA returned masks of shape {mask.shape} for {T} frame(s) of {H}x{W}")
        kept = int(lp.visual_kept.sum()) if lp is not None else 0
        total = int(lp.visual_total.sum()) if lp is not None else 0
        tm = {"selection": lp.selection_ms if lp is not None else 0.0, "total": total_ms}
        self.timings_last = tm
        return Prediction(masks=mask, tokens_kept=kept, tokens_total=total, timings_ms=tm,
                          extra={"prediction": out.get("prediction", ""), "n_masks": len(masks)})


def check_sa2va(path: str | None, trust_remote_code: bool) -> tuple[str, str]:
    """(path to load, variant) of a Sa2VA checkpoint, or a one-line CheckpointError."""
    where, config = read_config(path, what=WHAT)
    arch = expect_architecture(str(path), config, ARCHITECTURES, what=WHAT)
    if trust_remote_code is not True:
        raise CheckpointError(f"path={str(path)!r}: Sa2VA checkpoints run their own code ({arch} in "
                              f"modeling_sa2va_chat.py / modeling_sa2va_qwen.py); allow it with "
                              f"--model-option trust_remote_code=true")
    return where, ARCHITECTURES[arch]


def load_sa2va(*, path: str | None = None, trust_remote_code: bool = False, device: str | torch.device = "cpu",
               dtype: str | torch.dtype = torch.bfloat16, max_new_tokens: int = 2048) -> Sa2VAIVS:
    """``sa2va``: a Sa2VA checkpoint (local folder or hub id), checked before loading.

    Args:
        path: the checkpoint (``config.json`` naming ``Sa2VAChatModel`` or ``Sa2VAChatModelQwen``).
        trust_remote_code: must be True: Sa2VA runs the modeling code shipped with the checkpoint.
        device / dtype: where the weights go (Sa2VA's own code casts its inputs to ``dtype``).
        max_new_tokens: generation limit of ``predict_forward`` (Sa2VA's default 2048).
    """
    device, dtype = parse_device(device), parse_dtype(dtype)
    where, variant = check_sa2va(path, trust_remote_code)
    from transformers import AutoModel, AutoProcessor, AutoTokenizer

    model = AutoModel.from_pretrained(where, trust_remote_code=True, dtype=dtype).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(where, trust_remote_code=True) if variant == "Qwen" else None
    if variant == "InternVL":
        model.preparing_for_generation(tokenizer=tokenizer, max_new_tokens=int(max_new_tokens), torch_dtype=dtype)
    else:
        model.torch_dtype = dtype  # the dtype Sa2VA-Qwen casts its SAM2 inputs to
    return Sa2VAIVS(model, tokenizer, processor, variant, str(path))
