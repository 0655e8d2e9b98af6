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

from evtp.integrations.families.qwen_vl import QwenVLFamily, items_from_encoder_outputs


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


class Qwen3VL(Qwen3VLFamily):
    name = "Qwen3-VL (Sa2VA-Qwen3-VL)"
    core_names = ("Qwen3VLModel",)


class Qwen3VLMoe(Qwen3VLFamily):
    name = "Qwen3-VL-MoE"
    core_names = ("Qwen3VLMoeModel",)


class Qwen3_5(Qwen3VLFamily):
    name = "Qwen3.5 (dense and MoE)"
    core_names = ("Qwen3_5Model", "Qwen3_5MoeModel")
