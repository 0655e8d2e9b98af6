"""The family registry: core class name -> `Family` adapter, and the lookup `TokenPruner` uses.

It sits above the families (``evtp.integrations.families`` lists its adapters; each adapter names
its core classes in ``Family.core_names``), so imports go one way: protocol <- families <-
registry. `find_family` walks the class hierarchy of a model (and of its ``.model`` chain), so a
subclass — UniPixel's ``PixelQwen2_5_VLForConditionalGeneration``, your fine-tune — is found as its
base family. Classes are keyed by name: nothing imports a transformers model module until a model
of that family is patched, and a family whose class the installed transformers lacks never matches.
Your own adapter: ``register_family(MyFamily)`` (or ``@register_family`` on the class).
"""
from __future__ import annotations

from typing import Any

import torch

from evtp.integrations.families import ADAPTERS
from evtp.integrations.protocol import Family

FAMILIES: dict[str, Family] = {}


def register_family(cls: type[Family]) -> type[Family]:
    """Register an adapter class under each name of its ``core_names``; returns the class (so it
    also works as a class decorator).

    Raises:
        ValueError when ``core_names`` is empty or a name is registered already.
    """
    if not cls.core_names:
        raise ValueError(f"{cls.__name__}.core_names is empty: name the core classes it adapts")
    taken = [name for name in cls.core_names if name in FAMILIES]
    if taken:
        raise ValueError(f"core class {taken[0]} is already registered by {type(FAMILIES[taken[0]]).__name__}")
    inst = cls()
    for name in cls.core_names:
        FAMILIES[name] = inst
    return cls


for _adapter in ADAPTERS:
    register_family(_adapter)


def family_of(module) -> Family | None:
    """The family registered for the first class of ``type(module).__mro__`` that has one."""
    for cls in type(module).__mro__:
        fam = FAMILIES.get(cls.__name__)
        if fam is not None:
            return fam
    return None


def supported_names() -> list[str]:
    return sorted({fam.name for fam in FAMILIES.values()})


def find_family(model) -> tuple[Any, Family]:
    """(core module, family) of ``model``: the model itself or along its ``.model`` chain.

    Raises:
        TypeError naming the supported families and pointing to `prune_inputs_embeds`.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a transformers model instance), got "
                        f"{type(model).__name__}")
    mod = model
    for _ in range(4):
        fam = family_of(mod)
        if fam is not None:
            return mod, fam
        mod = getattr(mod, "model", None)
        if not isinstance(mod, torch.nn.Module):
            break
    raise TypeError(f"evtp does not support {type(model).__name__}: no family adapter is registered for it "
                    f"or its .model chain. Supported families: {', '.join(supported_names())}. For other "
                    f"models call evtp.prune_inputs_embeds from the model's code (docs/recipes.md), or "
                    f"register a family (docs/integrations.md)")
