"""A LISA / Sa2VA-style segmentation head on a transformers VLM, with evtp pruning in the LLM.

The model (`LlavaSamIVS`) is built the way LISA and Sa2VA build theirs:

    frames --CLIP tower + projector--> visual tokens --evtp prune--> LLM --> text with [SEG]
    [SEG] hidden state --SegProjector (Linear, ReLU, Linear)--> SAM sparse prompt embedding
    frames --SAM image encoder (own input, full resolution)--> image embeddings
    SAM mask decoder(image embeddings, prompt) --> mask logits --> mask at the frame size

Pruning touches only the LLM path: SAM's image embeddings never see the LLM's visual tokens, so
the mask path costs the same at every keep ratio. The [SEG] hidden state is found by looking up
the [SEG] token id in the answer the LLM produced (teacher-forced template and/or greedy
tokens), never by a hard-coded offset, so it stays right whatever the number of kept tokens.

Pruning goes through the public integration API (`evtp.integrations.pruner.TokenPruner` as a
context around the forward, `evtp.integrations.transformers.last_pruning` for what was kept);
besides it the model uses only `evtp.models.realsize` (the real-weights SmolLM2 LLaVA, for
``llava-smollm2-sam``).

This module's registered build (`evtp.models.MODELS`), with ``device`` (cpu, cuda, cuda:N, auto) and
``dtype`` (float32, bfloat16, float16) options (the tests' tiny build, ``llava-sam-tiny``, is
registered by `evtp.testing.register_test_models`):

* ``llava-smollm2-sam`` — real SmolLM2-135M-Instruct weights as the LLM, random CLIP ViT-B/16
  tower (576 tokens), random small SAM and random projector. **Its masks are meaningless**
  (nothing but the language model is trained); it shows real token counts and LLM costs.

Video samples: the LLM sees ``llm_frames`` frames sampled uniformly (each pruned on its own,
like Sa2VA's five frames). With a ``video_sam`` (transformers Sam2VideoModel, session built by
hand) the [SEG] embedding joins the sparse prompts on those frames and SAM2 propagates over the
whole video, as Sa2VA does; without one, SamModel decodes every frame with the same prompt.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from evtp.data.types import Sample
from evtp.integrations import transformers as hf
from evtp.integrations.pruner import TokenPruner
from evtp.models.base import Prediction, PredictOptions
from evtp.pruning import POSITION_MODES, PruningSettings

SAM_MEAN = (0.485, 0.456, 0.406)
SAM_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class SegProjector(nn.Module):
    """LISA's ``text_hidden_fcs`` / Sa2VA's ``text_hidden_fcs``: (…, d_llm) -> (…, d_sam)."""

    def __init__(self, d_llm: int, d_sam: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_llm, d_llm), nn.ReLU(inplace=True), nn.Linear(d_llm, d_sam))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def seg_positions(tokens: torch.Tensor, seg_token_id: int) -> torch.Tensor:
    """Indices of ``[SEG]`` in a (T,) answer token sequence (empty when the model emitted none)."""
    return torch.nonzero(tokens == seg_token_id).flatten()


def sam_decode(sam, image_embeddings: torch.Tensor, prompts: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Masks from SAM's mask decoder prompted by embeddings instead of points.

    Args:
        sam: a transformers ``SamModel``.
        image_embeddings: (B, C, h, w) from ``sam.get_image_embeddings``.
        prompts: (B, n, C) sparse prompt embeddings (one per object, e.g. per [SEG]).
        out_hw: (H, W) output size.
    Returns:
        (B, n, H, W) float mask logits (bilinear upsampling of the low-resolution masks).
    """
    B, C, h, w = image_embeddings.shape
    if prompts.shape[0] != B or prompts.shape[-1] != C:
        raise ValueError(f"prompts has shape {tuple(prompts.shape)}; expected ({B}, n, {C})")
    pe = sam.get_image_wide_positional_embeddings().repeat(B, 1, 1, 1)
    dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(B, -1, h, w)
    low, _ = sam.mask_decoder(image_embeddings=image_embeddings, image_positional_embeddings=pe,
                              sparse_prompt_embeddings=prompts.unsqueeze(2).to(image_embeddings.dtype),
                              dense_prompt_embeddings=dense, multimask_output=False)
    low = low[:, :, 0]  # (B, n, 4h, 4w)
    return nn.functional.interpolate(low, size=out_hw, mode="bilinear", align_corners=False)


