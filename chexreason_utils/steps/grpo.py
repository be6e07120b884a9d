"""Stage 03 (GRPO): the runs of every reward (and the 06 ablation) and training seed (``training_runs.grpo``), validation
scores of every checkpoint, and the reward tables: answer strategies, answer statistics,
a worked example of one group, the trl arguments beside the paper's, and one logged completion term by term."""
from __future__ import annotations

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
from ..train.model_registry import processor_source
from ..paths import RunPaths, checkpoint_name
from ..queries.predictions import predict_many
from ..queries.stage_outputs import grpo_models, pool_prevalence
from ..training_runs.grpo import grpo_plan, plan_inputs, resolve_length_threshold, run_grpo


def _grpo_job(cfg: Config, paths: RunPaths, name: str, seed: int) -> grpo.GRPORun:
    return run_grpo(cfg, paths, plan_inputs(cfg, paths, name, seed), paths.grpo_run(name, seed))


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
    tokenizer = models.load_processor(processor_source(cfg, paths, "medical")).tokenizer

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
    tokenizer = models.load_processor(processor_source(cfg, paths, "medical")).tokenizer   # SFT keeps the base's tokenizer
    # trl counts a completion's tokens with its end-of-sequence token, absent only when it was cut at the maximum
    tokens = min(len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1, g.max_completion_length)
    length = tokens if g.hard.length_unit == "tokens" else len(text)
    table = reward_analysis.term_by_term(comps, index, truths[row["image_path"]], reward, length, g.hard, g.nuanced,
                                         pool_prevalence(paths), prompts.requires_think(g.start_format))
    return table, {"reward": reward, "index": index, "step": int(row["step"]), "image_path": row["image_path"],
                   "truth": truths[row["image_path"]], "completion": text, "length": length}
