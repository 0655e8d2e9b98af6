"""Command line: ``evtp <command> [...]``.

All of evtp's argument parsing lives in this package: one thin module per command
(``evtp.cli.<command>``) exposing ``main(argv, prog) -> int``, which parses the arguments into
the typed configuration of a library function and calls it; shared argparse types and the help
formatter are in `evtp.cli.args`. This file only dispatches, so adding a command never touches
the modules of the others. It also gives every command the same endings: a bad setting
(`evtp.settings.SettingsError`) is one line on stderr and exit status 2, Ctrl-C is one line and
exit status 130.
"""
from __future__ import annotations

import importlib
import sys

# command path -> ("module:function", one-line summary)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("demo",): ("evtp.cli.demo:main", "kept-token overlays and the reference model at full / pruned tokens"),
    ("train",): ("evtp.cli.train:main", "train the reference IVS model on the synthetic benchmark"),
    ("diagnose", "reference"): ("evtp.cli.diagnose:main", "where the reference model's errors come from"),
    ("leaks", "reference"): ("evtp.cli.leaks:main", "leak checks of the reference model's readout"),
    ("eval",): ("evtp.cli.eval:main", "evaluate an IVS model with pruning on a benchmark (resumable)"),
    ("bench", "selection"): ("evtp.cli.bench_selection:main", "selection speed of every method"),
    ("bench", "reference"): ("evtp.cli.bench_reference:main", "accuracy vs tokens kept on the reference model"),
    ("bench", "compare"): ("evtp.cli.bench_compare:main", "Holm-corrected contrasts over seeds of bench reference runs"),
    ("bench", "transformers"): ("evtp.cli.bench_transformers:main", "prefill / decode cost of a real VLM"),
    ("bench", "throughput"): ("evtp.cli.bench_throughput:main", "batched speed of the reference model"),
    ("bench", "vllm"): ("evtp.cli.bench_vllm:main", "vLLM serving cost with evtp's plugin (in .venv-vllm)"),
}
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def _usage(group: str | None = None) -> str:
    """The command list (of one group, e.g. ``bench``, when given)."""
    paths = [path for path in COMMANDS if group is None or path[0] == group]
    width = max(len(" ".join(path)) for path in paths)
    head = "evtp <command>" if group is None else f"evtp {group} <command>"
    lines = [f"usage: {head} [options]" + ("   |   evtp --version" if group is None else ""), "", "commands:"]
    lines += [f"  {' '.join(path):<{width}}  {COMMANDS[path][1]}" for path in paths]
    lines += ["", "Run `evtp <command> --help` for the options of one command (with their defaults)."]
    return "\n".join(lines)


def _unknown(argv: list[str]) -> str:
    """The error line for a command path that is not in `COMMANDS`."""
    groups = {path[0] for path in COMMANDS if len(path) > 1}
    if argv[0] in groups:
        subs = [path[1] for path in COMMANDS if path[0] == argv[0]]
        given = f"unknown command 'evtp {argv[0]} {argv[1]}'" if len(argv) > 1 and not argv[1].startswith("-") \
            else f"'evtp {argv[0]}' needs a subcommand"
        return f"evtp: error: {given}; choose one of: {', '.join(subs)}"
    known = sorted({path[0] for path in COMMANDS})
    return f"evtp: error: unknown command {argv[0]!r}; commands: {', '.join(known)}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        from evtp import __version__

        print(f"evtp {__version__}")
        return 0
    if argv[:1] in (["-h"], ["--help"]):
        print(_usage())
        return 0
    if not argv:
        print(_usage(), file=sys.stderr)
        return EXIT_USAGE
    groups = {path[0] for path in COMMANDS if len(path) > 1}
    if argv[0] in groups and argv[1:2] in (["-h"], ["--help"]):
        print(_usage(argv[0]))
        return 0
    for n in (2, 1):
        key = tuple(argv[:n])
        if len(key) == n and key in COMMANDS:
            target, _ = COMMANDS[key]
            module, func = target.split(":")
            prog = "evtp " + " ".join(key)
            return _run(getattr(importlib.import_module(module), func), argv[n:], prog)
    print(_usage(), file=sys.stderr)
    print(_unknown(argv), file=sys.stderr)
    return EXIT_USAGE


def _run(command, argv: list[str], prog: str) -> int:
    """Run one command with the shared endings (see the module docstring)."""
    from evtp.settings import SettingsError

    try:
        return int(command(argv, prog=prog) or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SettingsError as exc:
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
