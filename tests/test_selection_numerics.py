"""Selection on features at the edges of float32, the strip-wise symmetric Gram product, and what a
method's first call costs."""
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import evtp
from evtp.selection import greedy
from evtp.selection.divprune_reference import divprune_select
from evtp.selection.greedy import gram_matrix, in_float32_range


def _grid(side: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([rows, cols], -1).reshape(side * side, 2)


@pytest.mark.parametrize("method", ["kcenter", "evtp"])
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1e20, 1e30, 1e-25, 1e-30]),
       projected=st.booleans())
@settings(max_examples=12, deadline=None)
def test_scaled_features_keep_the_selection(method, seed, scale, projected):
    """Features whose squared norm over- or underflows float32 (x.norm() inf or 0) select what the
    same features at unit scale select; they used to collapse to the first k indices."""
    x = torch.randn(49, 24, generator=torch.Generator().manual_seed(seed))
    opts = {"projection_dim": 8} if projected else {}
    want = evtp.select_tokens(x, _grid(7), 10, method, **opts)
    got = evtp.select_tokens(x * scale, _grid(7), 10, method, **opts)
    assert torch.equal(got, want)
    assert not torch.equal(got, torch.arange(10))


def test_only_out_of_range_rows_change():
    x = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(0))
    x[0, 1] *= 1e25   # squared norm overflows
    x[1, 4] *= 1e-30  # squared norm underflows
    x[1, 5] = 0.0     # an all-zero token stays all zero
    out, norm = in_float32_range(x)
    odd = torch.zeros(2, 6, dtype=torch.bool)
    odd[0, 1] = odd[1, 4] = True
    assert torch.equal(out[~odd], x[~odd])  # bit for bit
    assert bool(torch.isfinite(norm).all()) and bool((norm[odd] >= 1).all())
    assert norm[1, 5].item() == 0.0
    a, b = out[odd].double(), x[odd].double()  # float64 holds these squared norms
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    assert torch.allclose(cos, torch.ones(2, dtype=torch.float64))


def test_features_beyond_float32_are_refused_by_name():
    """float64 features above float32's range become inf in the float32 selection: a clear error,
    not a silent first-k."""
    x = torch.randn(16, 8, dtype=torch.float64) * 1e300
    with pytest.raises(ValueError, match="beyond float32's range"):
        evtp.select_tokens(x, None, 4, "kcenter")


def test_first_call_of_every_method_imports_nothing():
    """No method pulls in a module on its first call (torch.broadcast_shapes once imported sympy,
    about 0.4 s for the first `uniform` call)."""
    code = """
import sys, torch, evtp
x = torch.randn(2, 64, 16)
rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
pos = torch.stack([rows, cols], -1).reshape(1, 64, 2).expand(2, 64, 2)
late = {}
for name in sorted(evtp.METHODS):
    before = set(sys.modules)
    evtp.select_tokens(x, pos, 0.25, name, scores=torch.rand(2, 64), generator=torch.Generator())
    late[name] = sorted(set(sys.modules) - before)
print(late)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    late = eval(out.stdout.strip().splitlines()[-1])
    assert set(late) == set(evtp.METHODS)
    assert late == {name: [] for name in late}


@pytest.mark.parametrize("shape, dtype", [((1, 1280, 896), torch.float32), ((3, 257, 128), torch.float32),
                                          ((2, 600, 300), torch.float16), ((1, 300, 200), torch.bfloat16)])
def test_gram_matrix_is_the_full_product(shape, dtype):
    """The strips (each from its diagonal block rightwards, the blocks below mirrored) give an
    exactly symmetric product, bit for bit one full product's wherever that is bitwise symmetric
    (MKL on CPU); short strips (a remainder of one row) would change the bits."""
    a = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[1])).to(dtype)
    got = gram_matrix(a)
    full = torch.bmm(a, a.transpose(1, 2))
    assert got.shape == full.shape and got.dtype == dtype
    assert torch.equal(got, got.transpose(1, 2))
    if torch.equal(full, full.transpose(1, 2)):
        assert torch.equal(got, full)
    else:
        assert torch.allclose(got.float(), full.float(), rtol=1e-2 if dtype != torch.float32 else 1e-5, atol=1e-3)


def test_gram_matrix_takes_strips_on_one_thread_only(monkeypatch):
    """One thread: N // 128 strip products; several threads: one full product (each strip would be
    a parallel region waiting on a descheduled thread on a shared CPU)."""
    products = []
    bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *a, **k: products.append(1) or bmm(*a, **k))
    a = torch.randn(1, 1280, 896)
    gram_matrix(a)
    assert len(products) == 10
    products.clear()
    torch.set_num_threads(2)  # reset to 1 after the test (conftest)
    gram_matrix(a)
    assert len(products) == 1


def test_strips_keep_the_picks_of_one_full_product(monkeypatch):
    """kcenter and evtp (saliency weights, a padded batch with NaN padding, both adaptive targets)
    pick the same tokens with the strip-wise product as with one full product, and kcenter still
    returns DivPrune's set at a size that takes the strips."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 520, 160, generator=g)
    pos = torch.stack([torch.arange(520) // 26, torch.arange(520) % 26], -1).expand(2, 520, 2)
    mask = torch.ones(2, 520, dtype=torch.bool)
    mask[1, 470:] = False
    x[1, 470:] = float("nan")
    scores = torch.rand(2, 520, generator=g)
    calls = [("kcenter", 0.2, {}), ("evtp", 0.2, {}), ("evtp", 0.1, {"saliency_weight": 2.0}),
             ("kcenter", evtp.CoverageTarget(relative_radius=0.9), {}),
             ("evtp", evtp.CoverageTarget(radius=1.2), {})]
    def picks():
        return [evtp.select_tokens(x, pos, keep, m, mask=mask, scores=scores, **o) for m, keep, o in calls]
    strips = picks()
    monkeypatch.setattr(greedy, "gram_matrix", lambda a: torch.bmm(a, a.transpose(1, 2)))
    assert all(torch.equal(a, b) for a, b in zip(strips, picks()))
    assert torch.equal(strips[0][0], divprune_select(x[0], 104).sort().values)
