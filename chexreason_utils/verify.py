"""``chexreason verify``: recompute a figures folder's scores frame, claims and competence gate from the per-image
predictions committed beside them (``evaluation.prediction_export``) and compare every cell with the committed file.

The recomputation is ``steps.evaluation.recompute``, the code 04 runs: the bootstrap CIs are redrawn with the run's
seeds, so they match exactly. A cell is equal when its text is, or when both are numbers within ``RELATIVE`` of each
other: the last bits of a float sum may differ on a machine that cannot run the run's arithmetic (``arithmetic``:
portable needs AVX2); the summary says how many cells needed that.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .evaluation import prediction_export
from .report.plotting import table_csv
from .steps.evaluation import recompute

RELATIVE = 1e-12
# Each compared file: how its recomputed frame is written, and the columns that name a row in a message.
FILES = {prediction_export.SCORES: (prediction_export.scores_csv,
                                    ("dataset", "model", "stage", "name", "checkpoint", "seed", "label")),
         "claims.csv": (table_csv, ("claim",)),
         "competence_gate.csv": (table_csv, ("part", "model", "entry"))}


@dataclass
class Outcome:
    numbers: int = 0                                   # numeric cells compared
    close: int = 0                                     # of which equal within RELATIVE only
    differences: list[str] = field(default_factory=list)

    def summary(self, folder: Path) -> str:
        if self.differences:
            return f"{folder}: {len(self.differences)} cell(s) differ:\n" + "\n".join(self.differences)
        last = f" ({self.close} within {RELATIVE:g} relative: the last bits of a float sum)" if self.close else ""
        return (f"{folder}: {self.numbers} numbers recomputed from the committed predictions "
                f"({', '.join(FILES)}), all equal{last}")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _table(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def compare(name: str, committed: pd.DataFrame, recomputed: pd.DataFrame, ids: tuple[str, ...],
            outcome: Outcome) -> None:
    """Compare two tables read as text, cell by cell, adding to ``outcome``; rows are named by ``ids``."""
    if list(committed.columns) != list(recomputed.columns) or len(committed) != len(recomputed):
        outcome.differences.append(f"{name}: committed {len(committed)} rows x {list(committed.columns)}, "
                                   f"recomputed {len(recomputed)} rows x {list(recomputed.columns)}")
        return
    for (i, a), (_, b) in zip(committed.iterrows(), recomputed.iterrows()):
        row = ", ".join(f"{k}={a[k]}" for k in ids if k in a and a[k] != "")
        for column in committed.columns:
            x, y = _number(a[column]), _number(b[column])
            if x is not None and not math.isnan(x):
                outcome.numbers += 1
            if a[column] == b[column]:
                continue
            if x is not None and y is not None and math.isclose(x, y, rel_tol=RELATIVE):
                outcome.close += 1
                continue
            outcome.differences.append(f"{name}: line {i + 2} ({row}), column {column!r}: committed "
                                       f"{a[column]!r}, recomputed {b[column]!r}")


def verify(folder: str | Path) -> Outcome:
    """Recompute ``folder``'s scores frame, claims and competence gate and compare them with its files."""
    folder = Path(folder)
    outcome = Outcome()
    for name, frame in recompute(folder).items():
        write, ids = FILES[name]
        path = folder / name
        if not path.is_file():
            outcome.differences.append(f"{name}: not in {folder}")
            continue
        compare(name, pd.read_csv(path, dtype=str, keep_default_na=False), _table(write(frame)), ids, outcome)
    return outcome
