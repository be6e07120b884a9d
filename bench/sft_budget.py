"""How many SFT steps the tiny profile needs (issue 36, "find the time"): every format of both models trained from a
finished run's own bases of one training seed with a smaller ``sft.max_steps``, scored on the VALIDATION set only
(macro-F1 as 04 scores it), beside the run's own SFT models of that seed (the profile's budget, their 04 scores).

    python bench/sft_budget.py --run-dir runs/tiny --steps 100

The rule, fixed before the first measurement: the profile keeps its budget unless a smaller one gives, for the
seed, (i) the medical model's macro-F1 in free_reasoning and only_label at least the profile's value - 0.02 each,
and (ii) no format of either model more than 0.02 below the profile's value; the smallest such budget is taken.
Nothing is written into the run: the runs go to ``--out`` (default a temporary folder).
"""
import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vision_pretraining import validation_macro  # noqa: E402
from chexreason_utils.config import load_profile  # noqa: E402
from chexreason_utils.evaluation import scores  # noqa: E402
from chexreason_utils.jobs import run_jobs  # noqa: E402
from chexreason_utils.paths import RunPaths  # noqa: E402
from chexreason_utils.train.model_registry import ROLES  # noqa: E402
from chexreason_utils.training_runs.sft import run_sft  # noqa: E402

TOLERANCE = 0.02
GATED = ("free_reasoning", "only_label")   # the medical formats part (a) of the competence gate reads


def one(cfg, paths: RunPaths, role: str, fmt: str, seed: int, out: Path) -> dict:
    t0 = time.time()
    result = run_sft(cfg, paths, role, fmt, seed, out_dir=out / f"{role}-{fmt}")
    f1, valid = validation_macro(cfg, paths, result.out_dir, fmt, out / f"val-{role}-{fmt}.jsonl")
    return {"steps": cfg.sft.max_steps, "model": role, "format": fmt, "val_macro_f1": f1, "valid": valid,
            "seconds": round(time.time() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a run directory whose stages 00-04 are done")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--steps", nargs="+", type=int, default=[100])
    p.add_argument("--seed", type=int, default=None, help="training seed (default: the profile's first)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    cfg = load_profile(args.profile)
    paths = RunPaths.for_profile(cfg.profile, args.run_dir)
    seed = cfg.seeds[0] if args.seed is None else args.seed
    frame = scores.read_scores(paths.scores_file)
    own = scores.select(frame, dataset="validation", stage="sft", label="macro", aggregate=scores.SEED)
    own = own.loc[own["seed"] == seed]
    rows = [{"steps": cfg.sft.max_steps, "model": r.model, "format": r.name, "val_macro_f1": r.f1,
             "valid": 1 - r.fail_rate, "seconds": float("nan")} for r in own.itertuples()]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for steps in args.steps:
            scfg = replace(cfg, sft=replace(cfg.sft, max_steps=steps))
            jobs = [dict(cfg=scfg, paths=paths, role=role, fmt=fmt, seed=seed, out=out / f"steps-{steps}")
                    for role in ROLES for fmt in cfg.sft.formats]
            rows += run_jobs(one, jobs, cfg.workers)
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index=["model", "format"], columns="steps", values="val_macro_f1")
    print(f"{cfg.profile} run {paths.root}, seed {seed}, validation only ({wide.columns.max()} = the run's own SFT)")
    print(table.round(3).to_string(index=False))
    print("\nvalidation macro-F1:\n" + wide.round(3).to_string())
    full = wide[cfg.sft.max_steps]
    for steps in sorted(args.steps):
        drop = full - wide[steps]
        gated = all(drop[("medical", f)] <= TOLERANCE for f in GATED if ("medical", f) in drop)
        print(f"{steps} steps: largest drop {drop.max():+.3f}; rule {'met' if gated and drop.max() <= TOLERANCE else 'not met'}")


if __name__ == "__main__":
    main()
