"""Independent work (formats x models x seeds, GRPO runs and their controls, evaluation shards) as separate
processes with one torch thread each.

Tiny models parallelise poorly across threads, so two one-thread processes beat one two-thread process on a
2-core machine. Results never depend on the schedule: every job seeds itself and writes its own files, and
``run_jobs`` returns results in job order whatever order they finish in. The worker processes are kept for
the next call of the same process (a notebook kernel makes several), so each stage pays their start and imports
once; they are started afresh when the environment they report through (the stage's record file and config reads)
has changed. A worker dies with the process that started it (``die_with_parent``): a killed runner, kernel or
terminal leaves no worker training on or holding memory.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from .arithmetic import MODE_ENV, configure_torch
from .config_reads import READS_ENV
from .run_records import RECORDS_ENV

# transformers 5 warns on every use of names it renamed (trl still calls ``is_gradient_checkpointing``): noise in a
# notebook or the terminal, nothing a reader can act on.
RENAMED_IN_TRANSFORMERS = r".* is deprecated and will be removed in v6"

# Variables that workers inherit at their start: what they report through (run records, config reads) and the
# arithmetic mode their libraries load under.
INHERITED_ENV = (RECORDS_ENV, READS_ENV, MODE_ENV)
_pool: tuple[tuple, ProcessPoolExecutor] | None = None


def resolve_workers(workers: int) -> int:
    """``workers`` from the profile: 0 means one per CPU core."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: one per CPU core), got {workers}")
    return workers or (os.cpu_count() or 1)


def die_with_parent(parent: int, poll_seconds: float = 1.0) -> None:
    """End this process when its parent (process id ``parent``) ends: on Linux the kernel sends SIGKILL at the
    parent's death (``PR_SET_PDEATHSIG``); elsewhere a daemon thread polls the parent id and exits when it changes.
    A parent that died before this call ends this process at once."""
    import signal
    import sys
    import threading
    import time

    if os.getppid() != parent:
        os._exit(1)
    if sys.platform.startswith("linux"):
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) == 0:   # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:   # the parent died before the call
                os._exit(1)
            return

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def _one_thread(parent: int) -> None:
    """Worker start: one torch thread, torch's arithmetic settings; the libraries' progress bars and renamed-name warnings off (a worker's output
    lands in the runner's terminal, where progress lines say what runs), their other warnings kept; SIGINT ignored, because Jupyter interrupts a kernel's
    whole process group before it shuts it down: an interrupted ``run_jobs`` stops its workers itself."""
    die_with_parent(parent)
    import signal
    import warnings

    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    configure_torch()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", RENAMED_IN_TRANSFORMERS, FutureWarning)


def run_jobs(fn: Callable[..., Any], jobs: list[dict], workers: int = 0) -> list:
    """``[fn(**job) for job in jobs]``, spread over ``workers`` processes (0: one per core; 1: in this process).

    ``fn`` must be a module-level function of an importable module (processes are spawned, not forked, so a
    notebook kernel's threads and CUDA state never leak into a worker).
    """
    n = min(resolve_workers(workers), len(jobs))
    if n <= 1:   # one thread here too: the arithmetic must not depend on the schedule
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [fn(**job) for job in jobs]
        finally:
            torch.set_num_threads(threads)
    pool = _workers(n)
    try:
        futures = [pool.submit(fn, **job) for job in jobs]
        return [f.result() for f in futures]
    except BrokenProcessPool:
        shutdown()
        raise
    except KeyboardInterrupt:   # the workers ignore SIGINT: stop them, or they would finish the batch first
        for process in list(pool._processes.values()):   # no public API before Python 3.14's terminate_workers
            process.terminate()
        shutdown()
        raise


def _workers(n: int) -> ProcessPoolExecutor:
    """The kept pool of ``n`` one-thread workers, started afresh when ``n`` or the inherited environment changed."""
    global _pool
    key = (n, *(os.environ.get(k) for k in INHERITED_ENV))
    if _pool is None or _pool[0] != key:
        shutdown()
        context = multiprocessing.get_context("spawn")
        _pool = key, ProcessPoolExecutor(max_workers=n, mp_context=context, initializer=_one_thread,
                                          initargs=(os.getpid(),))
    return _pool[1]


def shutdown() -> None:
    """Stop the kept worker processes (they also stop when this process exits)."""
    global _pool
    if _pool is not None:
        _pool[1].shutdown(wait=True, cancel_futures=True)
        _pool = None
