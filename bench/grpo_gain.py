"""Paired GRPO gain (policy - frozen-policy control on the same batches) per quarter, both rewards, over seeds.

Tiny profile, from the Free-Reasoning SFT checkpoint of `make figures` (stages 00-02 must have run). Each
(reward, seed) GRPO run is an independent process (``jobs.run_jobs``), cached under
``runs/tiny/bench/grpo_gain/<reward>/seed-<s>/``. The seed drives GRPO only (sampling, batch order); the SFT
start is the profile's. Measured, never tuned: the profile's world, rewards and hyperparameters as they are.

    python bench/grpo_gain.py [--seeds 21,22,23] [--workers 0] [--run-dir runs/tiny]
"""
import argparse
import sys
from dataclasses import replace

import pandas as pd

from chexreason_utils import jobs, reward_analysis
from chexreason_utils.config import load_profile
from chexreason_utils.paths import RunPaths
from chexreason_utils.steps import grpo as grpo_steps


def one_run(reward: str, seed: int, run_dir: str | None = None):
    cfg = load_profile("tiny")
    paths = RunPaths.for_profile("tiny", run_dir or None)
    return grpo_steps.run_grpo(cfg, paths, reward, out_dir=paths.root / "bench" / "grpo_gain" / reward / f"seed-{seed}",
                               grpo_cfg=replace(cfg.grpo, seed=seed))


def parse_seeds(text: str) -> list[int]:
    seeds = [int(s) for s in text.split(",") if s.strip()]
    if not seeds:
        raise SystemExit("--seeds is empty: give at least one seed, e.g. --seeds 21,22,23")
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds repeats a seed: {text}")
    return seeds


def main() -> None:
    cfg = load_profile("tiny")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(str(cfg.grpo.seed + i) for i in range(3)))
    parser.add_argument("--workers", type=int, default=cfg.workers, help="processes (0: one per core)")
    parser.add_argument("--run-dir", default="", help="run directory (default: runs/tiny)")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    paths = RunPaths.for_profile("tiny", args.run_dir or None)
    if not (paths.sft_model("medical", cfg.grpo.start_format) / "config.json").exists():
        sys.exit(f"no SFT checkpoint under {paths.sft}: run `make figures` (or stages 00-02) first")
    todo = [{"reward": r, "seed": s, "run_dir": args.run_dir} for r in cfg.grpo.rewards for s in seeds]
    done = jobs.run_jobs(one_run, todo, args.workers)
    runs: dict = {}
    for job, run in zip(todo, done):
        runs.setdefault(job["reward"], {})[job["seed"]] = run
    table = reward_analysis.gain_by_quarter(runs)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(f"tiny profile, {cfg.grpo.max_steps} GRPO steps, seeds {seeds} (GRPO seed only; one SFT start)")
        print(table.to_string(index=False))
    for reward in runs:
        print(reward_analysis.gain_sentence(table, reward))


if __name__ == "__main__":
    main()
