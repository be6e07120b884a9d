"""Which GRPO checkpoints are scored on which evaluation sets (a profile parameter, not a loop over all).

Scoring every checkpoint of both reward runs on validation and both test sets is ~30k greedy generations
at paper size. The plan keeps validation dense and the test sets sparse:

- validation: every ``val_checkpoint_every``-th checkpoint, and always the final one;
- test sets: the checkpoints named in ``test_checkpoints`` (``best_f1``: best validation macro-F1 among
  those scored on validation; ``final``) plus every ``test_checkpoint_every``-th (0: none).

The plan is a pure function of the evaluation config, the checkpoint steps and (for the test sets) the
best-F1 step; before validation has run, ``best_f1`` stays a named placeholder.
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from ..config import CHECKPOINT_CHOICES
from ..paths import checkpoint_step


def validation_steps(steps: Iterable[int], every: int) -> list[int]:
    """Every ``every``-th checkpoint (by position) plus the final one."""
    steps = sorted(set(int(s) for s in steps))
    if every < 1:
        raise ValueError(f"evaluation.val_checkpoint_every must be >= 1, got {every}")
    chosen = {s for i, s in enumerate(steps, start=1) if i % every == 0}
    return sorted(chosen | set(steps[-1:]))


def test_steps(steps: Iterable[int], named: Iterable[str], every: int, best_step: int | None = None) -> dict[int | str, str]:
    """Test-set checkpoints -> why each is scored. Without ``best_step``, ``best_f1`` is a placeholder key."""
    steps = sorted(set(int(s) for s in steps))
    unknown = [n for n in named if n not in CHECKPOINT_CHOICES]
    if unknown:
        raise ValueError(f"evaluation.test_checkpoints: unknown {unknown}; choose from {', '.join(CHECKPOINT_CHOICES)}")
    if every < 0:
        raise ValueError(f"evaluation.test_checkpoint_every must be >= 0, got {every}")
    why: dict[int | str, list[str]] = {}
    if every:
        for i, s in enumerate(steps, start=1):
            if i % every == 0:
                why.setdefault(s, []).append(f"every {every}")
    if "final" in named and steps:
        why.setdefault(steps[-1], []).append("final")
    if "best_f1" in named and steps:
        why.setdefault(best_step if best_step is not None else "best_f1", []).append("best validation F1")
    return {k: ", ".join(v) for k, v in why.items()}


def scoring_plan(evaluation, steps: Iterable[int], best_step: int | None = None,
                 test_sets: Iterable[str] = ("chexpert_test", "nih_test")) -> pd.DataFrame:
    """One row per (checkpoint step, evaluation set) to score, with the reason; ``evaluation`` is the profile's
    ``EvaluationConfig``."""
    steps = list(steps)
    rows = [{"step": s, "set": "val", "why": "validation"}
            for s in validation_steps(steps, evaluation.val_checkpoint_every)]
    tests = test_steps(steps, evaluation.test_checkpoints, evaluation.test_checkpoint_every, best_step)
    rows += [{"step": s, "set": t, "why": why} for s, why in tests.items() for t in test_sets]
    return pd.DataFrame(rows, columns=["step", "set", "why"])


def planned_steps(max_steps: int, save_steps: int) -> list[int]:
    """The checkpoint steps trl's ``save_strategy='steps'`` writes for a run of ``max_steps``."""
    steps = list(range(save_steps, max_steps + 1, save_steps))
    return steps if steps and steps[-1] == max_steps else steps + [max_steps]


def checkpoints_to_score(checkpoints: Iterable, plan: pd.DataFrame, evaluation_set: str) -> list:
    """The checkpoint folders (``checkpoint-<step>``) that ``plan`` scores on ``evaluation_set``."""
    wanted = set(plan.loc[plan["set"] == evaluation_set, "step"])
    return [c for c in checkpoints if checkpoint_step(c) in wanted]
