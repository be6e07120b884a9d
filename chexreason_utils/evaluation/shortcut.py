"""E2 (a planted shortcut, the paper's Q3): the planted training images, the counterfactual test images and the
shortcut sensitivity; stage 08 (``experiments``) runs the cells and judges the readout.

- ``write_planted``: the MIMIC-like site regenerated with the marker at rate rho (``data.phantom.write_planted_site``)
  into a folder of its own; the marker has its own random stream, so only the marked images differ from the main
  world's (the main world is not touched). ``planted_manifest``: a manifest's images at their planted renders.
- ``counterfactual_tests``: every CheXpert-like and NIH-like test image twice, without and with the marker. The
  marker is burnt in after acquisition (``add_shortcut_marker``), so the two renders of one random state are the
  world's image and that image with the marker: the plain file holds exactly the world's pixels (decoded), the
  marked one the same pixels with the ring's set to 255. Both are written as PNG (lossless): the CheXpert-like
  site stores JPEG, and encoding the marked image as JPEG would change pixels in every 8x8 block the ring touches,
  so "the two differ only in the marker's pixels" holds for the files the models read.
- ``sensitivity_ci``: share of test images whose answer names the finding with the marker minus without it, mean
  over seeds with its 95% CI over seeds x images (both test sets pooled, each set's images resampled).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..config import Config, WorldConfig
from ..data.manifests import load_manifest
from ..data.phantom import FINDINGS, read_findings, write_planted_site
from ..data.phantom_render import SHORTCUT_RADIUS, add_shortcut_marker
from ..evaluation import metrics
from ..paths import RunPaths

CONDITIONS = ("plain", "marker")   # the counterfactual pair: without and with the marker
TEST_MANIFESTS = {"CheXpert": "chexpert_test", "NIH": "nih_test"}


def planted_world(cfg: Config, rho: float, finding: str, radius: float = SHORTCUT_RADIUS,
                  only: bool = False) -> WorldConfig:
    """The main world's settings with E2's marker (outer ``radius``) planted at rate ``rho`` on images with
    ``finding``; ``only``: the finding not drawn (E2's marker-only control)."""
    if not cfg.world.enabled:
        raise ValueError("E2 plants its marker in the phantom world: it needs world.enabled (not the paper profile)")
    if finding not in FINDINGS:
        raise ValueError(f"E2 registration: grid.finding {finding!r} is not a world finding ({', '.join(FINDINGS)})")
    if not 0 < rho <= 1:
        raise ValueError(f"E2 registration: grid.rho {rho!r}: a planted world needs 0 < rho <= 1")
    return replace(cfg.world, shortcut_rho=float(rho), shortcut_finding=finding, shortcut_radius=float(radius),
                   shortcut_only=bool(only))


def write_planted(root: Path, world: WorldConfig) -> None:
    """The planted MIMIC-like site in ``root`` (in a worker; the writer's progress bars kept out of the output)."""
    with contextlib.redirect_stderr(io.StringIO()):
        write_planted_site(root, world)


def planted_manifest(paths: RunPaths, name: str, root: Path) -> pd.DataFrame:
    """Manifest ``name`` (rl, sft) with every image at its render in the planted site ``root`` (the same path
    relative to the world folder); a ValueError names an image outside the world."""
    frame = load_manifest(paths, name)
    world, moved = paths.world.resolve(), []
    for path in map(Path, frame["image_path"]):
        if not path.resolve().is_relative_to(world):
            raise ValueError(f"manifest {name}: image {path} is not in the world folder {world}: E2 plants its "
                             f"marker in the phantom world's MIMIC-like site only")
        moved.append(str(Path(root) / path.resolve().relative_to(world)))
    return frame.assign(image_path=moved)


def marked_count(paths: RunPaths, name: str, root: Path) -> int:
    """How many images of manifest ``name`` carry the marker in the planted site ``root``."""
    marked = {r["path"] for r in read_findings(root) if r.get("shortcut_marker")}
    world = paths.world.resolve()
    return sum(str(Path(p).resolve().relative_to(world)) in marked for p in load_manifest(paths, name)["image_path"])


def _write_png(pixels: np.ndarray, path: Path) -> None:
    """Lossless, rewritten only when its bytes change."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", optimize=False)
    if not path.is_file() or path.read_bytes() != buffer.getvalue():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())


def counterfactual_tests(paths: RunPaths, folder: Path, radius: float = SHORTCUT_RADIUS) -> pd.DataFrame:
    """Every image of the CheXpert-like and NIH-like test manifests written without (``plain/``) and with
    (``marker/``, outer ``radius``) the marker under ``folder`` (``<condition>/<manifest>/<position>.png``, see the module
    docstring); one row per written image: image_id (``<condition>/<manifest>/<image id>``), image_path,
    test_set, condition, source_id (the test image id) and truth."""
    rows = []
    for dataset, name in TEST_MANIFESTS.items():
        manifest = load_manifest(paths, name)
        rows_of = zip(manifest["image_id"], manifest["image_path"], manifest["truth"])
        for k, (image_id, source, truth) in enumerate(rows_of):
            with Image.open(source) as im:
                if im.mode != "L":
                    raise ValueError(f"{source}: mode {im.mode}, E2's marker is drawn on the world's grey images (L)")
                plain = np.asarray(im)
            for condition, pixels in zip(CONDITIONS, (plain, add_shortcut_marker(plain, radius))):
                path = folder / condition / name / f"{k:05d}.png"
                _write_png(pixels, path)
                rows.append({"image_id": f"{condition}/{name}/{image_id}", "image_path": str(path), "test_set": dataset,
                             "condition": condition, "source_id": image_id, "truth": list(truth)})
    return pd.DataFrame(rows)


def marker_effect(plain: pd.DataFrame, marked: pd.DataFrame, finding: str, policy: str) -> np.ndarray:
    """Per test image: whether the answer with the marker names ``finding`` minus whether the answer without it
    does (-1, 0 or 1); the two prediction frames (columns source_id, labels, valid) are matched on source_id, and
    an invalid answer names nothing unless ``policy`` salvages it (``evaluation.invalid_policy``)."""
    for what, frame in (("plain", plain), ("marked", marked)):
        missing = [c for c in ("source_id", "labels", "valid") if c not in frame]
        if missing:
            raise ValueError(f"marker_effect: the {what} predictions have no column {missing[0]!r}")
    if sorted(plain["source_id"]) != sorted(marked["source_id"]) or plain["source_id"].duplicated().any():
        raise ValueError("marker_effect: the plain and marked predictions must hold the same test images, once each")
    marked = marked.set_index("source_id").loc[plain["source_id"]].reset_index()
    return names_finding(marked, finding, policy) - names_finding(plain, finding, policy)


def names_finding(predictions: pd.DataFrame, finding: str, policy: str) -> np.ndarray:
    """Per prediction row: 1.0 when its answer names ``finding`` (an invalid answer by ``policy``), else 0.0."""
    return metrics.prediction_matrix(predictions, [finding], policy)[:, 0].astype(float)


def named_shares(pairs: list[tuple[pd.DataFrame, pd.DataFrame]], finding: str, policy: str) -> tuple[float, float]:
    """(share of answers naming ``finding`` without the marker, with it) over every image of the (plain, marked)
    prediction pairs (one pair per test set)."""
    return tuple(float(np.mean(np.concatenate([names_finding(pair[k], finding, policy) for pair in pairs])))
                 for k in (0, 1))


def sensitivity_ci(per_seed: list[list[np.ndarray]], n_boot: int = 1000, seed: int = 0) -> dict:
    """Shortcut sensitivity, mean over seeds, with its ``metrics.seed_image_ci``: ``per_seed[s][d]`` is seed s's
    ``marker_effect`` on test set d; the sets are pooled (images resampled within each set;
    ``metrics.pooled_mean_ci``), the interval inside the difference's range [-1, 1]."""
    return metrics.pooled_mean_ci(per_seed, n_boot, seed, bounds=(-1.0, 1.0))
