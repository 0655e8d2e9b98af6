"""Stand-in of Sa2VA's remote-code ``Sa2VAChatConfig`` (``configuration_sa2va_chat.py`` of the
released ``ByteDance/Sa2VA-*`` InternVL checkpoints), written from its public structure.

The released config holds ``vision_config`` (InternViT, its own remote code), ``llm_config``
(Qwen2 / InternLM2 / Llama / Phi3, chosen by ``architectures[0]``), ``downsample_ratio``,
``template``, ``force_image_size``, ``select_layer``, ``ps_version``, dynamic-tile limits. The
stand-in keeps those keys; its vision tower is transformers' ``InternVLVisionConfig`` (the same
InternViT layout) and it adds ``grounding_config``: a transformers ``Sam2VideoConfig`` standing
in for Sa2VA's own SAM2 port (whose size is fixed in its code). Test support only.
"""
from __future__ import annotations

from transformers import InternVLVisionConfig, PretrainedConfig, Qwen2Config, Sam2VideoConfig


class Sa2VAChatConfig(PretrainedConfig):
    model_type = "sa2va_chat"

    def __init__(self, vision_config=None, llm_config=None, grounding_config=None, downsample_ratio=0.5,
                 template="qwen_chat", force_image_size=None, select_layer=-1, ps_version="v2",
                 dynamic_image_size=True, use_thumbnail=True, min_dynamic_patch=1, max_dynamic_patch=12,
                 **kwargs):
        super().__init__(**kwargs)
        self.vision_config = InternVLVisionConfig(**(vision_config or {}))
        llm = dict(llm_config or {})
        arch = (llm.get("architectures") or ["Qwen2ForCausalLM"])[0]
        if arch != "Qwen2ForCausalLM":
            raise NotImplementedError(f"the stand-in builds Qwen2ForCausalLM language models only, not {arch}")
        self.llm_config = Qwen2Config(**llm)
        self.grounding_config = Sam2VideoConfig(**(grounding_config or {}))
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.force_image_size = force_image_size
        self.select_layer = select_layer
        self.ps_version = ps_version
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch

    def to_dict(self):
        out = super().to_dict()
        for key in ("vision_config", "llm_config", "grounding_config"):
            out[key] = getattr(self, key).to_dict()
        return out
