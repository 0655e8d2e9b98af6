"""The plugin inside real vLLM 0.32 engines (CPU), on tiny random Qwen2.5-VL and Qwen3-VL.

Greedy tokens are compared, on "sharp" random weights whose outputs depend on every visual
token's position (test_positions_matter shows it), so a wrong position changes the output.
"""
from __future__ import annotations

import pytest

from conftest import evtp, tokens

FAMILIES = ["qwen2_5_vl", "qwen3_vl"]
# visual placeholders per request of the request set, unpruned (merged 2x2 tokens)
UNPRUNED = {
    "qwen2_5_vl": {"image": 64, "tall_image": 32, "video_2fps": 64, "video_4fps": 64, "two_images": 48 + 32,
                   "image_and_video": 16 + 32},
    "qwen3_vl": {"image": 49, "tall_image": 28, "video_2fps": 4 * 16, "video_4fps": 4 * 16,
                 "two_images": 35 + 28, "image_and_video": 16 + 2 * 16},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_without_key_equals_vllm_stock(engine, family):
    assert tokens(engine(family)) == tokens(engine(family, stock=True))


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_1_equals_stock(engine, family):
    """Through the whole pruning path (selection, channels, recompute) with nothing removed."""
    stock = engine(family, stock=True)
    ours = engine(family, **evtp(keep=1.0))
    assert tokens(ours) == tokens(stock)
    assert {n: r["prompt_len"] for n, r in ours["single"].items()} == \
        {n: r["prompt_len"] for n, r in stock["single"].items()}


def test_keep_1_chunked_prefill_equals_stock(engine):
    """16-token chunks start inside the first of two images and hold the start of the second."""
    stock = engine("qwen2_5_vl", stock=True)
    assert tokens(engine("qwen2_5_vl", max_num_batched_tokens=16, **evtp(keep=1.0))) == tokens(stock)


@pytest.mark.parametrize("family", FAMILIES)
def test_keep_quarter_shortens_prompts(engine, family):
    stock = engine(family, stock=True)["single"]
    ours = engine(family, **evtp(keep=0.25))["single"]
    for name, unpruned in UNPRUNED[family].items():
        removed = stock[name]["prompt_len"] - ours[name]["prompt_len"]
        per_run = _kept_total(family, name)
        assert removed == unpruned - per_run, name
        assert per_run <= 0.25 * unpruned + 2  # 75 % fewer placeholders, rounding per run


def _kept_total(family: str, name: str) -> int:
    """round(0.25 * N) per run (image / Qwen2.5-VL video / Qwen3-VL frame), half up, >= 1."""
    runs = {
        "qwen2_5_vl": {"image": [64], "tall_image": [32], "video_2fps": [64], "video_4fps": [64],
                       "two_images": [48, 32], "image_and_video": [16, 32]},
        "qwen3_vl": {"image": [49], "tall_image": [28], "video_2fps": [16] * 4, "video_4fps": [16] * 4,
                     "two_images": [35, 28], "image_and_video": [16, 16, 16]},
    }[family][name]
    return sum(max(1, int(0.25 * n + 0.5)) for n in runs)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_output_changes(engine, family):
    """The pruned prompts give other tokens than the full ones (the comparisons can fail)."""
    stock, ours = tokens(engine(family, stock=True)), tokens(engine(family, **evtp(keep=0.25)))
    assert sum(stock[n] != ours[n] for n in stock) >= len(stock) - 1


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_at_a_time(engine, family):
    res = engine(family, **evtp(keep=0.25))
    assert tokens(res, "batched") == tokens(res, "single")


def test_chunked_prefill_pruned_equals_unchunked(engine):
    whole = engine("qwen2_5_vl", **evtp(keep=0.5))
    chunked = engine("qwen2_5_vl", max_num_batched_tokens=16, **evtp(keep=0.5))
    assert tokens(chunked) == tokens(whole)
    assert tokens(chunked, "batched") == tokens(whole)


def test_positions_matter(engine):
    """Kept tokens renumbered like text (position_mode="contiguous") change the output."""
    original = tokens(engine("qwen2_5_vl", **evtp(keep=1.0)))
    contiguous = tokens(engine("qwen2_5_vl", **evtp(keep=1.0, position_mode="contiguous")))
    assert sum(original[n] != contiguous[n] for n in original) >= len(original) - 1


@pytest.mark.parametrize("method", ["kcenter", "random", "uniform", "dpp", "tome", "dart"])
def test_every_score_free_method_serves(engine, method):
    res = engine("qwen2_5_vl", **evtp(method=method, keep=0.25))
    quarter = engine("qwen2_5_vl", **evtp(keep=0.25))
    assert {n: r["prompt_len"] for n, r in res["single"].items()} == \
        {n: r["prompt_len"] for n, r in quarter["single"].items()}
    assert tokens(res, "batched") == tokens(res, "single")
