"""argparse pieces shared by the commands: the help formatter and the argument types.

Every ``type=`` here raises `argparse.ArgumentTypeError`, so a bad value is argparse's usage line
plus one error line naming the flag, and exit status 2, before any work.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from evtp.settings import SettingsError, parse_keep, parse_keeps


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` of every command: each option's default shown once (an option whose help text
    already names its default keeps it as written), descriptions kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def parser(prog: str, doc: str | None, **kwargs) -> argparse.ArgumentParser:
    """An `argparse.ArgumentParser` for command ``prog`` whose description is the first paragraph
    of ``doc`` (a module docstring)."""
    description = (doc or "").strip().split("\n\n")[0]
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter,
                                   **kwargs)


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


positive_int = _int_at_least(1)  # an integer >= 1
non_negative_int = _int_at_least(0)  # an integer >= 0


def positive_ints(text: str) -> list[int]:
    """A comma-separated list of integers >= 1."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every value must be an integer >= 1, got {text!r}")
    return values


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A fraction of the visual tokens in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], e.g. 0.2; got {text!r}") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], e.g. 0.2; got {text!r}")
    return value


def keep(text: str) -> int | float:
    """One budget of the shared grammar (`evtp.settings.parse_keep`): a ratio or a token count."""
    try:
        return parse_keep(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--keep {text!r}: ")) from None


def keep_ratios(text: str) -> list[tuple[str, float]]:
    """A comma-separated list of ratios in (0, 1] (`evtp.settings.parse_keeps`, no counts)."""
    try:
        return parse_keeps(text, allow_counts=False)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def out_file(text: str) -> Path:
    """``--out FILE``: refused when it names an existing folder (checked again, with the parent
    created, by `evtp.eval.records.prepare_output_file` before any work)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name, e.g. {Path(text) / 'results.json'}")
    return path
