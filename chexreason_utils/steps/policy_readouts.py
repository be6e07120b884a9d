"""Stage 08's readouts of what RL does to the policy (issue 37, item 8; the measures: ``evaluation.policy_shift``),
on runs trained already: 03's GRPO runs and every run the grids trained. All descriptive: no registration rules on
them, so they carry no verdict.

- ``drift_readout``: per GRPO model (each run's final checkpoint), KL(SFT || GRPO) on the first
  ``experiments.policy_images`` NIH-like test prompts, beside its NIH macro-F1 change from its own SFT start; across the models, the Spearman
  correlation of the two with a 95% percentile interval by resampling models (the models share seeds and SFT
  starts, so the interval is optimistic; it is a description, not a test).
- ``reliance_readout``: SFT's and ChexReason's macro-F1 on each test set as it is, with every image blanked and with
  another patient's image; per condition GRPO - SFT, paired on seeds and images (95% CI over seeds x images).
- ``coverage_readout``: pass@1 and pass@k (k = ``SAMPLES``) of SFT and ChexReason on the first
  ``experiments.policy_images`` images of each test set, GRPO - SFT (95% CI over seeds x images).
Each model's drift and each model's samples are one job (``jobs.run_jobs``, ``workers`` at once); the samples are
cached.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import stats

from ..config import Config
from ..data.manifests import load_manifest
from ..evaluation import metrics, policy_shift, scores
from ..jobs import run_jobs
from ..evaluation.metrics import eval_labels, matrices, weighted_macro_f1
from ..paths import RunPaths
from ..queries.entries import SETS, entry_predictions, test_entries
from ..queries.predictions import predict_image_sets, predict_many
from ..queries.stage_outputs import sft_start
from ..cache_keys import model_fingerprint
from ..train import grpo
from ..training_runs.experiment_plan import STAGE, checkpoint_tag, experiment_seeds, final_tag

SAMPLES = 8   # answers sampled per image: pass@1 and pass@8
CONDITIONS = ("as it is", "image blanked", "another patient's image")
CONDITION_FILES = {"image blanked": "blanked", "another patient's image": "swapped"}   # prediction file names
DATASETS = ("CheXpert", "NIH")


def trained_models(cfg: Config, paths: RunPaths, grids: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every GRPO model the drift is read on, once each: 03's runs (each reward, seed) and each grid's trained
    runs (``grids``: experiment id -> ``experiments.run_cells`` rows; E1's models at each non-zero dose, E2's from
    its own SFT start where it has one); columns experiment, cell, seed, tag, model, sft_tag, sft_model."""
    rows = []
    for reward in cfg.grpo.rewards:
        for seed in experiment_seeds(cfg):
            folder = paths.grpo_run(reward, seed)
            final = grpo.checkpoints(folder)[-1]
            start = tuple(map(str, sft_start(cfg, paths, seed)))
            rows.append({"experiment": "03", "cell": reward, "seed": seed, "model": str(final),
                         "tag": checkpoint_tag(paths, "03", reward, folder, final, seed),
                         "sft_tag": start[0], "sft_model": start[1]})
    for reg_id, runs in grids.items():
        for r in runs.itertuples():
            if reg_id == "E1":
                if not r.steps or r.skipped:
                    continue
                tag, model = r.tag, r.model
            elif not r.final_checkpoint:   # E2's marker-only control trains no GRPO
                continue
            else:
                tag, model = final_tag(paths, r), r.final_checkpoint
            start = (r.sft_tag, r.sft_model) if reg_id == "E2" else tuple(map(str, sft_start(cfg, paths, r.seed)))
            rows.append({"experiment": reg_id, "cell": r.cell, "seed": r.seed, "tag": tag, "model": str(model),
                         "sft_tag": start[0], "sft_model": start[1]})
    return pd.DataFrame(rows).drop_duplicates("model").reset_index(drop=True)


