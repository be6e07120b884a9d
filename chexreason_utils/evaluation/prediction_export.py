"""The per-image predictions 04 scores, written beside the figures so that a reader can recompute the scores frame,
the competence gate and the claims from the figures folder alone (``chexreason verify``).

Files (under ``figures/<profile>/``, gzip with no name and mtime 0: two identical runs write the same bytes):

- ``predictions_<dataset>.csv.gz`` (validation, CheXpert, NIH): one row per scored entry, training seed and image,
  in the scores frame's order: ``entry`` (its position), the entry's keys (``scores.EntryKeys`` but the data set),
  ``seed`` (empty for a fixed model), ``chosen_step`` (the GRPO step a best-F1 / final selection picked for that
  seed), ``image_id``, the answer's ``labels`` and ``valid`` (``|``-joined label names; a missing prediction is
  invalid with no labels) and the image's ``truth``;
- ``scores.csv.gz``: the scores frame 04 computed from them (``scores``), every number at full precision;
- ``recompute.json``: the rest a recomputation reads: the configuration values (``CONFIG_KEYS``), the SFT pool's
  commonest label set (all a trivial baseline reads of the SFT pool), the competence gate's digest and claim C5's
  evidence (the collapse detector's flags per run, ``claims.collapse_count``), which no prediction carries.
"""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import claims, metrics, scores
from ..config import Config, check_values, get_value, set_value
from ..jsonl_store import write_if_changed

DATASETS = ("validation", *metrics.TEST_DATASETS)   # every data set a run may score (PadChest where it has it)
SCORES = "scores.csv.gz"
INPUTS = "recompute.json"
ENTRY_KEYS = [k for k in scores.KEYS if k != "dataset"]
COLUMNS = ["entry", *ENTRY_KEYS, "seed", "chosen_step", "image_id", "labels", "valid", "truth"]
# The configuration values the recomputation reads (steps.evaluation.recompute; ``arithmetic``: the float path
# ``chexreason verify`` recomputes under); everything else keeps its default.
CONFIG_KEYS = ("arithmetic", "seeds", "evaluation.invalid_policy", "evaluation.nih_label_set", "evaluation.n_bootstrap",
               "evaluation.bootstrap_seed", "evaluation.test_grpo_reward", "evaluation.test_grpo_checkpoint",
               "evaluation.prompt_variant", "grpo.start_format", "sft.general_model_too", "sft.formats",
               "data.padchest_root",
               *claims.SESOI_OPTIONS.values())
TEXT = [*(k for k in ENTRY_KEYS if k != "step"), "image_id", "labels", "truth"]   # read as text, "" kept
SEP = "|"


class Scored(NamedTuple):
    """One scored entry: its keys, the GRPO step each seed's selection chose ({} when none), and per seed (None: a
    fixed model) its predictions merged with the truth (``image_id``, ``labels``, ``valid``, ``truth``)."""
    keys: scores.EntryKeys
    steps: dict
    by_seed: dict


def predictions_file(folder: Path, dataset: str) -> Path:
    return Path(folder) / f"predictions_{dataset}.csv.gz"


def _gzip(text: str) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as f:
        f.write(text.encode())
    return buffer.getvalue()


def _names(values) -> str:
    return SEP.join(values) if isinstance(values, (list, tuple, np.ndarray)) else ""


def _rows(position: int, entry: Scored) -> pd.DataFrame:
    parts = []
    for seed, frame in entry.by_seed.items():
        parts.append(pd.DataFrame({"image_id": frame["image_id"], "labels": frame["labels"].map(_names),
                                   "valid": frame["valid"].fillna(False).astype(bool).astype(int),
                                   "truth": frame["truth"].map(_names)})
                     .assign(seed=seed, chosen_step=entry.steps.get(seed)))
    keys = {k: getattr(entry.keys, k) for k in ENTRY_KEYS}
    return pd.concat(parts, ignore_index=True).assign(entry=position, **keys)


def scores_csv(score_frame: pd.DataFrame) -> str:
    """The text of the committed scores frame (every float at full precision)."""
    return score_frame.to_csv(index=False)


