"""Checking a ``path=`` model option before anything is loaded: a local checkpoint folder or a
Hugging Face model id, and the architecture its ``config.json`` names.

Every error is one line naming the path and what was expected (`CheckpointError`, a ValueError,
which `evtp eval` reports as a bad setting before any sample runs).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class CheckpointError(ValueError):
    """A ``path`` that is not a usable checkpoint of the expected kind."""


def read_config(path: str | Path | None, *, what: str, option: str = "path") -> tuple[str, dict]:
    """(path to load from, parsed ``config.json``) of a local folder or a hub id.

    Args:
        path: a folder holding ``config.json`` (and weights), or ``org/name`` on the Hugging Face hub
            (resolved through the local cache; downloaded only where the hub is reachable).
        what: what the option should name, for the message (e.g. "a Sa2VA checkpoint").
        option: the option's name, for the message.
    Raises:
        CheckpointError: not a folder with a readable config.json, nor a hub id whose config resolves.
    """
    if path is None or str(path).strip() == "":
        raise CheckpointError(f"{option}: not given; expected {what}: --model-option {option}=<checkpoint folder or "
                              f"Hugging Face model id>")
    text = str(path)
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise CheckpointError(f"{option}={text!r}: is a file; expected {what} (a folder with config.json "
                                  f"and model weights, or a Hugging Face model id)")
        cfg = local / "config.json"
        if not cfg.is_file():
            raise CheckpointError(f"{option}={text!r}: the folder has no config.json; expected {what} (config.json, "
                                  f"*.safetensors, tokenizer and processor files)")
        return str(local), _parse(cfg, f"{option}={text!r}", what)
    if not HUB_ID.match(text):
        raise CheckpointError(f"{option}={text!r}: no such folder; expected {what} (a local folder or a Hugging "
                              f"Face model id like org/name)")
    try:
        from huggingface_hub import hf_hub_download

        cfg = hf_hub_download(text, "config.json")
    except Exception as exc:  # offline without a cached copy, unknown repo, gated repo ...
        raise CheckpointError(f"{option}={text!r}: not a local folder, and its config.json cannot be fetched from "
                              f"the Hugging Face hub ({type(exc).__name__}); expected {what}: download it "
                              f"first and pass the folder") from None
    return text, _parse(Path(cfg), f"{option}={text!r}", what)


def _parse(cfg: Path, where: str, what: str) -> dict:
    try:
        config = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where}: config.json is not valid JSON ({exc}); expected {what}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: config.json holds {type(config).__name__}, not an object; "
                              f"expected {what}")
    return config


def architecture(config: dict) -> str | None:
    """The first entry of ``architectures`` in a config (None when absent)."""
    archs = config.get("architectures") or []
    return archs[0] if isinstance(archs, list) and archs else None


def expect_architecture(path: str, config: dict, allowed, *, what: str) -> str:
    """The checkpoint's architecture if it is one of ``allowed``; else a one-line CheckpointError."""
    arch = architecture(config)
    if arch not in allowed:
        found = f"a {arch} checkpoint" if arch else f"a checkpoint without 'architectures' (model_type " \
                                                    f"{config.get('model_type')!r})"
        raise CheckpointError(f"path={path!r}: {found}; expected {what} (architectures: "
                              f"{', '.join(sorted(allowed))})")
    return arch
