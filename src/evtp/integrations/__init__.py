"""Integrations: prune visual tokens inside real models.

* `evtp.integrations.transformers` — `apply(model, method=, keep=)` / `remove(model)` for
  transformers LLaVA, Qwen2-VL, Qwen2.5-VL and InternVL instances (imports transformers lazily).
* `evtp.integrations.generic.prune_inputs_embeds` — the same pruning from any model's own code
  (LISA, Sa2VA remote code, ...); see docs/recipes.md.
* (the LISA/Sa2VA-style LLaVA + SAM IVS model that uses them is `evtp.models.segmentation`)
"""
from evtp.integrations.generic import PrunedInputs, prune_inputs_embeds

__all__ = ["PrunedInputs", "prune_inputs_embeds"]
