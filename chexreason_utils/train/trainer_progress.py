"""A trainer callback that shows training progress (``progress.Bar``) and splits a run's training time into
optimisation steps, in-training evaluation, checkpoint saving and (GRPO) rollouts, as timing records.

GRPO's rollout phases come through public hooks only (``train.grpo.TimedGRPOTrainer`` overrides the public
``training_step`` and ``compute_loss``; the first reward function is wrapped by ``timed_reward``):

- ``train.rollout``: from the start of a training step to its loss: trl's input preparation, i.e. on a generation
  step generation, log-probabilities, rewards and advantages (trl's ``_generate_and_score_completions``);
- ``train.generate``: from the start of a generation step to its first reward call: generation, plus the old /
  reference log-probability passes trl makes before scoring (with ``beta > 0`` or several iterations per batch).
  trl exposes no public hook between generating and those passes, so this is the part of a rollout before scoring,
  not the sampling alone."""
from __future__ import annotations

import functools
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
        self._rollout: float | None = None
        self._generate: float | None = None

    def rollout_begin(self) -> None:
        """A training step starts (``TimedGRPOTrainer.training_step``): trl prepares its inputs, generating and
        scoring a new batch when the step is a generation step."""
        self._rollout = self._generate = time.perf_counter()

    def scoring_begin(self) -> None:
        """The step's first reward call: the time since ``rollout_begin`` is ``train.generate`` (once per step)."""
        if self._generate is not None:
            self.seconds["train.generate"] += time.perf_counter() - self._generate
            self._generate = None

    def rollout_end(self) -> None:
        """The loss is computed (``TimedGRPOTrainer.compute_loss``): the time since ``rollout_begin`` is
        ``train.rollout``; a step that generated nothing (it reuses the buffered batch) adds only the slicing."""
        if self._rollout is not None:
            self.seconds["train.rollout"] += time.perf_counter() - self._rollout
        self._rollout = self._generate = None

    def timed_reward(self, func):
        """``func`` (a trl reward function), calling ``scoring_begin`` first; name and behaviour unchanged."""
        @functools.wraps(func)
        def timed(*args, **kwargs):
            self.scoring_begin()
            return func(*args, **kwargs)
        return timed

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
