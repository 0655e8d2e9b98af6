"""One pruning-settings type, method options declared once and checked on construction, the budget
that knows "all" and "none", one position renumbering, per-row groups."""
import importlib
import sys
import types
import typing
from dataclasses import fields

import numpy as np
import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

import evtp
from evtp.integrations.generic import pack, prune_inputs_embeds
from evtp.integrations.vllm.settings import EvtpSettings
from evtp.pruning import Budget, PruningSettings, renumber_positions, resolve_budget
from evtp.settings import SettingsError, check_method


def _bad_values(cls):
    """(option, wrong value) pairs for every option of an options class: a wrong type, and a
    value below the range where the option has one."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        tp = hints[f.name]
        union = typing.get_origin(tp) in (typing.Union, types.UnionType)
        m = [a for a in typing.get_args(tp) if a is not type(None)][0] if union else tp
        if typing.get_origin(m) is typing.Literal:
            choices = typing.get_args(m)
            out.append((f.name, "bogus" if isinstance(choices[0], int) else 3))
            out.append((f.name, 3 if isinstance(choices[0], int) else "bogus"))
        elif m is bool:
            out.append((f.name, 1))
        elif m in (int, float):
            out.append((f.name, "abc"))
            if m is int:
                out.append((f.name, 1.5))
            if f.metadata.get("low") is not None:
                out.append((f.name, f.metadata["low"] - 1))
        elif m is torch.Tensor:
            out.append((f.name, [1.0, 2.0]))
    return out


BAD = [(method, name, value) for method, spec in sorted(evtp.METHODS.items())
       for name, value in _bad_values(spec.options_type)]


def test_every_method_option_has_a_bad_value_listed():
    covered = {(m, n) for m, n, _ in BAD}
    assert covered == {(m, n) for m, spec in evtp.METHODS.items() for n in spec.options}


@pytest.mark.parametrize("method, name, value", BAD, ids=[f"{m}-{n}={v!r}" for m, n, v in BAD])
def test_every_bad_option_value_is_refused_on_construction_everywhere(method, name, value):
    words = f"method {method!r} option {name}={value!r}: must be"
    for build in (lambda: PruningSettings(method, 0.5, options={name: value}),
                  lambda: evtp.TokenPruner(method, 0.5, **{name: value}),
                  lambda: EvtpSettings.from_dict({"method": method, name: value})):
        with pytest.raises((TypeError, ValueError)) as err:
            build()
        assert words in str(err.value) or "attention scores" in str(err.value)
    with pytest.raises(SettingsError, match="must be"):
        check_method(method, {name: value})


@pytest.mark.parametrize("options, words", [
    ({"spatial_weight": "abc"}, "option spatial_weight='abc': must be a finite number >= 0"),
    ({"first": 3}, "option first=3: must be one of 'divprune', 'center', 'norm', 'random'"),
    ({"projection_dim": 0}, "option projection_dim=0: must be an int >= 1 or None"),
    ({"precision": "fp16"}, "option precision='fp16': must be one of 'float32', 'float16', 'bfloat16'"),
    ({"radius": 0.1, "relative_radius": 0.5}, "pass radius or relative_radius, not both"),
])
def test_issue_examples_fail_at_construction(options, words):
    with pytest.raises(ValueError, match=words):
        evtp.TokenPruner("evtp", 0.2, **options)
    with pytest.raises(ValueError, match=words):
        EvtpSettings.from_dict(options)


def test_options_classes_are_the_one_declaration_of_defaults():
    spec = evtp.METHODS["evtp"]
    made = spec.make_options({"spatial_weight": np.float32(0.5), "projection_dim": np.int64(8)})
    assert made.spatial_weight == 0.5 and type(made.spatial_weight) is float
    assert made.projection_dim == 8 and type(made.projection_dim) is int
    assert spec.options == spec.options_type.defaults() and spec.options["first"] == "divprune"
    assert made.changed() == {"spatial_weight": 0.5, "projection_dim": 8}


def test_settings_type_is_shared():
    assert evtp.PruningSettings("evtp", options={"spatial_weight": np.float32(0.5)}).options == {"spatial_weight": 0.5}
    s = evtp.PruningSettings("kcenter", np.int64(12), position_mode="contiguous", seed=np.int64(3))
    assert (s.keep, type(s.keep), s.seed) == (12, int, 3)
    p = evtp.TokenPruner.from_settings(s)
    assert p.settings == s and (p.method, p.keep, p.position_mode, p.seed) == ("kcenter", 12, "contiguous", 3)
    v = EvtpSettings.from_dict({"method": "kcenter", "keep": 1, "seed": 1})
    assert isinstance(v, evtp.PruningSettings) and v.keep == 1.0 and v.budget.keeps_all
    assert s.as_record() == {"method": "kcenter", "keep": 12, "position_mode": "contiguous", "seed": 3,
                             "options": {}}
    with pytest.raises(ValueError, match=r"position_mode='shifted'; expected one of \('original', 'contiguous'\)"):
        s.replace(position_mode="shifted")


def test_budget_knows_all_and_none():
    assert resolve_budget(0).keeps_none and resolve_budget(0.0).keeps_none and resolve_budget(1.0).keeps_all
    assert not resolve_budget(1).keeps_all and resolve_budget(1).counts(torch.tensor([5])).tolist() == [1]
    assert resolve_budget(np.int64(10)) == Budget(10) and resolve_budget(np.float64(0.2)) == Budget(0.2)
    assert resolve_budget(7).keeps_all_of(7) and not resolve_budget(7).keeps_all_of(8)
    assert resolve_budget(0.5).counts(torch.tensor([9, 4])).tolist() == [5, 2]
    assert resolve_budget(0).counts(torch.tensor([9])).tolist() == [0]
    with pytest.raises(ValueError, match="at least 1"):
        resolve_budget(0, allow_none=False)
    with pytest.raises(TypeError, match="keep must be"):
        resolve_budget(True)
    assert PruningSettings("evtp", 0).wants_scores is False
    assert PruningSettings("evtp", 0.5, options={"saliency_weight": 2.0}).wants_scores


def test_numpy_integer_keep_is_a_count():
    x = torch.randn(30, 8)
    a = evtp.select_tokens(x, None, np.int64(10), "kcenter")
    assert torch.equal(a, evtp.select_tokens(x, None, 10, "kcenter"))
    assert evtp.TokenPruner("kcenter", np.int32(10)).keep == 10


def test_coverage_target_takes_keywords_only():
    with pytest.raises(TypeError, match="positional"):
        evtp.CoverageTarget(0.6)
    assert evtp.CoverageTarget(relative_radius=0.6, min_keep=np.int64(2)).min_keep == 2


@hsettings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 12), st.integers(0, 2 ** 16), st.sampled_from([1, 3]))
def test_renumber_positions(B, L, seed, R):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (R, B, L), generator=g)
    valid = torch.rand(B, L, generator=g) < 0.7
    assert torch.equal(renumber_positions(ids, valid, "original"), ids)
    out = renumber_positions(ids, valid, "contiguous")
    for b in range(B):
        if valid[b].any():
            start = int(ids[:, b][:, valid[b]].min())
            assert out[:, b][:, valid[b]].tolist() == [list(range(start, start + int(valid[b].sum())))] * R


def test_pack_and_vllm_number_contiguous_positions_alike():
    from evtp.integrations.vllm.positions import prompt_positions

    L = 7
    keep = torch.ones(1, L, dtype=torch.bool)
    out = pack(keep, torch.zeros(1, L, 2), None, torch.arange(L).expand(3, 1, L) + 4, position_mode="contiguous")
    vl, delta = prompt_positions(L, [(1, 3, 5)], "contiguous")
    assert torch.equal(out.position_ids[:, 0] - 4, vl) and delta == 0 and out.next_position.tolist() == [4 + L]


def test_groups_are_per_row_and_integer():
    g = torch.Generator().manual_seed(0)
    B, L, D = 2, 12, 6
    x = torch.randn(B, L, D, generator=g)
    vis = torch.zeros(B, L, dtype=torch.bool)
    vis[:, 2:10] = True
    grid = torch.zeros(B, L, 2, dtype=torch.long)
    grid[:, 2:10, 1] = torch.arange(8)
    same_ids = torch.zeros(B, L, dtype=torch.long)  # id 0 in both rows: still two groups
    a = prune_inputs_embeds(x, None, None, vis, grid, method="kcenter", keep=3, groups=same_ids)
    b = prune_inputs_embeds(x, None, None, vis, grid, method="kcenter", keep=3)
    assert a.visual_kept.tolist() == [3, 3] and torch.equal(a.kept_indices, b.kept_indices)
    with pytest.raises(TypeError, match="groups must be integer"):
        prune_inputs_embeds(x, None, None, vis, grid, method="kcenter", keep=3, groups=same_ids.float())


def test_outputs_of_the_pruned_sequence_map_back():
    x = torch.randn(1, 10, 4)
    vis = torch.zeros(1, 10, dtype=torch.bool)
    vis[0, 2:8] = True
    out = prune_inputs_embeds(x, None, None, vis, None, method="kcenter", keep=2)
    back = out.to_input_positions(out.inputs_embeds, fill=float("nan"))
    kept = out.keep_mask[0]
    assert back.shape == x.shape and torch.equal(back[0, kept], x[0, kept]) and back[0, ~kept].isnan().all()
    with pytest.raises(ValueError, match="one entry per position of the pruned sequence"):
        out.to_input_positions(x)


@hsettings(max_examples=15, deadline=None)
@given(st.integers(2, 40), st.integers(1, 24), st.integers(0, 2 ** 16), st.sampled_from([10.0, 0.01]))
def test_dpp_picks_do_not_depend_on_the_features_scale(n, d, seed, scale):
    """CDPruner's kernel is a cosine: the features' scale changes no pick (also past the rank)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    k = int(torch.randint(1, n + 1, (1,), generator=g))
    assert torch.equal(evtp.select_tokens(x, None, k, "dpp"), evtp.select_tokens(x * scale, None, k, "dpp"))


def test_import_evtp_gives_the_transformers_functions(monkeypatch):
    """The README's ``evtp.integrations.transformers.apply(...)`` works after a bare ``import evtp``."""
    import evtp.integrations as integrations

    monkeypatch.delitem(sys.modules, "evtp.integrations.transformers")
    monkeypatch.delattr(integrations, "transformers")
    importlib.reload(evtp)
    assert evtp.integrations.transformers.apply.__name__ == "apply"
