"""Command line: ``evtp <command> [...]``.

Each command lives in its own module and exposes ``main(argv) -> int``; this file only
dispatches, so adding a command never touches the modules of the others.
"""
from __future__ import annotations

import importlib
import sys

# command path -> "module:function"
COMMANDS: dict[tuple[str, ...], str] = {
    ("demo",): "evtp.demo:main",
    ("train",): "evtp.models.train:main",
    ("diagnose", "reference"): "evtp.models.diagnose:main",
    ("eval",): "evtp.eval.run:main",
    ("bench", "selection"): "evtp.bench.selection:main",
    ("bench", "reference"): "evtp.bench.reference:main",
    ("bench", "transformers"): "evtp.bench.transformers:main",
    ("bench", "throughput"): "evtp.bench.throughput:main",
}


def _usage() -> str:
    lines = ["usage: evtp <command> [options]", "", "commands:"]
    lines += ["  " + " ".join(path) for path in COMMANDS]
    lines += ["", "Run `evtp <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for n in (2, 1):
        key = tuple(argv[:n])
        if len(key) == n and key in COMMANDS:
            module, func = COMMANDS[key].split(":")
            prog = "evtp " + " ".join(key)
            return int(getattr(importlib.import_module(module), func)(argv[n:], prog=prog) or 0)
    print(_usage(), file=sys.stderr)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    raise SystemExit(main())
