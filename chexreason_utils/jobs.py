"""Independent work (formats x models x seeds, GRPO runs and their controls, evaluation shards) as separate
processes with one torch thread each.

Tiny models parallelise poorly across threads, so two one-thread processes beat one two-thread process on a
2-core machine. Results never depend on the schedule: every job seeds itself and writes its own files, and
``run_jobs`` returns results in job order whatever order they finish in. The worker processes are kept for
the next call of the same process (a notebook kernel makes several), so each stage pays their start and imports
once; they are started afresh when the environment they report through (the stage's progress and count files)
has changed.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

# transformers 5 warns on every use of names it renamed (trl still calls ``is_gradient_checkpointing``): noise in a
# notebook or the terminal, nothing a reader can act on.
RENAMED_IN_TRANSFORMERS = r".* is deprecated and will be removed in v6"

# Variables that workers inherit at their start and report through (progress, stage, counts, config reads).
INHERITED_ENV = ("CHEXREASON_PROGRESS", "CHEXREASON_STAGE", "CHEXREASON_STAGE_REPORT", "CHEXREASON_CONFIG_READS")
_pool: tuple[tuple, ProcessPoolExecutor] | None = None


def resolve_workers(workers: int) -> int:
    """``workers`` from the profile: 0 means one per CPU core."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: one per CPU core), got {workers}")
    return workers or (os.cpu_count() or 1)


def _one_thread() -> None:
    """Worker start: one torch thread; warnings and save bars of the libraries off (a worker's output lands in the
    runner's terminal, where progress lines say what runs); SIGINT ignored, because Jupyter interrupts a kernel's
    whole process group before it shuts it down: an interrupted ``run_jobs`` stops its workers itself."""
    import signal
    import warnings

    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
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
        _pool = key, ProcessPoolExecutor(max_workers=n, mp_context=context, initializer=_one_thread)
    return _pool[1]


def shutdown() -> None:
    """Stop the kept worker processes (they also stop when this process exits)."""
    global _pool
    if _pool is not None:
        _pool[1].shutdown(wait=True, cancel_futures=True)
        _pool = None