def drift_readout(cfg: Config, paths: RunPaths, models: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per model, summary): each model's mean KL(SFT || GRPO) on the first ``experiments.policy_images`` NIH-like
    test prompts
    (GRPO's start format, along its SFT start's greedy answers) and its NIH macro-F1 change from that start
    (04's prompts: the SFT entry's and ChexReason's); the Spearman correlation across models."""
    pair, labels, fmt = test_entries(cfg, paths, "NIH"), eval_labels(cfg, "NIH"), cfg.grpo.start_format
    sft_prompt, grpo_prompt = pair["SFT"].keys.prompt, pair["GRPO"].keys.prompt
    frames = predict_many(cfg, paths, [(r.sft_tag, r.sft_model, "nih_test", sft_prompt) for r in models.itertuples()]
                          + [(r.tag, r.model, "nih_test", grpo_prompt) for r in models.itertuples()]
                          + [(r.sft_tag, r.sft_model, "nih_test", fmt) for r in models.itertuples()])
    n, first = len(models), cfg.experiments.policy_images
    before, after, answers = frames[:n], frames[n:2 * n], frames[2 * n:]
    kls = run_jobs(policy_shift.completion_kl,
                   [dict(sft_dir=r.sft_model, grpo_dir=r.model, image_paths=list(answers[k]["image_path"].iloc[:first]),
                         prompt_name=fmt, answers=list(answers[k]["raw"].fillna("").iloc[:first]))
                    for k, r in enumerate(models.itertuples())], cfg.workers)
    rows = []
    for k, r in enumerate(models.itertuples()):
        y_true, sft_pred = matrices(before[k], cfg, labels)
        ones = np.ones((1, len(y_true)))
        change = weighted_macro_f1(y_true, matrices(after[k], cfg, labels)[1], ones)[0] - \
            weighted_macro_f1(y_true, sft_pred, ones)[0]
        rows.append({"experiment": r.experiment, "cell": r.cell, "seed": r.seed, "kl": float(np.nanmean(kls[k])),
                     "kl_images": int(np.isfinite(kls[k]).sum()), "nih_change": float(change), "model": r.model})
    table = pd.DataFrame(rows)
    return table, correlation(table["kl"].to_numpy(), table["nih_change"].to_numpy(), cfg.evaluation.n_bootstrap,
                              cfg.evaluation.bootstrap_seed)


def correlation(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> pd.DataFrame:
    """Spearman's rho of ``x`` and ``y`` with a 95% percentile interval by resampling pairs (NaN with fewer than
    three pairs, or where a resample has no spread)."""
    n = len(x)
    if n < 3:
        return pd.DataFrame([{"readout": "Spearman rho of KL and NIH change", "effect": np.nan, "lo": np.nan,
                              "hi": np.nan, "n_models": n, "note": f"{n} model(s): a correlation needs three"}])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if np.ptp(x[idx]) > 0 and np.ptp(y[idx]) > 0:
            boots.append(stats.spearmanr(x[idx], y[idx]).statistic)
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan)
    return pd.DataFrame([{"readout": "Spearman rho of KL and NIH change", "effect": float(stats.spearmanr(x, y).statistic),
                          "lo": float(lo), "hi": float(hi), "n_models": n,
                          "note": "descriptive: models share seeds and SFT starts, so the interval is optimistic"}])


def condition_images(cfg: Config, paths: RunPaths, dataset: str) -> dict[str, pd.DataFrame]:
    """The test set's images (image_id, image_path, truth) under each of ``CONDITIONS`` but the first (blanked;
    another patient's, permuted with ``sampling.seed``)."""
    manifest = load_manifest(paths, SETS[dataset])
    with Image.open(manifest["image_path"].iloc[0]) as im:
        size = max(im.size)
    folder = paths.stage(STAGE) / "policy" / "images"
    return {CONDITIONS[1]: policy_shift.blank_images(manifest, folder, size)[["image_id", "image_path", "truth"]],
            CONDITIONS[2]: policy_shift.swapped_images(manifest, cfg.sampling.seed)[["image_id", "image_path", "truth"]]}


def reliance_readout(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Per test set and condition: SFT's and ChexReason's macro-F1 (seed means) and GRPO - SFT with its CI; the
    missing predictions of both sets and conditions made in one batch of jobs."""
    E, rows, keys, requests, got = cfg.evaluation, [], [], [], {}
    pairs = {d: test_entries(cfg, paths, d) for d in DATASETS}
    seeds = {d: [s for s in pair["SFT"].models if s in experiment_seeds(cfg)] for d, pair in pairs.items()}
    for dataset, pair in pairs.items():
        frames = dict(zip(pair, entry_predictions(cfg, paths, list(pair.values()))))
        got[(dataset, CONDITIONS[0])] = {k: [frames[k][s] for s in seeds[dataset]] for k in pair}
        for condition, images in condition_images(cfg, paths, dataset).items():
            name = f"policy_{CONDITION_FILES[condition]}_{SETS[dataset]}"
            for k in pair:
                keys += [(dataset, condition, k)] * len(seeds[dataset])
                requests += [(*pair[k].models[s], images, name, pair[k].keys.prompt) for s in seeds[dataset]]
    for key, frame in zip(keys, predict_image_sets(cfg, paths, requests)):
        got.setdefault(key[:2], {}).setdefault(key[2], []).append(frame)
    for (dataset, condition), by_model in sorted(got.items(), key=lambda kv: (DATASETS.index(kv[0][0]),
                                                                             CONDITIONS.index(kv[0][1]))):
        labels = eval_labels(cfg, dataset)
        y_true = matrices(by_model["SFT"][0], cfg, labels)[0]
        preds = {k: [matrices(f, cfg, labels)[1] for f in v] for k, v in by_model.items()}
        f1 = {k: float(np.mean([weighted_macro_f1(y_true, p, np.ones((1, len(y_true))))[0] for p in v]))
              for k, v in preds.items()}
        diff = metrics.paired_bootstrap(y_true, preds["SFT"], preds["GRPO"], E.n_bootstrap, E.bootstrap_seed)
        rows.append(scores.contrast_row({"test_set": dataset, "condition": condition, "sft_macro_f1": f1["SFT"],
                                         "grpo_macro_f1": f1["GRPO"], "readout": "GRPO - SFT macro-F1",
                                         "n_images": len(y_true)}, diff))
    return pd.DataFrame(rows)


def coverage_readout(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Per test set: pass@1 and pass@``SAMPLES`` of SFT and ChexReason (``SAMPLES`` answers per image sampled at
    GRPO's temperature and top-p, the test set's scored labels compared as a set) and GRPO - SFT, mean over seeds
    with 95% CIs over seeds x images inside the shares' range (``metrics.pooled_mean_ci``)."""
    E, rows, todo = cfg.evaluation, [], {}
    manifests = {d: load_manifest(paths, SETS[d]).iloc[:cfg.experiments.policy_images] for d in DATASETS}
    for dataset, manifest in manifests.items():
        pair = test_entries(cfg, paths, dataset)
        for kind, entry in pair.items():
            for s in (s for s in entry.models if s in experiment_seeds(cfg)):
                tag, model = entry.models[s]
                todo[(dataset, kind, s)] = dict(cfg=cfg, model=str(model), images=manifest[["image_id", "image_path"]],
                                                prompt=entry.keys.prompt, seed=s,
                                                out=samples_file(cfg, paths, tag, model, manifest, dataset,
                                                                 entry.keys.prompt, s))
    run_jobs(cached_samples, [job for job in todo.values() if not job["out"].is_file()], cfg.workers)
    for dataset, manifest in manifests.items():
        labels = eval_labels(cfg, dataset)
        truth = metrics.prediction_matrix(manifest.assign(labels=manifest["truth"], valid=True), labels)
        correct = {}
        for (d, kind, _), job in todo.items():
            if d == dataset:
                pred = metrics.prediction_matrix(cached_samples(**job), labels, E.invalid_policy)
                correct.setdefault(kind, []).append(
                    (pred.reshape(len(manifest), SAMPLES, -1) == truth[:, None, :]).all(axis=2).astype(int))
        for k in (1, SAMPLES):
            per = {kind: [policy_shift.pass_at_k(c, k) for c in got] for kind, got in correct.items()}
            what = {"test_set": dataset, "k": k, "readout": f"pass@{k}", "n_images": len(manifest)}
            for kind, values in per.items():
                rows.append(scores.contrast_row({**what, "model": kind},
                                                metrics.pooled_mean_ci([[v] for v in values], E.n_bootstrap,
                                                                       E.bootstrap_seed, bounds=(0.0, 1.0))))
            diff = [[g - f] for g, f in zip(per["GRPO"], per["SFT"])]
            rows.append(scores.contrast_row({**what, "model": "GRPO - SFT"},
                                            metrics.pooled_mean_ci(diff, E.n_bootstrap, E.bootstrap_seed,
                                                                   bounds=(-1.0, 1.0))))
    return pd.DataFrame(rows)


def samples_file(cfg: Config, paths: RunPaths, tag: str, model, manifest: pd.DataFrame, dataset: str, prompt: str,
                 seed: int) -> Path:
    """Where one model's sampled answers are cached (``08_experiments/policy/samples/``): named by tag, model
    content, set, images, prompt and sampling settings."""
    g = cfg.grpo
    return paths.stage(STAGE) / "policy" / "samples" / (f"{tag}_{model_fingerprint(model)}_{SETS[dataset]}_"
                                                        f"{len(manifest)}_{prompt}_n{SAMPLES}_t{g.temperature:g}_"
                                                        f"p{g.top_p:g}_s{seed}.json")


def cached_samples(cfg: Config, model: str, images: pd.DataFrame, prompt: str, seed: int, out: Path) -> pd.DataFrame:
    """``policy_shift.sampled_answers`` of one model, ``SAMPLES`` per image in image order (seeded by the training
    seed), read from ``out`` when it is there, else made and written."""
    if out.is_file():
        return pd.read_json(out, dtype=False)
    g = cfg.grpo
    sampled = policy_shift.sampled_answers(model, images, prompt, SAMPLES, g.temperature, g.top_p,
                                           cfg.evaluation.max_new_tokens, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    sampled.to_json(out)
    return sampled
