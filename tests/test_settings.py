"""`evtp.settings`: the one keep parser and option grammar of every command."""
import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

import evtp
from evtp.settings import (MethodSetting, SettingsError, check_method, method_options, model_placement,
                           parse_device, parse_dtype, parse_keep, parse_keeps, parse_methods,
                           parse_options, parse_value)


@hsettings(max_examples=60, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1.0, allow_nan=False))
def test_a_ratio_written_with_a_dot_round_trips(ratio):
    text = repr(float(ratio))
    value = parse_keep(text)
    assert isinstance(value, float) and value == float(text)


@hsettings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=10 ** 6))
def test_a_count_without_a_dot_stays_a_count(count):
    value = parse_keep(str(count))
    assert isinstance(value, int) and value == count
    with pytest.raises(SettingsError, match="token counts are not accepted"):
        parse_keep(str(count), allow_counts=False)


@pytest.mark.parametrize("bad, words", [("0", "count must be >= 1"), ("1.5", r"ratio must lie in \(0, 1\]"),
                                        ("x", "give a ratio"), ("-3", "count must be >= 1"),
                                        ("nan", "give a ratio"), ("0.0", "ratio must lie")])
def test_bad_keeps_name_the_entry(bad, words):
    with pytest.raises(SettingsError, match=words) as err:
        parse_keep(bad, flag="--keep")
    assert f"--keep {bad!r}" in str(err.value)


def test_keep_zero_only_where_allowed_and_lists_keep_their_text():
    assert parse_keep("0", allow_zero=True) == 0 and parse_keep("0.0", allow_zero=True) == 0
    assert parse_keeps("1.0, 0.5,0,64", allow_zero=True) == [("1.0", 1.0), ("0.5", 0.5), ("0", 0), ("64", 64)]
    with pytest.raises(SettingsError, match="twice"):
        parse_keeps("0.5,0.50")
    with pytest.raises(SettingsError, match="at least one"):
        parse_keeps(" , ")


def test_values_and_options():
    assert [parse_value(v) for v in ("4", "0.5", "true", "null", "none", '"a b"', "cuda")] == \
        [4, 0.5, True, None, None, "a b", "cuda"]
    assert parse_options(["a=1", "b = x", "c=[1, 2]"]) == {"a": 1, "b": "x", "c": [1, 2]}
    with pytest.raises(SettingsError, match="--option 'a': write KEY=VALUE"):
        parse_options(["a"])
    with pytest.raises(SettingsError, match="a= is given twice"):
        parse_options(["a=1", "a=2"])


@pytest.mark.parametrize("method", sorted(evtp.METHODS))
def test_every_method_accepts_its_declared_defaults_and_refuses_others(method):
    spec = evtp.METHODS[method]
    assert check_method(method, dict(spec.options)) is spec
    with pytest.raises(SettingsError, match=f"method {method!r} has no option bogus; its options: ") as err:
        check_method(method, {"bogus": 1})
    for name in spec.options:
        assert name in str(err.value)
    [s] = parse_methods(method)
    assert s == MethodSetting(method, method, {})


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(SettingsError) as err:
        parse_methods("evtp,evpt")
    assert "unknown method 'evpt'; known methods: " + ", ".join(sorted(evtp.METHODS)) in str(err.value)


@pytest.mark.parametrize("entry, words", [
    ("evtp[saliency_weight=-1]", "option saliency_weight=-1: must be a finite number >= 0"),
    ("evtp[first=bogus]", "must be one of 'divprune', 'center', 'norm', 'random'"),
    ("evtp[spatial_weight=abc]", "option spatial_weight='abc': must be a finite number >= 0"),
    ("evtp[projection_dim=0]", "option projection_dim=0: must be an int >= 1 or None"),
    ("evtp[precision=fp16]", "option precision='fp16': must be one of 'float32', 'float16', 'bfloat16'"),
    ("dpp[eps=x]", "option eps='x': must be a finite number >= 0"),
    ("dart[pivot_norm=3]", "option pivot_norm=3: must be one of 1, 2"),
    ("evtp[saliency_weight=4", "unbalanced"), ("evtp[[x=1]]", "unbalanced"), ("evtp]", "unbalanced"),
    ("evtp,evtp", "twice"), ("[x=1]", "no method name"), ("evtp[x]", "write KEY=VALUE")])
def test_bad_method_entries_fail_with_the_reason(entry, words):
    with pytest.raises(SettingsError, match=words):
        parse_methods(entry)


def test_bracketed_options_override_base_options_the_method_declares():
    specs = parse_methods("evtp[spatial_weight=0.5],dpp", base_options={"spatial_weight": 2.0, "eps": 0})
    assert specs[0] == ("evtp[spatial_weight=0.5]", "evtp", {"spatial_weight": 0.5})
    assert method_options(specs[0], {"spatial_weight": 2.0, "eps": 0}) == {"spatial_weight": 0.5}
    assert method_options(specs[1], {"spatial_weight": 2.0, "eps": 0}) == {"eps": 0}
    with pytest.raises(SettingsError, match="option spatial_weight=-1: must be a finite number >= 0"):  # a base option is checked where it applies
        parse_methods("evtp", base_options={"spatial_weight": -1})


def test_devices_and_dtypes():
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SettingsError, match="is not a device; give cpu, cuda, cuda:N or auto"):
        parse_device("gpu0")
    with pytest.raises(SettingsError, match="not meta"):
        parse_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="CUDA is not available here"):
            parse_device("cuda")
    else:
        n = torch.cuda.device_count()
        assert parse_device("cuda").type == "cuda"
        with pytest.raises(SettingsError, match=f"has {n} CUDA device"):
            parse_device(f"cuda:{n}")
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("float16") is torch.float16
    assert parse_dtype(torch.float32) is torch.float32
    with pytest.raises(SettingsError, match="not a model dtype; give one of float32"):
        parse_dtype("int8")
    placed = model_placement({"device": "cpu", "dtype": "fp32", "weights": "w"})
    assert placed == {"device": torch.device("cpu"), "dtype": torch.float32, "weights": "w"}
