"""`evtp` dispatch: --version, unknown commands, --help with defaults, one-line endings."""
import json

import pytest

import evtp
from evtp.cli import COMMANDS, main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"evtp {evtp.__version__}"


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for path in COMMANDS:
        assert " ".join(path) in out


@pytest.mark.parametrize("argv, words", [
    (["bogus"], "evtp: error: unknown command 'bogus'; commands: "
                + ", ".join(sorted({path[0] for path in COMMANDS}))),
    (["bench"], "evtp: error: 'evtp bench' needs a subcommand; choose one of: selection, reference"),
    (["bench", "nope"], "evtp: error: unknown command 'evtp bench nope'; choose one of: selection"),
    (["diagnose"], "evtp: error: 'evtp diagnose' needs a subcommand; choose one of: reference"),
    ([], None),
])
def test_unknown_command_is_usage_and_one_error_line(capsys, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: evtp <command>")
    if words:
        assert err[-1].startswith(words)


@pytest.mark.parametrize("path", [("eval",), ("bench", "reference"), ("bench", "throughput"),
                                  ("diagnose", "reference")])
def test_subcommand_help_shows_defaults_and_choices(capsys, path):
    from evtp.selection import METHODS

    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith(f"usage: evtp {' '.join(path)}") and "(default: " in text
    if path != ("diagnose", "reference"):
        assert all(name in text for name in METHODS)


@pytest.mark.parametrize("argv, words", [
    (["bench", "reference", "--keep", "1.5"], "--keep '1.5': a ratio must lie in (0, 1]"),
    (["bench", "reference", "--methods", "evtp,evpt"], "unknown method 'evpt'; known methods"),
    (["bench", "reference", "--option", "spatial_wieght=1"], "--option spatial_wieght: no listed method"),
    (["bench", "reference", "--samples", "0"], "argument --samples: must be >= 1, got 0"),
    (["bench", "throughput", "--batch", "0"], "--batch '0': give positive batch sizes"),
    (["bench", "throughput", "--batch", "x"], "--batch 'x': give positive batch sizes"),
    (["bench", "throughput", "--keep", "0.2,0.2"], "lists the same budget twice"),
    (["diagnose", "reference", "--images", "-1"], "argument --images: must be >= 0, got -1"),
    (["diagnose", "reference", "--images", "0", "--videos", "0"], "nothing to diagnose"),
])
def test_bad_bench_arguments_are_one_line_errors(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "r.json")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: evtp ") and words in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "r.json").exists()


def test_settings_errors_and_interrupts_end_in_one_line(monkeypatch, capsys):
    """Whatever command raises a SettingsError or is interrupted ends in one line (2 / 130)."""
    from evtp import cli
    from evtp.settings import SettingsError

    def bad(argv, prog):
        raise SettingsError("--thing 'x': not a thing;\n  use y")

    def interrupted(argv, prog):
        raise KeyboardInterrupt

    assert cli._run(bad, [], "evtp eval") == 2
    assert capsys.readouterr().err.strip() == "evtp eval: error: --thing 'x': not a thing; use y"
    assert cli._run(interrupted, [], "evtp bench reference") == 130
    assert capsys.readouterr().err.strip() == "evtp bench reference: interrupted"


def test_eval_through_the_cli_exit_statuses(tmp_path, capsys):
    from fixtures.ivs_formats import make_refcoco

    make_refcoco(tmp_path / "d", "refcoco")
    base = ["eval", "--model", "fixtures.tiny_ivs:make_tiny", "--dataset", "refcoco", "--root",
            str(tmp_path / "d"), "--split", "val", "--keep", "0.5", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a"), "--method", "uniform"]) == 0
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["counts"]["ok"] == 2
    assert main([*base, "--out", str(tmp_path / "b"), "--method", "unifrom"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("evtp eval: error: --method: unknown")
