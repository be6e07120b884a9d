"""Manifests: the image sets 01 samples (one CSV per set, one row per image), written and read back.

The ``labels`` column holds each image's CheXpert names as a JSON list (``["Edema", "Pleural Effusion"]``,
``[]`` for none); reading turns it into the ``truth`` column (predictions carry their own ``labels``).
"""
from __future__ import annotations

import json

import pandas as pd

from .labels import vector_to_names
from .paths import RunPaths

COLUMNS = ["image_id", "image_path", "dataset", "patient_id", "study_id", "view", "sex", "age", "split"]


def manifest_frame(ds, subset: str | None = None) -> pd.DataFrame:
    """A loaded dataset (``data`` loaders) as manifest rows, labels as name lists, optionally tagged ``subset``."""
    frame = ds.select_columns(COLUMNS).to_pandas()
    frame["labels"] = [vector_to_names(v) for v in ds["labels"]]
    if subset:
        frame["subset"] = subset
    return frame


def write_manifest(paths: RunPaths, name: str, frame: pd.DataFrame) -> None:
    path = paths.manifest_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(labels=[json.dumps(list(v)) for v in frame["labels"]]).to_csv(path, index=False)


def _label_list(cell, path, row: int) -> list[str]:
    try:
        names = json.loads(cell)
    except (TypeError, ValueError):
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: column 'labels', row {row}: {cell!r} is not a JSON list of label names "
                         "(rerun 01_sampling to rewrite the manifest)")
    return names


def load_manifest(paths: RunPaths, name: str) -> pd.DataFrame:
    """One manifest with a ``truth`` column (a list of names per image) in place of ``labels``."""
    path = paths.manifest_file(name)
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} not found: run 01_sampling first")
    frame = pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "study_id": str, "labels": str})
    if "labels" not in frame:
        raise ValueError(f"{path}: no 'labels' column (rerun 01_sampling to rewrite the manifest)")
    frame["truth"] = [_label_list(v, path, i) for i, v in enumerate(frame["labels"])]
    return frame.drop(columns="labels")
