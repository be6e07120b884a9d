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


SLOPE, DOSES = 0.03, [0.0, 1.0, 2.0]   # E1: a known slope per tripling at log3(steps / 40) = 0, 1, 2
SLOPE_REGIMES = {"seed slopes vary": (0.02, 0.03, 0.02, 0.02), "image noise dominates": (0.002, 0.002, 0.25, 0.15)}


def slope_coverage(sd_seed: float, sd_seed_slope: float, sd_image: float, sd_own: float, n_seeds: int = 3,
                   n_experiments: int = 1500, seed: int = 1) -> float:
    """Per image, seed and dose: SLOPE * x + a_s + b_s x + u_i + c_i x + v_sdi (u, c shared by the seeds: the same
    images); ``metrics.slope_ci`` of the image mean, share of 95% intervals holding SLOPE."""
    rng, x, hits = np.random.default_rng(seed), np.array(DOSES), 0
    for _ in range(n_experiments):
        a, b = rng.normal(0, sd_seed, (n_seeds, 1, 1)), rng.normal(0, sd_seed_slope, (n_seeds, 1, 1))
        u, c = rng.normal(0, sd_image, (1, 1, N_IMAGES)), rng.normal(0, sd_image, (1, 1, N_IMAGES))
        y = (SLOPE + b + c) * x[None, :, None] + a + u + rng.normal(0, sd_own, (n_seeds, len(x), N_IMAGES))
        ci = metrics.slope_ci(lambda d, s, w: w @ y[s, d] / w.sum(axis=1), DOSES, n_seeds, N_IMAGES, N_BOOT,
                              int(rng.integers(1 << 31)))
        hits += int(ci["lo"] <= SLOPE <= ci["hi"])
    return hits / n_experiments


@pytest.mark.parametrize("regime", list(SLOPE_REGIMES))
def test_the_slope_interval_covers_the_true_slope(regime):
    c = slope_coverage(*SLOPE_REGIMES[regime])
    print(f"\ncoverage of E1's 95% slope interval, 3 seeds, {regime}: {c:.1%} (1500 experiments)")
    assert 0.925 <= c <= 0.975, c


def test_slope_of_a_line_and_its_limits():
    assert metrics.ls_slope([0, 1, 2], np.array([[1.0, 1.5, 2.0], [3.0, 2.0, 1.0]])) == pytest.approx([0.5, -1.0])
    with pytest.raises(ValueError, match="two distinct"):
        metrics.ls_slope([1, 1], np.array([0.0, 1.0]))
