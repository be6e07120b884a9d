"""NIH ChestX-ray14 in its official layout.

    <root>/Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv)
        Image Index, Finding Labels (pipe-separated), Follow-up #, Patient ID, Patient Age, Patient Gender,
        View Position, OriginalImage[Width, Height], OriginalImagePixelSpacing[x, y]   (the bracketed
        headers contain commas, so pandas sees 'OriginalImage[Width' and 'Height]' as two columns; the 2017
        file also ends its header with a comma)
    <root>/train_val_list.txt, <root>/test_list.txt
    <root>/images/*.png  or  <root>/images_NNN/images/*.png

Labels are mapped to the CheXpert vector with ``labels.NIH_TO_CHEXPERT``; the NIH names are kept in
``source_labels``. All NIH images are frontal (PA or AP).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..labels import NIH_LABEL_SETS, NIH_LABELS, NIH_NO_FINDING, names_to_vector, nih_to_chexpert
from .manifests import manifest_frame
from .records import DataLayoutError, LoadResult, check_image_files, drop_rows, require_columns, to_result
from .sampling import select_test_set

ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
REQUIRED = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position")
SPLIT_LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
MAX_AGE_YEARS = 120   # ages above this (e.g. the 2017 file's '412Y' entries) are data errors, dropped and counted


def parse_age(value) -> float:
    """NIH ages are integers in v2020 and strings like '058Y' / '011M' in some 2017 copies."""
    if pd.isna(value):
        return np.nan
    text = str(value).strip()
    match = re.fullmatch(r"(\d+)\s*([YMD]?)", text, flags=re.I)
    if not match:
        return np.nan
    n, unit = int(match.group(1)), match.group(2).upper()
    return float(n if unit in ("", "Y") else n / 12 if unit == "M" else n / 365)


def index_images(root: Path) -> dict[str, Path]:
    """Image name -> path, over images/ and images_NNN/images/."""
    found: dict[str, Path] = {}
    for folder in [root / "images", *sorted(root.glob("images_*/images"))]:
        if folder.is_dir():
            for p in folder.iterdir():
                found.setdefault(p.name, p)
    return found


def load_nih(root: str | Path, splits: list[str] | None = None, check_images: bool = True) -> LoadResult:
    """Records of NIH ChestX-ray14; ``splits`` picks from train_val / test (the official lists)."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"NIH ChestX-ray14 root not found: {root} (expected {ENTRY_FILES[0]} or "
                                f"{ENTRY_FILES[1]}, the split lists and images/)")
    entry = next((root / f for f in ENTRY_FILES if (root / f).is_file()), None)
    if entry is None:
        raise DataLayoutError(f"NIH label file: expected {root / ENTRY_FILES[0]} or {root / ENTRY_FILES[1]} (not found)")
    frame = pd.read_csv(entry, dtype={"Image Index": str})
    frame = frame.loc[:, [c for c in frame.columns if not c.startswith("Unnamed")]]
    require_columns(frame, REQUIRED, entry)
    total = len(frame)
    dropped: Counter = Counter()
    named: dict[str, list[str]] = {}

    membership = {}
    for split, name in SPLIT_LISTS.items():
        path = root / name
        if path.is_file():
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if not names and splits and split in splits:
                raise DataLayoutError(f"NIH split list {path} is empty: expected one image name per line (e.g. "
                                      f"00000003_000.png), the images of the {split!r} split")
            membership.update({name: split for name in names})
        elif splits and split in splits:
            raise DataLayoutError(
                f"NIH split list: expected {path} (not found), one image name per line (e.g. 00000003_000.png), "
                f"as shipped with ChestX-ray14 next to {entry.name}; without it no image can be assigned to the "
                f"{split!r} split")
    frame = frame.assign(split=frame["Image Index"].map(membership).astype(object).fillna("unlisted"))
    if splits:
        frame = drop_rows(frame, ~frame["split"].isin(splits).to_numpy(), "other official split", dropped)
        unmatched = [s for s in splits if s in SPLIT_LISTS and not (frame["split"] == s).any()]
        if unmatched:
            raise DataLayoutError(f"NIH split list {root / SPLIT_LISTS[unmatched[0]]}: none of its image names is "
                                  f"in {entry.name} (column 'Image Index')")

    names = frame["Finding Labels"].fillna("").astype(str).str.split("|")
    unknown = names.map(lambda ns: any(n not in NIH_LABELS and n != NIH_NO_FINDING for n in ns))
    frame = drop_rows(frame.assign(nih_names=names), unknown.to_numpy(), "unknown NIH label", dropped)
    chex = frame["nih_names"].map(nih_to_chexpert)
    frame = frame.assign(labels=[names_to_vector(c) for c in chex])
    frame = drop_rows(frame, np.array([v.sum() == 0 for v in frame["labels"]], dtype=bool),
                      "no label mappable to CheXpert", dropped)

    ages = frame["Patient Age"].map(parse_age)
    unreadable = (ages.isna() & frame["Patient Age"].notna()).to_numpy()
    frame = drop_rows(frame.assign(age_years=ages), unreadable, "unreadable age", dropped)
    frame = drop_rows(frame, (frame["age_years"] > MAX_AGE_YEARS).to_numpy(), f"age over {MAX_AGE_YEARS} years",
                      dropped)
    images = index_images(root)
    frame = frame.assign(
        image_path=[str(images.get(i, root / "images" / i)) for i in frame["Image Index"]],
        dataset="nih", image_id=frame["Image Index"], patient_id=frame["Patient ID"].astype(str),
        study_id=frame["Patient ID"].astype(str) + "/" + frame.get("Follow-up #", pd.Series(0, index=frame.index)).astype(str),
        view=frame["View Position"].fillna("unknown").astype(str), sex=frame["Patient Gender"],
        age=frame["age_years"],
        source_labels=[json.dumps({"Finding Labels": "|".join(n)}) for n in frame["nih_names"]])
    if check_images:
        frame = check_image_files(frame, dropped, named)
    return to_result("NIH ChestX-ray14", frame, dropped, total, named)


def nih_test_selection(cfg: Config, nih_root: Path):
    """(the NIH load result, the NIH test manifest frame, its selection report) of the NIH folder ``nih_root``,
    by the profile's selection rule."""
    d, s = cfg.data, cfg.sampling
    nih = load_nih(nih_root, splits=s.nih_splits, check_images=d.check_images)
    frame, selection = select_test_set(
        manifest_frame(nih.dataset), nih.labels(), s.nih_test_size, NIH_LABEL_SETS[cfg.evaluation.nih_label_set],
        s.nih_selection, s.seed, s.min_fraction, s.max_fraction, s.nih_without_scored_positive)
    return nih, frame, selection
