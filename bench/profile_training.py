"""cProfile of one short SFT run and a few GRPO steps on an existing run directory (stages 00-02 done):
the functions that cost the most, to decide what to speed up.

    python bench/profile_training.py --profile tiny                       # runs/tiny
    python bench/profile_training.py --profile smoke --run-dir /tmp/run   # a smoke run made elsewhere

Profile with nothing else running on the machine; torch's own kernels show up as the Python calls around them.
"""
import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chexreason_utils.train import sft  # noqa: E402
from chexreason_utils.config import load_profile  # noqa: E402
from chexreason_utils.train.model_registry import base_model  # noqa: E402
from chexreason_utils.paths import RunPaths  # noqa: E402
from chexreason_utils.training_runs import grpo as grpo_runs, sft as sft_runs  # noqa: E402


def profiled(label: str, fn, top: int) -> None:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(fn)
    print(f"\n===== {label}: {time.perf_counter() - t0:.1f} s wall")
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="tiny")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--sft-steps", type=int, default=20)
    p.add_argument("--grpo-steps", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    cfg = load_profile(args.profile)
    paths = RunPaths.for_profile(cfg.profile, args.run_dir)
    fmt, seed = cfg.grpo.start_format, cfg.seeds[0]
    if not (paths.sft_model("medical", fmt, seed) / "config.json").exists():
        sys.exit(f"no SFT model at {paths.sft_model('medical', fmt, seed)}: run stages 00-02 of profile {cfg.profile} first")
    train, held_out = sft_runs.sft_datasets(cfg, paths, fmt)
    sft_cfg = replace(cfg.sft, max_steps=args.sft_steps, eval_steps=args.sft_steps)
    grpo_cfg = replace(cfg.grpo, max_steps=args.grpo_steps, save_steps=args.grpo_steps)
    with tempfile.TemporaryDirectory() as tmp:
        profiled(f"SFT medical/{fmt}, {args.sft_steps} steps", lambda: sft.train_sft(
            base_model(cfg, paths, "medical", seed), train, held_out, Path(tmp) / "sft", sft_cfg,
            full_finetune=not cfg.sft.use_lora, seed=seed, device=cfg.device), args.top)
        profiled(f"GRPO hard, {args.grpo_steps} steps", lambda: grpo_runs.run_grpo(
            cfg, paths, grpo_runs.grpo_inputs(cfg, paths, "hard", seed, grpo_cfg), Path(tmp) / "grpo"), args.top)


if __name__ == "__main__":
    main()