def sam2_video_decode(model, frames: torch.Tensor, prompt: torch.Tensor, cond_frames, out_hw: tuple[int, int]) -> torch.Tensor:
    """Sa2VA's video path on transformers' Sam2VideoModel: the [SEG] embedding is concatenated to
    the sparse prompt embeddings on the conditioning frames, then SAM2 propagates over the video.

    The inference session is built by hand (the SAM2 video processor needs torchvision).

    Args:
        model: a transformers ``Sam2VideoModel``.
        frames: (T, 3, S, S) normalised frames at the model's input size.
        prompt: (C,) projected [SEG] embedding, C = the mask decoder's hidden size.
        cond_frames: frame indices that get the language prompt (Sa2VA: the frames the LLM saw).
        out_hw: (H, W) output size.
    Returns:
        (T, H, W) float mask logits.
    """
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    T = frames.shape[0]
    sess = Sam2VideoInferenceSession(video=frames, video_height=out_hw[0], video_width=out_hw[1],
                                     inference_device=frames.device, dtype=frames.dtype)
    obj = sess.obj_id_to_idx(1)
    extra = prompt.to(frames.dtype).view(1, 1, 1, -1)

    def add_language(module, args, out):  # Sa2VA: language embedding joins the sparse prompts
        sparse, dense = out
        return torch.cat([sparse, extra.expand(sparse.shape[0], sparse.shape[1], 1, -1)], 2), dense

    low = [None] * T
    handle = model.prompt_encoder.register_forward_hook(add_language)
    try:
        for f in sorted(set(int(c) for c in cond_frames)):
            # a "not a point" placeholder marks the frame as prompted; the prompt is the [SEG] embedding
            sess.add_point_inputs(obj, f, {"point_coords": torch.zeros(1, 1, 1, 2, dtype=frames.dtype,
                                                                       device=frames.device),
                                           "point_labels": -torch.ones(1, 1, 1, dtype=torch.int32,
                                                                       device=frames.device)})
            sess.remove_mask_inputs(obj, f)
            sess.obj_with_new_inputs = [1]
            low[f] = model(inference_session=sess, frame_idx=f).pred_masks
    finally:
        handle.remove()
    for out in model.propagate_in_video_iterator(sess):
        low[out.frame_idx] = out.pred_masks
    low = torch.cat([m.reshape(1, 1, *m.shape[-2:]) for m in low])  # (T, 1, h, w)
    return nn.functional.interpolate(low, size=out_hw, mode="bilinear", align_corners=False)[:, 0]


