"""Progress bars of long loops, and the runner's watcher that prints them.

Long loops (a training run, a prediction loop) report ``(task, step, total)`` through ``Bar``: in JupyterLab
it is a tqdm bar; under the runner it writes ``step`` records to the stage's record file (``run_records``), from the
notebook's kernel and from every worker process of ``jobs.run_jobs`` alike. The ``Watcher`` thread of the runner
prints every new progress line and, when nothing was printed for ``HEARTBEAT_S`` seconds, the notebook cell
that is running.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from .run_records import headless, write_record

REPORT_EVERY_S = 10.0                  # a running task writes at most one progress line per this many seconds
HEARTBEAT_S = 30.0                     # the watcher prints something at least this often


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
