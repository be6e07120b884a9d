"""CheXpert (v1.0 and v1.0-small) in its official layout.

    <root>/train.csv, <root>/valid.csv   Path, Sex, Age, Frontal/Lateral, AP/PA, 14 labels
    <root>/<test labels csv>             Path (or Study), 14 labels; paths like test/patientNNNNN/studyN/viewN_frontal.jpg

``Path`` values start with the dataset folder name (``CheXpert-v1.0-small/train/...``) in train/valid and
are relative to the root in the test-set file; both are resolved. Without a ``Frontal/Lateral`` column the
view is read from the file name (``_frontal`` / ``_lateral``).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..labels import CHEXPERT_LABELS, apply_policy
from .records import (FRONTAL, DataLayoutError, LoadResult, check_image_files, drop_rows, numeric_labels, require_columns,
                      require_file, source_json, to_result)

SPLIT_FILES = {"train": "train.csv", "valid": "valid.csv"}
TEST_LABELS = "test_labels.csv"   # the CheXpert test set's radiologist labels (config data.chexpert_test_csv's default)


def resolve_path(root: Path, rel: str) -> Path:
    parts = Path(rel).parts
    if parts and parts[0] == root.name:
        return root.parent / rel
    if parts and parts[0].startswith("CheXpert-v1.0"):
        return root / Path(*parts[1:])
    return root / rel


def _view(frame: pd.DataFrame, paths: pd.Series) -> pd.Series:
    if "Frontal/Lateral" in frame.columns:
        frontal = frame["Frontal/Lateral"].astype(str).str.lower() == FRONTAL.lower()
    else:
        frontal = paths.str.contains("_frontal", regex=False)
    if "AP/PA" in frame.columns:
        appa = frame["AP/PA"].where(frame["AP/PA"].isin(["AP", "PA"]), FRONTAL)
    else:
        appa = pd.Series(FRONTAL, index=frame.index)
    return appa.where(frontal, "Lateral")


def load_chexpert(root: str | Path, split: str = "test", policy: str = "positive_only",
                  test_csv: str = TEST_LABELS, frontal_only: bool = True,
                  check_images: bool = True) -> LoadResult:
    """Records of one CheXpert split (``train``, ``valid`` or ``test``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"CheXpert root not found: {root} (expected the folder holding train.csv, "
                                f"valid.csv and the test-set labels {test_csv})")
    if split not in (*SPLIT_FILES, "test"):
        raise ValueError(f"unknown CheXpert split {split!r}; choose train, valid or test")
    csv = require_file(root / (SPLIT_FILES.get(split) or test_csv), f"CheXpert {split} labels")
    frame = pd.read_csv(csv)
    path_col = "Path" if "Path" in frame.columns else "Study"
    require_columns(frame, [path_col, *CHEXPERT_LABELS], csv)
    frame = numeric_labels(frame, CHEXPERT_LABELS, csv)
    total = len(frame)
    dropped: Counter = Counter()
    named: dict[str, list[str]] = {}
    paths = frame[path_col].astype(str)
    frame = frame.assign(view=_view(frame, paths), image_path=[str(resolve_path(root, p)) for p in paths])
    if frontal_only:
        frame = drop_rows(frame, (frame["view"] == "Lateral").to_numpy(), "lateral view", dropped)
    present, uncertain_drop = apply_policy(frame[list(CHEXPERT_LABELS)].to_numpy(dtype=float), policy)
    frame = frame.assign(labels=list(present))
    frame = drop_rows(frame, uncertain_drop, "uncertain label (ignore_uncertain)", dropped)
    frame = drop_rows(frame, np.array([v.sum() == 0 for v in frame["labels"]], dtype=bool), "no usable label", dropped)

    parts = frame[path_col].astype(str).str.extract(r"(patient\d+)/(study\d+)/(view\d+_\w+)")
    frame = frame.assign(
        dataset="chexpert", patient_id=parts[0].fillna(""),
        study_id=(parts[0].fillna("") + "/" + parts[1].fillna("")),
        image_id=frame[path_col].astype(str), split=split,
        sex=frame["Sex"] if "Sex" in frame.columns else None,
        age=frame["Age"] if "Age" in frame.columns else np.nan,
        source_labels=[source_json(r) for r in frame[list(CHEXPERT_LABELS)].to_dict("records")])
    if check_images:
        frame = check_image_files(frame, dropped, named)
    return to_result(f"CheXpert {split}", frame, dropped, total, named)
