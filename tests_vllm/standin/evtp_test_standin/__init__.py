"""Test-only stand-in for transformers' torchvision-backed Qwen-VL processors (.venv-vllm).

torchvision is removed from .venv-vllm (its wheel links CUDA libtorch and does not import on the
CPU torch). Without it, transformers 5.19 can neither import ``image_processing_qwen2_vl`` (vLLM's
Qwen2-VL family imports ``smart_resize`` from it) nor build any video processor, so
``Qwen2_5_VLProcessor`` / ``Qwen3VLProcessor`` cannot even be constructed. `install`:

1. registers the PIL twin ``image_processing_pil_<model>`` under the missing module name (its
   ``FooImageProcessorPil`` also as ``FooImageProcessor``);
2. points the processor loader's ``video_processor`` slot at `QwenVideoProcessor`, a numpy / PIL
   implementation of Qwen2-VL's video preprocessing (resize, normalise, pad the frame count to the
   temporal patch, patchify in the same order as transformers' Qwen2VLVideoProcessor).

It is a vLLM general plugin (entry point in ../pyproject.toml) so that every vLLM process loads it,
and does nothing when torchvision imports. It is not part of evtp and never shipped with it.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import sys
import types

import numpy as np

_installed = False


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int):
    """Qwen2-VL's resize rule: both sides multiples of ``factor``, area within [min, max] pixels."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _frames_hwc(video) -> list[np.ndarray]:
    """A video as a list of (H, W, C) uint8-range arrays, from the layouts vLLM hands over."""
    from PIL import Image

    while isinstance(video, (list, tuple)) and len(video) == 1 and np.asarray(video[0]).ndim == 4:
        video = video[0]
    if hasattr(video, "numpy") and not isinstance(video, np.ndarray):
        video = video.numpy()
    frames = [np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in video]
    if frames[0].ndim == 3 and frames[0].shape[0] in (1, 3) and frames[0].shape[-1] not in (1, 3):
        frames = [f.transpose(1, 2, 0) for f in frames]
    return frames


