"""Checks that need a CUDA device (marker ``gpu``; skipped without one; run by ``make gpu-check``):
selection on CUDA equals selection on CPU for every method, the compiled greedy loop captured as a
CUDA graph, and every family's tiny model pruned on CUDA in bf16 (SDPA, and flash-attention where
it is installed)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

import evtp
from evtp.testing.families import tiny_cases

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CASES = tiny_cases()


@pytest.fixture(scope="module")
def cuda():
    return torch.device("cuda")


def grid(frames: int, side: int) -> torch.Tensor:
    """(frames * side * side, 3) (frame, row, col), or (side * side, 2) for one frame."""
    t, r, c = torch.meshgrid(torch.arange(frames), torch.arange(side), torch.arange(side), indexing="ij")
    pos = torch.stack([t.flatten(), r.flatten(), c.flatten()], -1)
    return pos[:, 1:] if frames == 1 else pos


def padded_batch(frames: int, side: int, dim: int = 96, seed: int = 0):
    """Two samples, the second padded (its last quarter holds NaN), with scores."""
    n = frames * side * side
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, dim, generator=g)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 3 * n // 4:] = False
    x[1, 3 * n // 4:] = float("nan")
    return x, grid(frames, side).expand(2, n, -1), mask, torch.rand(2, n, generator=g)


def select(device, method, x, pos, mask, scores, keep=0.25, **options):
    return evtp.select_tokens(x.to(device), pos.to(device), keep, method, mask=mask.to(device),
                              scores=scores.to(device), generator=torch.Generator().manual_seed(0), **options).cpu()


@pytest.mark.parametrize("method", sorted(evtp.METHODS))
@pytest.mark.parametrize("frames", [1, 4])
def test_cuda_selection_equals_cpu(cuda, method, frames):
    x, pos, mask, scores = padded_batch(frames, 12)
    assert torch.equal(select(cuda, method, x, pos, mask, scores), select("cpu", method, x, pos, mask, scores))


@pytest.mark.parametrize("method", ["kcenter", "evtp"])
def test_compiled_loop_replays_the_eager_picks(cuda, method):
    """The captured graph gives the eager loop's picks, on its first call (capture) and on replays
    with new inputs of the same shape, with padding, and for an adaptive budget."""
    for seed in range(3):
        x, pos, mask, scores = padded_batch(4, 12, seed=seed)
        eager = select(cuda, method, x, pos, mask, scores)
        assert torch.equal(select(cuda, method, x, pos, mask, scores, loop="compiled"), eager)
        assert torch.equal(eager, select("cpu", method, x, pos, mask, scores))
    target = evtp.CoverageTarget(relative_radius=0.6)
    assert torch.equal(select(cuda, method, x, pos, mask, scores, keep=target, loop="compiled"),
                       select(cuda, method, x, pos, mask, scores, keep=target))


def to_device(inputs: dict, device, dtype) -> dict:
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if isinstance(v, torch.Tensor)
            else v for k, v in inputs.items()}


def expected_kept(case, batch, keep):
    out = []
    for prompt in batch:
        n = [case.selectable(item[1], item[0]) for item in prompt if not isinstance(item, int)]
        out.append(sum(max(1, int(k * keep + 0.5)) for k in n))
    return out


def pruned_on(device, case, attn: str):
    """The case's model in bf16 on ``device``: unpruned logits, logits at keep 1.0 and 0.5, what
    the pruner kept, and 3 generated tokens under the pruner."""
    model = case.build(seed=0, attn_implementation=attn).to(device, torch.bfloat16)
    small, large = case.image_specs
    batch = [[5, 6, ("image", large), 7, 8, 9], [5, ("image", small), 9]]
    try:
        inputs = to_device(case.inputs(batch), device, torch.bfloat16)
    except ModuleNotFoundError as exc:  # e.g. SmolVLM's processor imports num2words
        pytest.skip(f"{case.kind}: its processor needs {exc.name}, which is not installed here")
    with torch.no_grad():
        full = model(**inputs).logits
        with evtp.TokenPruner("evtp", keep=1.0)(model):
            same = model(**inputs).logits
        with evtp.TokenPruner("evtp", keep=0.5)(model):
            half = model(**inputs).logits
            kept = evtp.TokenPruner.last_pruning(model).visual_kept.tolist()
            generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    return full, same, half, kept, generated, expected_kept(case, batch, 0.5), inputs


def check_pruned(full, same, half, kept, generated, want, inputs):
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(same[mask].float(), full[mask].float(), atol=2e-2, rtol=2e-2)
    assert kept == want
    assert bool(torch.isfinite(half.float()).all())
    assert inputs["input_ids"].shape[1] < generated.shape[1] <= inputs["input_ids"].shape[1] + 3


@pytest.mark.parametrize("kind", sorted(CASES))
def test_family_pruned_on_cuda_bf16_sdpa(cuda, kind):
    check_pruned(*pruned_on(cuda, CASES[kind], "sdpa"))


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="flash-attn is not installed")
@pytest.mark.parametrize("kind", sorted(CASES))
def test_family_pruned_on_cuda_bf16_flash_attention(cuda, kind):
    check_pruned(*pruned_on(cuda, CASES[kind], "flash_attention_2"))
