"""Layering of the source: argument parsing lives only in evtp.cli (the library never imports
argparse nor the CLI; the package entry points are the exceptions), and no function of the
package is over 80 lines."""
from __future__ import annotations

import ast
import pathlib

import evtp

SRC = pathlib.Path(evtp.__file__).parent
ENTRY_POINTS = {"eval/__main__.py", "__main__.py"}
MAX_LINES = 80


def _imported(tree: ast.AST) -> set[str]:
    """Every module an `import` / `from ... import` of ``tree`` names (``from evtp import cli``
    counts as ``evtp.cli``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _cli_imports(names: set[str]) -> list[str]:
    return sorted(n for n in names if n == "argparse" or n.startswith("argparse.") or n == "evtp.cli"
                  or n.startswith("evtp.cli."))


def test_the_checks_see_what_they_look_for():
    assert _cli_imports(_imported(ast.parse("import argparse"))) == ["argparse"]
    assert _cli_imports(_imported(ast.parse("from evtp import cli"))) == ["evtp.cli"]
    assert _cli_imports(_imported(ast.parse("def f():\n    from evtp.cli.args import parser"))) \
        == ["evtp.cli.args", "evtp.cli.args.parser"]
    assert _cli_imports(_imported(ast.parse("import evtp.selection\nfrom evtp.settings import x"))) == []


def test_no_library_module_imports_argparse_or_the_cli():
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/") or rel in ENTRY_POINTS:
            continue
        found = _cli_imports(_imported(ast.parse(path.read_text(), filename=str(path))))
        if found:
            offenders[rel] = found
    assert offenders == {}, f"argument parsing belongs in evtp/cli/: {offenders}"


def test_functions_stay_short():
    paths = sorted(SRC.rglob("*.py"))
    long = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long[f"{path.relative_to(SRC).as_posix()}:{node.name}"] = n
    assert len(paths) > 5 and long == {}, f"functions over {MAX_LINES} lines: {long}"
