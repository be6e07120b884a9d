"""PadChest (BIMCV, Hospital San Juan, Alicante) in its official layout.

    <root>/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz   (or the same name without .gz)
        ImageID, ImageDir, StudyID, PatientID, PatientBirth, PatientSex_DICOM, StudyDate_DICOM, Projection,
        MethodLabel (Physician or RNN_model), Labels (a Python-list-like string: "['normal']"), Report, ... (36 columns)
    <root>/<ImageDir>/<ImageID>        ImageDir is a folder number, 0..54 in the real release

Only frontal projections are kept: PA, AP and AP_horizontal (AP taken lying down; ``view`` says AP, the raw
projection stays in ``source_labels``). L, COSTAL, PadChest's own EXCLUDE and unknown projections are dropped and
counted. PadChest has no official split (``split`` is ``all``). Labels are parsed from their string form
(``ast.literal_eval``, stripped, lower-cased, empty strings dropped) and mapped to the CheXpert vector with
``padchest_mapping``; PadChest's labels, ``MethodLabel`` and ``Projection`` stay in ``source_labels`` (JSON), and
``label_methods`` keeps only rows labelled one way (e.g. ``["Physician"]``). Age is the study year minus the birth
year. The real label table itself comes from ``padchest_table.label_table_path()``.
"""
from __future__ import annotations

import ast
import json
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..labels import PADCHEST_EVAL_LABELS, names_to_vector
from .padchest_mapping import map_labels, mapping_dict
from .padchest_table import TABLE_NAME
from .manifests import manifest_frame
from .records import DataLayoutError, LoadResult, check_image_files, drop_rows, require_columns, to_result
from .sampling import select_test_set

