"""Phantom world generation speed: images per second for the tiny profile's world (prints figures)."""
import tempfile
import time

from chexreason_utils.config import load_profile
from chexreason_utils.data.phantom import generate_world


def main() -> None:
    cfg = load_profile("tiny").world
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        card = generate_world(tmp, cfg, force=True)
        wall = time.perf_counter() - t0
    counts = card["counts"]
    images = counts["mimic_images"] + counts["chexpert_test_images"] + counts["nih_images"] + 2 * cfg.n_pretrain
    print(f"tiny world: {images} images in {wall:.1f} s = {images / wall:.0f} images/s "
          f"(MIMIC-like {counts['mimic_images']}, CheXpert-like {counts['chexpert_test_images']}, "
          f"NIH-like {counts['nih_images']}, pretraining {2 * cfg.n_pretrain})")


if __name__ == "__main__":
    main()
