"""Progress and timing records of a run, and the runner's watcher that prints them.

Long loops (a training run, a prediction loop) report ``(task, step, total)`` through ``Bar``: in JupyterLab
it is a tqdm bar; under the runner (which names a progress file in ``CHEXREASON_PROGRESS``) it appends one
JSON line per update to that file instead, from the notebook's kernel and from every worker process of
``jobs.run_jobs`` alike. ``timed`` / ``record_time`` add timing records (loading, trainer construction,
training, generation, saving) that ``bench/pipeline.py`` tabulates. The ``Watcher`` thread of the runner
prints every new progress line and, when nothing was printed for ``HEARTBEAT_S`` seconds, the notebook cell
that is running.

The file lives in the run directory's ``logs/`` folder, never beside models or figures, so timings can never
make two runs' outputs differ.
"""
from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

PROGRESS_ENV = "CHEXREASON_PROGRESS"   # the progress file the runner reads (unset: interactive use)
STAGE_ENV = "CHEXREASON_STAGE"         # the stage the records belong to
REPORT_EVERY_S = 10.0                  # a running task writes at most one progress line per this many seconds
HEARTBEAT_S = 30.0                     # the watcher prints something at least this often


def progress_file() -> Path | None:
    path = os.environ.get(PROGRESS_ENV)
    return Path(path) if path else None


def headless() -> bool:
    """True under the runner: progress goes to the progress file, not to tqdm bars."""
    return progress_file() is not None


def write_record(record: dict, path: Path | None = None) -> None:
    """Append one record (with time, pid and stage) to the progress file; nothing when there is none."""
    path = path or progress_file()
    if path is None:
        return
    full = {"t": time.time(), "pid": os.getpid(), "stage": os.environ.get(STAGE_ENV, ""), **record}
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


def record_startup(stage: str) -> None:
    """Under the runner, first thing in a stage's kernel: marks when the kernel is ready and times importing
    the modules the stage steps are built on (torch, transformers, datasets, accelerate), which every notebook
    imports next anyway, through ``steps``."""
    if not headless():
        return
    write_record({"kind": "ready", "task": stage})
    with timed(stage, "imports"):
        from . import evaluate, grpo, metrics, models, sft  # noqa: F401


class Bar:
    """A progress bar over ``total`` units: tqdm in JupyterLab; under the runner a progress record when a task
    finishes or stops, and at most one per ``REPORT_EVERY_S`` seconds while it runs (a short task: one line)."""

    def __init__(self, task: str, total: int, unit: str = "step", enabled: bool = True):
        self.task, self.total, self.unit, self.n = task, int(total), unit, 0
        self.t0 = self._last = time.perf_counter()
        self.enabled = enabled
        self.bar = None
        if enabled and not headless():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=task, unit=unit)

    def _write(self) -> None:
        self._last = time.perf_counter()
        write_record({"kind": "step", "task": self.task, "step": self.n, "total": self.total, "unit": self.unit,
                      "elapsed": round(self._last - self.t0, 2)})

    def update(self, n: int = 1) -> None:
        self.set(self.n + n)

    def set(self, n: int) -> None:
        if n == self.n:
            return
        if self.bar is not None:
            self.bar.update(n - self.n)
        self.n = n
        if self.enabled and self.bar is None and (n >= self.total or time.perf_counter() - self._last >= REPORT_EVERY_S):
            self._write()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.n < self.total:   # stopped early (early stopping): say where
            self._write()


def format_step(rec: dict) -> str:
    """``SFT medical/free_reasoning: step 120/200, 41 s``"""
    return f"{rec['task']}: {rec.get('unit', 'step')} {rec['step']}/{rec['total']}, {rec.get('elapsed', 0):.0f} s"


class Watcher(threading.Thread):
    """Prints new progress lines of a stage as they arrive, and a heartbeat naming the running cell and the
    latest state of every unfinished task when nothing was printed for ``heartbeat_s`` seconds."""

    def __init__(self, path: Path, stage: str, heartbeat_s: float | None = None, poll_s: float = 1.0,
                 out=print):
        super().__init__(daemon=True, name=f"progress-{stage}")
        self.path, self.stage, self.poll_s, self.out = Path(path), stage, poll_s, out
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.cell: tuple[int, int, str] | None = None   # (index, count, first source line), set by the runner
        self.cell_started = time.perf_counter()
        self.tasks: dict[str, dict] = {}
        self._offset = 0
        self.done = threading.Event()
        self.began = self._last_print = time.perf_counter()

    def set_cell(self, number: int, count: int, source: str) -> None:
        """Cell ``number`` (from 1) of ``count`` started; it is shown by its first line that does work."""
        lines = [line.strip() for line in source.splitlines() if line.strip()]
        work = [line for line in lines if not line.startswith(("import ", "from ", "#"))]
        first = (work or lines or [""])[0]
        self.cell, self.cell_started = (number, count, first[:70]), time.perf_counter()

    def _read_new(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[:chunk.rfind("\n") + 1]   # a line being written is read next time
        self._offset += len(complete.encode("utf-8"))
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def poll(self) -> None:
        """Print what arrived since the last poll (and a heartbeat when due)."""
        now = time.perf_counter()
        for rec in self._read_new():
            if rec.get("kind") == "step":
                self.tasks[rec["task"]] = rec
                self._print(format_step(rec))
        if now - self._last_print >= self.heartbeat_s:
            self._print(self.heartbeat())

    def heartbeat(self) -> str:
        now = time.perf_counter()
        where = (f"cell {self.cell[0]}/{self.cell[1]} ({now - self.cell_started:.0f} s): {self.cell[2]}"
                 if self.cell else "starting the kernel")
        running = [format_step(r) for r in self.tasks.values() if r["step"] < r["total"]]
        return f"still running, {now - self.began:.0f} s; {where}" + "".join(f"\n    {r}" for r in running)

    def _print(self, text: str) -> None:
        self._last_print = time.perf_counter()
        self.out(f"[{self.stage}] {text}")

    def run(self) -> None:
        while not self.done.wait(self.poll_s):
            self.poll()

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.poll()   # the last lines written before the kernel finished


def timing_records(log_dir: Path) -> list[dict]:
    """Every timing record of a run's ``logs/*.jsonl``, plus one ``start`` record per stage: the seconds from
    the runner launching the stage's kernel to the kernel calling ``start_stage`` (``record_startup``)."""
    out = []
    for path in sorted(Path(log_dir).glob("*.jsonl")):
        recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        began = next((r["t"] for r in recs if r["kind"] == "start"), None)
        ready = next((r["t"] for r in recs if r["kind"] == "ready"), None)
        if began is not None and ready is not None:
            out.append({"stage": path.stem, "task": path.stem, "phase": "start", "seconds": ready - began})
        out += [{"stage": r["stage"] or path.stem, "task": r["task"], "phase": r["phase"], "seconds": r["seconds"]}
                for r in recs if r["kind"] == "time"]
    return out
