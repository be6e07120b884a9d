"""An SFT run of the pipeline: the teacher's rationales and the SFT targets of a manifest, the datasets of one
format, and one run of a base model in a format and training seed (02's runs, and E2's on planted images)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import prompts
from ..config import Config
from ..data.manifests import load_manifest
from ..data.phantom import load_findings
from ..paths import RunPaths
from ..tracking import Tracking, run_name
from ..train import sft
from ..train.model_registry import base_model, frozen_vision, image_pixels
from ..train.teacher import TraceRequest, generate_traces, make_teacher


def traces_for(cfg: Config, paths: RunPaths, manifest: pd.DataFrame, fmt: str) -> list[str]:
    """Teacher rationales for every image of a manifest in one format (cached, resumable)."""
    findings = load_findings(paths.world) if cfg.world.enabled else {}
    world = paths.world.resolve()
    requests = []
    for _, row in manifest.iterrows():
        rel = str(Path(row["image_path"]).resolve().relative_to(world)) if cfg.world.enabled else ""
        drawn = findings.get(rel, {}).get("findings", {})
        requests.append(TraceRequest(row["image_id"], row["image_path"], tuple(row["truth"]), fmt, tuple(drawn.items())))
    teacher = make_teacher(cfg.sft.teacher, **({} if cfg.sft.teacher == "template" else {
        "base_url": cfg.sft.teacher_base_url, "model": cfg.sft.teacher_model, "api_key_env": cfg.sft.teacher_api_key_env}))
    return generate_traces(teacher, requests, paths.traces_file(fmt), cfg.sft.teacher_concurrency)


def sft_targets(cfg: Config, paths: RunPaths, manifest: pd.DataFrame, fmt: str) -> list[str]:
    """The SFT target text of every image of a manifest in one format (with its teacher rationale if it thinks)."""
    rationales = traces_for(cfg, paths, manifest, fmt) if prompts.requires_think(fmt) else [""] * len(manifest)
    return [prompts.format_target(fmt, t, r) for t, r in zip(manifest["truth"], rationales)]


def sft_datasets(cfg: Config, paths: RunPaths, fmt: str, image_paths: list[str] | None = None):
    """Train / held-out (val_fraction, for early stopping) datasets of one SFT format; ``image_paths``: other
    renders of the SFT manifest's images, in its order (E2's planted copies; the targets stay the manifest's)."""
    manifest = load_manifest(paths, "sft")
    targets = sft_targets(cfg, paths, manifest, fmt)
    images = list(manifest["image_path"]) if image_paths is None else list(image_paths)
    if len(images) != len(manifest):
        raise ValueError(f"image_paths: {len(images)} paths for the {len(manifest)} images of the SFT manifest")
    data = sft.make_dataset([prompts.prompt_for(fmt)] * len(manifest), targets, images)
    n_eval = max(1, int(round(len(data) * cfg.sft.val_fraction)))
    split = data.train_test_split(test_size=n_eval, seed=cfg.seed)
    return split["train"], split["test"]


def run_sft(cfg: Config, paths: RunPaths, role: str, fmt: str, seed: int, out_dir: Path | None = None,
             image_paths: list[str] | None = None) -> sft.SFTResult:
    """One SFT run of ``role`` in format ``fmt`` from training seed ``seed`` (``out_dir``, ``image_paths``: E2's run on
    planted images; default 02's folder and images)."""
    train, held_out = sft_datasets(cfg, paths, fmt, image_paths)
    base = base_model(cfg, paths, role, seed)
    return sft.train_sft(base, train, held_out, out_dir or paths.sft_model(role, fmt, seed), cfg.sft,
                         full_finetune=not cfg.sft.use_lora, seed=seed, device=cfg.device,
                         image_pixels=image_pixels(cfg), freeze_vision=frozen_vision(cfg, "sft"),
                         tracking=Tracking(cfg.report_to, paths.tracking, run_name("sft", base, fmt, seed)))
