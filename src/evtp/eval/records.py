"""Crash-safe JSON-lines result files.

Every record is one line written with a single ``write`` followed by ``flush`` and ``fsync``, so a
kill at any moment leaves at most one torn (incomplete) last line. Readers drop a line that does
not end in a newline or does not parse; `RecordWriter` truncates such a tail before appending, so
the next record never gets glued to a fragment.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from evtp.settings import SettingsError


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:  # numpy scalars
        return _json_safe(x.item())
    return x


def read_records(path: str | Path) -> tuple[list[dict], int]:
    """Records of a JSON-lines file and the number of dropped (torn or unparsable) lines."""
    path = Path(path)
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    rows, dropped = [], 0
    lines = data.split(b"\n")
    tail = lines.pop()  # bytes after the last newline: empty, or a torn record
    if tail.strip():
        dropped += 1
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            dropped += 1
            continue
        if isinstance(row, dict) and "sample_id" in row:
            rows.append(row)
        else:
            dropped += 1
    return rows, dropped


def read_first_line(path: str | Path) -> dict | None:
    """The parsed first line of a JSON-lines file (where a header goes): None when ``path`` has no
    complete first line (missing, empty or torn), {} when that line is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        line = fh.readline()
    if not line.endswith(b"\n"):
        return None
    try:
        first = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return first if isinstance(first, dict) else {}


def records_path_beside(out: str | Path) -> Path:
    """The records file a results file ``out`` is summarised from: ``<out without suffix>.records.jsonl``."""
    return Path(f"{Path(out).with_suffix('')}.records.jsonl")


def repair_tail(path: str | Path) -> int:
    """Truncate ``path`` after its last newline; returns the number of bytes removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        # scan backwards in blocks for the last newline
        pos, block, last_nl = size, 1 << 16, -1
        while pos > 0 and last_nl < 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                last_nl = start + i
            pos = start
        keep = last_nl + 1
        if keep < size:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return size - keep


class RecordWriter:
    """Append-only, fsync'd JSON-lines writer (one process per file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = repair_tail(self.path)
        self._fh = open(self.path, "ab")

    def write(self, row: dict) -> None:
        line = json.dumps(_json_safe(row), ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
        self._fh.write(line)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _make_folder(folder: Path, flag: str, text) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SettingsError(f"{flag} {str(text)!r}: {str(folder)!r} is a file, not a folder") from None
    except OSError as exc:
        raise SettingsError(f"{flag} {str(text)!r}: cannot create folder {str(folder)!r} "
                            f"({exc.strerror or exc}); choose a writable place") from None
    probe = folder / f".evtp-write-check{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SettingsError(f"{flag} {str(text)!r}: cannot write in {str(folder)!r} "
                            f"({exc.strerror or exc}); choose a writable place") from None


def prepare_output_file(path: str | Path, flag: str = "--out") -> Path:
    """Check an output file before any work: never an existing folder, its parent folder created
    (or refused) and writable. Raises `evtp.settings.SettingsError` naming ``flag`` and the path."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise SettingsError(f"{flag} {str(path)!r} is a folder; give a file name, e.g. "
                            f"{str(Path(path) / 'results.json')!r}")
    _make_folder(out.parent, flag, path)
    return out


def prepare_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Check an output folder before any work: never an existing file, created (or refused) and
    writable. Raises `evtp.settings.SettingsError` naming ``flag`` and the path."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise SettingsError(f"{flag} {str(path)!r} is a file; give a folder (it is created if missing)")
    _make_folder(out, flag, path)
    return out


def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Check an output folder before any work without creating it: not an existing file, and its
    nearest existing ancestor a folder this process can write in. Raises
    `evtp.settings.SettingsError` naming ``flag`` and the path."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise SettingsError(f"{flag} {str(path)!r} is a file; give a folder (it is created if missing)")
    ancestor = out.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SettingsError(f"{flag} {str(path)!r}: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SettingsError(f"{flag} {str(path)!r}: cannot write in {str(ancestor)!r}; choose a writable place")
    return out


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    write_text_atomic(path, json.dumps(_json_safe(obj), indent=2, ensure_ascii=False) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_records_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    text = "".join(json.dumps(_json_safe(r), ensure_ascii=False, allow_nan=False) + "\n" for r in rows)
    write_text_atomic(path, text)


def best_rows(rows: Iterable[dict]) -> dict[str, dict]:
    """One record per sample id: the last "ok" record, else the last record."""
    out: dict[str, dict] = {}
    for row in rows:
        sid = row["sample_id"]
        prev = out.get(sid)
        if prev is None or row.get("status") == "ok" or prev.get("status") != "ok":
            out[sid] = row
    return out
