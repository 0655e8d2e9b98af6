"""evtp bench vllm: offline serving cost of a random ~80M-parameter Qwen2.5-VL in vLLM, with evtp's
plugin at several keep ratios, against stock vLLM and (video) vLLM's own video pruning (EVS).

Per engine configuration and request kind (448 px images: 256 visual tokens; 16-frame 224 px
videos: 512), in one in-process vLLM engine at a time:

* TTFT: wall time of one request with max_tokens=1 (vision tower + selection + LM prefill), median;
* prefill: the language model's own forward in that request (a forward hook), median wall time and
  median process CPU time (the CPU time is the comparable number on a shared machine);
* throughput: --batch requests at once with --max-tokens each, median of --repeats batches of distinct
  media after one warm-up batch: requests/s and output tokens/s.

Needs .venv-vllm (`make venv-vllm`). On a CPU without torchvision, the video processor comes from
the test-only stand-in that `make venv-vllm` installs. vLLM 0.32's EVS never enables its position
recompute on CPU (docs/vllm.md, bug 1): for the EVS rows this benchmark uses `EvsCPUWorker`, which
turns it on, so that EVS runs at all; EVS's positions are then still those of stock vLLM.
"""
from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from evtp.eval.records import prepare_output_file, write_json_atomic
from evtp.settings import SettingsError

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
WORDS = ["user", "assistant", "describe", "the", "image", "video", "what", "is", "in", "this"] + \
        [f"w{i}" for i in range(100)]


def build_model(out: str, hidden: int = 1024, layers: int = 8, vision_hidden: int = 256, vision_depth: int = 4,
                seed: int = 0) -> tuple[str, int]:
    """Save a random Qwen2.5-VL (LM hidden x layers, ViT vision_hidden x vision_depth) with a word
    tokenizer and its image processor; returns (directory, parameter count)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="the"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS})
    ids = {s: vocab[s] for s in SPECIALS}
    special = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    heads = hidden // 64
    cfg = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 4), vocab_size=256,
                         max_position_embeddings=8192,
                         rope_parameters={"rope_type": "default", "mrope_section": [8, 12, 12], "rope_theta": 1e6},
                         **special),
        vision_config=dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                           num_heads=vision_hidden // 64, out_hidden_size=hidden, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, fullatt_block_indexes=[vision_depth - 1], window_size=112,
                           tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], **special)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.save_pretrained(out)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=448 * 448).save_pretrained(out)
    fast.save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


def _requests(kind: str, n: int, seed: int) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if kind == "image":
            img = Image.fromarray((rng.random((448, 448, 3)) * 255).astype("uint8"))
            out.append({"prompt": "<|im_start|>user <|vision_start|><|image_pad|><|vision_end|> describe the image "
                                  "<|im_end|> <|im_start|>assistant ", "multi_modal_data": {"image": img}})
        else:
            base = rng.random((224, 224, 3))
            clip = np.stack([np.clip(base + 0.05 * k * rng.random((224, 224, 3)), 0, 1) for k in range(16)])
            meta = {"fps": 2.0, "duration": 8.0, "total_num_frames": 16, "frames_indices": list(range(16)),
                    "video_backend": "opencv", "do_sample_frames": False}
            out.append({"prompt": "<|im_start|>user <|vision_start|><|video_pad|><|vision_end|> describe the video "
                                  "<|im_end|> <|im_start|>assistant ",
                        "multi_modal_data": {"video": ((clip * 255).astype("uint8"), meta)}})
    return out


_FORWARD_MS: list[tuple[float, float]] = []  # (wall ms, process CPU ms) per forward


def _hook_language_model(model):
    """Record the model's forward wall time (in this process) for every call: vLLM runs the vision
    tower in a separate call (embed_multimodal), so forward is the language model's prefill / decode."""
    lm = model
    state = {}

    def pre(module, args, kwargs):
        state["t"], state["cpu"] = time.perf_counter(), time.process_time()

    def post(module, args, kwargs, output):
        _FORWARD_MS.append(((time.perf_counter() - state["t"]) * 1e3, (time.process_time() - state["cpu"]) * 1e3))

    lm.register_forward_pre_hook(pre, with_kwargs=True)
    lm.register_forward_hook(post, with_kwargs=True)


def measure(model_dir: str, engine_kwargs: dict, kinds: list[str], repeats: int, batch: int,
            max_tokens: int) -> dict:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, dtype="float32", enforce_eager=True, max_model_len=4096, seed=0,
              max_num_seqs=max(8, batch), enable_prefix_caching=False, kv_cache_memory_bytes=1 << 30,
              limit_mm_per_prompt={"image": {"count": 1, "width": 448, "height": 448},
                                   "video": {"count": 1, "num_frames": 16, "width": 224, "height": 224}},
              **engine_kwargs)
    llm.apply_model(_hook_language_model)
    first = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    many = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    out = {}
    for kind in kinds:
        reqs = _requests(kind, repeats + 1, seed=1)
        ttft, prefill, prefill_cpu, prompt_len = [], [], [], None
        for i, r in enumerate(reqs):  # distinct media: no encoder-cache hits; the first is warm-up
            _FORWARD_MS.clear()
            t = time.perf_counter()
            o = llm.generate([r], first, use_tqdm=False)[0]
            if i:
                ttft.append((time.perf_counter() - t) * 1e3)
                prefill.append(_FORWARD_MS[0][0])
                prefill_cpu.append(_FORWARD_MS[0][1])
            prompt_len = len(o.prompt_token_ids)
        walls, n_out = [], []
        for i in range(repeats + 1):  # batches of distinct media; the first is warm-up
            breqs = _requests(kind, batch, seed=2 + i)
            t = time.perf_counter()
            outs = llm.generate(breqs, many, use_tqdm=False)
            if i:
                walls.append(time.perf_counter() - t)
                n_out.append(sum(len(o.outputs[0].token_ids) for o in outs))
        wall = statistics.median(walls)
        out[kind] = {"prompt_len": prompt_len, "ttft_ms": statistics.median(ttft),
                     "prefill_ms": statistics.median(prefill), "prefill_cpu_ms": statistics.median(prefill_cpu),
                     "requests_per_s": batch / wall,
                     "output_tokens_per_s": statistics.median(n_out) / wall}
    del llm
    gc.collect()
    return out


