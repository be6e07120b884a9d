"""Stage 02 (SFT): one SFT run per base model, format and training seed (``training_runs.sft``), what each format teaches,
one example's loss mask, its curves and final values, and how often the medical model's samples keep
the contract."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import Config, training_seeds
from ..data.manifests import load_manifest
from ..evaluation import evaluate
from ..jobs import run_jobs
from ..paths import RunPaths
from ..training_runs.sft import run_sft, sft_datasets, sft_targets
from ..train import sft, sft_data
from ..train.model_registry import image_pixels, processor_source
from ..train.models import load_processor
from ..train.trainer_log import log_rows


def example_targets(cfg: Config, paths: RunPaths, index: int = 0) -> pd.DataFrame:
    """The SFT target of one image in every format (what each format teaches)."""
    manifest = load_manifest(paths, "sft").iloc[[index]]
    return pd.DataFrame([{"format": fmt, "target": sft_targets(cfg, paths, manifest, fmt)[0]} for fmt in cfg.sft.formats])


def loss_mask_example(cfg: Config, paths: RunPaths, fmt: str, role: str = "medical", index: int = 0) -> pd.DataFrame:
    """One training example of a format as SFT prepares it (``sft_data.prepare``: trl's collator on the base's
    processor), its tokens in runs marking which the loss trains on (``sft_data.loss_mask``)."""
    train, _ = sft_datasets(cfg, paths, fmt)
    processor = load_processor(processor_source(cfg, paths, role), *image_pixels(cfg))
    _, collator = sft_data.prepare([train.select([index])], processor, cfg.sft.max_length)
    return sft_data.loss_mask(collator.examples[0], processor.tokenizer, processor.tokenizer.image_token)


def train_formats(cfg: Config, paths: RunPaths, roles: list[str]) -> dict[str, dict[str, dict[int, sft.SFTResult]]]:
    """SFT of each base model in every configured format and training seed, ``{role: {format: {seed: result}}}``;
    one process per run (``jobs.run_jobs``), a run already trained with the same settings is reused."""
    for fmt in cfg.sft.formats:   # teacher traces first, here: one cache file per format, one writer
        sft_datasets(cfg, paths, fmt)
    keys = [(r, f, s) for r in roles for f in cfg.sft.formats for s in training_seeds(cfg)]
    done = run_jobs(run_sft, [dict(cfg=cfg, paths=paths, role=r, fmt=f, seed=s) for r, f, s in keys], cfg.workers)
    results: dict = {}
    for (r, f, s), res in zip(keys, done):
        results.setdefault(r, {}).setdefault(f, {})[s] = res
    return results


def sft_curves(results: dict[str, dict[int, sft.SFTResult]]) -> pd.DataFrame:
    """Training rows (step, loss, mean token accuracy, entropy) of every format and seed, long form."""
    frames = []
    for fmt, by_seed in results.items():
        for seed, res in by_seed.items():
            rows = log_rows(res.log, "loss")
            keep = [c for c in ("step", "loss", "mean_token_accuracy", "entropy") if c in rows]
            frames.append(rows[keep].assign(format=fmt, seed=seed))
    return pd.concat(frames, ignore_index=True)


def sft_final_values(results: dict[str, dict[str, dict[int, sft.SFTResult]]]) -> pd.DataFrame:
    """Per role, format and seed: last logged training loss / token accuracy / entropy, best held-out loss."""
    rows = []
    for role, by_fmt in results.items():
        for fmt, by_seed in by_fmt.items():
            for seed, res in by_seed.items():
                train = log_rows(res.log, "loss")
                ev = res.log["eval_loss"].dropna() if "eval_loss" in res.log else pd.Series(dtype=float)
                last = train.iloc[-1] if len(train) else {}
                rows.append({"model": role, "format": fmt, "seed": seed, "steps": int(last.get("step", 0)),
                             "train_loss": last.get("loss", np.nan),
                             "token_accuracy": last.get("mean_token_accuracy", np.nan),
                             "entropy": last.get("entropy", np.nan),
                             "best_eval_loss": ev.min() if len(ev) else np.nan})
    return pd.DataFrame(rows)


def _validity_job(cfg: Config, paths: RunPaths, seed: int) -> dict:
    fmt = cfg.grpo.start_format
    return {"seed": seed, **evaluate.sample_validity(
        paths.sft_model("medical", fmt, seed), load_manifest(paths, "val"), fmt, n=cfg.evaluation.sample_validity_n,
        temperature=cfg.grpo.temperature, top_p=cfg.grpo.top_p, max_new_tokens=cfg.evaluation.max_new_tokens,
        device=cfg.device, seed=seed)}


def sample_validity(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Per training seed: share of sampled completions (GRPO's sampling settings) of the medical SFT model in
    GRPO's start format that keep the output contract."""
    jobs = [dict(cfg=cfg, paths=paths, seed=s) for s in training_seeds(cfg)]
    return pd.DataFrame(run_jobs(_validity_job, jobs, cfg.workers))
