"""Cached predictions of a model on a manifest with a prompt, shared by stages 03-08: one process per missing
prediction file, a cached one costs a read; every frame comes back merged with the manifest's truth. Image sets
outside the manifests (07's E4 variants, 08's E2 counterfactual images and its blanked and swapped test images) are
cached the same way, named by ``image_set_digest`` and written by ``predict_image_set`` (``predict_image_sets``: a
batch of them)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from ..evaluation import evaluate
from .. import jsonl_store
from ..config import Config
from ..jobs import run_jobs
from ..data.manifests import load_manifest
from ..train.model_registry import image_pixels
from ..paths import RunPaths


def _predict_job(cfg: Config, paths: RunPaths, tag: str, model_dir: str, manifest_name: str, prompt: str) -> None:
    predictions(cfg, paths, model_dir, manifest_name, prompt, tag)


def covers(cfg: Config, file: Path, model_dir: str, prompt: str, image_ids) -> bool:
    """Whether prediction ``file`` has a row of this model, prompt and generation settings for every image id."""
    if not file.exists():
        return False
    key = evaluate.prediction_key(model_dir, prompt, cfg.evaluation.max_new_tokens, image_pixels(cfg))
    return set(image_ids) <= {row["image_id"] for row in jsonl_store.read_rows(file)[0] if row.get("key") == key}


def _cached(cfg: Config, paths: RunPaths, tag: str, model_dir: str, manifest_name: str, prompt: str) -> bool:
    return covers(cfg, paths.prediction_file(tag, manifest_name, prompt), model_dir, prompt,
                  load_manifest(paths, manifest_name)["image_id"])


def predict_many(cfg: Config, paths: RunPaths, requests: list[tuple[str, str | Path, str, str]]) -> list[pd.DataFrame]:
    """Predictions for (tag, model, manifest, prompt) requests, merged with the truth; each distinct request is
    one process (``jobs.run_jobs``) writing its own cache file, a cached one costs a read."""
    unique = [r for r in dict.fromkeys((t, str(m), man, p) for t, m, man, p in requests)
              if not _cached(cfg, paths, *r)]
    run_jobs(_predict_job, [dict(cfg=cfg, paths=paths, tag=t, model_dir=m, manifest_name=man, prompt=p)
                            for t, m, man, p in unique], cfg.workers)
    return [predictions(cfg, paths, m, man, p, t) for t, m, man, p in requests]


def predictions(cfg: Config, paths: RunPaths, model_dir: str | Path, manifest_name: str, prompt: str,
                tag: str) -> pd.DataFrame:
    """Cached predictions of one model on one manifest with one prompt, merged with the truth."""
    manifest = load_manifest(paths, manifest_name)
    pred = predict_image_set(cfg, model_dir, manifest[["image_id", "image_path"]], prompt,
                             paths.prediction_file(tag, manifest_name, prompt))
    return manifest.merge(pred, on="image_id", how="left")


def image_set_digest(frame: pd.DataFrame) -> str:
    """What predictions on an image set outside the manifests depend on besides the model: image ids, truths and
    the images' bytes (part of its prediction files' names)."""
    h = hashlib.sha256()
    for image_id, path, truth in zip(frame["image_id"], frame["image_path"], frame["truth"]):
        h.update(f"{image_id}|{sorted(truth)}|".encode() + hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()[:12]


def predict_image_set(cfg: Config, model: str | Path, images: pd.DataFrame, prompt: str, out: Path) -> pd.DataFrame:
    """Predictions of ``model`` on ``images`` (image_id, image_path) with ``prompt``, cached in ``out``."""
    return evaluate.predict_sharded(model, images, prompt, out, batch_size=cfg.evaluation.batch_size,
                                    max_new_tokens=cfg.evaluation.max_new_tokens, device=cfg.device,
                                    image_pixels=image_pixels(cfg))


def predict_image_sets(cfg: Config, paths: RunPaths,
                       requests: list[tuple[str, str | Path, pd.DataFrame, str, str]]) -> list[pd.DataFrame]:
    """Predictions for (tag, model, images, set name, prompt) requests on image sets outside the manifests
    (``images``: image_id, image_path and whatever else the caller wants back), each cached in the shared
    prediction folder under ``<set name>_<image_set_digest>``; the missing files made in one batch of jobs; each
    returned merged with its images' rows."""
    jobs = [dict(cfg=cfg, model=str(model), images=images[["image_id", "image_path"]], prompt=prompt,
                 out=paths.prediction_file(tag, f"{name}_{image_set_digest(images)}", prompt))
            for tag, model, images, name, prompt in requests]
    unique = list({str(j["out"]): j for j in jobs}.values())
    run_jobs(predict_image_set, [j for j in unique if not covers(cfg, j["out"], j["model"], j["prompt"],
                                                                 j["images"]["image_id"])], cfg.workers)
    return [images.merge(predict_image_set(**job), on="image_id", how="left")
            for (_, _, images, _, _), job in zip(requests, jobs)]
