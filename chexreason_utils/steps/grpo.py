"""Stage 03 (GRPO): the runs of every reward (and the 06 ablation) and training seed, the hard reward's length
threshold, validation scores of every checkpoint, and the reward tables: answer strategies, answer statistics,
a worked example of one group, the trl arguments beside the paper's, and one logged completion term by term."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..train import grpo, models
from .. import prompts
from ..report import browser
from ..evaluation import reward_analysis
from ..config import Config, load_profile, training_seeds
from ..jobs import run_jobs
from ..data.manifests import in_run, load_manifest
from ..evaluation.metrics import scores
from ..train.model_registry import base_model
from ..paths import RunPaths, checkpoint_name
from ..tracking import Tracking, run_name
from ..queries.predictions import predict_many
from ..queries.stage_outputs import grpo_models, pool_prevalence
from .sft import sft_targets


def run_grpo(cfg: Config, paths: RunPaths, reward: str, seed: int, out_dir: Path | None = None,
             grpo_cfg=None, manifest: pd.DataFrame | None = None, start: Path | None = None) -> grpo.GRPORun:
    """One GRPO run of one training seed from that seed's Free-Reasoning SFT (``grpo_cfg`` with ``seed=seed``);
    stage 08 passes its own RL ``manifest`` and, for E2's SFT on planted images, its ``start`` model."""
    sft_dir, data, run_cfg = grpo_inputs(cfg, paths, seed, grpo_cfg, manifest, start)
    out_dir = out_dir or paths.grpo_run(reward, seed)
    tracking = Tracking(cfg.report_to, paths.tracking, run_name("grpo", base_model(cfg, paths, "medical"), out_dir.name, seed))
    return grpo.train_grpo(sft_dir, data, out_dir, run_cfg, reward, pool_prevalence(paths), cfg.device,
                           cfg.grpo.start_format, tracking)


def grpo_inputs(cfg: Config, paths: RunPaths, seed: int, grpo_cfg=None, manifest: pd.DataFrame | None = None,
                start: Path | None = None):
    """(SFT start folder, prompt dataset, GRPO settings) of ``run_grpo``'s run."""
    manifest = load_manifest(paths, "rl") if manifest is None else manifest
    fmt = cfg.grpo.start_format
    return (start or paths.sft_model("medical", fmt, seed), rl_dataset(paths, manifest, fmt),
            resolve_length_threshold(cfg, paths, replace(grpo_cfg or cfg.grpo, seed=seed)))


def is_finished(cfg: Config, paths: RunPaths, reward: str, seed: int, out_dir: Path, grpo_cfg=None,
                manifest: pd.DataFrame | None = None, start: Path | None = None) -> bool:
    """Whether ``out_dir`` holds a finished run of exactly ``run_grpo``'s inputs (which it would reuse)."""
    sft_dir, data, run_cfg = grpo_inputs(cfg, paths, seed, grpo_cfg, manifest, start)
    return grpo.is_finished(sft_dir, data, out_dir, run_cfg, reward, pool_prevalence(paths))


def rl_dataset(paths: RunPaths, manifest, fmt: str):
    """The GRPO prompts of the RL manifest, each completion logged with its image's run-relative path."""
    return grpo.make_dataset(prompts.prompt_for(fmt), list(manifest["image_path"]), list(manifest["truth"]),
                             [in_run(paths, p) for p in manifest["image_path"]])


def ablation_name(cfg: Config) -> str:
    return f"ablation-{cfg.diagnostics.ablation_reward}"


def grpo_plan(cfg: Config) -> dict[str, tuple[str, object]]:
    """Every GRPO run of a seed: run name -> (reward, GRPO config): each reward, and the 06 ablation (a recipe
    of the kind the paper reports as unstable) when ``diagnostics.run_ablation``."""
    plan = {reward: (reward, cfg.grpo) for reward in cfg.grpo.rewards}
    D = cfg.diagnostics
    if D.run_ablation:
        plan[ablation_name(cfg)] = (D.ablation_reward, replace(
            cfg.grpo, beta=D.ablation_beta, epsilon=D.ablation_epsilon, epsilon_high=D.ablation_epsilon_high,
            loss_type=D.ablation_loss_type, num_iterations=D.ablation_num_iterations))
    return plan


def _grpo_job(cfg: Config, paths: RunPaths, name: str, seed: int) -> grpo.GRPORun:
    reward, grpo_cfg = grpo_plan(cfg)[name]
    return run_grpo(cfg, paths, reward, seed, out_dir=paths.grpo_run(name, seed), grpo_cfg=grpo_cfg)


def grpo_runs(cfg: Config, paths: RunPaths) -> dict[str, dict[int, grpo.GRPORun]]:
    """Every run of ``grpo_plan`` for every training seed, ``{name: {seed: GRPORun}}``, one process per run."""
    keys = [(name, s) for name in grpo_plan(cfg) for s in training_seeds(cfg)]
    done = run_jobs(_grpo_job, [dict(cfg=cfg, paths=paths, name=n, seed=s) for n, s in keys], cfg.workers)
    runs: dict = {}
    for (name, s), run in zip(keys, done):
        runs.setdefault(name, {})[s] = run
    return runs


