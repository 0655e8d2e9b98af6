"""Engine-start checks: vLLM calls ``MODELS_CONFIG_MAP[architecture].verify_and_update_config``
once per engine, in the front-end process, before any worker starts.

* Supported architectures (`evtp.integrations.vllm.FAMILIES`): with the ``evtp`` key, validate
  the settings (`EvtpSettings`), refuse vLLM's own video pruning at the same time, and select
  evtp's worker for this engine (it turns on the runner's position-recompute call; vLLM's CPU
  runner never does, and its V1 GPU runner only for its own video pruning).
* Every other registered architecture: refuse the ``evtp`` key, naming the architecture, instead of
  serving the stock model silently.

Existing per-architecture hooks keep running first.
"""
from __future__ import annotations

from evtp.integrations.vllm.settings import CONFIG_KEY, EvtpSettings

WORKERS = {"cpu": "evtp.integrations.vllm.cpu_worker.EvtpCPUWorker",
           "gpu": "evtp.integrations.vllm.gpu_worker.EvtpGPUWorker"}


def _platform_worker() -> str:
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return WORKERS["cpu"]
    if current_platform.is_cuda_alike():
        return WORKERS["gpu"]
    raise ValueError(f'hf_overrides["{CONFIG_KEY}"]: evtp supports vLLM on CPU and CUDA / ROCm GPUs, not on '
                     f"{type(current_platform).__name__}")


def configure_engine(vllm_config) -> EvtpSettings | None:
    """The supported-architecture check: validate, and choose evtp's worker. Returns the settings."""
    model_config = vllm_config.model_config
    settings = EvtpSettings.from_hf_config(model_config.hf_config)
    if settings is None:
        return None
    mm = model_config.multimodal_config
    if mm is not None and mm.is_multimodal_pruning_enabled():
        raise ValueError(f'hf_overrides["{CONFIG_KEY}"] and video_pruning_rate={mm.video_pruning_rate} both '
                         f"prune visual tokens; use one of them")
    parallel = vllm_config.parallel_config
    worker = _platform_worker()
    if parallel.worker_cls not in ("auto", worker):
        raise ValueError(f'hf_overrides["{CONFIG_KEY}"] needs evtp\'s worker ({worker}), but worker_cls is '
                         f"{parallel.worker_cls!r}")
    parallel.worker_cls = worker
    return settings


def refuse_key(vllm_config) -> None:
    """The unsupported-architecture check."""
    from evtp.integrations.vllm import FAMILIES

    model_config = vllm_config.model_config
    if getattr(model_config.hf_config, CONFIG_KEY, None) is not None:
        raise ValueError(f'hf_overrides["{CONFIG_KEY}"] is set but {model_config.architecture} is not supported '
                         f"by evtp's vLLM plugin; supported: {', '.join(sorted(FAMILIES))}")


def _hook(check, previous):
    from vllm.model_executor.models.config import VerifyAndUpdateConfig

    base = previous or VerifyAndUpdateConfig

    class EvtpCheck(base):
        @staticmethod
        def verify_and_update_config(vllm_config) -> None:
            if previous is not None:
                previous.verify_and_update_config(vllm_config)
            check(vllm_config)

    EvtpCheck.evtp_previous = previous
    return EvtpCheck


def install_config_hooks(families) -> None:
    """Put the two checks in vLLM's per-architecture hook table (idempotent)."""
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    shared_refusal = _hook(refuse_key, None)
    for arch in list(ModelRegistry.get_supported_archs()):
        previous = MODELS_CONFIG_MAP.get(arch)
        if previous is not None and hasattr(previous, "evtp_previous"):
            continue
        check = configure_engine if arch in families else refuse_key
        MODELS_CONFIG_MAP[arch] = shared_refusal if previous is None and check is refuse_key \
            else _hook(check, previous)
