"""The competence gate (``gates/competence_gate.yaml``): are the models good enough, on validation only, for the
claims to be read at all?

Three parts, each a set of rows (one per model, entry and training seed) that pass or fail:

- **a_reference**: the medical model's SFT in each listed format reaches ``ratio`` x the validation macro-F1 of the
  supervised image-only reference trained on the same SFT images under the same seed (``scores.REFERENCE``).
- **b_off_floor**: every SFT format of both models is above the best trivial baseline's CI upper bound by
  ``margin`` and answers with at least ``min_label_sets`` distinct label sets.
- **c_zero_shot**: the medical base, zero-shot with the evaluation's zero-shot prompt, is above that upper bound by
  ``margin``.

The gate precedes the runs it judges: 00 copies the file into the run (``register``) when the run's base models
are first built, and ``check_registered`` refuses a run whose copy differs from the file (``GateEditedError``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import scores
from ..paths import PACKAGE_DIR, RunPaths

GATE_FILE = PACKAGE_DIR / "gates" / "competence_gate.yaml"
PARTS = {"a_reference": ("model", "formats", "reference", "ratio"), "b_off_floor": ("margin", "min_label_sets"),
         "c_zero_shot": ("model", "margin")}
COLUMNS = ["part", "model", "entry", "seed", "macro_f1", "bar", "distinct_sets", "passes", "reason"]


class GateError(ValueError):
    """A gate file that does not follow the schema (the message names the file and key)."""


class GateEditedError(RuntimeError):
    """The gate file differs from the copy the run recorded when its base models were built."""


@dataclass(frozen=True)
class Gate:
    parts: dict[str, dict]
    text: str
    file: Path

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def load(path: str | Path = GATE_FILE) -> Gate:
    """The gate file, checked: its ``dataset`` is validation and each part has its keys with sensible values."""
    path = Path(path)
    text = path.read_text()
    raw = yaml.safe_load(text) or {}
    if raw.get("dataset") != "validation":
        raise GateError(f"{path}: key 'dataset': the gate judges validation only, got {raw.get('dataset')!r}")
    parts = raw.get("parts")
    if not isinstance(parts, dict) or set(parts) != set(PARTS):
        raise GateError(f"{path}: key 'parts': expected exactly {', '.join(PARTS)}, got "
                        f"{', '.join(parts) if isinstance(parts, dict) else parts!r}")
    for name, keys in PARTS.items():
        missing = [k for k in keys if k not in parts[name]]
        if missing:
            raise GateError(f"{path}: key 'parts.{name}': missing {', '.join(missing)}")
        for k in ("ratio", "margin"):
            if k in keys and not (isinstance(parts[name][k], (int, float)) and 0 <= parts[name][k] <= 1):
                raise GateError(f"{path}: key 'parts.{name}.{k}': a number in [0, 1], got {parts[name][k]!r}")
    if parts["a_reference"]["reference"] not in scores.REFERENCES:
        raise GateError(f"{path}: key 'parts.a_reference.reference': one of {', '.join(scores.REFERENCES)}, got "
                        f"{parts['a_reference']['reference']!r}")
    return Gate(parts, text, path)


def register(paths: RunPaths, gate: Gate) -> None:
    """Record the gate's text in the run (00, before its base models are built); a run that has a record keeps it
    and must still match (``check_registered``)."""
    record = paths.competence_gate_record
    if not record.exists():
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(gate.text)
    check_registered(paths, gate)


def check_registered(paths: RunPaths, gate: Gate) -> None:
    """Raise unless the run recorded this gate's exact text when its base models were built."""
    record = paths.competence_gate_record
    if not record.exists():
        raise GateEditedError(f"{record} not found: this run's base models were built before it recorded the "
                              f"competence gate ({gate.file}), so the gate cannot judge it; rerun from 00_setup "
                              "in a clean run directory (make clean)")
    if record.read_text() != gate.text:
        then = hashlib.sha256(record.read_text().encode()).hexdigest()[:16]
        raise GateEditedError(f"{gate.file} was edited after this run's base models were built: the run recorded "
                              f"sha256 {then}... ({record}), the file is now {gate.digest}...; a gate judges only "
                              "runs built after it: restore the file, or rerun from 00_setup in a clean run "
                              "directory (make clean)")


def _macro(frame: pd.DataFrame, **keys) -> pd.DataFrame:
    """Macro rows of ``keys`` on validation, one per training seed (a fixed model: its one mean row, seed NaN)."""
    rows = frame.loc[(frame["dataset"] == "validation") & (frame["label"] == "macro")]
    for k, v in keys.items():
        rows = rows.loc[rows[k] == v]
    per_seed = rows.loc[rows["aggregate"] == scores.SEED]
    return per_seed if len(per_seed) else rows.loc[rows["aggregate"] == scores.MEAN]


