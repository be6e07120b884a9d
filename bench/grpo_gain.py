"""Paired GRPO gain (policy - frozen-policy control on the same batches) per quarter, both rewards, with its band
over the training seeds, and the sentence 03 prints from it.

Reads the GRPO runs of a finished run directory (default ``runs/tiny``, made by `make figures`); a missing run is
trained (each one an independent process, ``jobs.run_jobs``). Measured, never tuned: the profile's world, rewards
and hyperparameters as they are.

    python bench/grpo_gain.py [--profile tiny] [--run-dir runs/tiny]
"""
import argparse
import sys

import pandas as pd

from chexreason_utils.evaluation import reward_analysis
from chexreason_utils.config import load_profile, training_seeds
from chexreason_utils.paths import RunPaths
from chexreason_utils.steps import grpo as grpo_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--run-dir", default="", help="run directory (default: runs/<profile>)")
    args = parser.parse_args()
    cfg = load_profile(args.profile)
    paths = RunPaths.for_profile(cfg.profile, args.run_dir or None)
    seeds = training_seeds(cfg)
    missing = [s for s in seeds if not (paths.sft_model("medical", cfg.grpo.start_format, s) / "config.json").exists()]
    if missing:
        sys.exit(f"no Free-Reasoning SFT model for seeds {missing} under {paths.sft}: run `make figures` (or 00-02) first")
    runs = {reward: by_seed for reward, by_seed in grpo_steps.grpo_runs(cfg, paths).items() if reward in cfg.grpo.rewards}
    table = reward_analysis.gain_by_quarter(runs)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(f"profile {cfg.profile}, {cfg.grpo.max_steps} GRPO steps, training seeds {seeds}")
        print(table.to_string(index=False))
    for reward in runs:
        print(reward_analysis.gain_sentence(table, reward))


if __name__ == "__main__":
    main()
