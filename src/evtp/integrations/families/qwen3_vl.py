"""Qwen3-VL (dense and MoE) and Qwen3.5: Qwen-VL grids, frames as separate runs, deepstack inputs.

* Every frame (temporal patch) of a video is its own run of video tokens after a timestamp;
  inside ``generate`` the runs are regrouped into videos from the per-video feature counts of
  ``mm_encoder_outputs``, so a video keeps one budget with the frame as its first grid axis.
* Qwen3-VL's language model also receives ``visual_pos_masks`` (B, L) and
  ``deepstack_visual_embeds`` (one (V, D) tensor per deepstack layer, added to the hidden states
  of early layers at the visual positions): both shrink with the sequence.
* Qwen3.5's language model mixes linear-attention (gated delta-net) and full-attention layers;
  its inputs shrink like Qwen2.5-VL's (it has no deepstack).
"""
from __future__ import annotations

from evtp.integrations import tiny
from evtp.integrations.families.qwen_vl import QwenVLFamily, _common, items_from_encoder_outputs, qwen_case
from evtp.integrations.protocol import register_family


class Qwen3VLFamily(QwenVLFamily):
    def items_of_runs(self, mask, name, stash):
        return items_from_encoder_outputs(mask, name, stash)

    def lm_inputs(self, core, kw, out, stash):
        vpm = kw.get("visual_pos_masks")
        deep = kw.get("deepstack_visual_embeds")
        kw = super().lm_inputs(core, kw, out, stash)
        if vpm is not None:
            survives = out.keep_mask[vpm]  # (V,) batch-major, the order deepstack rows are in
            slot = out.kept_indices >= 0
            kw["visual_pos_masks"] = vpm.gather(1, out.kept_indices.clamp(min=0)) & slot
            if deep is not None:
                kw["deepstack_visual_embeds"] = [d[survives] for d in deep]
        return kw


@register_family("Qwen3VLModel")
class Qwen3VL(Qwen3VLFamily):
    name = "Qwen3-VL (Sa2VA-Qwen3-VL)"

    def tiny_cases(self):
        return [qwen_case("qwen3_vl", build_qwen3_vl, frames_split=True)]


@register_family("Qwen3VLMoeModel")
class Qwen3VLMoe(Qwen3VLFamily):
    name = "Qwen3-VL-MoE"

    def tiny_cases(self):
        return [qwen_case("qwen3_vl_moe", build_qwen3_vl_moe, frames_split=True)]


@register_family("Qwen3_5Model", "Qwen3_5MoeModel")
class Qwen3_5(Qwen3VLFamily):
    name = "Qwen3.5 (dense and MoE)"

    def tiny_cases(self):
        return [qwen_case("qwen3_5", build_qwen3_5, frames_split=True,
                          notes="1 linear-attention + 1 full-attention layer")]


def _vision(**extra):
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=4, spatial_merge_size=2,
                temporal_patch_size=2, in_channels=3, out_hidden_size=32, num_position_embeddings=16, **extra)


def build_qwen3_vl(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    common = _common(head_dim=8)
    common["text_config"]["rope_parameters"] = dict(tiny.MROPE, mrope_interleaved=True)
    cfg = tf.Qwen3VLConfig(vision_config=_vision(deepstack_visual_indexes=[0, 1]), **common)
    return tiny.instantiate(tf.Qwen3VLForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def build_qwen3_vl_moe(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    common = _common(head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
    common["text_config"]["rope_parameters"] = dict(tiny.MROPE, mrope_interleaved=True)
    cfg = tf.Qwen3VLMoeConfig(vision_config=_vision(deepstack_visual_indexes=[0]), **common)
    return tiny.instantiate(tf.Qwen3VLMoeForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)


def build_qwen3_5(*, seed: int = 0, attn_implementation: str = "sdpa"):
    import transformers as tf

    common = _common(head_dim=8, layer_types=["linear_attention", "full_attention"], linear_key_head_dim=8,
                     linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4)
    common["text_config"]["rope_parameters"] = dict(tiny.MROPE, mrope_interleaved=True,
                                                    partial_rotary_factor=1.0)
    cfg = tf.Qwen3_5Config(vision_config=_vision(), **common)
    return tiny.instantiate(tf.Qwen3_5ForConditionalGeneration, cfg, seed=seed,
                            attn_implementation=attn_implementation)
