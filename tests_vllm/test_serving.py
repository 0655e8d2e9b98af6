"""The plugin as users run it: vLLM's default engine settings, and the OpenAI-compatible server
queried over HTTP with the `openai` client.

With defaults vLLM profiles memory and compiles the model at start-up, running its own dummy
multimodal prompt through the processor and the vision tower; the plugin must take that path like
a request. One setting is not vLLM's default, and only for this machine: on CPU,
``gpu_memory_utilization`` (default 0.9) is the share of the machine's RAM the worker reserves
(KV cache = share x total RAM - the worker's resident memory after profiling), so the default
claims ~21 GiB of a 24 GiB machine and cannot start beside other processes. The tests ask for
`WORKER_BYTES` instead, and keep vLLM's automatic KV-cache sizing (no ``kv_cache_memory_bytes``).
"""
from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import tiny_models as tm
from conftest import ALLOWED_IDS, close

KEEP = 0.25
WORKER_BYTES = 2.5 * 2**30
SERVER_START_TIMEOUT_S = 600  # a cold start compiles the model (~40 s on an idle 2-core CPU)
SERVER_STOP_TIMEOUT_S = 30
REQUEST_TIMEOUT_S = 120
MAX_TOKENS = 4

# the media of the requests (sizes are multiples of 28 px, so the processor does not resize them):
# Qwen2.5-VL merges 2x2 patches of 14 px, and 2 frames per temporal patch
IMAGE_SIZE = (168, 224)  # width, height -> grid (1, 8, 6) merged tokens
VIDEO_SIZE, VIDEO_FRAMES, VIDEO_FPS = (112, 168), 8, 2.0  # -> grid (4, 6, 4)


def merged_tokens(width: int, height: int, frames: int = 2) -> int:
    """Unpruned visual tokens of a Qwen2.5-VL image / video (an image is one temporal patch)."""
    return max(1, frames // 2) * (height // 28) * (width // 28)


def kept(n: int, keep: float = KEEP) -> int:
    """round(keep * n), half up, at least 1 (`evtp.select_tokens`'s rounding)."""
    return max(1, int(keep * n + 0.5))


def cpu_memory_share() -> float:
    import psutil

    return round(WORKER_BYTES / psutil.virtual_memory().total, 4)


# --------------------------------------------------------------------------------------------
# the requests: chat messages with the media as data: URLs, as an HTTP client sends them
# --------------------------------------------------------------------------------------------
def image_url() -> str:
    buf = io.BytesIO()
    tm.image(11, *IMAGE_SIZE).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def video_url(tmp_dir: str) -> str:
    """An MP4 (mp4v) clip, written with OpenCV (vLLM's video loader on CPU)."""
    import cv2

    clip, _ = tm.video(12, frames=VIDEO_FRAMES, width=VIDEO_SIZE[0], height=VIDEO_SIZE[1], fps=VIDEO_FPS)
    path = os.path.join(tmp_dir, "clip.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, VIDEO_SIZE)
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for frame in clip:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))  # RGB -> BGR
    writer.release()
    with open(path, "rb") as f:
        return "data:video/mp4;base64," + base64.b64encode(f.read()).decode()


