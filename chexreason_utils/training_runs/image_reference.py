"""The supervised image-only reference of a run (``train.image_reference``): fitted per training seed on each
training set, answering every evaluation set, for 04's scores frame, Tables 5-6 and the headline.

Two training sets: the SFT images (what the VLMs were fine-tuned on) and the training site's frontal pool without
the validation patients (``steps.sampling.reference_pool``: what the pixels allow at the site). Thresholds are
chosen on validation, so validation is answered cross-fitted (each half with thresholds chosen on the other half,
``ImageReference.predict_cross_fitted``); the test sets with the thresholds chosen on all of it. Fits are cached in
``04_evaluation/reference/<set>-seed-<s>`` by their content key and run as independent jobs.
"""
from __future__ import annotations

from ..config import Config, training_seeds
from ..data.manifests import load_manifest
from ..jobs import run_jobs
from ..paths import RunPaths
from ..evaluation.scores import REFERENCE, REFERENCES, EntryKeys
from ..data.sampling import REFERENCE_POOL
from ..train.image_reference import ImageReference, ReferenceSettings, fit_cached

TRAINING_SETS = dict(zip(REFERENCES, ("sft", REFERENCE_POOL)))   # entry name -> the manifest it is trained on


def settings(cfg: Config, seed: int) -> ReferenceSettings:
    r = cfg.reference
    return ReferenceSettings(seed=seed, image_size=r.image_size, epochs=r.epochs)


def fit_one(cfg: Config, paths: RunPaths, manifest: str, seed: int) -> ImageReference:
    """One reference: trained on ``manifest`` under ``seed``, thresholds on validation (cached)."""
    return fit_cached(load_manifest(paths, manifest), load_manifest(paths, "val"), settings(cfg, seed),
                      paths.reference_dir(manifest, seed), f"image reference {manifest} seed-{seed}")


def _predict_job(cfg: Config, paths: RunPaths, manifest: str, seed: int, sets: dict[str, str]) -> dict:
    reference = fit_one(cfg, paths, manifest, seed)
    out = {}
    for dataset, name in sets.items():
        frame = load_manifest(paths, name)
        out[dataset] = reference.predict_cross_fitted(frame) if name == "val" else reference.predict(frame)
    return out


def reference_predictions(cfg: Config, paths: RunPaths, sets: dict[str, str]) -> dict[str, dict[str, dict]]:
    """``{training-set name: {dataset: {seed: predictions merged with the truth}}}`` on every evaluation set of
    ``sets`` (dataset -> manifest); empty when ``reference.enabled`` is off."""
    if not cfg.reference.enabled:
        return {}
    seeds = training_seeds(cfg)
    jobs = [dict(cfg=cfg, paths=paths, manifest=manifest, seed=seed, sets=sets)
            for manifest in TRAINING_SETS.values() for seed in seeds]
    results = iter(run_jobs(_predict_job, jobs, cfg.workers))
    out: dict[str, dict[str, dict]] = {}
    for name in TRAINING_SETS:
        for seed in seeds:
            for dataset, frame in next(results).items():
                out.setdefault(name, {}).setdefault(dataset, {})[seed] = frame
    return out


def entry_keys(dataset: str, name: str) -> EntryKeys:
    """The scores frame's keys of the reference trained on ``name`` (a ``REFERENCES`` name) on ``dataset``."""
    return EntryKeys(dataset, REFERENCE["model"], REFERENCE["stage"], name, REFERENCE["checkpoint"], float("nan"), "")
