"""Batched evaluation vs a one-image-at-a-time loop on the same tiny model and manifest."""
import sys
import tempfile
import time
from pathlib import Path

from chexreason_utils import evaluate, pipeline
from chexreason_utils.config import load_profile
from chexreason_utils.paths import RunPaths


def main() -> None:
    cfg = load_profile("tiny")
    paths = RunPaths.for_profile("tiny")
    model = paths.sft_model("medical", "free_reasoning", cfg.seeds[0])
    if not (model / "config.json").exists():
        sys.exit(f"no SFT checkpoint at {model}: run `make figures` (or stages 00-02) first")
    images = pipeline.load_manifest(paths, "val")[["image_id", "image_path"]]
    timings, preds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for bs in (1, cfg.evaluation.batch_size):
            t0 = time.perf_counter()
            preds[bs] = evaluate.predict(model, images, "free_reasoning", Path(tmp) / f"b{bs}.jsonl", batch_size=bs,
                                         max_new_tokens=cfg.evaluation.max_new_tokens, device="cpu", progress=False)
            timings[bs] = time.perf_counter() - t0
    one, many = timings[1], timings[cfg.evaluation.batch_size]
    same_labels = (preds[1]["labels"].map(tuple) == preds[cfg.evaluation.batch_size]["labels"].map(tuple)).mean()
    same_raw = (preds[1]["raw"] == preds[cfg.evaluation.batch_size]["raw"]).mean()
    print(f"{len(images)} images: one at a time {one:.1f} s ({len(images) / one:.1f} img/s), batch "
          f"{cfg.evaluation.batch_size} {many:.1f} s ({len(images) / many:.1f} img/s): {one / many:.1f}x faster (aim >= 8x)")
    print(f"identical parsed labels: {same_labels:.1%}; identical raw text: {same_raw:.1%}")


if __name__ == "__main__":
    main()