def configurations(keeps: list[float], method: str) -> list[tuple[str, dict, list[str]]]:
    """(label, engine kwargs, request kinds) per engine."""
    rows = [("stock vLLM", {}, ["image", "video"])]
    name = "evtp" if method == "evtp" else f"evtp[{method}]"
    rows += [(f"{name} keep {k:g}", {"hf_overrides": {"evtp": {"method": method, "keep": k}}},
              ["image", "video"]) for k in keeps]
    rows += [(f"vLLM EVS keep {k:g}", {"video_pruning_rate": round(1.0 - k, 6), "worker_cls": EVS_WORKER}, ["video"])
             for k in keeps if k < 1.0]
    return rows


EVS_WORKER = "evtp.bench.vllm_evs_worker.EvsCPUWorker"


def table(results: dict) -> str:
    lines = ["| engine | media | prompt tokens | TTFT ms | LM prefill ms | LM prefill CPU ms | CPU speed-up | "
             "requests/s | output tokens/s |", "|---|---|---|---|---|---|---|---|---|"]
    for kind in ("image", "video"):
        base = results.get("stock vLLM", {}).get(kind)
        for label, res in results.items():
            r = res.get(kind)
            if r is None:
                continue
            speed = f"{base['prefill_cpu_ms'] / r['prefill_cpu_ms']:.2f}x" if base else "-"
            lines.append(f"| {label} | {kind} | {r['prompt_len']} | {r['ttft_ms']:.0f} | {r['prefill_ms']:.0f} | "
                         f"{r['prefill_cpu_ms']:.0f} | {speed} | {r['requests_per_s']:.2f} | "
                         f"{r['output_tokens_per_s']:.1f} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class VllmBenchConfig:
    """What ``evtp bench vllm`` measures (module docstring): stock vLLM, evtp's plugin with
    ``method`` at every ratio of ``keeps`` and (video) vLLM's EVS at the same ratios; ``repeats``
    single requests per kind (medians), throughput batches of ``batch`` requests of
    ``max_tokens`` output tokens. ``model_dir``: a checkpoint to use instead of the random one
    built in a temporary folder. ``out``: results JSON, rewritten atomically after every engine.
    Checked on construction (vLLM itself is needed only to run)."""

    keeps: tuple[float, ...] = (1.0, 0.5, 0.2, 0.1)
    method: str = "evtp"
    repeats: int = 5
    batch: int = 8
    max_tokens: int = 16
    model_dir: str | None = None
    out: Path | None = None

    def __post_init__(self):
        if not self.keeps or any(not 0.0 < k <= 1.0 for k in self.keeps):
            raise SettingsError(f"--keep {self.keeps}: every ratio must lie in (0, 1]")
        if self.repeats < 1 or self.batch < 1 or self.max_tokens < 1:
            raise SettingsError("--repeats, --batch and --max-tokens must be >= 1")
        from evtp.integrations.vllm import EvtpSettings

        try:
            EvtpSettings(method=self.method, keep=self.keeps[0])
        except (TypeError, ValueError) as err:
            raise SettingsError(f"--method {self.method!r}: {err}") from None


def run_vllm_bench(config: VllmBenchConfig) -> dict:
    """Plan (``out`` checked, vLLM importable, the model built unless ``model_dir``), measure
    every engine configuration (results written after each), summarise (the table printed).
    Returns ``{engine label: {kind: {...}}}``."""
    out = prepare_output_file(config.out) if config.out is not None else None
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise SettingsError("vLLM is not installed here; run it in .venv-vllm (make venv-vllm)") from None
    # one in-process engine at a time: the forward hook's timings are read in this process
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    tmp = None
    if config.model_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="evtp-bench-vllm-")
        model_dir, params = build_model(tmp.name)
        print(f"random Qwen2.5-VL: {params / 1e6:.1f}M parameters", flush=True)
    else:
        model_dir, params = config.model_dir, None
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    results = {}
    for label, kwargs, kinds in configurations(list(config.keeps), config.method):
        results[label] = measure(model_dir, kwargs, kinds, config.repeats, config.batch, config.max_tokens)
        print(label, json.dumps(results[label]), flush=True)
        if out is not None:
            write_json_atomic(out, {"params": params, "args": settings, "results": results})
    print(table(results))
    return results
