"""Figure functions: what a figure draws must not depend on what ran before it."""
import io

import numpy as np
import pandas as pd

from chexreason_utils.report import figures, plotting


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _variants() -> pd.DataFrame:
    rows = [{"model": model, "variant": variant, "seed": seed, "micro_f1": f1, "fail_rate": fail}
            for model, shift in (("medical", 0.0), ("general", -0.3))
            for variant, f1s in (("self_check", (0.61, 0.68, 0.09)), ("hypothesis", (0.61, 0.69, 0.55)))
            for seed, f1, fail in zip(range(3), f1s, (0.18, 0.12, 0.95))
            for f1 in [max(f1 + shift, 0.0)]]
    return pd.DataFrame(rows)


def test_prompt_variants_draws_the_same_bytes_whatever_the_global_random_state():
    """Three seeds per bar: seaborn's default error bar bootstraps them with the global random state (a cached
    rerun drew other whiskers than a clean run). Bars are the seeds' means, dots the seeds."""
    plotting.set_style()
    table = _variants()
    np.random.seed(0)
    first = _png(figures.prompt_variants(table)[0])
    np.random.seed(12345)
    np.random.random(1000)
    assert _png(figures.prompt_variants(table)[0]) == first
    fig, _ = figures.prompt_variants(table)
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches if p.get_height() > 0)
    means = sorted(round(v, 6) for v in table.groupby(["model", "variant"])["micro_f1"].mean())
    assert heights == means
    assert not fig.axes[0].lines   # no whiskers


def test_subgroups_draws_the_same_bytes_whatever_the_global_random_state():
    """Its seed dots sit on the bar's centre line: seaborn's jitter would draw them with the global random state."""
    plotting.set_style()
    table = pd.DataFrame([{"model": model, "seed": seed, "group": group, "value": value, "n": 50,
                           "macro_f1": 0.3 + 0.05 * seed - (0.1 if model == "general" else 0.0)}
                          for model in ("medical", "general") for seed in range(3)
                          for group, values in (("sex", ("F", "M")), ("age band", ("<40", "40+")))
                          for value in values])
    np.random.seed(0)
    first = _png(figures.subgroups(table)[0])
    np.random.seed(7)
    assert _png(figures.subgroups(table)[0]) == first