def _pixels(frames: np.ndarray, size: int, mean, std, *, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(T, 3, size, size) normalised pixels from (T, H, W, 3) uint8 (PIL bicubic resize), on
    ``device`` in ``dtype`` (normalised in float32 first)."""
    from PIL import Image

    out = []
    for f in frames:
        img = Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)).convert("RGB").resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
    x = torch.stack(out)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.to(device=device, dtype=dtype)


@dataclass(frozen=True)
class LlavaSamPredictOptions(PredictOptions):
    """`LlavaSamIVS.predict`'s own keyword: ``position_mode`` of the pruned sequence
    (`evtp.PruningSettings`)."""

    position_mode: Literal[POSITION_MODES] = "original"


@dataclass
class LlavaSamIVS:
    """IVS model: transformers LLaVA (pruned by evtp) + [SEG] projector + transformers SAM.

    Attributes:
        name: registry name.
        vlm: LlavaForConditionalGeneration.
        sam: SamModel.
        projector: SegProjector (d_llm -> SAM prompt dim).
        encode: callable(instruction: str, n_images: int) -> (1, L) prompt ids with
            ``n_images * tokens_per_image`` image placeholders.
        answer_ids: teacher-forced answer prefix (list of ids) — LISA's "Sure, it is [SEG]."
            template; may be empty.
        seg_token_id: id of [SEG].
        eos_token_id: stops greedy generation.
        max_new_tokens: greedy tokens generated after the answer prefix (0: template only).
        llm_frames: frames of a video shown to the LLM (uniformly sampled).
        note: plain statement about the weights (in every Prediction's ``extra``).
        video_sam: optional Sam2VideoModel; when set, videos (T > 1) are segmented Sa2VA's way
            (prompt on the LLM frames, memory propagation) instead of SAM per frame.
        video_projector: [SEG] projector into ``video_sam``'s prompt space.
    """

    name: str
    vlm: nn.Module
    sam: nn.Module
    projector: SegProjector
    encode: object
    answer_ids: list
    seg_token_id: int
    eos_token_id: int | None = None
    max_new_tokens: int = 0
    llm_frames: int = 1
    note: str = ""
    video_sam: nn.Module | None = None
    video_projector: SegProjector | None = None
    timings_last: dict = field(default_factory=dict)
    predict_options: ClassVar[type] = LlavaSamPredictOptions

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (inputs are moved there)."""
        return next(self.vlm.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's weights (pixels are cast to it)."""
        return next(self.vlm.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "LlavaSamIVS":
        """Move every module (VLM, SAM, projectors, video SAM) to ``device`` / ``dtype``; returns self."""
        for module in (self.vlm, self.sam, self.projector, self.video_sam, self.video_projector):
            if module is not None:
                module.to(device=device, dtype=dtype)
        return self

    @property
    def tokens_per_image(self) -> int:
        vc = self.vlm.config.vision_config
        return (vc.image_size // vc.patch_size) ** 2

    @torch.no_grad()
    def predict(self, sample: Sample, *, method: str = "evtp", keep: float | int = 0.2,
                position_mode: str = "original", **options) -> Prediction:
        """Segment ``sample`` with the visual tokens pruned by ``PruningSettings(method, keep,
        position_mode=position_mode, options=options)`` (keep 1.0: unpruned)."""
        settings = PruningSettings(method, keep, position_mode=position_mode, options=options)
        frames = np.asarray(sample.frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"sample.frames has shape {frames.shape}; expected (T, H, W, 3) uint8")
        T, H, W, _ = frames.shape
        t_all = time.perf_counter()
        tm = {}
        pick = np.unique(np.linspace(0, T - 1, min(T, self.llm_frames)).round().astype(int))
        device, dtype = self.device, self.dtype
        ids = self.encode(sample.instruction, len(pick)).to(device)
        pixels = _pixels(frames[pick], self.vlm.config.vision_config.image_size, CLIP_MEAN, CLIP_STD,
                         device=device, dtype=dtype)
        patched = not settings.budget.keeps_all
        pruner = TokenPruner.from_settings(settings) if patched else None
        with pruner(self.vlm) if pruner is not None else contextlib.nullcontext():  # removed in finally
            t0 = time.perf_counter()
            feats = self.vlm.model.get_image_features(pixel_values=pixels, return_dict=True)
            tm["vision"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            out = self.vlm(input_ids=ids, mm_encoder_outputs={"image": feats}, use_cache=True, logits_to_keep=1)
            tm["lm_prefill"] = (time.perf_counter() - t0) * 1e3
            total = int((ids == self.vlm.config.image_token_id).sum())
            if patched:
                lp = hf.last_pruning(self.vlm)
                kept, tm["selection"] = int(lp.visual_kept.sum()), lp.selection_ms
                kept_idx = lp.kept_indices[0][lp.kept_indices[0] >= 0].tolist()
            else:
                kept, tm["selection"], kept_idx = total, 0.0, None
            t0 = time.perf_counter()
            answer, hidden = self._answer(out)
            tm["decode"] = (time.perf_counter() - t0) * 1e3
        seg = seg_positions(answer, self.seg_token_id)
        masks = None
        if T > 1 and self.video_sam is not None and self.video_projector is not None:
            t0 = time.perf_counter()
            if seg.numel():
                px = _pixels(frames, self.video_sam.config.image_size, SAM_MEAN, SAM_STD,
                             device=device, dtype=dtype)
                prompt = self.video_projector(hidden[seg[0]])
                masks = (sam2_video_decode(self.video_sam, px, prompt, pick, (H, W)) > 0).cpu().numpy()
            tm["sam2_video"] = (time.perf_counter() - t0) * 1e3
        else:
            t0 = time.perf_counter()
            sam_px = _pixels(frames, self.sam.config.vision_config.image_size, SAM_MEAN, SAM_STD,
                             device=device, dtype=dtype)
            emb = self.sam.get_image_embeddings(sam_px)  # (T, C, h, w): full frames, independent of pruning
            tm["sam_encoder"] = (time.perf_counter() - t0) * 1e3
            if seg.numel():
                t0 = time.perf_counter()
                prompt = self.projector(hidden[seg[:1]])  # first [SEG]: (1, C)
                logits = sam_decode(self.sam, emb, prompt.expand(T, -1).unsqueeze(1), (H, W))  # (T, 1, H, W)
                masks = (logits[:, 0] > 0).cpu().numpy()
                tm["mask_decoder"] = (time.perf_counter() - t0) * 1e3
        tm["total"] = (time.perf_counter() - t_all) * 1e3
        self.timings_last = tm
        return Prediction(masks=masks, tokens_kept=kept, tokens_total=total, timings_ms=tm,
                          extra={"answer_ids": answer.tolist(), "seg_positions": seg.tolist(),
                                 "kept_indices": kept_idx, "llm_frames": pick.tolist(), "note": self.note})

    def _answer(self, prefill_out):
        """Teacher-force the answer prefix, then greedy-generate; return (tokens, last hidden states).

        Returns:
            answer: (A,) long tokens after the prompt; hidden: (A, d) last-layer hidden state of
            the position where each answer token is the *input* (LISA's [SEG] state).
        """
        cache = prefill_out.past_key_values
        nxt = prefill_out.logits[:, -1].argmax(-1, keepdim=True)
        toks, hs = [], []
        if self.answer_ids:
            a = torch.tensor([self.answer_ids], device=self.device)
            o = self.vlm(input_ids=a, past_key_values=cache, use_cache=True, output_hidden_states=True)
            toks.append(a[0])
            hs.append(o.hidden_states[-1][0])
            cache, nxt = o.past_key_values, o.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(self.max_new_tokens):
            if self.eos_token_id is not None and int(nxt) == self.eos_token_id:
                break
            o = self.vlm(input_ids=nxt, past_key_values=cache, use_cache=True, output_hidden_states=True)
            toks.append(nxt[0])
            hs.append(o.hidden_states[-1][0])
            cache, nxt = o.past_key_values, o.logits[:, -1].argmax(-1, keepdim=True)
        if not toks:
            return (torch.zeros(0, dtype=torch.long, device=self.device),
                    torch.zeros(0, self.vlm.config.text_config.hidden_size, device=self.device, dtype=self.dtype))
        return torch.cat(toks), torch.cat(hs)


# --------------------------------------------------------------------------------------------
# registered builds
# --------------------------------------------------------------------------------------------
def small_sam(*, seed: int = 0, image_size: int = 512):
    """A small random SamModel (ViT with 256 channels, 6 layers, 512 px; prompt dim 256)."""
    from transformers import SamConfig, SamModel

    torch.manual_seed(seed)
    cfg = SamConfig(
        vision_config=dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=8, image_size=image_size,
                           patch_size=16, output_channels=256, mlp_dim=1024, window_size=8,
                           global_attn_indexes=[2, 5]),
        prompt_encoder_config=dict(hidden_size=256, image_size=image_size, image_embedding_size=image_size // 16),
        mask_decoder_config=dict(hidden_size=256))
    return SamModel(cfg).eval()


def _placement(device, dtype) -> tuple[torch.device, torch.dtype]:
    """The checked ``device`` / ``dtype`` options of a build (`evtp.settings`), before any work."""
    from evtp.settings import parse_device, parse_dtype

    return parse_device("cpu" if device is None else device), parse_dtype(dtype)


def load_smollm2_sam(*, seed: int = 0, llm_frames: int = 1, max_new_tokens: int = 0,
                     sam_image_size: int = 512, device: str | torch.device = "cpu",
                     dtype: str | torch.dtype = torch.float32) -> LlavaSamIVS:
    """``llava-smollm2-sam``: real SmolLM2-135M-Instruct LLM; random CLIP ViT-B/16 tower, projector,
    [SEG] head and small SAM. Token counts and LLM costs are real; **masks are meaningless**.
    ``device`` / ``dtype``: where the weights go (checked before the 20-s load)."""
    from evtp.models import realsize  # the real-weights SmolLM2 LLaVA, shared with bench transformers

    device, dtype = _placement(device, dtype)

    vlm, tok, image_token_id = realsize.build_llava_smollm2(seed=seed)
    tok.add_special_tokens({"additional_special_tokens": [realsize.IMAGE_TOKEN, "[SEG]"]})
    seg = tok.convert_tokens_to_ids("[SEG]")
    if seg >= vlm.get_input_embeddings().weight.shape[0]:
        vlm.resize_token_embeddings(seg + 1)
    sam = small_sam(seed=seed, image_size=sam_image_size)
    torch.manual_seed(seed)
    proj = SegProjector(vlm.config.text_config.hidden_size, sam.config.mask_decoder_config.hidden_size).eval()
    per = (vlm.config.vision_config.image_size // vlm.config.vision_config.patch_size) ** 2

    def encode(text: str, n_images: int) -> torch.Tensor:
        head = tok("<|im_start|>user\n", add_special_tokens=False).input_ids
        body = []
        for _ in range(n_images):
            body += [image_token_id] * per + tok("\n", add_special_tokens=False).input_ids
        q = tok(f"Please segment {text} in this image.<|im_end|>\n<|im_start|>assistant\n",
                add_special_tokens=False).input_ids
        return torch.tensor([head + body + q])

    answer = tok("Sure, it is", add_special_tokens=False).input_ids + [seg] + tok(".", add_special_tokens=False).input_ids
    return LlavaSamIVS("llava-smollm2-sam", vlm, sam, proj, encode, answer_ids=answer, seg_token_id=seg,
                       eos_token_id=tok.eos_token_id, max_new_tokens=max_new_tokens, llm_frames=llm_frames,
                       note="SmolLM2-135M-Instruct real weights; vision tower, projector, [SEG] head and "
                            "SAM random: masks are meaningless").to(device, dtype)


load_smollm2_sam.predict_options = LlavaSamPredictOptions
