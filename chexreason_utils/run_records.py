"""Run records: progress lines, timings and counts of a running stage, as JSON lines in one file.

Under the runner, ``RECORDS_ENV`` names the stage's record file (``logs/<stage>.jsonl`` in the run directory);
the notebook's kernel and every worker process of ``jobs.run_jobs`` (which inherit the variable) append one
JSON object a line to it. Unset (interactive use), every writer here is a no-op. Each record has a ``kind``:
``start`` / ``ready`` / ``end`` (the runner and ``start_stage``), ``step`` (``progress.Bar``), ``time``
(``timed``: loading, trainer construction, training, generation, saving) and ``count`` (``count``: what a
stage counted, dropped or redid, printed in the runner's summary). The file lives in ``logs/``, never beside
models or figures, so timings can never make two runs' outputs differ.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

RECORDS_ENV = "CHEXREASON_RECORDS"   # the record file of the running stage (unset: interactive use)


def records_file() -> Path | None:
    path = os.environ.get(RECORDS_ENV)
    return Path(path) if path else None


def headless() -> bool:
    """True under the runner: progress goes to the record file, not to tqdm bars."""
    return records_file() is not None


def write_record(record: dict, path: Path | None = None) -> None:
    """Append one record (with time and pid) to the record file; nothing when there is none."""
    path = path or records_file()
    if path is None:
        return
    full = {"t": time.time(), "pid": os.getpid(), **record}
    with open(path, "a", encoding="utf-8") as f:   # one short append per line: safe across processes
        f.write(json.dumps(full, default=str) + "\n")


def record_time(task: str, phase: str, seconds: float) -> None:
    write_record({"kind": "time", "task": task, "phase": phase, "seconds": round(seconds, 4)})


@contextmanager
def timed(task: str, phase: str):
    """``with timed("SFT medical/free_reasoning", "load"): ...`` writes how long the block took."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        record_time(task, phase, time.perf_counter() - t0)


def count(what: str, n: int = 1) -> None:
    """Add ``n`` to a count of the running stage (a no-op outside a stage run)."""
    if n:
        write_record({"kind": "count", "what": what, "n": int(n)})


def read(path: Path) -> list[dict]:
    """Every record of a record file (none when it does not exist)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.strip()]


def counts(path: Path) -> dict[str, int]:
    """The counts of a record file, summed per item, in first-seen order."""
    totals: dict[str, int] = {}
    for rec in read(path):
        if rec["kind"] == "count":
            totals[rec["what"]] = totals.get(rec["what"], 0) + rec["n"]
    return totals


def timing_records(log_dir: Path) -> list[dict]:
    """Every timing record of a run's ``logs/*.jsonl``, plus one ``start`` record per stage: the seconds from
    the runner launching the stage's kernel to the kernel's ``ready`` record (``start_stage``)."""
    out = []
    for path in sorted(Path(log_dir).glob("*.jsonl")):
        recs = read(path)
        began = next((r["t"] for r in recs if r["kind"] == "start"), None)
        ready = next((r["t"] for r in recs if r["kind"] == "ready"), None)
        if began is not None and ready is not None:
            out.append({"stage": path.stem, "task": path.stem, "phase": "start", "seconds": ready - began})
        out += [{"stage": path.stem, "task": r["task"], "phase": r["phase"], "seconds": r["seconds"]}
                for r in recs if r["kind"] == "time"]
    return out
