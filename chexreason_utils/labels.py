"""Label ontologies, the NIH -> CheXpert evaluation mapping, uncertainty policies, label-list text.

Plain data plus small functions. CheXpert labels are kept in the alphabetical order of the paper's tables.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)
# Column order of the official CheXpert / MIMIC-CXR-JPG label CSVs.
CHEXPERT_CSV_ORDER: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
NIH_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NIH_NO_FINDING = "No Finding"

# NIH label -> CheXpert label (None: no CheXpert counterpart). Open in the paper; this is its plausible reading.
NIH_TO_CHEXPERT: dict[str, str | None] = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
    "Edema": "Edema", "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax",
    "Mass": "Lung Lesion", "Nodule": "Lung Lesion", "Pleural_Thickening": "Pleural Other",
    "Effusion": "Pleural Effusion", NIH_NO_FINDING: "No Finding",
    "Infiltration": None, "Emphysema": None, "Fibrosis": None, "Hernia": None,
}
# The paper scores NIH on these 9 labels (Effusion left out, unexplained in the paper).
NIH_EVAL_LABELS_PAPER: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Lung Lesion", "No Finding", "Pleural Other",
    "Pneumonia", "Pneumothorax",
)
# Documented alternative: Effusion kept, as Pleural Effusion.
NIH_EVAL_LABELS_WITH_EFFUSION: tuple[str, ...] = tuple(sorted(NIH_EVAL_LABELS_PAPER + ("Pleural Effusion",)))
NIH_LABEL_SETS = {"paper9": NIH_EVAL_LABELS_PAPER, "with_effusion": NIH_EVAL_LABELS_WITH_EFFUSION}
# PadChest is scored on the CheXpert labels that data/padchest_mapping.csv gives to at least 1% of the real table's
# physician-labelled frontal rows with a mappable label (19,472 rows): every label but Pneumothorax (0.39%). Rule and
# set registered before any run scored PadChest (docs/padchest.md, "The scored labels").
PADCHEST_EVAL_LABELS: tuple[str, ...] = tuple(label for label in CHEXPERT_LABELS if label != "Pneumothorax")

UNCERTAINTY_POLICIES = ("positive_only", "uncertain_as_positive", "ignore_uncertain")
_CANONICAL = {label.lower(): label for label in CHEXPERT_LABELS}


def check_policy(policy: str) -> str:
    if policy not in UNCERTAINTY_POLICIES:
        raise ValueError(f"unknown uncertainty policy {policy!r}; choose one of {', '.join(UNCERTAINTY_POLICIES)}")
    return policy


def apply_policy(values: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """CheXpert-style label values (1, 0, -1, NaN) -> (binary matrix, rows to drop).

    - ``positive_only`` (default, the paper's reading): 1 is present; 0, -1 and blank are absent.
    - ``uncertain_as_positive``: 1 and -1 are present.
    - ``ignore_uncertain``: rows with any -1 are dropped (returned in the mask), the rest as positive_only.
    """
    check_policy(policy)
    values = np.asarray(values, dtype=float)
    present = values == 1
    drop = np.zeros(len(values), dtype=bool)
    if policy == "uncertain_as_positive":
        present |= values == -1
    elif policy == "ignore_uncertain":
        drop = (values == -1).any(axis=1)
    return present.astype(np.int8), drop


def vector_to_names(vector: Sequence[int], labels: Sequence[str] = CHEXPERT_LABELS) -> list[str]:
    return [name for name, v in zip(labels, vector) if v]


def names_to_vector(names: Iterable[str], labels: Sequence[str] = CHEXPERT_LABELS) -> np.ndarray:
    index = {name: i for i, name in enumerate(labels)}
    out = np.zeros(len(labels), dtype=np.int8)
    for name in names:
        if name in index:
            out[index[name]] = 1
    return out


def label_matrix(frame, labels: Sequence[str] = CHEXPERT_LABELS) -> np.ndarray:
    """Binary (n, len(labels)) truth matrix from a frame's ``truth`` column (lists of names)."""
    return np.array([names_to_vector(t, labels) for t in frame["truth"]], dtype=np.int8).reshape(len(frame), len(labels))


def nih_to_chexpert(nih_names: Iterable[str]) -> list[str]:
    """NIH finding names -> the CheXpert labels they map to (unmapped NIH findings disappear)."""
    mapped = {NIH_TO_CHEXPERT.get(name) for name in nih_names}
    mapped.discard(None)
    return sorted(mapped)


def canonical_label(text: str) -> str | None:
    """Case- and whitespace-insensitive match to a CheXpert label, or None."""
    key = " ".join(text.replace("_", " ").split()).lower()
    return _CANONICAL.get(key)


def format_label_list(names: Iterable[str]) -> str:
    """Labels in table order, comma-separated (the contract inside ``<solution>``); names outside the table
    follow, alphabetically (never in set order, which changes from process to process)."""
    order = {name: i for i, name in enumerate(CHEXPERT_LABELS)}
    return ", ".join(sorted(set(names), key=lambda n: (order.get(n, math.inf), n)))


def split_label_list(text: str) -> list[str]:
    """Split a comma-separated label list into stripped, non-empty items (case and order kept)."""
    return [part.strip() for part in text.replace("\n", ",").replace(";", ",").split(",") if part.strip()]
