"""Method options declared once: one frozen dataclass per selection method.

A method's options class lists every option with its type (the annotation), its default and,
for numbers, its range (`option(..., low=..., high=...)`); `MethodOptions.__post_init__` checks
every value against them on construction, so `evtp.select_tokens`, `evtp.TokenPruner`, the vLLM
settings and the command line refuse a bad value before any work, with one message naming the
option, the value and what is allowed::

    @dataclass(frozen=True)
    class KCenterOptions(MethodOptions):
        precision: Literal["float32", "float16", "bfloat16"] = "float32"
        projection_dim: int | None = option(None, low=1)

    @register_method("kcenter", options=KCenterOptions)
    def kcenter(features, positions, k, *, mask, scores, generator, precision, projection_dim): ...

Annotations understood: ``bool``, ``int``, ``float`` (finite; an int is accepted and made a
float), ``str``, ``Literal[...]`` (one of the values), ``torch.Tensor``, ``X | None`` and
``typing.Any`` (anything). NumPy scalars are accepted as the Python number they hold. Checks
that tie several options together go in ``check()``; checks that need the tensors (shapes, a
``first="center"`` rule without positions) stay in the method.
"""
from __future__ import annotations

import functools
import math
import numbers
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Literal, Mapping

import numpy as np
import torch

__all__ = ["TypedOptions", "MethodOptions", "OptionError", "option", "NoOptions", "options_class_from_defaults"]


class OptionError(ValueError, TypeError):
    """A method option's value is refused: of the wrong type or out of its range (both a
    ValueError and a TypeError, so either ``except`` catches it)."""


def option(default, *, low: float | None = None, high: float | None = None, low_open: bool = False):
    """A dataclass field with a numeric range: ``low <= value`` (``low < value`` with
    ``low_open``) and ``value <= high``; None bounds are open."""
    return field(default=default, metadata={"low": low, "high": high, "low_open": low_open})


@functools.lru_cache(maxsize=None)
def _plan(cls) -> tuple:
    """(name, default, annotation, its union members, metadata) of every field, once per class."""
    hints = typing.get_type_hints(cls)
    plan = tuple((f.name, f.default, hints.get(f.name, Any), _members(hints.get(f.name, Any)), f.metadata)
                 for f in fields(cls))
    for name, default, tp, members, meta in plan:  # a declared default must pass its own check
        if default is not MISSING and not _accepts(members, default, meta):
            raise TypeError(f"{cls.__qualname__}.{name}: the default {default!r} is not {_describe(tp, meta)}")
    return plan


def _accepts(members, value, meta) -> bool:
    for m in members:
        try:
            _convert(m, value, meta)
            return True
        except _Refused:
            continue
    return False


@functools.lru_cache(maxsize=None)
def _names(cls) -> frozenset:
    return frozenset(entry[0] for entry in _plan(cls))


def _members(tp) -> tuple:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return (tp,)


def _describe(tp, meta: Mapping) -> str:
    """What a field accepts, in words: 'a finite number >= 0', "one of 'a', 'b'" ..."""
    parts = []
    for m in _members(tp):
        if m is type(None):
            continue
        if typing.get_origin(m) is Literal:
            parts.append("one of " + ", ".join(repr(v) for v in typing.get_args(m)))
            continue
        word = {bool: "true or false", int: "an int", float: "a finite number", str: "a string",
                torch.Tensor: "a torch.Tensor"}.get(m, getattr(m, "__name__", str(m)))
        if m in (int, float):
            low, high = meta.get("low"), meta.get("high")
            if low is not None:
                word += f" {'>' if meta.get('low_open') else '>='} {low}"
            if high is not None:
                word += f" {'and ' if low is not None else ''}<= {high}"
        parts.append(word)
    if type(None) in _members(tp):
        parts.append("None")
    return " or ".join(parts)


class _Refused(Exception):
    pass


