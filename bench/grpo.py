"""GRPO seconds per step and peak memory on the tiny profile (needs `make figures` to have run 00-02)."""
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from chexreason_utils.training_runs import grpo as grpo_runs
from chexreason_utils.config import load_profile
from chexreason_utils.paths import RunPaths


def main(steps: int = 8) -> None:
    cfg = load_profile("tiny")
    paths = RunPaths.for_profile("tiny")
    if not (paths.sft_model("medical", cfg.grpo.start_format, cfg.seeds[0]) / "config.json").exists():
        sys.exit(f"no SFT checkpoint under {paths.sft}: run `make figures` (or stages 00-02) first")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        inputs = grpo_runs.grpo_inputs(cfg, paths, "hard", cfg.seeds[0],
                                       replace(cfg.grpo, max_steps=steps, save_steps=steps))
        run = grpo_runs.run_grpo(cfg, paths, inputs, Path(tmp))
        wall = time.perf_counter() - t0
    runtime = run.log["train_runtime"].dropna().iloc[-1] if "train_runtime" in run.log else wall
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    g = cfg.grpo
    print(f"GRPO tiny: {runtime / steps:.2f} s/step over {steps} steps ({g.prompts_per_step} prompts x "
          f"{g.num_generations} generations, up to {g.max_completion_length} new tokens); "
          f"wall with model load {wall:.1f} s; peak resident memory {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
