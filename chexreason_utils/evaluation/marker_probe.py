"""E2's decodability check, its first positive control (registration rules.decodability): can the planted marker
be read from what the language model receives?

For each training seed's medical base, ``decodability`` takes training-site images (the SFT manifest's first
``controls.probe_images``), each without and with the marker at every registered size, and the image tokens its
frozen vision tower and projector hand the language model (``vision_pretraining.token_features``: every token,
flattened); ``probe_accuracy`` is the held-out accuracy of an L2 logistic regression telling the two apart
(standardised features, 5-fold cross-validation grouped by image, so an image's two renders are never split).
``chosen_radius``: the smallest registered size decodable in every seed (None: none is). A probe that reads the
marker says the model *could* follow it; E2's second control (the marker-only arm) says whether SFT does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data.phantom_render import add_shortcut_marker
from ..train.vision_pretraining import token_features

FOLDS = 5
COLUMNS = ["radius", "seed", "accuracy", "n_images", "decodable"]


def probe_accuracy(plain: np.ndarray, marked: np.ndarray, folds: int = FOLDS) -> float:
    """Held-out accuracy of a logistic regression telling ``marked`` rows (one per image) from ``plain`` rows
    (the same images without the marker), cross-validated by image."""
    plain, marked = np.asarray(plain, float), np.asarray(marked, float)
    if plain.shape != marked.shape or plain.ndim != 2:
        raise ValueError(f"probe_accuracy needs two (images, features) arrays of one shape, got {plain.shape} and "
                         f"{marked.shape}")
    if len(plain) < folds:
        raise ValueError(f"probe_accuracy needs at least {folds} images (one per fold), got {len(plain)}")
    n = len(plain)
    x, y, groups = np.vstack([plain, marked]), np.r_[np.zeros(n), np.ones(n)], np.r_[np.arange(n), np.arange(n)]
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    return float(cross_val_score(probe, x, y, groups=groups, cv=GroupKFold(folds)).mean())


def decodability(bases: dict[int, Path], image_paths: list, radii: list[float], threshold: float) -> pd.DataFrame:
    """Per registered size (``radii``) and seed (``bases``: seed -> medical base folder), the probe's held-out
    accuracy on ``image_paths`` without and with the marker, and whether it reaches ``threshold``."""
    plain = [np.asarray(Image.open(p).convert("L")) for p in image_paths]
    rows = []
    for seed, folder in bases.items():
        without = token_features(folder, [Image.fromarray(px) for px in plain])
        for radius in radii:
            marked = token_features(folder, [Image.fromarray(add_shortcut_marker(px, radius)) for px in plain])
            accuracy = probe_accuracy(without, marked)
            rows.append({"radius": float(radius), "seed": seed, "accuracy": accuracy, "n_images": len(plain),
                         "decodable": accuracy >= threshold})
    return pd.DataFrame(rows, columns=COLUMNS)


def chosen_radius(table: pd.DataFrame) -> float | None:
    """The smallest size decodable in every seed of ``decodability``'s table (None: no size is)."""
    every = table.groupby("radius")["decodable"].all()
    return float(every[every].index.min()) if every.any() else None
