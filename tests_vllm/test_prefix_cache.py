"""Prefix caching stays on and stays correct with pruned media in the cached blocks."""
from __future__ import annotations

import tiny_models as tm
from conftest import build_llm, close, evtp, greedy, summary

SUFFIX = " ".join(f"w{i % 60}" for i in range(70))


def _requests():
    """A: image + a long text; B: A again (cache hit through the image); C: the same image and
    first text words, other words after 64 tokens (hit ends inside C's prompt); D: the image as
    the second of two (hit boundary inside the pruned image, 32-token blocks)."""
    img, other = tm.image(11), tm.image(12, 112, 112)
    a = {"prompt": tm.prompt(tm.IMAGE, "describe", SUFFIX), "multi_modal_data": {"image": img}}
    c = {"prompt": tm.prompt(tm.IMAGE, "describe", SUFFIX.replace("w50", "a b c")), "multi_modal_data": {"image": img}}
    d1 = {"prompt": tm.prompt("what is in this picture", tm.IMAGE, "and", tm.IMAGE, "w1 w2 w3"),
          "multi_modal_data": {"image": [other, img]}}
    d2 = {"prompt": tm.prompt("what is in this picture", tm.IMAGE, "and", tm.IMAGE, "w4 w5"),
          "multi_modal_data": {"image": [other, img]}}
    return [("A", a), ("B", a), ("C", c), ("D1", d1), ("D2", d2)]


def _serve(model_dir, caching: bool, keep: float):
    llm = build_llm(model_dir, enable_prefix_caching=caching, block_size=32, **evtp(keep=keep))
    out = {name: summary(llm.generate([r], greedy(), use_tqdm=False)[0]) for name, r in _requests()}
    close(llm)
    return out


def test_cached_pruned_media_gives_uncached_output(model_dirs):
    d = model_dirs["qwen2_5_vl"]
    cached, uncached = _serve(d, True, 0.5), _serve(d, False, 0.5)
    assert {n: r["tokens"] for n, r in cached.items()} == {n: r["tokens"] for n, r in uncached.items()}
    # the cache was used, and through the pruned image: A's image (32 kept of 64) ends near token 36
    assert cached["B"]["cached"] >= 64 and cached["C"]["cached"] >= 64
    assert all(r["cached"] == 0 for r in uncached.values())
    # D2 reuses D1's first block, which ends inside the second (pruned) image
    assert cached["D2"]["cached"] >= 32