def chat(part: dict, text: str) -> list[dict]:
    return [{"role": "user", "content": [part, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def conversations(tmp_path_factory):
    """name -> (messages, unpruned visual tokens)."""
    tmp = str(tmp_path_factory.mktemp("media"))
    return {
        "image": (chat({"type": "image_url", "image_url": {"url": image_url()}}, "describe the image"),
                  merged_tokens(*IMAGE_SIZE)),
        "video": (chat({"type": "video_url", "video_url": {"url": video_url(tmp)}}, "what is in this video"),
                  merged_tokens(*VIDEO_SIZE, frames=VIDEO_FRAMES)),
    }


def text_tokens(model_dir: str, messages: list[dict]) -> int:
    """Prompt tokens of a chat without its visual tokens: the chat template's rendering, minus
    the one placeholder per media item that vLLM expands."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    plain = [{"role": m["role"], "content": [{"type": "text", "text": c["text"]} if c["type"] == "text"
                                              else {"type": c["type"].removesuffix("_url")} for c in m["content"]]}
             for m in messages]
    ids = tok.apply_chat_template(plain, add_generation_prompt=True, tokenize=True, return_dict=False)
    placeholders = [tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")]
    return len(ids) - sum(i in placeholders for i in ids)


# --------------------------------------------------------------------------------------------
# the OpenAI-compatible server, in its own process on a free loopback port
# --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(proc: subprocess.Popen, port: int, log_path: str) -> None:
    import urllib.request

    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    with open(log_path) as f:
        tail = f.read()[-4000:]
    state = f"exited with {proc.returncode}" if proc.poll() is not None else \
        f"not healthy after {SERVER_START_TIMEOUT_S} s"
    raise RuntimeError(f"the vLLM server {state}; its log ends with:\n{tail}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the server shuts its engine processes down), then SIGKILL to the server's whole
    process group (it was started in a session of its own) if it has not exited in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the server is not reaped yet, so its group id is its own
        proc.wait(SERVER_STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def server(model_dirs, tmp_path_factory):
    """`python -m vllm.entrypoints.openai.api_server` with the evtp key and vLLM's defaults (its
    own engine process, compilation, profiling); yields the `openai` client and the model name."""
    from openai import OpenAI

    model = model_dirs["qwen2_5_vl"]
    port = free_port()
    log_path = str(tmp_path_factory.mktemp("server") / "server.log")
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--host", "127.0.0.1", "--port", str(port),
           "--hf-overrides", '{"evtp": {"method": "evtp", "keep": %s}}' % KEEP,
           "--gpu-memory-utilization", str(cpu_memory_share())]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until_healthy(proc, port, log_path)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=REQUEST_TIMEOUT_S,
                        max_retries=0)
        yield client, model
    finally:
        stop(proc)


def ask(server, messages):
    client, model = server
    return client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0.0,
                                          extra_body={"allowed_token_ids": ALLOWED_IDS, "ignore_eos": True})


@pytest.mark.parametrize("name", ["image", "video"])
def test_server_prompt_shorter_than_stock_by_the_pruned_tokens(server, conversations, name):
    messages, unpruned = conversations[name]
    reply = ask(server, messages)
    text = text_tokens(server[1], messages)
    stock = text + unpruned
    assert reply.usage.prompt_tokens == text + kept(unpruned)
    assert stock - reply.usage.prompt_tokens == unpruned - kept(unpruned)
    assert reply.usage.completion_tokens == MAX_TOKENS


def test_default_settings_engine_equals_the_server(server, conversations, model_dirs):
    """An in-process `LLM` with vLLM's defaults (compilation, memory profiling, automatic KV
    cache) serves the same chats with pruning, with the server's prompt lengths and tokens."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dirs["qwen2_5_vl"], hf_overrides={"evtp": {"method": "evtp", "keep": KEEP}},
              gpu_memory_utilization=cpu_memory_share())
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, allowed_token_ids=ALLOWED_IDS)
    try:
        for name, (messages, unpruned) in conversations.items():
            (out,) = llm.chat(messages, params, use_tqdm=False)
            reply = ask(server, messages)
            assert len(out.prompt_token_ids) == text_tokens(model_dirs["qwen2_5_vl"], messages) + kept(unpruned)
            assert len(out.prompt_token_ids) == reply.usage.prompt_tokens, name
            assert out.outputs[0].text == reply.choices[0].message.content, name
    finally:
        close(llm)


# --------------------------------------------------------------------------------------------
# what the profile runs (vLLM's own budget and dummy inputs, without an engine)
# --------------------------------------------------------------------------------------------
def mm_budget(model_dir: str, **kwargs):
    """vLLM's `MultiModalBudget` of an engine with vLLM's defaults plus ``kwargs``, as its worker
    builds it for memory profiling."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.multimodal.encoder_budget import MultiModalBudget
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    config = EngineArgs(model=model_dir, **kwargs).create_engine_config()
    return MultiModalBudget(config, MULTIMODAL_REGISTRY)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_profiling_sizes_for_the_kept_tokens(model_dirs, family):
    """The dummy prompt vLLM profiles with passes evtp's checks and is pruned like a request, and
    the encoder budget counts kept tokens per item (what the scheduler charges), so the profile
    runs 1 / keep times as many full-size items as stock's."""
    # smaller dummy media than the model's largest (vLLM's dummy options), to process them fast;
    # the per-item maxima do not depend on them
    small = {"limit_mm_per_prompt": {"image": {"count": 1, "width": 224, "height": 224},
                                     "video": {"count": 1, "num_frames": 4, "width": 112, "height": 112}}}
    stock = mm_budget(model_dirs[family], **small)
    ours = mm_budget(model_dirs[family], hf_overrides={"evtp": {"keep": KEEP}}, **small)
    assert ours.mm_max_toks_per_item == {m: kept(n) for m, n in stock.mm_max_toks_per_item.items()}
    budget = ours.get_encoder_budget()
    assert budget == stock.get_encoder_budget()  # max_num_batched_tokens dominates here
    for modality, k in ours.mm_max_toks_per_item.items():
        assert ours.mm_max_items_per_batch[modality] == budget // k
        assert ours.mm_max_items_per_batch[modality] > stock.mm_max_items_per_batch[modality]
    # the dummy prompt of one image and one video, processed by evtp's processor
    dummy = ours.processor.get_dummy_mm_inputs({"image": 1, "video": 1})
    full = stock.processor.get_dummy_mm_inputs({"image": 1, "video": 1})
    for modality in ("image", "video"):
        (pruned,) = dummy["mm_placeholders"][modality]
        (unpruned,) = full["mm_placeholders"][modality]
        runs = 1 if family == "qwen2_5_vl" or modality == "image" else \
            int(full["mm_kwargs"][modality][0]["video_grid_thw"].data[0])
        assert pruned.get_num_embeds() == runs * kept(unpruned.get_num_embeds() // runs)
