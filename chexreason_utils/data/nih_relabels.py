"""Google's 2019 radiologist-adjudicated relabels of NIH ChestX-ray14 (a cleaner second truth, optional).

Majkowska et al., "Chest Radiograph Interpretation with Deep Learning Models", Radiology 2020
(doi:10.1148/radiol.2019191293), released as ``four_findings_expert_labels/{test_labels,validation_labels}.csv``:
one row per image, the NIH metadata columns (``Image Index``, ``Patient ID``, ``Follow-up #``, ``Patient Age``,
``Patient Gender``, ``View Position``, ...) and four adjudicated findings valued ``YES`` / ``NO``:

    Airspace opacity, Pneumothorax, Nodule or mass, Fracture

They are mapped explicitly to CheXpert names (``RELABEL_TO_CHEXPERT``) and scored on those four labels only
(``RELABEL_EVAL_LABELS``); no CheXpert hierarchy is applied (a prediction of Consolidation does not count as
Lung Opacity). Images are found in the NIH root's ``images/`` or ``images_NNN/images/`` folders.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..labels import names_to_vector
from .nih import index_images, parse_age
from .records import DataLayoutError, LoadResult, check_image_files, require_columns, require_file, to_result

RELABEL_TO_CHEXPERT = {"Airspace opacity": "Lung Opacity", "Pneumothorax": "Pneumothorax",
                       "Nodule or mass": "Lung Lesion", "Fracture": "Fracture"}
RELABEL_EVAL_LABELS: tuple[str, ...] = tuple(sorted(RELABEL_TO_CHEXPERT.values()))
VALUES = {"YES": 1, "NO": 0}


def load_nih_relabels(csv_path: str | Path, nih_root: str | Path, check_images: bool = True) -> LoadResult:
    """Records of the relabelled images, in the shared schema, with the four findings as CheXpert labels."""
    csv_path, nih_root = Path(csv_path), Path(nih_root)
    require_file(csv_path, "NIH expert relabels (four_findings_expert_labels/test_labels.csv)")
    frame = pd.read_csv(csv_path, dtype={"Image Index": str})
    require_columns(frame, ("Image Index", *RELABEL_TO_CHEXPERT), csv_path)
    for column in RELABEL_TO_CHEXPERT:
        values = frame[column].astype(str).str.strip().str.upper()
        bad = sorted(set(values) - set(VALUES))
        if bad:
            raise DataLayoutError(f"{csv_path}: column {column!r} must hold YES or NO, found {bad[:5]}")
        frame[column] = values.map(VALUES)
    names = [[RELABEL_TO_CHEXPERT[c] for c in RELABEL_TO_CHEXPERT if row[c]] for _, row in frame.iterrows()]
    images = index_images(nih_root)
    column = lambda name, default: frame[name] if name in frame else pd.Series(default, index=frame.index)  # noqa: E731
    frame = frame.assign(
        image_path=[str(images.get(i, nih_root / "images" / i)) for i in frame["Image Index"]],
        dataset="nih_relabel", image_id=frame["Image Index"],
        patient_id=column("Patient ID", "").astype(str), study_id=frame["Image Index"].str.rsplit(".", n=1).str[0],
        view=column("View Position", "unknown").fillna("unknown").astype(str), sex=column("Patient Gender", None),
        age=column("Patient Age", np.nan).map(parse_age), split="expert_relabel",
        labels=[names_to_vector(n) for n in names],
        source_labels=[json.dumps({c: "YES" if row[c] else "NO" for c in RELABEL_TO_CHEXPERT})
                       for _, row in frame.iterrows()])
    dropped: Counter = Counter()
    named: dict[str, list[str]] = {}
    total = len(frame)
    if check_images:
        frame = check_image_files(frame, dropped, named)
    return to_result("NIH expert relabels (Google 2019)", frame, dropped, total, named)
