"""Stock vLLM 0.32.0's own video pruning (EVS, ``video_pruning_rate``): the five bugs of docs/vllm.md
("Stock vLLM 0.32 problems the plugin avoids"), reproduced on the tiny "sharp" Qwen2.5-VL.

Every test here asserts the STOCK MISBEHAVIOUR as it is in the pinned vLLM 0.32.0 (stock model
classes, out of the plugin's reach), so this file documents the bugs and FAILS LOUDLY IF A FUTURE
PIN FIXES ONE: then check the fix, update docs/vllm.md's table and drop or invert the test. Each
test also shows the plugin on the same input (one engine: keep 1.0, 16-token chunks, prefix caching
on), which equals stock vLLM without EVS.

Bug 1 uses vLLM's own CPU worker; bugs 2-5 use `evtp.bench.vllm_evs_worker.EvsCPUWorker`, which
switches on the runner's position recompute as vLLM's GPU runner does for EVS, so that EVS runs at
all on CPU. EVS never prunes images, whatever the rate; a rate of 1e-17 switches EVS on and keeps
every video token (int(N * (1 - 1e-17)) = N), so its outputs are comparable to stock without EVS.
"""
from __future__ import annotations

import pytest

import tiny_models as tm
from conftest import build_llm, close, evtp, greedy, stock_classes_if, summary

FAMILY = "qwen2_5_vl"
EVS_WORKER = "evtp.bench.vllm_evs_worker.EvsCPUWorker"
UNPRUNED_RATE = 1e-17  # EVS on, nothing pruned
LIMITS = {"image": {"count": 2, "width": 224, "height": 224},
          "video": {"count": 2, "num_frames": 8, "width": 112, "height": 112}}
LONG_TEXT = " ".join(f"w{i % 60}" for i in range(70))


def _requests() -> dict:
    """Qwen2.5-VL here: 14-px patches, 2x2 merge, tokens_per_second 2; (frames, rows, cols) in
    merged tokens. The text after a run starts at base + max(t extent, rows, cols) in stock vLLM."""
    v2, m2 = tm.video(3, fps=2.0)  # 8 frames: (4, 4, 4), 1 s per grid step: times 0, 2, 4, 6 > width 4
    v4, m4 = tm.video(3, fps=4.0)  # the same frames at 0.5 s per grid step: times 0, 1, 2, 3
    v5, m5 = tm.video(5, frames=4, fps=2.0)  # (2, 4, 4): 32 tokens, 16 at rate 0.5
    v6, m6 = tm.video(6, frames=4, fps=2.0)
    return {
        "image": {"prompt": tm.prompt(tm.IMAGE, "describe the image"),  # (1, 8, 8): width = extent
                  "multi_modal_data": {"image": tm.image(1)}},
        "tall_image": {"prompt": tm.prompt(tm.IMAGE, "describe the image"),  # (1, 8, 4): extent 8, width 4
                       "multi_modal_data": {"image": tm.image(2, width=112, height=224)}},
        "video_2fps": {"prompt": tm.prompt(tm.VIDEO, "describe the video"), "multi_modal_data": {"video": (v2, m2)}},
        "video_4fps": {"prompt": tm.prompt(tm.VIDEO, "describe the video"), "multi_modal_data": {"video": (v4, m4)}},
        # two wide images, (1, 6, 8) and (1, 4, 8): width = extent, so bug 2 cannot touch them
        "two_images": {"prompt": tm.prompt(tm.IMAGE, "the red", tm.IMAGE, "describe a b c"),
                       "multi_modal_data": {"image": [tm.image(7, 224, 168), tm.image(8, 224, 112)]}},
        "two_videos": {"prompt": tm.prompt("describe", tm.VIDEO, "and", tm.VIDEO, "describe the video"),
                       "multi_modal_data": {"video": [(v5, m5), (v6, m6)]}},
        # 70 words after the video: with 32-token blocks the repeat's cache hit covers the whole video
        "video_long_text": {"prompt": tm.prompt(tm.VIDEO, "describe", LONG_TEXT),
                            "multi_modal_data": {"video": (v2, m2)}},
    }


def _error(exc: BaseException) -> dict:
    """What a failed request raised (no traceback object kept: it would hold the engine alive)."""
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    cause = exc.__cause__
    return {"error": type(exc).__name__, "message": str(exc), "frames": frames,
            "cause": None if cause is None else f"{type(cause).__name__}: {cause}"}


def _serve(model_dir: str, steps: list[str], *, stock: bool = True, **kwargs) -> list[tuple[str, dict]]:
    """Run ``steps`` (request names, or "reset" to empty the prefix cache) one at a time on one
    engine; a request that raises ends the run (the engine is not trusted after it)."""
    reqs = _requests()
    kwargs.setdefault("enable_prefix_caching", False)
    with stock_classes_if(stock):
        llm = build_llm(model_dir, limit_mm_per_prompt=LIMITS, **kwargs)
    out = []
    try:
        for step in steps:
            if step == "reset":
                assert llm.reset_prefix_cache()
                continue
            try:
                out.append((step, summary(llm.generate([reqs[step]], greedy(), use_tqdm=False)[0])))
            except Exception as exc:  # noqa: BLE001 - the bug under test
                out.append((step, _error(exc)))
                break
    finally:
        close(llm)
    return out


SINGLE = ["image", "tall_image", "video_2fps", "video_4fps", "two_images"]


@pytest.fixture(scope="module")
def stock_dir(engine):
    return engine.stock_copy(FAMILY)


@pytest.fixture(scope="module")
def no_evs(stock_dir):
    """Stock vLLM, EVS off: the reference."""
    return dict(_serve(stock_dir, SINGLE + ["two_videos", "video_long_text"]))


