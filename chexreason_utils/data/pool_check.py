"""No test image and no test patient in a pretraining pool (issue 36: the tiny bases are pretrained on pools that
must stay apart from every test set, as a pretrained encoder must not have seen the benchmark).

A pool is a folder with ``captions.jsonl`` (one JSON row per image: ``image`` relative to the folder, and optionally
``patient_id``). ``check_pools`` compares every pool image's bytes with every test image's bytes and every row's
``patient_id`` with the test sets' patients, and raises ``PoolLeakError`` naming the pool file, the row, the image
and the test set. Stage 01 runs it once the test sets are chosen.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..cache_keys import file_digest
from .phantom import CAPTIONS


class PoolLeakError(ValueError):
    """A pretraining pool holds a test image or a test patient."""


def pool_folders(root: Path) -> list[Path]:
    """Every pool under ``root`` (a folder holding ``captions.jsonl``), in path order."""
    return sorted(p.parent for p in Path(root).rglob(CAPTIONS))


def check_pools(pools: list[Path], tests: dict[str, pd.DataFrame]) -> int:
    """Raise ``PoolLeakError`` at the first pool row whose image has the bytes of a test image, or whose
    ``patient_id`` is a test patient; ``tests`` maps a test set's name to its manifest frame (``image_path``,
    ``patient_id``). Returns the number of pool rows checked."""
    images = {file_digest(p): (name, str(p)) for name, frame in tests.items() for p in frame["image_path"]}
    patients = {str(pid): name for name, frame in tests.items() for pid in frame["patient_id"]}
    checked = 0
    for pool in pools:
        source = Path(pool) / CAPTIONS
        for i, line in enumerate(source.read_text().splitlines()):
            if not line.strip():
                continue
            row = json.loads(line)
            hit = images.get(file_digest(Path(pool) / row["image"]))
            if hit:
                raise PoolLeakError(f"{source}, row {i + 1}: image {row['image']!r} is the {hit[0]} test image "
                                    f"{hit[1]} (same bytes); a pretraining pool must hold no test image")
            if "patient_id" in row and str(row["patient_id"]) in patients:
                raise PoolLeakError(f"{source}, row {i + 1}: patient_id {row['patient_id']!r} is a patient of the "
                                    f"{patients[str(row['patient_id'])]} test set; a pretraining pool must hold no "
                                    f"test patient")
            checked += 1
    return checked