def write(folder: Path, cfg: Config, scored: list[Scored], score_frame: pd.DataFrame, sft_commonest_set,
          gate_digest: str, collapse: dict | None) -> list[Path]:
    """Write the predictions of every ``scored`` entry (in the scores frame's order), the scores frame and the
    recomputation's other inputs under ``folder``; an unchanged file is left untouched."""
    folder = Path(folder)
    rows = pd.concat([_rows(i, e).assign(dataset=e.keys.dataset) for i, e in enumerate(scored)], ignore_index=True)
    rows["seed"], rows["chosen_step"] = rows["seed"].astype("Int64"), rows["chosen_step"].astype("Int64")
    out = []
    for dataset in ("validation", *metrics.test_datasets(cfg)):
        part = rows.loc[rows["dataset"] == dataset, COLUMNS]
        out.append(predictions_file(folder, dataset))
        write_if_changed(out[-1], _gzip(part.to_csv(index=False)))
    out.append(folder / SCORES)
    write_if_changed(out[-1], _gzip(scores_csv(score_frame)))
    inputs = {"config": {k: get_value(cfg, k) for k in CONFIG_KEYS}, "sft_commonest_set": list(sft_commonest_set),
              "competence_gate_digest": gate_digest,
              "collapse": None if collapse is None else
              {**{arm: [run.to_dict(orient="list") for run in collapse[arm]] for arm in ("final", "unstable")},
               "axis": collapse["axis"], "min_steps": collapse["min_steps"]}}
    out.append(folder / INPUTS)
    write_if_changed(out[-1], json.dumps(inputs, indent=1, sort_keys=True) + "\n")
    return out


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a figures folder written by 04_evaluation of this version "
                                "holds it (make figures)")
    return path


def read_config(folder: Path) -> Config:
    """The configuration the recomputation reads: the defaults with ``recompute.json``'s values."""
    path = _need(Path(folder) / INPUTS)
    cfg = Config()
    for key, value in json.loads(path.read_text())["config"].items():
        set_value(cfg, key, value, where=str(path))
    check_values(cfg, where=str(path))
    return cfg


def read_inputs(folder: Path) -> dict:
    """``recompute.json`` with claim C5's runs as frames again (``collapse``: None when the profile has none)."""
    inputs = json.loads(_need(Path(folder) / INPUTS).read_text())
    c = inputs["collapse"]
    if c is not None:
        inputs["collapse"] = {**c, **{arm: [pd.DataFrame(run) for run in c[arm]] for arm in ("final", "unstable")}}
    return inputs


def read_scores(folder: Path) -> pd.DataFrame:
    """The committed scores frame."""
    return scores.read_scores(_need(Path(folder) / SCORES))


def _split(text) -> list[str]:
    return text.split(SEP) if isinstance(text, str) and text else []


def read(folder: Path) -> list[Scored]:
    """Every committed entry, in the scores frame's order, as ``write`` got it."""
    out = []
    for dataset in ("validation", *metrics.test_datasets(read_config(folder))):
        path = _need(predictions_file(folder, dataset))
        frame = pd.read_csv(path, dtype={**dict.fromkeys(TEXT, str), "seed": "Int64", "chosen_step": "Int64"},
                            keep_default_na=False, na_values={k: [""] for k in ("seed", "chosen_step", "step")})
        missing = [c for c in COLUMNS if c not in frame]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        for position, rows in frame.groupby("entry", sort=False):
            first = rows.iloc[0]
            keys = scores.EntryKeys(dataset, *(first[k] for k in ENTRY_KEYS))
            by_seed, steps = {}, {}
            for seed in pd.unique(rows["seed"]):
                part = rows.loc[rows["seed"].isna() if pd.isna(seed) else rows["seed"].eq(seed).fillna(False)]
                seed = None if pd.isna(seed) else int(seed)
                by_seed[seed] = pd.DataFrame({"image_id": part["image_id"].to_numpy(),
                                              "labels": part["labels"].map(_split).to_numpy(),
                                              "valid": part["valid"].astype(bool).to_numpy(),
                                              "truth": part["truth"].map(_split).to_numpy()})
                if not pd.isna(part["chosen_step"].iloc[0]):
                    steps[seed] = int(part["chosen_step"].iloc[0])
            out.append((int(position), Scored(keys, steps, by_seed)))
    return [e for _, e in sorted(out, key=lambda pair: pair[0])]