@pytest.fixture(scope="module")
def plugin(model_dirs):
    """The plugin at keep 1.0 (the whole pruning path, nothing removed), 16-token chunks, prefix
    caching on with 32-token blocks."""
    return _serve(model_dirs[FAMILY], SINGLE + ["two_videos", "video_long_text", "video_long_text"],
                  stock=False, max_num_batched_tokens=16, enable_prefix_caching=True, block_size=32,
                  **evtp(keep=1.0))


@pytest.fixture(scope="module")
def evs_unpruned(stock_dir):
    """EVS on (EVS-enabling worker) at a rate that prunes nothing; whole prefills."""
    return dict(_serve(stock_dir, SINGLE, worker_cls=EVS_WORKER, video_pruning_rate=UNPRUNED_RATE))


@pytest.fixture(scope="module")
def evs_chunked_cached(stock_dir):
    """EVS on at rate 0.5 (EVS-enabling worker), 16-token chunks, prefix caching on (32-token
    blocks). The crashing request goes last."""
    return _serve(stock_dir, ["two_images", "video_long_text", "reset", "video_long_text", "video_long_text",
                              "two_videos"],
                  worker_cls=EVS_WORKER, video_pruning_rate=0.5, max_num_batched_tokens=16,
                  enable_prefix_caching=True, block_size=32)


def _tokens(results: dict) -> dict:
    return {n: r["tokens"] for n, r in results.items()}


def test_plugin_equals_stock_without_evs(no_evs, plugin):
    """The plugin's side of every row: what stock EVS breaks below, the plugin serves as stock vLLM
    without EVS does (chunked, cached, two videos in one prompt, a video on the CPU runner)."""
    runs = dict(plugin[:-1])
    assert _tokens(runs) == _tokens({n: no_evs[n] for n in runs})
    first, repeat = plugin[-2][1], plugin[-1][1]
    assert repeat["cached"] >= 96 and repeat["tokens"] == first["tokens"] == no_evs["video_long_text"]["tokens"]


def test_bug1_evs_crashes_on_the_cpu_runner(stock_dir):
    """vLLM's CPU runner never switches on the position recompute, so the 4 position channels EVS
    appends stay on the embeddings (128 + 4) and the first video fails to merge into the prompt.
    (An image as the first item fails the same way: EVS appends the channels to images too.)"""
    (name, res), = _serve(stock_dir, ["video_2fps"], video_pruning_rate=0.5)
    assert res.get("error") == "ValueError" and res["message"] == "Error during index put operation", res
    # 32 = the 64 video tokens at rate 0.5
    assert res["cause"] == ("RuntimeError: shape mismatch: value tensor of shape [32, 132] cannot be broadcast "
                            "to indexing result of shape [32, 128]")
    assert "_merge_multimodal_embeddings" in res["frames"]


def test_bug2_evs_misplaces_text_after_unpruned_media(no_evs, evs_unpruned):
    """With EVS on and nothing pruned, stock EVS places the text after a media item at base + grid
    width (not + the full extent) and truncates second_per_grid_ts to an integer before scaling
    the frame times (0.5 s -> 0): the tall image (width 4 < 8 rows), the 2 fps video (width 4 <
    times up to 6) and the 4 fps video (all frames at time 0) change; the square image and the
    two wide images (width = extent, integer times) do not."""
    ref, evs = _tokens(no_evs), _tokens(evs_unpruned)
    assert {n: r["prompt_len"] for n, r in evs_unpruned.items()} == {n: no_evs[n]["prompt_len"] for n in SINGLE}
    for name in ["image", "two_images"]:
        assert evs[name] == ref[name], name
    for name in ["tall_image", "video_2fps", "video_4fps"]:
        assert evs[name] != ref[name], name


def test_bug3_evs_chunked_prefill_misplaces_the_second_item(no_evs, evs_unpruned, evs_chunked_cached):
    """Two unpruned (wide) images: EVS with whole prefills equals stock without EVS (the control);
    with 16-token chunks (one starts inside the first image and holds its end and the start of the
    second) the stock recompute helper misplaces the second image and the output changes."""
    chunked = dict(evs_chunked_cached)["two_images"]
    assert evs_unpruned["two_images"]["tokens"] == no_evs["two_images"]["tokens"]
    assert chunked["prompt_len"] == no_evs["two_images"]["prompt_len"]
    assert chunked["tokens"] != no_evs["two_images"]["tokens"]


def test_bug4_two_pruned_videos_crash_in_get_mrope_input_positions(evs_chunked_cached):
    """The provisional layout of a prompt is computed from the unpruned grids over the pruned
    prompt: after the first pruned video the next item's offset lies before the layout's end, the
    text length between them is negative, and numpy refuses it when the request is added."""
    name, res = evs_chunked_cached[-1]
    assert name == "two_videos" and res.get("error") == "ValueError", res
    assert res["message"] == "all elements of broadcast shape must be non-negative"
    assert "get_mrope_input_positions" in res["frames"]


def test_bug5_prefix_cache_hit_on_pruned_video_changes_output(evs_chunked_cached):
    """The same request three times on one EVS engine with prefix caching: run once, cache
    emptied, run again (no hit: the same tokens), run a third time: the cache hit covers the whole
    pruned video, its encoder run is skipped, so its positions are never recomputed and the text
    after the cached blocks keeps the provisional unpruned-layout positions: other tokens."""
    runs = [r for n, r in evs_chunked_cached if n == "video_long_text"]
    first, uncached, hit = runs
    assert first["cached"] == uncached["cached"] == 0 and uncached["tokens"] == first["tokens"]
    assert hit["cached"] >= 96  # the video (32 of 64 tokens kept) ends near token 37
    assert hit["tokens"] != first["tokens"]