def _convert(m, value, meta: Mapping):
    """``value`` as member type ``m`` of an annotation, or raise `_Refused`."""
    if m is Any:
        return value
    if m is type(None):
        if value is None:
            return None
        raise _Refused
    if typing.get_origin(m) is Literal:
        for choice in typing.get_args(m):
            if type(value) is type(choice) and value == choice:
                return choice
            if isinstance(choice, int) and not isinstance(choice, bool) and isinstance(value, numbers.Integral) \
                    and not isinstance(value, (bool, str)) and int(value) == choice:
                return choice
        raise _Refused
    if m is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise _Refused
    if m is int or m is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or isinstance(value, torch.Tensor):
            raise _Refused
        if m is int:
            if not isinstance(value, numbers.Integral):
                raise _Refused
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise _Refused
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (value < low or (meta.get("low_open") and value == low)):
            raise _Refused
        if high is not None and value > high:
            raise _Refused
        return value
    if isinstance(m, type):
        if isinstance(value, m):
            return value
        raise _Refused
    return value


@dataclass(frozen=True)
class TypedOptions:
    """A frozen dataclass whose fields are checked against their annotations and ranges on
    construction (see the module docstring); the base of `MethodOptions` and of the IVS models'
    predict options (`evtp.models.base.PredictOptions`)."""

    def _what(self) -> str:
        """How messages name an option of this class, e.g. "method 'evtp' option"."""
        return "option"

    def __post_init__(self):
        for name, default, tp, members, meta in _plan(type(self)):
            value = getattr(self, name)
            if value is default:  # the declared default, as written in the class
                continue
            for m in members:
                try:
                    out = _convert(m, value, meta)
                    break
                except _Refused:
                    continue
            else:
                raise OptionError(f"{self._what()} {name}={value!r}: must be {_describe(tp, meta)}")
            object.__setattr__(self, name, out)
        self.check()

    def check(self) -> None:
        """Checks across options (override); raise ValueError naming them."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(entry[0] for entry in _plan(cls))

    @classmethod
    def defaults(cls) -> dict:
        """Option name -> default value."""
        out = {}
        for f in fields(cls):
            out[f.name] = f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else None)
        return out

    @classmethod
    def _owner(cls) -> str:
        return "this"

    @classmethod
    def from_dict(cls, values: Mapping | None) -> "TypedOptions":
        """The options from a ``{name: value}`` mapping (unknown names refused, listing the known)."""
        values = dict(values or {})
        unknown = sorted(set(values) - _names(cls)) if values else ()
        if unknown:
            raise TypeError(f"{cls._owner()} got unknown option(s) {unknown}; its options: "
                            f"{sorted(cls.names()) or 'none'}")
        return cls(**values)

    def values(self) -> dict:
        """Option name -> value (tensors not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def changed(self) -> dict:
        """The options that differ from their defaults."""
        d = self.defaults()
        return {k: v for k, v in self.values().items()
                if isinstance(v, torch.Tensor) or isinstance(d[k], torch.Tensor) or v != d[k]}


@dataclass(frozen=True)
class MethodOptions(TypedOptions):
    """Base of every method's options class (see the module docstring).

    ``method`` (set by `evtp.register_method`) names the method in messages.
    """

    method: ClassVar[str] = "?"

    def _what(self) -> str:
        return f"method {self.method!r} option"

    @classmethod
    def _owner(cls) -> str:
        return f"method {cls.method!r}"


@dataclass(frozen=True)
class NoOptions(MethodOptions):
    """A method without options."""


def options_class_from_defaults(name: str, defaults: Mapping[str, Any]) -> type[MethodOptions]:
    """An options class for a method registered with a plain ``{option: default}`` dict: the
    names are checked, the values are not (declare a `MethodOptions` subclass to check them)."""
    from dataclasses import make_dataclass

    spec = [(k, Any, field(default=v)) for k, v in defaults.items()]
    return make_dataclass(f"{name}_options", spec, bases=(MethodOptions,), frozen=True)
