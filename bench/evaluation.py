"""Batched evaluation vs a one-image-at-a-time loop on the same model and manifest (target: >= 8x, identical
text), with the time split into image preprocessing and generation (the library's timing records).

    python bench/evaluation.py                                   # tiny: needs `make figures` (or stages 00-02)
    python bench/evaluation.py --profile smoke --run-dir /tmp/run
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chexreason_utils.evaluation import evaluate
from chexreason_utils import run_records  # noqa: E402
from chexreason_utils.data.manifests import load_manifest  # noqa: E402
from chexreason_utils.config import load_profile  # noqa: E402
from chexreason_utils.paths import RunPaths  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="tiny")
    p.add_argument("--run-dir", default=None)
    args = p.parse_args()
    cfg = load_profile(args.profile)
    paths = RunPaths.for_profile(cfg.profile, args.run_dir)
    model = paths.sft_model("medical", "free_reasoning", cfg.seeds[0])
    if not (model / "config.json").exists():
        sys.exit(f"no SFT checkpoint at {model}: run `make figures` (or stages 00-02) first")
    images = load_manifest(paths, "val")[["image_id", "image_path"]]
    big = cfg.evaluation.batch_size
    timings, preds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "logs").mkdir()
        os.environ[run_records.RECORDS_ENV] = str(Path(tmp) / "logs" / "timing.jsonl")
        for bs in (1, big):
            t0 = time.perf_counter()
            preds[bs] = evaluate.predict(model, images, "free_reasoning", Path(tmp) / f"b{bs}.jsonl", batch_size=bs,
                                         max_new_tokens=cfg.evaluation.max_new_tokens, device="cpu", progress=False)
            timings[bs] = time.perf_counter() - t0
        phases = {(r["task"], r["phase"]): r["seconds"] for r in run_records.timing_records(Path(tmp) / "logs")}
    one, many = timings[1], timings[big]
    same_labels = (preds[1]["labels"].map(tuple) == preds[big]["labels"].map(tuple)).mean()
    same_raw = (preds[1]["raw"] == preds[big]["raw"]).mean()
    print(f"{len(images)} images: one at a time {one:.1f} s ({len(images) / one:.1f} img/s), batch "
          f"{big} {many:.1f} s ({len(images) / many:.1f} img/s): {one / many:.1f}x faster (aim >= 8x)")
    for bs in (1, big):
        split = {ph: s for (task, ph), s in phases.items() if task == f"predict b{bs}"}
        print(f"  batch {bs}: " + ", ".join(f"{ph} {s:.1f} s" for ph, s in sorted(split.items())))
    print(f"identical parsed labels: {same_labels:.1%}; identical raw text: {same_raw:.1%}")


if __name__ == "__main__":
    main()
