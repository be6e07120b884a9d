"""A trainer callback that shows training progress (``progress.Bar``) and splits a run's training time into
optimisation steps, in-training evaluation, checkpoint saving and (GRPO) generation, as timing records."""
from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path

from transformers import TrainerCallback

from .. import progress, run_records


def task_name(kind: str, out_dir: Path) -> str:
    """``SFT medical/free_reasoning`` from a run folder ``.../02_sft/medical/free_reasoning``: the parts below
    the stage folder (``NN_name``), or the last two parts when there is none."""
    parts = Path(out_dir).parts
    stage = max((i for i, p in enumerate(parts) if re.match(r"^\d\d_", p)), default=len(parts) - 3)
    return f"{kind} {'/'.join(parts[stage + 1:]) or parts[-1]}"


class ProgressCallback(TrainerCallback):
    """Reports ``global_step / max_steps`` and, at the end of training, where the time went.

    Transformers calls ``on_step_end`` and then logs, evaluates and saves; the time between ``on_step_end``
    and ``on_evaluate`` is evaluation, up to ``on_save`` checkpoint saving, and what follows the last step
    (e.g. reloading the best checkpoint) is counted with saving and loading.
    """

    def __init__(self, task: str):
        self.task = task
        self.seconds: dict[str, float] = defaultdict(float)
        self.bar: progress.Bar | None = None
        self._start = self._mark = 0.0

    def time_method(self, obj, name: str, phase: str) -> None:
        """Count the time spent in ``obj.name(...)`` (e.g. GRPO's generation) as ``phase``."""
        method = getattr(obj, name, None)
        if method is None:
            return

        def wrapped(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - t0

        setattr(obj, name, wrapped)

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._mark = time.perf_counter()
        self.bar = progress.Bar(self.task, state.max_steps)
        self.bar.set(state.global_step)   # a resumed run starts where its checkpoint stopped

    def on_step_end(self, args, state, control, **kwargs):
        self._mark = time.perf_counter()
        self.bar.set(state.global_step)

    def on_evaluate(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.seconds["train.eval"] += now - self._mark
        self._mark = now

    def on_save(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.seconds["train.checkpoint"] += now - self._mark
        self._mark = now

    def on_train_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.seconds["train.checkpoint"] += now - self._mark
        self.bar.close()
        total = now - self._start
        self.seconds["train.steps"] = total - self.seconds["train.eval"] - self.seconds["train.checkpoint"]
        for phase, seconds in sorted(self.seconds.items()):
            run_records.record_time(self.task, phase, seconds)
        self.seconds.clear()
