"""``llava-sam-tiny``: a tiny random LISA-style model (transformers LLaVA + SamModel +
Sam2VideoModel + [SEG] projectors, `evtp.models.segmentation.LlavaSamIVS`), for tests; registered
in `evtp.models` by `evtp.testing.register_test_models`. Its masks are noise.
"""
from __future__ import annotations

import torch

from evtp.models.segmentation import LlavaSamIVS, LlavaSamPredictOptions, SegProjector, _placement


def tiny_sam(*, seed: int = 0, image_size: int = 128):
    """A tiny random transformers SamModel (≈0.1 M parameters, 128-px input)."""
    from transformers import SamConfig, SamModel

    torch.manual_seed(seed)
    cfg = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                           patch_size=16, output_channels=32, mlp_dim=64, window_size=4,
                           global_attn_indexes=[1], num_pos_feats=16),
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size, image_embedding_size=image_size // 16,
                                   mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                                 iou_head_hidden_dim=32))
    return SamModel(cfg).eval()


def tiny_sam2_video(*, seed: int = 0, image_size: int = 128):
    """A tiny random transformers Sam2VideoModel (≈1.5 M parameters, 128-px input, hidden 128).

    Constraints found in the environment notes: memory_encoder_output_channels = 64 and a hidden
    size that is a multiple of 64 and larger than 64; a Hiera global-attention block must not be
    the first block of a stage.
    """
    from transformers import Sam2VideoConfig, Sam2VideoModel

    from evtp.testing.checkpoints import sam2_config

    cfg = Sam2VideoConfig(**sam2_config(image_size))
    torch.manual_seed(seed)
    return Sam2VideoModel(cfg).eval()


TINY_VOCAB = 128
TINY_IMAGE = 100  # image placeholder id in the tiny vocabulary
TINY_SEG = 104  # [SEG] id in the tiny vocabulary


def tiny_llava(*, seed: int = 0):
    """A tiny random transformers LlavaForConditionalGeneration: CLIP tower of 2 layers at 32 px
    (16 image tokens of 8 px), Llama LM of 2 layers, hidden size 32, vocabulary `TINY_VOCAB`."""
    import transformers as tf

    text = dict(vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, image_size=32, patch_size=8),
        text_config=tf.LlamaConfig(**text), image_token_id=TINY_IMAGE, projector_hidden_act="gelu",
        vision_feature_layer=-1)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return tf.LlavaForConditionalGeneration(cfg).eval()


def load_tiny(*, seed: int = 0, llm_frames: int = 2, max_new_tokens: int = 2, video: bool = True,
              device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32) -> LlavaSamIVS:
    """``llava-sam-tiny``: tiny random LLaVA + SamModel (+ Sam2VideoModel for videos when ``video``);
    words map to ids by a fixed hash. Masks are noise. ``device`` / ``dtype``: where the weights go."""
    device, dtype = _placement(device, dtype)
    vlm = tiny_llava(seed=seed)
    sam = tiny_sam(seed=seed)
    torch.manual_seed(seed)
    proj = SegProjector(vlm.config.text_config.hidden_size, sam.config.mask_decoder_config.hidden_size).eval()
    vsam = vproj = None
    if video:
        vsam = tiny_sam2_video(seed=seed)
        torch.manual_seed(seed + 1)
        vproj = SegProjector(vlm.config.text_config.hidden_size, vsam.config.mask_decoder_config.hidden_size).eval()
    per = 16

    def encode(text: str, n_images: int) -> torch.Tensor:
        words = [3 + sum(w.encode()) % 97 for w in text.lower().split()]
        body = []
        for _ in range(n_images):
            body += [TINY_IMAGE] * per + [10]
        return torch.tensor([[1, 11] + body + words + [12]])

    return LlavaSamIVS("llava-sam-tiny", vlm, sam, proj, encode, answer_ids=[20, 21, TINY_SEG, 22],
                       seg_token_id=TINY_SEG, eos_token_id=2, max_new_tokens=max_new_tokens,
                       llm_frames=llm_frames, note="tiny random weights: masks are meaningless",
                       video_sam=vsam, video_projector=vproj).to(device, dtype)


load_tiny.predict_options = LlavaSamPredictOptions
