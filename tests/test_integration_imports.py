"""Imports go one way: the library never loads the test-support package, and the family adapters
never import the registry above them (nor does the protocol import the families)."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import evtp

SRC = pathlib.Path(evtp.__file__).parent


def library_modules() -> list[str]:
    names = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if "testing" in parts[:2] or parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def test_no_library_module_loads_evtp_testing():
    """Every module of the library is imported in a fresh interpreter (optional dependencies that
    are missing, e.g. vLLM outside its venv, are skipped); evtp.testing is never loaded, and no
    tiny test model is a public model."""
    code = ("import importlib, sys\n"
            f"for name in {library_modules()!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ImportError as exc:\n"
            "        if exc.name is None or exc.name.startswith('evtp'):\n"
            "            raise\n"
            "loaded = sorted(m for m in sys.modules if m == 'evtp.testing' or m.startswith('evtp.testing.'))\n"
            "assert not loaded, loaded\n"
            "import evtp.models\n"
            "print(sorted(evtp.models.MODELS))\n"
            "print(len([m for m in sys.modules if m.startswith('evtp')]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) > 50
    assert "llava-sam-tiny" not in out.stdout and "'reference'" in out.stdout


def imports_of(path: pathlib.Path) -> set[str]:
    """Every module named by an import statement of ``path`` (at any depth, lazy ones included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_protocol_families_registry_import_one_way():
    integrations = SRC / "integrations"
    assert not any(m.startswith(("evtp.integrations.families", "evtp.integrations.registry", "evtp.testing"))
                   for m in imports_of(integrations / "protocol.py"))
    for path in sorted((integrations / "families").glob("*.py")):
        bad = {m for m in imports_of(path) if m.startswith(("evtp.integrations.registry", "evtp.integrations.pruner",
                                                             "evtp.integrations.transformers", "evtp.testing"))}
        assert not bad, f"{path.name} imports {sorted(bad)}"
