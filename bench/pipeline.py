"""Where the time goes: run a profile on a fresh run directory, then tabulate per stage and per training run
the timing records the library wrote while it ran (``chexreason_utils.run_records``), and the seconds a fresh process
takes to import the stage steps (what every stage's kernel pays once, before its first step).

    python bench/pipeline.py                    # tiny profile (make figures), about 15 min on 2 cores
    python bench/pipeline.py --profile smoke    # the test profile, a few minutes
    python bench/pipeline.py -p workers=1       # any profile override, as for the runner
    python bench/pipeline.py --tabulate runs/tiny   # only the tables, from a finished run (e.g. `make figures`)

Measure with nothing else running on the machine: two torch jobs on 2 cores slow each other by up to 7x.
Phases that run in parallel worker processes add up over processes, so a stage's phases can sum to more than
its wall time ("other" is then negative).
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chexreason_utils.run_records import timing_records  # noqa: E402

# Columns of the stage table: phase names of the timing records -> column.
STAGE_COLUMNS = {"start": "kernel start", "load": "load", "build": "trainer build",
                 "train.steps": "train steps", "train.eval": "train eval", "train.checkpoint": "checkpoints",
                 "preprocess": "eval preprocess", "generate": "eval generate", "save": "save"}
TRAIN_COLUMNS = {"load": "load", "build": "trainer build", "train.steps": "steps", "train.rollout": "of which rollout",
                 "train.generate": "of which generate", "train.eval": "eval", "train.checkpoint": "checkpoints",
                 "save": "save"}


def stage_table(records: pd.DataFrame, walls: dict[str, float]) -> pd.DataFrame:
    table = records.pivot_table(index="stage", columns="phase", values="seconds", aggfunc="sum", fill_value=0.0)
    table = table.reindex(columns=list(STAGE_COLUMNS), fill_value=0.0).rename(columns=STAGE_COLUMNS)
    table.insert(0, "wall", pd.Series(walls))
    table["other"] = table["wall"] - table.drop(columns="wall").sum(axis=1)
    table = table.reindex(sorted(walls))
    table.loc["total"] = table.sum()
    return table


def training_table(records: pd.DataFrame) -> pd.DataFrame:
    runs = records.loc[records["task"].str.match(r"^(SFT|GRPO) ")]
    table = runs.pivot_table(index=["stage", "task"], columns="phase", values="seconds", aggfunc="sum", fill_value=0.0)
    table = table.reindex(columns=list(TRAIN_COLUMNS), fill_value=0.0).rename(columns=TRAIN_COLUMNS)
    table["total"] = table[["load", "trainer build", "steps", "eval", "checkpoints", "save"]].sum(axis=1)
    return table


def prediction_table(records: pd.DataFrame) -> pd.DataFrame:
    preds = records.loc[records["task"].str.match(r"^(predict|sample validity) ")]
    table = preds.pivot_table(index="stage", columns="phase", values="seconds", aggfunc="sum", fill_value=0.0)
    table.insert(0, "runs", preds.loc[preds["phase"] == "load"].groupby("stage").size())
    return table


def import_seconds() -> float:
    """Seconds a fresh Python process takes to import ``chexreason_utils.steps`` (torch, transformers, trl, ...)."""
    code = "import time; t0 = time.perf_counter(); import chexreason_utils.steps; print(time.perf_counter() - t0)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="tiny")
    p.add_argument("--run-dir", default=None, help="fresh run directory (default: a temporary one, removed)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tabulate", metavar="RUN_DIR", help="tabulate a finished run instead of running one")
    args = p.parse_args()
    if args.tabulate:
        run_dir = Path(args.tabulate)
        walls = {k: v["wall_s"] for k, v in json.loads((run_dir / "manifest.json").read_text())["stages"].items()}
        print_tables(args.profile, args.param, pd.DataFrame(timing_records(run_dir / "logs")), walls, None)
        return
    with tempfile.TemporaryDirectory(prefix="chexreason-bench-") as tmp:
        run_dir = Path(args.run_dir or tmp)
        if run_dir.exists() and any(run_dir.iterdir()):
            sys.exit(f"{run_dir} is not empty: the benchmark needs a fresh run directory")
        cmd = [sys.executable, "-m", "chexreason_utils", "run", "--profile", args.profile, "--run-dir", str(run_dir),
               "--figure-dir", str(run_dir / "figures"), *[a for kv in args.param for a in ("-p", kv)]]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True)
        total = time.perf_counter() - t0
        walls = {k: v["wall_s"] for k, v in json.loads((run_dir / "manifest.json").read_text())["stages"].items()}
        records = pd.DataFrame(timing_records(run_dir / "logs"))
    print_tables(args.profile, args.param, records, walls, total)


def print_tables(profile: str, params: list[str], records: pd.DataFrame, walls: dict[str, float],
                 total: float | None) -> None:
    pd.set_option("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60)
    print(f"\nprofile {profile}, overrides {params or 'none'}: seconds per stage and phase")
    print(stage_table(records, walls).round(1).to_string())
    print("\nper training run (steps include GRPO's rollouts: generation, rewards, reference log-probs)")
    print(training_table(records).round(1).to_string())
    print("\nprediction loops per stage (greedy evaluation and sampled validity)")
    print(prediction_table(records).round(1).to_string())
    if total is not None:
        print(f"\ntotal: {total:.1f} s for `python -m chexreason_utils run` (process start included)")
    print(f"stages: {sum(walls.values()):.1f} s")
    print(f"importing the stage steps in a fresh process: {import_seconds():.1f} s (each stage's kernel, once)")


if __name__ == "__main__":
    main()
