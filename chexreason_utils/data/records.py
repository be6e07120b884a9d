"""The one record schema every loader returns, drop accounting and layout errors."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import datasets
import numpy as np
import pandas as pd
from PIL import Image as PILImage

from ..labels import CHEXPERT_LABELS

COLUMNS = ("image", "image_path", "dataset", "image_id", "patient_id", "study_id", "view", "sex", "age",
           "split", "labels", "source_labels")
FRONTAL = "Frontal"                  # a frontal view of unknown AP/PA position (CheXpert's spelling)
FRONTAL_VIEWS = ("AP", "PA", FRONTAL)


class DataLayoutError(FileNotFoundError):
    """A dataset folder that does not match its official layout; the message says what was expected where."""


def require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataLayoutError(f"{what}: expected {path} (not found)")
    return path


def require_columns(frame: pd.DataFrame, columns: Sequence[str], source: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataLayoutError(f"{source}: missing column(s) {', '.join(map(repr, missing))}; "
                              f"found {', '.join(map(repr, frame.columns))}")


LABEL_VALUES = (1, 0, -1)   # CheXpert-style label files: present, absent, uncertain, or blank


def numeric_labels(frame: pd.DataFrame, columns: Sequence[str], source: Path) -> pd.DataFrame:
    """``frame`` with its label columns as floats (blank: NaN); any other value is a ``DataLayoutError`` naming the
    file, column and row (the file's line number: the header is line 1)."""
    out = {}
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & ~values.isin(LABEL_VALUES)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataLayoutError(f"{source}: column {column!r}, row {row + 1} (line {row + 2}): "
                                  f"{str(frame[column].iloc[row])!r} is not a label value; allowed: 1, 0, -1 or blank "
                                  f"({int(bad.sum())} such value(s) in the column)")
        out[column] = values.astype(float)
    return frame.assign(**out)


@dataclass
class LoadResult:
    """Records as a ``datasets.Dataset`` (lazily decoded ``image``) plus what was dropped and why."""

    source: str
    dataset: datasets.Dataset
    dropped: Counter = field(default_factory=Counter)
    total_rows: int = 0
    dropped_files: dict[str, list[str]] = field(default_factory=dict)   # reason -> image files (image checks)

    def labels(self) -> np.ndarray:
        """The (n, 14) CheXpert label matrix."""
        if len(self.dataset) == 0:
            return np.zeros((0, len(CHEXPERT_LABELS)), dtype=np.int8)
        return np.asarray(self.dataset.with_format("numpy")["labels"], dtype=np.int8)

    def report(self) -> pd.DataFrame:
        rows = [{"reason": "kept", "rows": len(self.dataset), "files": ""}]
        rows += [{"reason": reason, "rows": n, "files": name_files(self.dropped_files.get(reason, []))}
                 for reason, n in sorted(self.dropped.items())]
        return pd.DataFrame(rows).assign(source=self.source)[["source", "reason", "rows", "files"]]

    def __str__(self) -> str:
        drops = ", ".join(f"{n} {r}" for r, n in sorted(self.dropped.items())) or "none"
        return f"{self.source}: {self.total_rows} rows read, {len(self.dataset)} kept; dropped: {drops}"


def name_files(files: list[str], at_most: int = 5) -> str:
    """The first few files of a list, and how many more there are."""
    more = f" (+{len(files) - at_most} more)" if len(files) > at_most else ""
    return "; ".join(files[:at_most]) + more


def drop_rows(frame: pd.DataFrame, mask: np.ndarray, reason: str, dropped: Counter) -> pd.DataFrame:
    n = int(np.asarray(mask).sum())
    if n:
        dropped[reason] += n
    return frame.loc[~np.asarray(mask)]


def image_problem(path: str | Path) -> str | None:
    """Why an image file cannot be used ('unreadable image', 'truncated image'), or None.

    The whole file is decoded, so a file cut short behind an intact header is caught here rather than when
    training reads it. JPEGs decode at 1/8 scale (``draft``), which still reads every byte of the stream.
    """
    try:
        with PILImage.open(path) as im:
            im.size  # noqa: B018  (header)
    except (OSError, ValueError, SyntaxError):
        return "unreadable image"
    try:
        with PILImage.open(path) as im:
            if im.format == "JPEG":
                im.draft(im.mode, (1, 1))
            im.load()
    except (OSError, ValueError, SyntaxError):
        return "truncated image"
    return None


def check_image_files(frame: pd.DataFrame, dropped: Counter, named: dict[str, list[str]]) -> pd.DataFrame:
    """Drop rows whose image is missing, unreadable or truncated, counting each reason and naming the files
    in ``named`` (reason -> files)."""
    exists = np.array([Path(p).is_file() for p in frame["image_path"]], dtype=bool)
    problems = np.array([None if ok else "missing image" for ok in exists], dtype=object)
    for i in np.flatnonzero(exists):
        problems[i] = image_problem(frame["image_path"].iloc[i])
    for reason in ("missing image", "unreadable image", "truncated image"):
        bad = problems == reason
        if bad.any():
            named[reason] = frame["image_path"][bad].tolist()
            print(f"{reason}: {name_files(named[reason])}")
        frame, problems = drop_rows(frame, bad, reason, dropped), problems[~bad]
    return frame


def to_result(source: str, frame: pd.DataFrame, dropped: Counter, total_rows: int,
              dropped_files: dict[str, list[str]] | None = None) -> LoadResult:
    """Build the Dataset in the shared schema from a frame holding the COLUMNS (minus ``image``)."""
    frame = frame.reset_index(drop=True)
    data = {c: frame[c].tolist() for c in COLUMNS if c not in ("image", "labels")}
    data["labels"] = [list(map(int, v)) for v in frame["labels"]]
    data["age"] = [None if pd.isna(a) else float(a) for a in frame["age"]]
    data["sex"] = [None if pd.isna(s) else str(s) for s in frame["sex"]]
    data["image"] = frame["image_path"].tolist()
    features = datasets.Features({
        "image": datasets.Image(), "image_path": datasets.Value("string"), "dataset": datasets.Value("string"),
        "image_id": datasets.Value("string"), "patient_id": datasets.Value("string"),
        "study_id": datasets.Value("string"), "view": datasets.Value("string"), "sex": datasets.Value("string"),
        "age": datasets.Value("float32"), "split": datasets.Value("string"),
        "labels": datasets.Sequence(datasets.Value("int8"), length=len(CHEXPERT_LABELS)),
        "source_labels": datasets.Value("string"),
    })
    ds = datasets.Dataset.from_dict({c: data[c] for c in COLUMNS}, features=features)
    return LoadResult(source=source, dataset=ds, dropped=dropped, total_rows=total_rows,
                      dropped_files=dropped_files or {})


def source_json(row_values: dict) -> str:
    return json.dumps({k: (None if pd.isna(v) else v) for k, v in row_values.items()}, sort_keys=True)
