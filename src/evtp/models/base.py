"""The protocol between evaluation code and IVS models.

A model's ``predict`` takes the pruning settings (``method``, ``keep`` and the method's options,
together an `evtp.PruningSettings`) and, optionally, keywords of its own: those are declared once
as a `PredictOptions` dataclass in the model's ``predict_options`` attribute (and on its factory,
so that `evtp eval` checks them before the model is built). `check_predict_options` types and
checks them like method options: ``position_mode="shifted"``, or the string ``"False"`` where a
bool is declared, is refused with one message naming the option, the value and what is allowed.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

from evtp.data.types import Sample
from evtp.selection.options import TypedOptions

PRUNING_KEYWORDS = ("sample", "method", "keep", "self")  # predict's keywords that are not its own options


@dataclass(frozen=True)
class PredictOptions(TypedOptions):
    """Base of a model's own ``predict`` keywords (fields typed and ranged as in
    `evtp.selection.options`); ``model`` names the model in messages."""

    def _what(self) -> str:
        return "predict option"

    @classmethod
    def _owner(cls) -> str:
        return f"{cls.__qualname__} (predict)"


def predict_options_of(model_or_factory) -> type[PredictOptions] | None:
    """The `PredictOptions` class a model (or its factory) declares as ``predict_options``,
    or None."""
    cls = getattr(model_or_factory, "predict_options", None)
    if cls is None:
        return None
    if not (isinstance(cls, type) and issubclass(cls, PredictOptions)):
        raise TypeError(f"{model_or_factory!r}.predict_options must be a PredictOptions subclass, got {cls!r}")
    return cls


def predict_option_names(model_or_factory) -> set[str] | None:
    """The names of a model's own ``predict`` options: its declared `PredictOptions` fields, or
    else the keywords of its ``predict`` (None when neither can be read)."""
    cls = predict_options_of(model_or_factory)
    if cls is not None:
        return set(cls.names())
    predict = getattr(model_or_factory, "predict", None)
    if predict is None:
        return None
    try:
        params = inspect.signature(predict).parameters.values()
    except (TypeError, ValueError):
        return None
    return {q.name for q in params if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY)} - set(PRUNING_KEYWORDS)


def check_predict_options(model_or_factory, values: Mapping[str, Any]) -> dict:
    """``values`` typed and checked against the model's declared `PredictOptions` -> a dict of
    the values (only those given). A model without a declaration: every name must be a keyword
    of its ``predict`` (values unchecked; declare ``predict_options`` to check them).

    Raises:
        TypeError naming unknown options (listing the known), `OptionError` (a ValueError and a
        TypeError) naming an option whose value is refused.
    """
    values = dict(values or {})
    cls = predict_options_of(model_or_factory)
    if cls is not None:
        checked = cls.from_dict(values).values()
        return {k: checked[k] for k in values}
    names = predict_option_names(model_or_factory)
    unknown = sorted(set(values) - names) if names is not None else []
    if unknown:
        raise TypeError(f"{type(model_or_factory).__name__}.predict got unknown option(s) {unknown}; its "
                        f"options: {sorted(names) or 'none'}")
    return values


@dataclass
class Prediction:
    """What a model returns for one sample.

    Attributes:
        masks: (T, H, W) bool at the sample's frame size, or None when the model emitted no
            ``[SEG]`` (metrics then count an empty mask).
        tokens_kept / tokens_total: visual tokens the language model saw / would have seen.
        timings_ms: per-component wall time, e.g. {"vision": .., "selection": .., "lm_prefill": ..,
            "decode": .., "mask_decoder": .., "total": ..}.
        extra: anything else (kept indices, coverage, generated text ...).
    """

    masks: np.ndarray | None
    tokens_kept: int
    tokens_total: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class IVSModel(Protocol):
    """``name``, ``predict`` and (optional, checked by `check_predict_options`) ``predict_options``,
    the `PredictOptions` class of ``predict``'s own keywords."""

    name: str

    def predict(self, sample: Sample, *, method: str = "evtp", keep: float | int = 0.2,
                **options: Any) -> Prediction:
        """Segment ``sample.instruction`` in ``sample.frames`` with visual tokens pruned by
        ``evtp.select_tokens(method=method, keep=keep, **options)``."""
        ...