def completion_pages(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """One completions browser page per run of ``grpo_plan`` over every training seed (``browser.write_page``);
    returns run, groups shown and the page, relative to the figure folder (the report links each)."""
    manifest = load_manifest(paths, "rl")
    truths = {in_run(paths, p): list(t) for p, t in zip(manifest["image_path"], manifest["truth"])}
    rows = []
    for name in grpo_plan(cfg):
        page = browser.write_page(paths.completions_page(name), f"GRPO completions: {name} (profile {cfg.profile})",
                                  {s: paths.grpo_run(name, s) for s in training_seeds(cfg)}, cfg.grpo.num_generations,
                                  paths.resolve, truths)
        rows.append({"run": name, "groups": browser.page_groups(page)["group"].nunique(),
                     "page": page.relative_to(paths.figures).as_posix()})
    return pd.DataFrame(rows)


def sft_target_lengths(cfg: Config, paths: RunPaths, fmt: str) -> np.ndarray:
    """Token lengths (the start model's tokenizer) of the SFT targets of one format."""
    manifest = load_manifest(paths, "sft")
    tokenizer = models.load_processor(base_model(cfg, paths, "medical")).tokenizer   # SFT keeps the base's tokenizer
    return np.array([len(tokenizer(t, add_special_tokens=False)["input_ids"])
                     for t in sft_targets(cfg, paths, manifest, fmt)])


def resolve_length_threshold(cfg: Config, paths: RunPaths, grpo_cfg):
    """``grpo_cfg`` with the hard reward's length threshold set from the SFT targets when
    ``hard.length_threshold_quantile`` > 0 (tiny profiles); unchanged otherwise (the paper's 250 tokens)."""
    q = grpo_cfg.hard.length_threshold_quantile
    if q <= 0:
        return grpo_cfg
    if not 0 < q < 1:
        raise ValueError(f"grpo.hard.length_threshold_quantile must be in (0, 1), got {q}")
    lengths = sft_target_lengths(cfg, paths, grpo_cfg.start_format)
    threshold = int(np.quantile(lengths, q))
    return replace(grpo_cfg, hard=replace(grpo_cfg.hard, length_threshold=threshold, length_threshold_quantile=0.0))


def checkpoint_predictions(cfg: Config, paths: RunPaths, name: str, seed: int) -> dict[int, pd.DataFrame]:
    """Validation predictions (cached) of the SFT start (step 0) and every checkpoint the scoring plan scores on
    validation, of one GRPO run and seed."""
    fmt, steps = cfg.grpo.start_format, grpo_models(cfg, paths, name, seed, "val")
    frames = predict_many(cfg, paths, [(tag, model, "val", fmt) for _, tag, model in steps])
    return {step: frame for (step, _, _), frame in zip(steps, frames)}


def score_checkpoints(cfg: Config, paths: RunPaths, reward: str, seed: int) -> pd.DataFrame:
    """Validation scores of the SFT start and of every checkpoint of one GRPO run (``reward`` is the run name)
    and seed, best-F1 and final marked; written to the run's ``checkpoint_scores.csv``."""
    rows = [{"step": step, "checkpoint": "sft" if step == 0 else checkpoint_name(step), **scores(frame, cfg)}
            for step, frame in checkpoint_predictions(cfg, paths, reward, seed).items()]
    table = pd.DataFrame(rows).assign(reward=reward, seed=seed)
    grpo_rows = table.loc[table["step"] > 0]
    table["is_best_f1"] = table.index == grpo_rows["macro_f1"].idxmax() if len(grpo_rows) else False
    table["is_final"] = table["step"] == table["step"].max()
    table.to_csv(paths.checkpoint_scores(reward, seed), index=False)
    return table


def checkpoint_scores(cfg: Config, paths: RunPaths, names: list[str] | None = None) -> pd.DataFrame:
    """``score_checkpoints`` for every reward run (or ``names``) and training seed, one long table; the
    predictions of all of them run first as independent processes."""
    names = list(cfg.grpo.rewards) if names is None else names
    fmt = cfg.grpo.start_format
    predict_many(cfg, paths, [(tag, model, "val", fmt) for name in names for s in training_seeds(cfg)
                              for _, tag, model in grpo_models(cfg, paths, name, s, "val")])
    return pd.concat([score_checkpoints(cfg, paths, name, s) for name in names for s in training_seeds(cfg)],
                     ignore_index=True)


def reward_strategy_table(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """``reward_analysis.strategy_rewards`` on the validation truth sets; the constant strategy answers the most
    frequent label set of the SFT and RL selections (the training data GRPO sees)."""
    train_truths = [list(t) for name in ("sft", "rl") for t in load_manifest(paths, name)["truth"]]
    truths = [list(t) for t in load_manifest(paths, "val")["truth"]]
    hard = resolve_length_threshold(cfg, paths, cfg.grpo).hard
    return reward_analysis.strategy_rewards(truths, pool_prevalence(paths), reward_analysis.mode_label_set(train_truths),
                                            hard, cfg.grpo.nuanced)


def answer_statistics_table(cfg: Config, paths: RunPaths, runs_by_reward: dict[str, dict[int, grpo.GRPORun]]) -> pd.DataFrame:
    """``reward_analysis.answer_statistics`` for every run (reward -> seed -> run), long form."""
    prevalence = pool_prevalence(paths)
    frames = [reward_analysis.answer_statistics(checkpoint_predictions(cfg, paths, reward, seed), prevalence)
              .assign(reward=reward, seed=seed)
              for reward, runs in runs_by_reward.items() for seed, run in runs.items()]
    return pd.concat(frames, ignore_index=True)


def grpo_worked_example(cfg: Config, paths: RunPaths, run: grpo.GRPORun) -> tuple[pd.DataFrame, dict]:
    """The first group the frozen SFT policy sampled in a GRPO run's control (one image, ``num_generations``
    completions) scored by both rewards, with the advantages trl computes under the run's ``scale_rewards``
    (``"batch"``: over every completion of that step's control batch), and that image's path and truth (and, for
    ``"batch"``, that batch's rewards: reward -> totals; None otherwise)."""
    path = run.out_dir / RunPaths.CONTROL / RunPaths.CONTROL_COMPLETIONS
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the worked example needs the run's control (grpo.frozen_control)")
    comps = pd.read_parquet(path)
    batch = comps.loc[comps["step"] == comps["step"].min()]
    group = batch.iloc[:cfg.grpo.num_generations]
    manifest = load_manifest(paths, "rl")
    truths = {in_run(paths, p): list(t) for p, t in zip(manifest["image_path"], manifest["truth"])}
    images = [in_run(paths, p) for p in manifest["image_path"]]
    row = manifest.iloc[images.index(group["image_path"].iloc[0])]
    truth = list(row["truth"])
    tokenizer = models.load_processor(base_model(cfg, paths, "medical")).tokenizer

    def lengths(texts):
        return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    g = resolve_length_threshold(cfg, paths, cfg.grpo)
    prevalence, think = pool_prevalence(paths), prompts.requires_think(g.start_format)
    batch_rewards = None
    if g.scale_rewards == "batch":
        scored = [reward_analysis.worked_example(list(b["completion"]), lengths(b["completion"]),
                                                 truths[b["image_path"].iloc[0]], prevalence, g.hard, g.nuanced,
                                                 think, "none")
                  for _, b in batch.groupby(np.arange(len(batch)) // cfg.grpo.num_generations)]
        batch_rewards = {r: [v for t in scored for v in t[r]] for r in ("hard", "nuanced")}
    table = reward_analysis.worked_example(list(group["completion"]), lengths(group["completion"]), truth, prevalence,
                                           g.hard, g.nuanced, think, g.scale_rewards, batch_rewards)
    return table, {"image_path": row["image_path"], "truth": truth,
                   "length_threshold": g.hard.length_threshold, "scale_rewards": g.scale_rewards,
                   "batch_rewards": batch_rewards}


def trl_arguments(cfg: Config) -> pd.DataFrame:
    """The trl GRPO arguments of this profile beside the paper profile's, as ``grpo.trl_config`` builds them."""
    return grpo.argument_table(cfg.grpo, load_profile("paper").grpo, models.device_and_dtype(cfg.device)[0])


def scored_completion(cfg: Config, paths: RunPaths, name: str, seed: int,
                      index: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Completion ``index`` (in trl's logging order; None: the first that keeps the output contract, else the first)
    of one GRPO run of ``grpo_plan``, scored term by term by its reward (``reward_analysis.term_by_term``) beside
    what trl logged, and its index, step, image, truth and text."""
    reward, grpo_cfg = grpo_plan(cfg)[name]
    comps = grpo.completions_table(paths.grpo_run(name, seed))
    if index is None:
        think = prompts.requires_think(grpo_cfg.start_format)
        valid = [prompts.parse_output(prompts.completion_text(c), think).valid for c in comps["completion"]]
        index = valid.index(True) if any(valid) else 0
    if not 0 <= index < len(comps):
        raise IndexError(f"completion {index}: {paths.grpo_run(name, seed)}/completions holds {len(comps)}")
    g = resolve_length_threshold(cfg, paths, grpo_cfg)
    manifest = load_manifest(paths, "rl")
    truths = {in_run(paths, p): list(t) for p, t in zip(manifest["image_path"], manifest["truth"])}
    row = comps.iloc[index]
    text = prompts.completion_text(row["completion"])
    tokenizer = models.load_processor(base_model(cfg, paths, "medical")).tokenizer   # SFT keeps the base's tokenizer
    # trl counts a completion's tokens with its end-of-sequence token, absent only when it was cut at the maximum
    tokens = min(len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1, g.max_completion_length)
    length = tokens if g.hard.length_unit == "tokens" else len(text)
    table = reward_analysis.term_by_term(comps, index, truths[row["image_path"]], reward, length, g.hard, g.nuanced,
                                         pool_prevalence(paths), prompts.requires_think(g.start_format))
    return table, {"reward": reward, "index": index, "step": int(row["step"]), "image_path": row["image_path"],
                   "truth": truths[row["image_path"]], "completion": text, "length": length}
