"""Coverage of ``metrics.seed_image_interval`` on synthetic experiments with a known effect.

Each experiment: per-image effects x[s, i] = mu + a_s + u_i + v_si (a_s: training-seed effect; u_i: image noise
shared by every seed, because all seeds are scored on the same images; v_si: seed-specific image noise); the
effect is the mean over images, its image level a multinomial bootstrap shared by the seeds, as in
``metrics.seed_image_ci``. Vectorised over experiments, numpy only.
"""
import numpy as np
import pytest

from chexreason_utils.evaluation import metrics

MU, N_IMAGES, N_BOOT, N_EXPERIMENTS = 0.05, 80, 200, 4000
REGIMES = {"seed variance dominates": (0.05, 0.02, 0.02),       # sd of a_s, u_i, v_si
           "image noise dominates": (0.002, 0.25, 0.10)}


def coverage(n_seeds: int, sd_seed: float, sd_shared: float, sd_own: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits, chunk = 0, 500
    for _ in range(N_EXPERIMENTS // chunk):
        x = (MU + rng.normal(0, sd_seed, (chunk, n_seeds, 1)) + rng.normal(0, sd_shared, (chunk, 1, N_IMAGES))
             + rng.normal(0, sd_own, (chunk, n_seeds, N_IMAGES)))
        w = rng.multinomial(N_IMAGES, np.full(N_IMAGES, 1 / N_IMAGES), size=(chunk, N_BOOT)) / N_IMAGES
        boots = np.einsum("ebi,esi->esb", w, x)
        ci = metrics.seed_image_interval(x.mean(axis=-1), boots)
        hits += int(((ci["lo"] <= MU) & (MU <= ci["hi"])).sum())
    return hits / N_EXPERIMENTS


@pytest.mark.parametrize("n_seeds", [3, 5])
@pytest.mark.parametrize("regime", list(REGIMES))
def test_the_95_interval_covers_the_true_effect(n_seeds, regime):
    c = coverage(n_seeds, *REGIMES[regime])
    print(f"\ncoverage of the 95% seed x image interval, {n_seeds} seeds, {regime}: {c:.1%} "
          f"({N_EXPERIMENTS} experiments)")
    assert 0.93 <= c <= 0.97, c


def test_seeds_only_and_one_seed():
    """No image level: the plain t-interval over seeds; one seed: the image bootstrap alone, no seed level."""
    r = metrics.seed_image_ci(lambda s, w: [0.1, 0.2, 0.3][s], 3, (), n_boot=100)
    assert r["effect"] == pytest.approx(0.2) and r["var_images"] == 0 and r["df"] == 2
    assert r["hi"] - 0.2 == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    one = metrics.seed_image_interval([0.3], np.array([[0.2, 0.4]]))
    assert not one["seed_level"] and one["var_images"] == pytest.approx(0.02) and one["df"] == np.inf
    assert metrics.seeds_for_half_width(0.01 / 3, 3, 0.0, 0.05) > 3
    assert metrics.seeds_for_half_width(0.0001, 3, 0.01, 0.1) is None     # images alone: half-width 0.196
