"""Append-only JSONL files that survive interruption, and outputs rewritten only when their bytes change.

Used for teacher traces and for predictions: each finished item is appended and flushed at once, so a rerun
reads what is done and does only the rest. A last line cut off by a crash is detected, reported and
dropped (the item is redone), never parsed as a result. ``write_if_changed`` leaves a file with the same bytes
untouched, so a stage that reruns and makes the same output does not look changed to the stages after it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable


def read_rows(path: Path) -> tuple[list[dict], int]:
    """All complete rows of a JSONL file, and how many broken lines were found (and dropped)."""
    path = Path(path)
    if not path.exists():
        return [], 0
    rows, broken = [], 0
    with path.open("rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
            # A line without its newline is a write that may have been cut short mid-object or mid-number.
            if i == len(lines) - 1 and not data.endswith(b"\n"):
                raise ValueError("unterminated last line")
            rows.append(row)
        except ValueError:
            broken += 1
    return rows, broken


def rewrite(path: Path, rows: Iterable[dict]) -> None:
    """Replace a JSONL file's rows atomically."""
    tmp = Path(str(path) + ".tmp")
    with tmp.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    os.replace(tmp, path)


def repair(path: Path) -> int:
    """Rewrite a JSONL file keeping only its complete rows; returns how many broken lines were removed."""
    rows, broken = read_rows(path)
    if broken:
        rewrite(path, rows)
    return broken


def append_rows(path: Path, rows: Iterable[dict]) -> None:
    """Append rows, one flushed line each."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
            fh.flush()


def write_if_changed(path: Path, data: bytes | str) -> bool:
    """Write ``data`` to ``path`` (atomically) unless the file already holds exactly it; True when written."""
    path = Path(path)
    data = data.encode() if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True
