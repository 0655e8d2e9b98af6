"""Bad settings fail when the engine starts, naming the setting; never a silent stock run."""
from __future__ import annotations

import pytest

import tiny_models as tm
from conftest import build_llm, close, evtp, greedy

from evtp.integrations.vllm import EvtpSettings
from evtp.integrations.vllm.positions import check_runs_separated


@pytest.mark.parametrize("settings, error, words", [
    ({"method": "nope"}, ValueError, ["unknown selection method 'nope'", "kcenter"]),
    ({"method": "evtp", "spatial_wieght": 1.0}, TypeError, ["unknown option", "spatial_wieght"]),
    ({"spatial_weight": "abc"}, ValueError, ["option spatial_weight='abc': must be a finite number >= 0"]),
    ({"keep": 0.0}, ValueError, ['["keep"]=0.0', "(0, 1]"]),
    ({"keep": 1.5}, ValueError, ['["keep"]=1.5']),
    ({"keep": "half"}, ValueError, ['["keep"]=\'half\'']),
    ({"keep": {"radius": 0.5}}, ValueError, ["CoverageTarget", "placeholders"]),
    ({"method": "attention"}, ValueError, ["'attention'", "attention scores"]),
    ({"method": "evtp", "saliency_weight": 4.0}, ValueError, ["saliency_weight", "attention scores"]),
    ({"position_mode": "shifted"}, ValueError, ["position_mode", "contiguous"]),
    ({"seed": "0"}, TypeError, ['["seed"]']),
])
def test_bad_settings_fail_at_engine_start(model_dirs, settings, error, words):
    with pytest.raises(error) as info:
        build_llm(model_dirs["qwen2_5_vl"], **evtp(**settings))
    for w in words:
        assert w in str(info.value)


def test_not_a_dict(model_dirs):
    with pytest.raises(TypeError, match=r'hf_overrides\["evtp"\] must be a dict'):
        EvtpSettings.from_dict(0.25)


def test_key_on_unsupported_architecture(tmp_path):
    """The key on a model the plugin does not adapt (here a text-only Llama) is refused."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok, _ = tm.make_tokenizer()
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=128, max_position_embeddings=4096)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"LlamaForCausalLM is not supported by evtp's vLLM plugin; supported: "
                                         r"Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration"):
        build_llm(str(tmp_path), limit_mm_per_prompt=None, **evtp(keep=0.25))


def test_evtp_and_vllm_video_pruning_together(model_dirs):
    with pytest.raises(ValueError, match="video_pruning_rate=0.5 both prune"):
        build_llm(model_dirs["qwen2_5_vl"], video_pruning_rate=0.5, **evtp(keep=0.25))


def test_foreign_worker_class(model_dirs):
    with pytest.raises(ValueError, match="needs evtp's worker"):
        build_llm(model_dirs["qwen2_5_vl"], worker_cls="vllm.v1.worker.cpu_worker.CPUWorker", **evtp(keep=0.25))


def test_prompt_layouts_the_positions_cannot_anchor():
    img, vid, text = 5, 6, 9
    check_runs_separated([img, text, vid, text], (img, vid))
    with pytest.raises(ValueError, match="ends with a media placeholder"):
        check_runs_separated([text, img], (img, vid))
    with pytest.raises(ValueError, match="touch at token 2"):
        check_runs_separated([text, img, vid, text], (img, vid))


def test_bad_prompt_is_a_request_error(model_dirs):
    """A prompt ending in a bare placeholder fails that request; the engine keeps serving."""
    llm = build_llm(model_dirs["qwen2_5_vl"], **evtp(keep=0.25))
    try:
        with pytest.raises(ValueError, match="ends with a media placeholder"):
            llm.generate([{"prompt": "<|im_start|>user describe <|image_pad|>",
                           "multi_modal_data": {"image": tm.image(1)}}], greedy(), use_tqdm=False)
        ok = llm.generate([{"prompt": tm.prompt(tm.IMAGE, "describe"), "multi_modal_data": {"image": tm.image(1)}}],
                          greedy(), use_tqdm=False)
        assert len(ok[0].outputs[0].token_ids) > 0
    finally:
        close(llm)
