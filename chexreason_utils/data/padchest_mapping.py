"""PadChest labels -> CheXpert labels: the mapping as data (``padchest_mapping.csv``), applied and measured.

The mapping is **open** and ours: the paper never used PadChest. Each of PadChest's 193 label strings has one row
(``padchest_label``, ``chexpert_label``, ``note``); an empty ``chexpert_label`` means the label has no CheXpert
counterpart and the note says why. Where CheXpert's own report labeller counts a phrase under a label (``heart
failure`` as Edema, ``hardware`` as Support Devices), the note says so. ``normal`` maps to No Finding only when it is
the row's only label (``map_labels``). docs/padchest.md shows the table with the real rows each entry covers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from ..labels import CHEXPERT_LABELS

MAPPING_CSV = Path(__file__).with_name("padchest_mapping.csv")
NORMAL = "normal"
NO_FINDING = "No Finding"


def load_mapping(path: Path = MAPPING_CSV) -> pd.DataFrame:
    """The mapping table: ``padchest_label``, ``chexpert_label`` (``""``: not mapped), ``note``."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def mapping_dict(table: pd.DataFrame | None = None) -> dict[str, str | None]:
    """PadChest label -> CheXpert label (None: not mapped)."""
    table = load_mapping() if table is None else table
    return {p: (c or None) for p, c in zip(table["padchest_label"], table["chexpert_label"])}


def map_labels(names: Iterable[str], mapping: dict[str, str | None] | None = None) -> list[str]:
    """One row's PadChest labels -> its CheXpert labels, in table order.

    ``normal`` gives No Finding only when it is the only label: PadChest labels each report sentence, so "normal"
    beside another label (226 real rows, e.g. with "cardiomegaly" or "unchanged") speaks of one structure, and the
    row's other labels are mapped as usual. Labels missing from the mapping are ignored (the loader counts them)."""
    mapping = mapping_dict() if mapping is None else mapping
    names = list(names)
    if names == [NORMAL]:
        return [NO_FINDING]
    found = {mapping.get(n) for n in names if n != NORMAL}
    return [label for label in CHEXPERT_LABELS if label in found]


def map_frame(label_lists: Sequence[Sequence[str]], table: pd.DataFrame | None = None) -> list[list[str]]:
    """``map_labels`` over a frame's label lists (the ``padchest_labels`` column ``load_padchest`` reads)."""
    mapping = mapping_dict(table)
    return [map_labels(names, mapping) for names in label_lists]


def coverage(label_lists: Sequence[Sequence[str]], table: pd.DataFrame | None = None) -> tuple[pd.DataFrame, float]:
    """(the mapping with ``rows``: how many rows carry each PadChest label, and the share of rows whose labels map
    to no CheXpert label at all). Rows are whatever ``label_lists`` holds, e.g. the real table's frontal rows."""
    table = load_mapping() if table is None else table
    counts = pd.Series([n for names in label_lists for n in set(names)], dtype=object).value_counts()
    out = table.assign(rows=table["padchest_label"].map(counts).fillna(0).astype(int))
    mapped = map_frame(label_lists, table)
    unmapped_share = sum(not m for m in mapped) / len(mapped) if mapped else float("nan")
    return out.sort_values(["rows", "padchest_label"], ascending=[False, True]).reset_index(drop=True), unmapped_share


def chexpert_counts(label_lists: Sequence[Sequence[str]], table: pd.DataFrame | None = None) -> pd.Series:
    """How many rows each CheXpert label is true on after the mapping (table order; a row counts once per label)."""
    mapped = map_frame(label_lists, table)
    return pd.Series({label: sum(label in m for m in mapped) for label in CHEXPERT_LABELS}, name="rows")