def judge(frame: pd.DataFrame, gate: Gate, zero_shot_prompt: str) -> pd.DataFrame:
    """One row per part, model, entry and seed (``COLUMNS``): the macro-F1, the bar it must reach, pass or why
    not. ``frame`` is 04's scores frame; ``zero_shot_prompt`` the prompt the base models are tested with."""
    p, best = gate.parts, scores.best_baseline(frame, "validation")
    rows = []
    a = p["a_reference"]
    reference = _macro(frame, **scores.REFERENCE, name=a["reference"]).set_index("seed")["f1"]
    for fmt in a["formats"]:
        model_rows = _macro(frame, stage="sft", model=a["model"], name=fmt)
        if not len(model_rows):
            rows.append(_row("a_reference", a["model"], fmt, np.nan, np.nan, np.nan, np.nan,
                             f"no SFT entry {a['model']} / {fmt} on validation (format not trained)"))
        for r in model_rows.itertuples():
            bar = a["ratio"] * reference.get(r.seed, np.nan)
            why = (f"no reference '{a['reference']}' for seed {r.seed}" if np.isnan(bar) else
                   "" if r.f1 >= bar else f"macro-F1 {r.f1:.3f} < {a['ratio']} x reference {bar / a['ratio']:.3f}")
            rows.append(_row("a_reference", a["model"], fmt, r.seed, r.f1, bar, r.distinct_sets, why))
    b = p["b_off_floor"]
    bar = best["hi"] + b["margin"]
    for r in _macro(frame, stage="sft").sort_values(["model", "name", "seed"]).itertuples():
        why = [f"macro-F1 {r.f1:.3f} < {best['name']} CI upper bound {best['hi']:.3f} + {b['margin']}"] if r.f1 < bar else []
        if r.distinct_sets < b["min_label_sets"]:
            why.append(f"{int(r.distinct_sets)} distinct label set(s) < {b['min_label_sets']}")
        rows.append(_row("b_off_floor", r.model, r.name, r.seed, r.f1, bar, r.distinct_sets, " and ".join(why)))
    c = p["c_zero_shot"]
    bar = best["hi"] + c["margin"]
    base_rows = _macro(frame, stage="base", model=c["model"], name=zero_shot_prompt)
    if not len(base_rows):
        rows.append(_row("c_zero_shot", c["model"], zero_shot_prompt, np.nan, np.nan, bar, np.nan,
                         f"no zero-shot entry {c['model']} / {zero_shot_prompt} on validation"))
    for r in base_rows.itertuples():
        why = "" if r.f1 > bar else f"macro-F1 {r.f1:.3f} <= {best['name']} CI upper bound {best['hi']:.3f} + {c['margin']}"
        rows.append(_row("c_zero_shot", c["model"], zero_shot_prompt, r.seed, r.f1, bar, r.distinct_sets, why))
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["seed"] = out["seed"].astype("Int64")
    return out


def _row(part, model, entry, seed, f1, bar, sets, reason) -> dict:
    return {"part": part, "model": model, "entry": entry, "seed": seed, "macro_f1": f1, "bar": bar,
            "distinct_sets": sets, "passes": not reason, "reason": reason}


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per part, model and entry: the macro-F1 of each seed, the bar (each seed's, in the same order, or
    the one all seeds share), how many seeds pass, and the verdict (pass only when every seed does)."""
    def cells(column: pd.Series) -> list[str]:   # one per seed, in the seeds' order
        return ["—" if np.isnan(v) else f"{v:.3f}" for v in column]

    def one(g: pd.DataFrame) -> pd.Series:
        values = " / ".join(cells(g["macro_f1"]))
        bars = cells(g["bar"])   # one when all seeds agree
        return pd.Series({"macro-F1 per seed": values, "bar": bars[0] if len(set(bars)) == 1 else " / ".join(bars),
                          "seeds passing": f"{int(g['passes'].sum())} of {len(g)}",
                          "verdict": "pass" if g["passes"].all() else "fail"})
    return table.groupby(["part", "model", "entry"], sort=False).apply(one, include_groups=False).reset_index()


def verdict(table: pd.DataFrame) -> str:
    """One line: does the gate pass, and which parts fail."""
    failing = [p for p, g in table.groupby("part", sort=False) if not g["passes"].all()]
    return "passes" if not failing else "fails (" + ", ".join(failing) + ")"