TABLE_FILES = (TABLE_NAME, TABLE_NAME.removesuffix(".gz"))
REQUIRED = ("ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "MethodLabel", "Labels")
FRONTAL_PROJECTIONS = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP"}     # PadChest projection -> view
OTHER_PROJECTIONS = {"L": "lateral view", "COSTAL": "costal (oblique rib) view",
                     "EXCLUDE": "projection EXCLUDE (PadChest's own exclusion)", "UNK": "unknown projection"}
RECORD_COLUMNS = ("PatientBirth", "PatientSex_DICOM", "StudyDate_DICOM")    # read when present (sex, age)
LABEL_METHODS = ("Physician", "RNN_model")
SPLIT = "all"                                                             # PadChest ships no official split


def parse_labels(cell) -> list[str] | None:
    """A ``Labels`` cell -> its labels (stripped, lower-cased, empty strings dropped, order kept); None for a blank
    cell. Anything but a list of strings is a ``ValueError``."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return None
    text = str(cell).strip()
    if not text:
        return None
    value = ast.literal_eval(text)          # ValueError / SyntaxError on anything but a Python literal
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not a list of strings: {text!r}")
    return [n for n in (v.strip().lower() for v in value) if n]


def parse_label_column(frame: pd.DataFrame, source: Path) -> list[list[str] | None]:
    """Every ``Labels`` cell parsed (each distinct text once); a malformed one is a ``DataLayoutError`` naming the
    file, column, row and ImageID."""
    parsed: dict = {}
    out = []
    for i, cell in enumerate(frame["Labels"]):
        key = None if pd.isna(cell) else str(cell)
        if key not in parsed:
            try:
                parsed[key] = parse_labels(key)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise DataLayoutError(f"{source}: column 'Labels', row {i + 1} (ImageID {frame['ImageID'].iloc[i]!r}): "
                                      f"{str(cell)[:80]!r} is not a list of label strings like \"['normal']\"") from None
        out.append(None if parsed[key] is None else list(parsed[key]))
    return out


def find_table(root: Path) -> Path:
    table = next((root / f for f in TABLE_FILES if (root / f).is_file()), None)
    if table is None:
        raise DataLayoutError(f"PadChest label table: expected {root / TABLE_FILES[0]} or {root / TABLE_FILES[1]} "
                              f"(not found)")
    return table


def read_table(csv: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The official table with its labels parsed (``padchest_labels``: a list, or None for a blank cell); no row
    dropped. ``ImageDir`` and the ids are read as text; ``columns`` reads only those (plus the required ones)."""
    csv = Path(csv)
    wanted = None if columns is None else {*REQUIRED, *columns}
    frame = pd.read_csv(csv, dtype={c: str for c in ("ImageID", "ImageDir", "StudyID", "PatientID")}, low_memory=False,
                        usecols=None if wanted is None else (lambda c: c in wanted))
    frame = frame.loc[:, [c for c in frame.columns if not c.startswith("Unnamed")]]
    require_columns(frame, REQUIRED, csv)
    return frame.assign(padchest_labels=parse_label_column(frame, csv))


def frontal_label_lists(csv: str | Path) -> list[list[str]]:
    """The label lists of the frontal rows with a ``Labels`` cell (what ``padchest_mapping.coverage`` measures)."""
    frame = read_table(csv, columns=REQUIRED)
    keep = frame["Projection"].isin(FRONTAL_PROJECTIONS) & frame["padchest_labels"].notna()
    return frame.loc[keep, "padchest_labels"].tolist()


def _projection_drops(frame: pd.DataFrame, dropped: Counter) -> pd.DataFrame:
    """Frontal rows only; every other projection counted under its reason (a value outside PadChest's vocabulary
    as 'unknown projection', printed)."""
    projection = frame["Projection"].fillna("").astype(str)
    reasons = projection.map(lambda p: None if p in FRONTAL_PROJECTIONS else OTHER_PROJECTIONS.get(p, "unknown projection"))
    stray = sorted(set(projection[reasons.notna() & ~projection.isin(OTHER_PROJECTIONS)]))
    if stray:
        print(f"unknown projection: {', '.join(map(repr, stray))}")
    for reason in sorted(set(reasons.dropna())):
        keep = (reasons != reason).to_numpy()
        frame, reasons = drop_rows(frame, ~keep, reason, dropped), reasons[keep]
    return frame


def _age(frame: pd.DataFrame) -> pd.Series:
    if "PatientBirth" not in frame.columns or "StudyDate_DICOM" not in frame.columns:
        return pd.Series(np.nan, index=frame.index)
    study_year = pd.to_numeric(frame["StudyDate_DICOM"].astype(str).str[:4], errors="coerce")
    return study_year - pd.to_numeric(frame["PatientBirth"], errors="coerce")


def load_padchest(root: str | Path, label_methods: Sequence[str] | None = None,
                  check_images: bool = True) -> LoadResult:
    """Records of PadChest's frontal images; ``label_methods`` keeps rows labelled by those methods only
    (``Physician``, ``RNN_model``; None: both)."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"PadChest root not found: {root} (expected {TABLE_FILES[0]} and the image folders "
                              f"0/ … 54/ named by its ImageDir column)")
    if label_methods is not None and (unknown := [m for m in label_methods if m not in LABEL_METHODS]):
        raise ValueError(f"unknown PadChest label method(s) {unknown}; choose from {', '.join(LABEL_METHODS)}")
    csv = find_table(root)
    frame = read_table(csv, columns=RECORD_COLUMNS)
    blank_dir = frame["ImageDir"].isna().to_numpy()
    if blank_dir.any():
        i = int(np.flatnonzero(blank_dir)[0])
        raise DataLayoutError(f"{csv}: column 'ImageDir', row {i + 1} (ImageID {frame['ImageID'].iloc[i]!r}) is blank: "
                              f"expected the number of the folder that holds the image")
    total = len(frame)
    dropped: Counter = Counter()
    named: dict[str, list[str]] = {}

    frame = _projection_drops(frame, dropped)
    if label_methods is not None:
        for method in sorted(set(frame["MethodLabel"].fillna("blank").astype(str)) - set(label_methods)):
            frame = drop_rows(frame, (frame["MethodLabel"].fillna("blank").astype(str) == method).to_numpy(),
                              f"labelled by {method}", dropped)
    frame = drop_rows(frame, frame["padchest_labels"].isna().to_numpy(), "blank Labels cell", dropped)
    mapping = mapping_dict()
    unknown = frame["padchest_labels"].map(lambda names: any(n not in mapping for n in names))
    frame = drop_rows(frame, unknown.to_numpy(), "unknown PadChest label", dropped)
    chex = frame["padchest_labels"].map(lambda names: map_labels(names, mapping))
    frame = frame.assign(labels=[names_to_vector(c) for c in chex])
    frame = drop_rows(frame, np.array([v.sum() == 0 for v in frame["labels"]], dtype=bool),
                      "no label mappable to CheXpert", dropped)

    frame = frame.assign(
        image_path=[os.path.join(root, d, i) for d, i in zip(frame["ImageDir"], frame["ImageID"])],
        dataset="padchest", image_id=frame["ImageID"], patient_id=frame["PatientID"].astype(str),
        study_id=frame["StudyID"].astype(str), view=frame["Projection"].map(FRONTAL_PROJECTIONS),
        sex=frame["PatientSex_DICOM"] if "PatientSex_DICOM" in frame.columns else None, age=_age(frame), split=SPLIT,
        source_labels=[json.dumps({"Labels": names, "MethodLabel": method, "Projection": projection})
                       for names, method, projection in zip(frame["padchest_labels"], frame["MethodLabel"],
                                                             frame["Projection"])])
    if check_images:
        frame = check_image_files(frame, dropped, named)
    return to_result("PadChest", frame, dropped, total, named)


def label_methods_of(result: LoadResult) -> list[str]:
    """Each record's ``MethodLabel`` (Physician or RNN_model), read back from ``source_labels``."""
    return [json.loads(s)["MethodLabel"] for s in result.dataset["source_labels"]]


def padchest_test_selection(cfg, root: Path):
    """(the PadChest load result, the PadChest test manifest frame, its selection report): the frontal images of
    ``root`` labelled by ``sampling.padchest_label_methods``, one per patient (the first in table order), those
    with no positive among the registered labels (``labels.PADCHEST_EVAL_LABELS``) left out, then a seeded uniform
    sample of ``sampling.padchest_test_size`` (the site's own label mix, not balanced)."""
    s = cfg.sampling
    loaded = load_padchest(root, label_methods=s.padchest_label_methods, check_images=cfg.data.check_images)
    frame, selection = select_test_set(manifest_frame(loaded.dataset), loaded.labels(), s.padchest_test_size,
                                       PADCHEST_EVAL_LABELS, "random", s.seed, s.min_fraction, s.max_fraction)
    return loaded, frame, selection
