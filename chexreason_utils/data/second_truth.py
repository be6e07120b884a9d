"""A second truth for the NIH test question: did RL learn the findings or the labeller's conventions?

- Embedded world: the findings drawn into each phantom image before the NIH-like labeller added its noise
  (``phantom_findings.jsonl``), mapped to CheXpert names like the NIH labels (``labels.nih_to_chexpert``).
- Paper profile (optional): Google's 2019 radiologist-adjudicated relabels (``data.nih_relabels``), set with
  ``evaluation.relabel_csv``; scored on their four labels.

``steps.second_truth.second_truth_scores`` puts the SFT model and ChexReason side by side on the noisy and the
cleaner truth.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import Config
from .nih_relabels import load_nih_relabels
from .phantom import read_findings
from ..labels import NIH_NO_FINDING, nih_to_chexpert
from .manifests import manifest_frame, write_manifest
from ..paths import RunPaths

RELABEL_MANIFEST = "nih_relabel"


def drawn_truth(world_root: str | Path, site: str = "nih") -> pd.DataFrame:
    """image_id -> CheXpert names of what was drawn (before labeller noise); nothing drawn -> No Finding."""
    rows = [r for r in read_findings(world_root) if r["site"] == site]
    truth = [nih_to_chexpert(r["truth"] or [NIH_NO_FINDING]) for r in rows]
    return pd.DataFrame({"image_id": [r["image_id"] for r in rows], "truth": truth})


def write_relabel_manifest(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """The relabelled NIH images as a manifest (``sampling/nih_relabel.csv``), like the other test sets."""
    loaded = load_nih_relabels(paths.resolve(cfg.evaluation.relabel_csv), paths.resolve(cfg.data.nih_root),
                               cfg.data.check_images)
    frame = manifest_frame(loaded.dataset, "test")
    write_manifest(paths, RELABEL_MANIFEST, frame)
    return frame
