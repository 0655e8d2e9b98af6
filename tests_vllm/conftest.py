"""Shared fixtures of the vLLM plugin's tests (run in .venv-vllm: `make test-vllm`).

vLLM runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0: 3-6 s per engine instead of ~15 s), one
engine at a time, on tiny random checkpoints saved to a temporary directory. Each engine
configuration serves the family's whole request set once (one request at a time, then all of them
as one batch) and its results are kept for the session, so each configuration is built once.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_models as tm  # noqa: E402
import evtp_test_standin  # noqa: E402

# what vLLM does through the stand-in's plugin entry point, for the tests that import transformers'
# Qwen processors (or evtp's vLLM classes) before any engine starts
evtp_test_standin.install()

MAX_TOKENS = 8
# small profiling inputs and KV cache: engine start-up costs ~3 s of CPU instead of ~8
ENGINE_DEFAULTS = dict(max_model_len=2048, dtype="float32", enforce_eager=True, max_num_seqs=8, seed=0,
                       kv_cache_memory_bytes=128 * 2**20,
                       limit_mm_per_prompt={"image": {"count": 2, "width": 224, "height": 224},
                                            "video": {"count": 1, "num_frames": 8, "width": 112, "height": 112}})


def requests(family: str) -> dict:
    """The request set: square and tall images, video at two frame rates, two images in one
    prompt, an image and a video in one prompt."""
    v2, m2 = tm.video(3, fps=2.0)
    v4, m4 = tm.video(3, fps=4.0)
    v5, m5 = tm.video(5, frames=4, fps=2.0)
    return {
        "image": {"prompt": tm.prompt(tm.IMAGE, "describe the image"), "multi_modal_data": {"image": tm.image(1)}},
        "tall_image": {"prompt": tm.prompt(tm.IMAGE, "describe the image"),
                       "multi_modal_data": {"image": tm.image(2, width=112, height=224)}},
        "video_2fps": {"prompt": tm.prompt(tm.VIDEO, "describe the video"), "multi_modal_data": {"video": (v2, m2)}},
        "video_4fps": {"prompt": tm.prompt(tm.VIDEO, "describe the video"), "multi_modal_data": {"video": (v4, m4)}},
        "two_images": {"prompt": tm.prompt(tm.IMAGE, "the red", tm.IMAGE, "describe a b c"),
                       "multi_modal_data": {"image": [tm.image(7, 168, 224), tm.image(8, 224, 112)]}},
        "image_and_video": {"prompt": tm.prompt(tm.IMAGE, "and", tm.VIDEO, "what is in this video"),
                            "multi_modal_data": {"image": tm.image(9, 112, 112), "video": (v5, m5)}},
    }


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"qwen2_5_vl": tm.save_qwen2_5_vl(str(root / "qwen2_5_vl")),
            "qwen3_vl": tm.save_qwen3_vl(str(root / "qwen3_vl"))}


STOCK_CLASSES = {
    "Qwen2_5_VLForConditionalGeneration": "vllm.model_executor.models.qwen2_5_vl:Qwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration": "vllm.model_executor.models.qwen3_vl:Qwen3VLForConditionalGeneration",
}


@contextlib.contextmanager
def stock_classes():
    """vLLM's own model classes under their names (as without the plugin), for this block only."""
    from vllm import ModelRegistry
    from vllm.plugins import load_general_plugins

    from evtp.integrations.vllm import FAMILIES

    load_general_plugins()  # so that the plugin cannot register its classes inside the block
    for arch, target in STOCK_CLASSES.items():
        ModelRegistry.register_model(arch, target)
    try:
        yield
    finally:
        for arch, target in FAMILIES.items():
            ModelRegistry.register_model(arch, target)


def build_llm(model_dir: str, **kwargs):
    from vllm import LLM

    return LLM(model=model_dir, **{**ENGINE_DEFAULTS, **kwargs})


# a random model may emit a media placeholder as text; both engines are kept from doing so
# (transformers' evtp adapter refuses placeholders in a decode step)
PLACEHOLDER_IDS = [tm.SPECIALS.index("<|image_pad|>"), tm.SPECIALS.index("<|video_pad|>")]
ALLOWED_IDS = [i for i in range(tm.VOCAB_SIZE) if i not in PLACEHOLDER_IDS]


def greedy(max_tokens: int = MAX_TOKENS):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, allowed_token_ids=ALLOWED_IDS)


def summary(output) -> dict:
    return {"prompt_len": len(output.prompt_token_ids), "tokens": list(output.outputs[0].token_ids),
            "cached": output.num_cached_tokens or 0}


def close(llm) -> None:
    del llm
    gc.collect()


class EngineResults:
    """Session cache: (family, engine kwargs) -> results of the family's request set."""

    def __init__(self, model_dirs):
        self.model_dirs = model_dirs
        self.cache = {}

    def stock_copy(self, family: str) -> str:
        """The same checkpoint under another path: vLLM caches the model class per checkpoint
        path for the process's lifetime, so stock and evtp engines must not share one."""
        path = self.model_dirs[family] + "-stock"
        if not os.path.isdir(path):
            shutil.copytree(self.model_dirs[family], path)
        return path

    def __call__(self, family: str, *, stock: bool = False, **kwargs) -> dict:
        """Results of ``family``'s requests on an engine built with ``kwargs``; with
        ``stock``, on vLLM's own model classes (the plugin's classes out of the registry)."""
        key = (family, stock, json.dumps(kwargs, sort_keys=True))
        if key not in self.cache:
            reqs = requests(family)
            with stock_classes_if(stock):
                llm = build_llm(self.stock_copy(family) if stock else self.model_dirs[family], **kwargs)
            single = {name: summary(llm.generate([r], greedy(), use_tqdm=False)[0]) for name, r in reqs.items()}
            batch = llm.generate(list(reqs.values()), greedy(), use_tqdm=False)
            close(llm)
            self.cache[key] = {"single": single, "batched": {n: summary(o) for n, o in zip(reqs, batch)}}
        return self.cache[key]


@pytest.fixture(scope="session")
def engine(model_dirs):
    return EngineResults(model_dirs)


def stock_classes_if(flag: bool):
    return stock_classes() if flag else contextlib.nullcontext()


def evtp(**settings) -> dict:
    """Engine kwargs that switch the plugin on."""
    return {"hf_overrides": {"evtp": settings}}


def tokens(results: dict, part: str = "single") -> dict:
    return {name: r["tokens"] for name, r in results[part].items()}
