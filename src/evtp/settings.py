"""The settings grammar shared by every command: keep budgets, ``KEY=VALUE`` options, method
lists, devices and dtypes, each parsed and validated in one place.

Grammar::

    keep     0.2 | 1.0           a ratio in (0, 1]: written with a dot (or an exponent)
             64 | 1              a token count >= 1: written without a dot ("1" is one token)
             0                   no visual tokens at all (only where a command allows it)
    value    JSON when it parses (4, 0.5, true, null, "a b"), ``none`` -> None, else the text
    option   KEY=VALUE
    method   NAME | NAME[KEY=VALUE;KEY=VALUE...]      (inside brackets ``,`` works as ``;`` too)
    methods  METHOD,METHOD,...                        (the label of an entry is the entry as typed)

Every check names the flag, the entry and what is known (`evtp.METHODS`, a method's options), and
raises `SettingsError` (a ValueError) before any work is done: commands turn it into one line
on stderr and exit status 2.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, NamedTuple

import torch

from evtp.selection import METHODS, MethodSpec


class SettingsError(ValueError):
    """A command-line or configuration setting is wrong; the message says which and what to do."""


# ---------------------------------------------------------------- keep

def parse_keep(text: str, *, allow_zero: bool = False, allow_counts: bool = True,
               flag: str = "--keep") -> int | float:
    """One budget: ``"0.2"`` -> 0.2 (ratio), ``"64"`` -> 64 (count), ``"0"`` -> 0 (no visual
    tokens; only with ``allow_zero``). Counts are refused with ``allow_counts=False``."""
    t = str(text).strip()
    what = ("a ratio in (0, 1] like 0.2" + (" or an integer token count like 64" if allow_counts else "")
            + (" or 0 (no visual tokens)" if allow_zero else ""))
    try:
        value: int | float = float(t) if any(c in t for c in ".eE") else int(t)
    except ValueError:
        raise SettingsError(f"{flag} {text!r}: give {what}") from None
    if isinstance(value, float):
        if not math.isfinite(value) or not (0.0 < value <= 1.0 or (allow_zero and value == 0.0)):
            raise SettingsError(f"{flag} {text!r}: a ratio must lie in (0, 1]"
                                + (" (or be 0: no visual tokens)" if allow_zero else ""))
        return 0 if value == 0.0 else value
    if value == 0 and allow_zero:
        return 0
    if not allow_counts:
        raise SettingsError(f"{flag} {text!r}: give a ratio in (0, 1] written with a dot, e.g. "
                            f"{text}.0 or 0.{text}; token counts are not accepted here")
    if value < 1:
        raise SettingsError(f"{flag} {text!r}: a token count must be >= 1"
                            + (" (0 means no visual tokens)" if allow_zero else ""))
    return value


def parse_keeps(text: str, *, allow_zero: bool = False, allow_counts: bool = True,
                flag: str = "--keep") -> list[tuple[str, int | float]]:
    """A comma-separated list of budgets -> [(entry as typed, value)], in order, no repeats."""
    entries = [e.strip() for e in str(text).split(",") if e.strip()]
    if not entries:
        raise SettingsError(f"{flag} {text!r}: give at least one budget, e.g. 1.0,0.5,0.2")
    out = [(e, parse_keep(e, allow_zero=allow_zero, allow_counts=allow_counts, flag=flag))
           for e in entries]
    seen: dict = {}
    for e, v in out:
        key = (type(v), v)
        if key in seen:
            raise SettingsError(f"{flag} {text!r} lists the same budget twice ({seen[key]!r} and {e!r})")
        seen[key] = e
    return out


# ---------------------------------------------------------------- KEY=VALUE options

def parse_value(text: str) -> Any:
    """``"4"`` -> 4, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"null"``/``"none"`` -> None,
    ``'"a b"'`` -> "a b", anything else -> the text itself."""
    t = str(text).strip()
    if t.lower() == "none":
        return None
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        return t


def parse_option(text: str, flag: str = "--option") -> tuple[str, Any]:
    """``"spatial_weight=0.5"`` -> ("spatial_weight", 0.5)."""
    key, eq, value = str(text).partition("=")
    if not eq or not key.strip():
        raise SettingsError(f"{flag} {text!r}: write KEY=VALUE, e.g. spatial_weight=0.5")
    return key.strip(), parse_value(value)


def parse_options(items: Iterable[str] | None, flag: str = "--option") -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; a key given twice is an error."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, value = parse_option(item, flag)
        if key in out:
            raise SettingsError(f"{flag} {key}= is given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out


# ---------------------------------------------------------------- methods

class MethodSetting(NamedTuple):
    """One entry of a method list: ``label`` (the entry as typed, its key in results), the
    registered ``method`` name and the entry's own ``options``."""

    label: str
    method: str
    options: dict


def _known_methods(known: Mapping[str, MethodSpec] | None) -> Mapping[str, MethodSpec]:
    return METHODS if known is None else known


