"""Independent work (formats x models x seeds, GRPO runs and their controls, evaluation shards) as separate
processes with one torch thread each.

Tiny models parallelise poorly across threads, so two one-thread processes beat one two-thread process on a
2-core machine. Results never depend on the schedule: every job seeds itself and writes its own files, and
``run_jobs`` returns results in job order whatever order they finish in.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable


def resolve_workers(workers: int) -> int:
    """``workers`` from the profile: 0 means one per CPU core."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: one per CPU core), got {workers}")
    return workers or (os.cpu_count() or 1)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


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
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=context, initializer=_one_thread) as pool:
        futures = [pool.submit(fn, **job) for job in jobs]
        return [f.result() for f in futures]
