"""Manifests: the image sets 01 samples (one CSV per set, one row per image), written and read back.

The ``labels`` column holds each image's CheXpert names as a JSON list (``["Edema", "Pleural Effusion"]``,
``[]`` for none); reading turns it into the ``truth`` column (predictions carry their own ``labels``). An
``image_path`` inside the run folder (the phantom world) is written relative to it and read back absolute, so a
copied run folder still finds its images; data outside it (the paper profile's) stay absolute.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..jsonl_store import write_if_changed
from ..labels import vector_to_names
from ..paths import RunPaths

COLUMNS = ["image_id", "image_path", "dataset", "patient_id", "study_id", "view", "sex", "age", "split"]


def manifest_frame(ds, subset: str | None = None) -> pd.DataFrame:
    """A loaded dataset (``data`` loaders) as manifest rows, labels as name lists, optionally tagged ``subset``."""
    frame = ds.select_columns(COLUMNS).to_pandas()
    frame["labels"] = [vector_to_names(v) for v in ds["labels"]]
    if subset:
        frame["subset"] = subset
    return frame


def in_run(paths: RunPaths, image_path: str) -> str:
    """An image path relative to the run folder when it lies inside it, else as given."""
    path = Path(image_path)
    return path.relative_to(paths.root).as_posix() if path.is_relative_to(paths.root) else image_path


def write_manifest(paths: RunPaths, name: str, frame: pd.DataFrame) -> None:
    """Write one manifest (rewritten only when its bytes change)."""
    written = frame.assign(labels=[json.dumps(list(v)) for v in frame["labels"]],
                           image_path=[in_run(paths, p) for p in frame["image_path"]])
    write_if_changed(paths.manifest_file(name), written.to_csv(index=False))


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
    frame["image_path"] = [os.path.join(paths.root, p) for p in frame["image_path"].astype(str)]   # absolute stay
    return frame.drop(columns="labels")
