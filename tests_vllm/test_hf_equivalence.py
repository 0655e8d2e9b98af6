"""One selection, two engines: the same tiny weights greedy-generate the same tokens in
transformers with evtp's HF adapter and in vLLM with the plugin, at keep 0.25.

Images only: unpruned, the two engines already disagree on video (transformers 5.19 advances the
text after a Qwen2.5-VL video by max(h, w), vLLM 0.32 by the video's full extent including time;
docs/vllm.md), so a video comparison could not isolate the pruning.
"""
from __future__ import annotations

import pytest
import torch

from conftest import MAX_TOKENS, PLACEHOLDER_IDS, evtp, requests, tokens

IMAGE_REQUESTS = ["image", "tall_image", "two_images"]
HF_CLASSES = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration"}


def _hf_generate(model_dir: str, family: str, keep: float | None) -> dict:
    import evtp_test_standin
    import transformers
    from transformers import AutoProcessor

    from evtp.integrations import transformers as evtp_hf

    evtp_test_standin.install()
    processor = AutoProcessor.from_pretrained(model_dir)
    model = getattr(transformers, HF_CLASSES[family]).from_pretrained(model_dir, dtype=torch.float32).eval()
    if keep is not None:
        evtp_hf.apply(model, method="evtp", keep=keep)
    out = {}
    for name in IMAGE_REQUESTS:
        req = requests(family)[name]
        images = req["multi_modal_data"]["image"]
        inputs = processor(text=[req["prompt"]], images=images if isinstance(images, list) else [images],
                           return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False,
                                 suppress_tokens=PLACEHOLDER_IDS)
        out[name] = ids[0, inputs["input_ids"].shape[1]:].tolist()
    return out


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_unpruned_engines_agree_on_images(engine, model_dirs, family):
    vllm_tokens = tokens(engine(family, stock=True))
    assert _hf_generate(model_dirs[family], family, None) == {n: vllm_tokens[n] for n in IMAGE_REQUESTS}


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_keep_quarter_same_tokens_in_both_engines(engine, model_dirs, family):
    vllm_tokens = tokens(engine(family, **evtp(method="evtp", keep=0.25)))
    assert _hf_generate(model_dirs[family], family, 0.25) == {n: vllm_tokens[n] for n in IMAGE_REQUESTS}
