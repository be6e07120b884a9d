"""MIMIC-CXR-JPG (v2.0.0 / v2.1.0) in its official layout.

    <root>/mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, 14 CheXpert labels (1, 0, -1, blank)
    <root>/mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ViewPosition, ...
    <root>/mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split
    <root>/files/pNN/p<subject_id>/s<study_id>/<dicom_id>.jpg

Frontal means ViewPosition AP or PA. MIMIC-CXR-JPG carries no sex or age (they live in MIMIC-IV).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..labels import CHEXPERT_CSV_ORDER, CHEXPERT_LABELS, apply_policy
from ..paths import RunPaths
from .records import (DataLayoutError, LoadResult, check_image_files, drop_rows, numeric_labels, require_columns,
                      require_file, source_json, to_result)

CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv.gz"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz"


def image_path(root: Path, subject_id: int, study_id: int, dicom_id: str) -> Path:
    s = str(subject_id)
    return root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{study_id}" / f"{dicom_id}.jpg"


def load_mimic(root: str | Path, policy: str = "positive_only", frontal_only: bool = True,
               splits: list[str] | None = None, check_images: bool = True) -> LoadResult:
    """Records of MIMIC-CXR-JPG, one per image; study labels are attached to each of the study's images."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"MIMIC-CXR-JPG root not found: {root} (expected the folder holding "
                                f"{CHEXPERT_CSV} and files/)")
    labels_path = require_file(root / CHEXPERT_CSV, "MIMIC-CXR-JPG label file")
    meta_path = require_file(root / METADATA_CSV, "MIMIC-CXR-JPG metadata file")
    split_path = require_file(root / SPLIT_CSV, "MIMIC-CXR-JPG split file")
    labels = pd.read_csv(labels_path)
    meta = pd.read_csv(meta_path, dtype={"dicom_id": str})
    split = pd.read_csv(split_path, dtype={"dicom_id": str})
    require_columns(labels, ["subject_id", "study_id", *CHEXPERT_CSV_ORDER], labels_path)
    labels = numeric_labels(labels, CHEXPERT_CSV_ORDER, labels_path)
    require_columns(meta, ["dicom_id", "subject_id", "study_id", "ViewPosition"], meta_path)
    require_columns(split, ["dicom_id", "split"], split_path)

    frame = meta.merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
    total = len(frame)
    dropped: Counter = Counter()
    named: dict[str, list[str]] = {}
    frame = drop_rows(frame, frame["split"].isna().to_numpy(), "not in split file", dropped)
    if splits:
        frame = drop_rows(frame, ~frame["split"].isin(splits).to_numpy(), "other official split", dropped)
    if frontal_only:
        frame = drop_rows(frame, ~frame["ViewPosition"].isin(["AP", "PA"]).to_numpy(), "lateral or other view", dropped)
    frame = frame.merge(labels, on=["subject_id", "study_id"], how="left", indicator=True)
    frame = drop_rows(frame, (frame["_merge"] != "both").to_numpy(), "study has no label row", dropped)

    values = frame[list(CHEXPERT_LABELS)].to_numpy(dtype=float)
    present, uncertain_drop = apply_policy(values, policy)
    frame = frame.assign(labels=list(present))
    frame = drop_rows(frame, uncertain_drop, "uncertain label (ignore_uncertain)", dropped)
    frame = drop_rows(frame, np.array([v.sum() == 0 for v in frame["labels"]], dtype=bool), "no usable label", dropped)

    frame = frame.assign(
        image_path=[str(image_path(root, s, st, d)) for s, st, d in zip(frame["subject_id"], frame["study_id"], frame["dicom_id"])],
        dataset="mimic", image_id=frame["dicom_id"].astype(str), patient_id=frame["subject_id"].astype(str),
        study_id=frame["study_id"].astype(str), view=frame["ViewPosition"].fillna("unknown").astype(str),
        sex=None, age=np.nan,
        source_labels=[source_json(r) for r in frame[list(CHEXPERT_CSV_ORDER)].to_dict("records")])
    if check_images:
        frame = check_image_files(frame, dropped, named)
    return to_result("MIMIC-CXR-JPG", frame, dropped, total, named)


def load_pool(cfg: Config, paths: RunPaths) -> LoadResult:
    """The training site's pool as the profile loads it (01's sampling, E1's larger RL sets): ``data.mimic_root``
    under its uncertainty policy, the splits ``sampling.pool_splits``."""
    d = cfg.data
    return load_mimic(paths.resolve(d.mimic_root), d.uncertainty_policy, splits=cfg.sampling.pool_splits,
                      check_images=d.check_images)