def check_method(method: str, options: Mapping[str, Any] | None = None, *,
                 known: Mapping[str, MethodSpec] | None = None, flag: str = "--method") -> MethodSpec:
    """Raise `SettingsError` unless ``method`` is registered, every option is one it declares
    and its options class accepts the values (`MethodSpec.make_options`: the one declaration of
    each option's type and range). Returns the method's spec."""
    known = _known_methods(known)
    if method not in known:
        raise SettingsError(f"{flag}: unknown method {method!r}; known methods: {', '.join(sorted(known))}")
    spec = known[method]
    options = dict(options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise SettingsError(f"{flag}: method {method!r} has no option {', '.join(unknown)}; its options: "
                            f"{', '.join(sorted(spec.options)) or 'none'}")
    try:
        spec.make_options(options)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{flag}: {exc}") from None
    return spec


def split_method(text: str, flag: str = "--method") -> tuple[str, dict]:
    """``"evtp[saliency_weight=4;spatial_weight=0.5]"`` -> ("evtp", {...}) without checking the
    name (see `check_method`)."""
    entry = str(text).strip()
    name, bracket, rest = entry.partition("[")
    name = name.strip()
    if not name:
        raise SettingsError(f"{flag} entry {entry!r}: no method name")
    if not bracket:
        if "]" in entry:
            raise SettingsError(f"{flag} entry {entry!r}: unbalanced brackets")
        return name, {}
    if not rest.endswith("]") or "[" in rest or "]" in rest[:-1]:
        raise SettingsError(f"{flag} entry {entry!r}: unbalanced brackets; write NAME[OPTION=VALUE;...]")
    items = [o for o in rest[:-1].replace(";", ",").split(",") if o.strip()]
    return name, parse_options(items, f"{flag} {entry!r}:")


def parse_method(text: str, *, base_options: Mapping[str, Any] | None = None,
                 known: Mapping[str, MethodSpec] | None = None, flag: str = "--method") -> MethodSetting:
    """One method entry, checked (`check_method`). ``base_options`` (e.g. from ``--option``)
    apply where the method declares them; the entry's own bracketed options override them."""
    known = _known_methods(known)
    name, own = split_method(text, flag)
    if name not in known:
        raise SettingsError(f"{flag}: unknown method {name!r}; known methods: {', '.join(sorted(known))}")
    declared = known[name].options
    opts = {**{k: v for k, v in (base_options or {}).items() if k in declared}, **own}
    check_method(name, opts, known=known, flag=f"{flag} {str(text).strip()!r}")
    return MethodSetting(str(text).strip().replace(" ", ""), name, own)


def parse_methods(text: str, known: Mapping[str, MethodSpec] | None = None, *,
                  base_options: Mapping[str, Any] | None = None,
                  flag: str = "--methods") -> list[MethodSetting]:
    """``"evtp,evtp[saliency_weight=4],dpp"`` -> [MethodSetting(label, method, own options)].

    Entries are split at the commas outside brackets; each is checked by `parse_method` (with
    ``base_options`` where a method declares them). A label given twice is an error."""
    parts, depth, cur = [], 0, ""
    for ch in str(text):
        depth += (ch == "[") - (ch == "]")
        if depth < 0 or depth > 1:
            raise SettingsError(f"{flag} {text!r}: unbalanced brackets")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise SettingsError(f"{flag} {text!r}: unbalanced brackets")
    parts.append(cur)
    out = [parse_method(p, base_options=base_options, known=known, flag=flag) for p in parts if p.strip()]
    if not out:
        raise SettingsError(f"{flag} {text!r}: give at least one method; known methods: "
                            f"{', '.join(sorted(_known_methods(known)))}")
    labels = [s.label for s in out]
    twice = sorted({lb for lb in labels if labels.count(lb) > 1})
    if twice:
        raise SettingsError(f"{flag} {text!r} lists a method twice: {', '.join(twice)}")
    return out


def method_options(setting: MethodSetting, base_options: Mapping[str, Any] | None = None,
                   known: Mapping[str, MethodSpec] | None = None) -> dict:
    """The options a method entry runs with: ``base_options`` it declares, then its own."""
    declared = _known_methods(known)[setting.method].options
    return {**{k: v for k, v in (base_options or {}).items() if k in declared}, **setting.options}


# ---------------------------------------------------------------- devices and dtypes

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def parse_device(value: str | torch.device, flag: str = "device") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (CUDA when present, else the CPU) ->
    torch.device, refused unless this machine has it (an unknown name, CUDA without a CUDA build
    or GPU, an index past the GPU count)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise SettingsError(f"{flag}={value!r} is not a device; give cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
            raise SettingsError(f"{flag}={value!r}: CUDA is not available here ({build}); use "
                                f"device=cpu, or install a CUDA build of torch on a machine with a GPU")
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise SettingsError(f"{flag}={value!r}: this machine has {n} CUDA device(s) "
                                f"(cuda:0 .. cuda:{n - 1})")
    elif device.type != "cpu":
        raise SettingsError(f"{flag}={value!r}: evtp's models run on cpu or cuda, not {device.type}")
    return device


def parse_dtype(value: str | torch.dtype, flag: str = "dtype") -> torch.dtype:
    """``"float32"``/``"fp32"``, ``"float16"``/``"fp16"``/``"half"``, ``"bfloat16"``/``"bf16"``
    (or a torch floating dtype) -> torch.dtype."""
    if isinstance(value, torch.dtype):
        if not value.is_floating_point:
            raise SettingsError(f"{flag}={value}: give a floating-point dtype: {', '.join(DTYPES)}")
        return value
    key = str(value).strip().lower().removeprefix("torch.")
    if key not in DTYPES:
        raise SettingsError(f"{flag}={value!r} is not a model dtype; give one of {', '.join(DTYPES)}")
    return DTYPES[key]


def model_placement(options: dict) -> dict:
    """``options`` with ``device`` / ``dtype`` strings replaced by the checked torch objects
    (`parse_device`, `parse_dtype`); other keys unchanged."""
    out = dict(options)
    if out.get("device") is not None:
        out["device"] = parse_device(out["device"], "--model-option device")
    if out.get("dtype") is not None:
        out["dtype"] = parse_dtype(out["dtype"], "--model-option dtype")
    return out


__all__ = ["SettingsError", "parse_keep", "parse_keeps", "parse_value", "parse_option", "parse_options",
           "MethodSetting", "check_method", "split_method", "parse_method", "parse_methods",
           "method_options", "DTYPES", "parse_device", "parse_dtype", "model_placement"]