def _make_video_processor_class():
    from PIL import Image
    from transformers.image_processing_utils import BatchFeature
    from transformers.video_processing_utils import VideoProcessorMixin
    from transformers.video_utils import VideoMetadata

    class QwenVideoProcessor(VideoProcessorMixin):
        """Qwen2-VL / Qwen2.5-VL / Qwen3-VL video preprocessing without torchvision (no frame
        sampling: vLLM passes already-sampled frames with their metadata)."""

        model_input_names = ["pixel_values_videos", "video_grid_thw"]

        def __init__(self, size=None, min_pixels=None, max_pixels=None, patch_size=14,
                     temporal_patch_size=2, merge_size=2, image_mean=None, image_std=None, fps=2.0,
                     **_ignored):
            size = dict(size or {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28})
            if min_pixels is not None:
                size["shortest_edge"] = min_pixels
            if max_pixels is not None:
                size["longest_edge"] = max_pixels
            self.size = size
            self.patch_size = patch_size
            self.temporal_patch_size = temporal_patch_size
            self.merge_size = merge_size
            self.image_mean = list(image_mean or [0.48145466, 0.4578275, 0.40821073])
            self.image_std = list(image_std or [0.26862954, 0.26130258, 0.27577711])
            self.fps = fps
            self.do_sample_frames = False

        @classmethod
        def from_dict(cls, config: dict, **kwargs):
            return cls(**{**config, **kwargs})

        def to_dict(self):
            return {"video_processor_type": type(self).__name__, "size": self.size,
                    "patch_size": self.patch_size, "temporal_patch_size": self.temporal_patch_size,
                    "merge_size": self.merge_size, "image_mean": self.image_mean,
                    "image_std": self.image_std}

        def get_num_of_video_patches(self, num_frames, height, width, videos_kwargs=None):
            factor = self.patch_size * self.merge_size
            rh, rw = smart_resize(height, width, factor, self.size["shortest_edge"], self.size["longest_edge"])
            grid_t = -(-num_frames // self.temporal_patch_size)
            return grid_t * (rh // self.patch_size) * (rw // self.patch_size)

        def __call__(self, videos, **kwargs):
            return self.preprocess(videos, **kwargs)

        def preprocess(self, videos, video_metadata=None, return_metadata=False, return_tensors=None,
                       size=None, **_ignored):
            sz = {**self.size, **(size if isinstance(size, dict) else {})}
            ps, tp, ms = self.patch_size, self.temporal_patch_size, self.merge_size
            if isinstance(videos, np.ndarray) and videos.ndim == 4:
                videos = [videos]
            mean = np.asarray(self.image_mean, np.float32)[:, None, None]
            std = np.asarray(self.image_std, np.float32)[:, None, None]
            patches, grids, metas = [], [], []
            for i, video in enumerate(videos):
                frames = _frames_hwc(video)
                n, (h, w) = len(frames), frames[0].shape[:2]
                rh, rw = smart_resize(h, w, ps * ms, sz["shortest_edge"], sz["longest_edge"])
                arr = np.stack([np.asarray(Image.fromarray(f.astype(np.uint8)).resize((rw, rh), Image.BICUBIC))
                                for f in frames]).astype(np.float32)
                arr = (arr.transpose(0, 3, 1, 2) / 255.0 - mean) / std  # (T, C, H, W)
                if pad := -n % tp:
                    arr = np.concatenate([arr, np.repeat(arr[-1:], pad, 0)], 0)
                gt, gh, gw = arr.shape[0] // tp, rh // ps, rw // ps
                c = arr.shape[1]
                p = arr.reshape(gt, tp, c, gh // ms, ms, ps, gw // ms, ms, ps)
                p = p.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gt * gh * gw, c * tp * ps * ps)
                patches.append(p)
                grids.append([gt, gh, gw])
                md = video_metadata[i] if video_metadata is not None and i < len(video_metadata) else None
                while isinstance(md, (list, tuple)) and len(md) == 1:
                    md = md[0]
                if isinstance(md, dict):
                    md = VideoMetadata(**{k: v for k, v in md.items() if k in VideoMetadata.__dataclass_fields__})
                if md is None:
                    md = VideoMetadata(total_num_frames=n, fps=self.fps, frames_indices=list(range(n)))
                metas.append(md)
            out = BatchFeature(data={"pixel_values_videos": np.concatenate(patches, 0).astype(np.float32),
                                     "video_grid_thw": np.asarray(grids, np.int64)},
                               tensor_type=return_tensors)
            if return_metadata:
                out["video_metadata"] = metas
            return out

    return QwenVideoProcessor


class _VideoProcessorLoader:
    """What ProcessorMixin.from_pretrained calls for the ``video_processor`` slot."""

    def __init__(self, cls):
        self.cls = cls

    def from_pretrained(self, path, *args, **kwargs):
        config = {}
        for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
            file = os.path.join(str(path), kwargs.get("subfolder") or "", name)
            if os.path.isfile(file):
                with open(file) as f:
                    config = json.load(f)
                break
        return self.cls.from_dict(config)


VideoProcessorLoader = None  # set by install()


def install() -> None:
    """Make the Qwen-VL processors constructible without torchvision (no-op when it imports)."""
    global _installed, VideoProcessorLoader
    if _installed:
        return
    _installed = True
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return
    import transformers
    from transformers import processing_utils, video_processing_utils

    for model in ("qwen2_vl", "pixtral", "clip", "siglip", "llava"):
        name = f"transformers.models.{model}.image_processing_{model}"
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        try:
            pil = importlib.import_module(f"transformers.models.{model}.image_processing_pil_{model}")
        except ImportError:
            continue
        twin = types.ModuleType(name)
        twin.__dict__.update({k: v for k, v in vars(pil).items() if not k.startswith("__")})
        for k, v in vars(pil).items():
            if k.endswith("ImageProcessorPil"):
                setattr(twin, k[: -len("Pil")], v)
        sys.modules[name] = twin

    cls = _make_video_processor_class()
    # ProcessorMixin checks the video processor's class against transformers.VideoProcessorMixin,
    # which the torchvision-less package does not export.
    for module in {id(m): m for m in (transformers, processing_utils.transformers_module)}.values():
        setattr(module, "VideoProcessorMixin", video_processing_utils.VideoProcessorMixin)
    VideoProcessorLoader = _VideoProcessorLoader(cls)
    processing_utils.MODALITY_TO_AUTOPROCESSOR_MAPPING._MAPPING_NAMES["video_processor"] = (
        "evtp_test_standin", "VideoProcessorLoader")
