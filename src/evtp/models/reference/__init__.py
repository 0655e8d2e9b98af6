"""The reference IVS model: ViT -> projector -> [pruning hook] -> decoder-only LM -> [SEG] -> mask decoder.

One module per job: `config` (ReferenceConfig, the word tokenizer), `modules` (vision encoder, mask
decoder, LM builder), `prompt_decoder` and `seg_training` (the `seg` readout's promptable decoder
and its training stages), `model` (ReferenceIVS: training forward, pruning hook, inference), `saving`
(safetensors + JSON, device and dtype), `check` (the fixed accuracy check). The architecture is
described in `evtp.models.reference.model` and docs/reference_model.md.
"""
from evtp.models.reference.check import fixed_check, record_check
from evtp.models.reference.config import (N_COLOR_CLASSES, N_SHAPE_CLASSES, SPECIALS, ReferenceConfig,
                                          WordTokenizer)
from evtp.models.reference.model import ReferenceIVS, frames_to_tensor
from evtp.models.reference.modules import MaskDecoder, ViT, language_model, memory_map, mrope_section, token_heat
from evtp.models.reference.saving import WEIGHTS_DIR, load_pretrained, save_model

__all__ = ["N_COLOR_CLASSES", "N_SHAPE_CLASSES", "SPECIALS", "WEIGHTS_DIR", "ReferenceConfig",
           "WordTokenizer", "ReferenceIVS", "MaskDecoder", "ViT", "language_model", "memory_map", "mrope_section",
           "token_heat", "frames_to_tensor", "load_pretrained", "save_model",
           "fixed_check", "record_check"]
