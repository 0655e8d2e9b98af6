"""Integrations: prune visual tokens inside real models.

* `evtp.integrations.pruner.TokenPruner` (exported as `evtp.TokenPruner`) — ``with pruner(model):``
  / ``pruner.apply(model)`` / ``pruner.remove(model)`` for any transformers VLM a family adapter
  covers; `evtp.integrations.transformers` holds the function-style aliases ``apply`` / ``remove``
  / ``last_pruning``.
* `evtp.integrations.protocol` — the family-adapter protocol; one file per family in
  `evtp.integrations.families`; `evtp.integrations.registry` above them finds a model's family
  (transformers model modules are imported only when a model is patched).
* `evtp.integrations.generic.prune_inputs_embeds` — the same pruning from any model's own code
  (LISA, your model, ...); see docs/recipes.md.
* (the LISA/Sa2VA-style LLaVA + SAM IVS model that uses them is `evtp.models.segmentation`)
"""
from evtp.integrations.generic import PrunedInputs, prune_inputs_embeds

__all__ = ["PrunedInputs", "prune_inputs_embeds"]
