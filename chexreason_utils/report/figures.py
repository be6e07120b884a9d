"""Figure makers: each returns ``(figure, data)`` where ``data`` is exactly what is plotted (saved as CSV)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image

from ..evaluation import reward_analysis
from ..data.phantom import read_findings
from ..data.records import FRONTAL_VIEWS
from ..train.trainer_log import log_rows
from ..labels import CHEXPERT_LABELS
from .plotting import PALETTE
from ..evaluation.reward_analysis import moving_average
from ..evaluation.scores import MEAN

if TYPE_CHECKING:
    from ..train.grpo import GRPORun


def world_examples(world_root: Path, per_site: int = 6) -> tuple[plt.Figure, pd.DataFrame]:
    """One phantom image per finding (MIMIC-like site), and a normal image of each site."""
    records = read_findings(world_root)
    picks, seen = [], set()
    for r in records:
        if r["view"] in FRONTAL_VIEWS and len(r["findings"]) == 1:
            f = next(iter(r["findings"]))
            if f not in seen and r["site"] == "mimic":
                seen.add(f)
                picks.append((f, r))
    for site in ("mimic", "chexpert", "nih", "padchest"):
        normal = next((r for r in records if r["site"] == site and not r["truth"]
                       and r["view"] not in ("LATERAL", "lateral", "L", "COSTAL")), None)
        if normal:
            picks.append((f"normal ({site})", normal))
    picks = picks[:18]
    cols = 6
    fig, axes = plt.subplots(int(np.ceil(len(picks) / cols)), cols, figsize=(cols * 1.8, 2.0 * np.ceil(len(picks) / cols)))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, (title, r) in zip(np.ravel(axes), picks):
        ax.imshow(Image.open(world_root / r["path"]), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig, pd.DataFrame([{"title": t, "site": r["site"], "path": r["path"]} for t, r in picks])


def label_prevalence(tables: pd.DataFrame) -> tuple[plt.Figure, pd.DataFrame]:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    sns.barplot(data=tables, x="label", y="fraction", hue="subset", ax=ax)
    ax.axhline(0.05, color="k", ls="--", lw=1, label="5% minimum")
    ax.set_xlabel("")
    ax.set_ylabel("fraction of images")
    ax.tick_params(axis="x", rotation=60)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, tables


def label_cooccurrence(labels: np.ndarray) -> tuple[plt.Figure, pd.DataFrame]:
    labels = np.asarray(labels, dtype=float)
    counts = labels.T @ labels
    frame = pd.DataFrame(counts, index=list(CHEXPERT_LABELS), columns=list(CHEXPERT_LABELS))
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    sns.heatmap(frame, annot=True, fmt=".0f", cmap="Blues", ax=ax, cbar=False, annot_kws={"size": 7})
    ax.set_title("label co-occurrence (images), SFT selection")
    fig.tight_layout()
    long = frame.reset_index(names="label_a").melt(id_vars="label_a", var_name="label_b", value_name="images")
    return fig, long


def sft_dynamics(curves: pd.DataFrame) -> tuple[plt.Figure, pd.DataFrame]:
    """Fig. 1: mean token accuracy and training loss vs step, one colour per format, one line per seed."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    kw = dict(data=curves, x="step", hue="format", units="seed", estimator=None, lw=1, alpha=0.7)
    sns.lineplot(y="mean_token_accuracy", ax=a, **kw)
    sns.lineplot(y="loss", ax=b, legend=False, **kw)
    a.set_title("mean token accuracy (one line per training seed)")
    b.set_title("training loss")
    fig.tight_layout()
    return fig, curves


def f1_by_step(table: pd.DataFrame, series: list[str], metrics_: list[str], ylabel: str) -> tuple[plt.Figure, pd.DataFrame]:
    """F1 vs GRPO step (step 0 = the SFT start): per group of ``series`` columns and metric, each training seed
    as a thin line and their mean as a thick one. The first series column picks the colour (the reward); the
    rest and the metric pick the line style."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    styles = iter(["-", "--", ":", "-."] * 8)
    style_of: dict = {}
    for key, t in table.groupby(series):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics_:
            ls = style_of.setdefault((key[1:], metric), next(styles))
            colour = PALETTE.get(key[0])
            for _, one in t.groupby("seed"):
                ax.plot(one["step"], one[metric], ls=ls, color=colour, lw=0.8, alpha=0.35)
            mean = t.groupby("step", as_index=False)[metric].mean()
            ax.plot(mean["step"], mean[metric], marker="o", ls=ls, color=colour,
                    label=" / ".join(map(str, key)) + f" {metric.replace('_', '-')} (mean; thin: seeds)")
    ax.set_xlabel("GRPO step (0 = SFT start)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, table


def _mean_and_seeds(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table's mean rows (``aggregate`` "mean", carrying lo / hi) from its per-seed rows."""
    is_mean = table["aggregate"] == MEAN
    return table.loc[is_mean], table.loc[~is_mean]


TEST_SET_TICKS = {"CheXpert": "CheXpert (in-ontology)", "NIH": "NIH (cross-dataset)",
                  "PadChest": "PadChest (cross-dataset,\nfiner ontology)"}


def headline(summary: pd.DataFrame) -> tuple[plt.Figure, pd.DataFrame]:
    """Macro-F1 per model on every test set of ``summary`` (CheXpert, NIH, PadChest where scored): bars = mean over training seeds with the 95% seed x image CI
    (``metrics.CI_METHOD``), dots = each seed; rows whose model starts "image-only CNN" (the supervised image
    reference) are hatched grey bars, rows whose model starts "baseline: " dashed reference lines (columns model,
    dataset, seed, macro_f1, lo, hi)."""
    is_baseline = summary["model"].str.startswith("baseline: ")
    mean, seeds = _mean_and_seeds(summary.loc[~is_baseline])
    sets = [d for d in TEST_SET_TICKS if (summary["dataset"] == d).any()]
    fig, ax = plt.subplots(figsize=(3 + 3 * len(sets), 5))
    models = list(dict.fromkeys(mean["model"]))
    width = 0.8 / len(models)
    baselines = summary.loc[is_baseline]
    for k, (name, t) in enumerate(baselines.groupby("model", sort=False)):
        t = t.set_index("dataset")
        for j, ds in enumerate(sets):
            ax.hlines(t.loc[ds, "macro_f1"], j - width / 2, j + 0.8 - width / 2, colors=f"C{k + 4}",
                      linestyles="--", linewidth=1.5, zorder=3, label=name if j == 0 else None)
    references = [m for m in models if m.startswith("image-only CNN")]
    for i, m in enumerate(models):
        t = mean.loc[mean["model"] == m].set_index("dataset").loc[sets]
        x = np.arange(len(sets)) + i * width
        if m in references:
            shade = ("0.82", "0.62")[references.index(m) % 2]
            ax.bar(x, t["macro_f1"], width, label=m, color=shade, hatch="//", edgecolor="0.35", linewidth=0.5)
        else:
            ax.bar(x, t["macro_f1"], width, label=m, color=PALETTE.get(m.split()[0].lower(), None))
        ax.errorbar(x, t["macro_f1"], yerr=[t["macro_f1"] - t["lo"], t["hi"] - t["macro_f1"]], fmt="none", ecolor="k", capsize=3)
        for j, ds in enumerate(sets):
            v = seeds.loc[(seeds["model"] == m) & (seeds["dataset"] == ds), "macro_f1"]
            ax.plot(np.full(len(v), x[j]), v, "o", color="k", ms=3, alpha=0.7)
    ax.set_xticks(np.arange(len(sets)) + width * (len(models) - 1) / 2, [TEST_SET_TICKS[d] for d in sets])
    ax.set_ylabel("macro-F1 (bars: mean over seeds, 95% CI;\ndots: seeds)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.tight_layout()
    return fig, summary


def per_label_heatmaps(tables: dict[str, pd.DataFrame]) -> tuple[plt.Figure, pd.DataFrame]:
    """One heatmap per test set of ``tables`` (test set -> per-label F1): rows = labels, columns = models."""
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 5.5), squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items()):
        sns.heatmap(t, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=False, annot_kws={"size": 7})
        ax.set_title(f"{name}: per-label F1")
    fig.tight_layout()
    data = pd.concat([t.assign(dataset=name) for name, t in tables.items()]).reset_index(names="label")
    return fig, data


def _seed_bars(ax: plt.Axes, data: pd.DataFrame, x: str, y: str) -> None:
    """Bars = the mean over training seeds per ``x`` and model, dots = each seed on the bar's centre line. No error
    bar and no jitter: seaborn draws both from the global random state, so the figure's bytes would follow whatever
    ran before it."""
    sns.barplot(data=data, x=x, y=y, hue="model", ax=ax, errorbar=None)
    sns.stripplot(data=data, x=x, y=y, hue="model", ax=ax, dodge=True, jitter=False, palette="dark:k", size=3,
                  legend=False)


def subgroups(table: pd.DataFrame) -> tuple[plt.Figure, pd.DataFrame]:
    """NIH macro-F1 per subgroup: bars = mean over training seeds, dots = each seed (columns model, seed, group,
    value, macro_f1, n)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, group in zip(axes, ("sex", "age band")):
        t = table.loc[table["group"] == group]
        _seed_bars(ax, t, "value", "macro_f1")
        ax.set_title(f"NIH macro-F1 by {group}")
        ax.set(xlabel="", ylabel="macro-F1 (bars: mean of seeds; dots: seeds)" if group == "sex" else "")
    fig.tight_layout()
    return fig, table


def scaffold_reversal(table: pd.DataFrame) -> tuple[plt.Figure, pd.DataFrame]:
    """Macro-F1 by SFT format for each model: bars = mean over training seeds with the 95% seed x image CI
    (``metrics.CI_METHOD``), dots = each seed (columns model, format, seed, macro_f1, lo, hi)."""
    mean, seeds = _mean_and_seeds(table)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    formats = list(dict.fromkeys(mean["format"]))
    for i, (model, t) in enumerate(mean.groupby("model", sort=False)):
        t = t.set_index("format").loc[formats]
        x = np.arange(len(formats)) + (i - 0.5) * 0.35
        ax.bar(x, t["macro_f1"], 0.35, label=model, color=PALETTE.get(model))
        ax.errorbar(x, t["macro_f1"], yerr=[t["macro_f1"] - t["lo"], t["hi"] - t["macro_f1"]], fmt="none", ecolor="k", capsize=3)
        for xi, fmt in zip(x, formats):
            v = seeds.loc[(seeds["model"] == model) & (seeds["format"] == fmt), "macro_f1"]
            ax.plot(np.full(len(v), xi), v, "o", color="k", ms=3, alpha=0.7)
    ax.set_xticks(np.arange(len(formats)), formats)
    ax.set_ylabel("validation macro-F1 (95% CI seeds x images; dots: seeds)")
    ax.legend()
    fig.tight_layout()
    return fig, table


def prompt_variants(table: pd.DataFrame) -> tuple[plt.Figure, pd.DataFrame]:
    """Zero-shot micro-F1 and fail rate per prompt variant, both models, as ``_seed_bars`` (columns model, variant,
    micro_f1, fail_rate; one row per seed)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, (col, label) in zip(axes, (("micro_f1", "zero-shot validation micro-F1"), ("fail_rate", "fail rate"))):
        _seed_bars(ax, table, "variant", col)
        ax.set_title(f"{label} (bars: mean of seeds; dots: seeds)")
        ax.set(xlabel="", ylabel="", ylim=(0, 1.04))
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    fig.legend(handles, labels, title="model", loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig, table


def collapse_curves(per_step: pd.DataFrame, episodes: pd.DataFrame) -> tuple[plt.Figure, pd.DataFrame]:
    """Entropy, KL, clip ratio, zero-std fraction and length vs step for every run; episodes shaded."""
    panels = [("entropy", "token entropy"), ("kl", "KL to reference"),
              ("clip_ratio", "clip ratio (stays 0 with one iteration:\nthe importance ratio is then exactly 1)"),
              ("frac_zero_std", "zero-std groups"), ("mean_length", "completion length")]
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 3.6))
    for ax, (col, title) in zip(axes, panels):
        for run, t in per_step.groupby("run", sort=False):
            t = t.dropna(subset=[col])   # steps that reuse a generation log no reward-side measures
            ax.plot(t["step"], t[col], label=run, color=PALETTE.get(run.split("-")[0]))
            for _, e in episodes.loc[episodes["run"] == run].iterrows():
                ax.axvspan(e["start"], e["end"], color=PALETTE.get(run.split("-")[0]), alpha=0.12)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig, per_step


def dominance_curves(per_step: pd.DataFrame, threshold: float) -> tuple[plt.Figure, pd.DataFrame]:
    cols = [("distinct_completions", "distinct completions / group"), ("distinct_label_sets", "distinct label sets / group"),
            ("dominance", "label-dominance index"), ("set_dominance", "share of the commonest label set")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    for ax, (col, title) in zip(axes, cols):
        for run, t in per_step.groupby("run", sort=False):
            t = t.dropna(subset=[col])
            ax.plot(t["step"], t[col], marker=".", label=run, color=PALETTE.get(run.split("-")[0]))
        ax.set_title(title)
        ax.set_xlabel("step")
    for ax in axes[2:]:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"{threshold:.0%} line")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    data = per_step[["run", "step", "distinct_completions", "distinct_label_sets", "dominance", "dominant_label",
                     "set_dominance", "dominant_set"]]
    return fig, data


# ---- GRPO evidence: seeds, frozen-policy control, paired gain ------------------------------------------------

def grpo_training(runs: dict[int, "GRPORun"], reward: str, window: int = 5) -> tuple[plt.Figure, pd.DataFrame]:
    """Figs. 2/3 over seeds: total reward per step (raw, faint) and its trailing moving average (``window``
    steps, partial at the start), the frozen-policy control on the same batches (dashed), each component (policy
    solid, control dashed) and mean completion length. One thin line per seed."""
    frames = []
    for seed, run in runs.items():
        rows = log_rows(run.log, "reward")
        comps = [c for c in rows.columns if c.startswith(f"rewards/{reward}_") and c.endswith("/mean")]
        data = rows[["step", "reward", *comps, "completions/mean_length"]].copy()
        if run.control is not None:
            ctrl = run.control[["step", "reward", *comps]].rename(columns=lambda c: c if c == "step" else f"control {c}")
            data = data.merge(ctrl, on="step", how="left")
        frames.append(data.assign(seed=seed))
    data = pd.concat(frames, ignore_index=True)
    smooth = [c for c in data.columns if c.startswith(("reward", "rewards/", "control "))]
    for c in smooth:
        data[f"{c} (moving average)"] = data.groupby("seed")[c].transform(lambda v: moving_average(v, window))
    comps = [c for c in data.columns if c.startswith("rewards/") and c.endswith("/mean")]
    colour = PALETTE[reward]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, (seed, t) in enumerate(data.groupby("seed")):
        first = i == 0
        axes[0].plot(t["step"], t["reward"], color=colour, alpha=0.25, lw=0.8, label="policy, raw" if first else None)
        axes[0].plot(t["step"], t["reward (moving average)"], color=colour, lw=1.2,
                     label=f"policy, {window}-step mean" if first else None)
        if "control reward" in t:
            axes[0].plot(t["step"], t["control reward (moving average)"], color="k", ls="--", lw=1.2,
                         label=f"frozen SFT policy, {window}-step mean" if first else None)
        for j, c in enumerate(comps):
            name = c.split("/")[1].replace(f"{reward}_", "")
            axes[1].plot(t["step"], t[f"{c} (moving average)"], color=f"C{j}", lw=1, label=name if first else None)
            if f"control {c}" in t:
                axes[1].plot(t["step"], t[f"control {c} (moving average)"], color=f"C{j}", ls="--", lw=1)
        axes[2].plot(t["step"], t["completions/mean_length"], color="k", lw=1)
    axes[0].set_title(f"total reward ({reward}), {data['seed'].nunique()} seed(s)")
    axes[0].legend(fontsize=7)
    axes[1].set_title(f"components ({window}-step mean; dashed: frozen policy)")
    axes[1].legend(fontsize=7)
    axes[2].set_title("mean completion length (tokens)")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    return fig, data


def paired_gain(runs_by_reward: dict[str, dict[int, "GRPORun"]], window: int = 5) -> tuple[plt.Figure, pd.DataFrame]:
    """Policy minus frozen-policy reward on the same batches, per step (``window``-step trailing mean): one thin
    line per seed, the mean over seeds, and the band between the lowest and highest seed."""
    frames = []
    for reward, runs in runs_by_reward.items():
        for seed, run in runs.items():
            g = reward_analysis.paired_gain(run.log, run.control)
            frames.append(g.assign(reward=reward, seed=seed, gain_ma=moving_average(g["gain"], window)))
    data = pd.concat(frames, ignore_index=True)
    fig, axes = plt.subplots(1, len(runs_by_reward), figsize=(6 * len(runs_by_reward), 3.8), squeeze=False)
    for ax, (reward, t) in zip(axes[0], data.groupby("reward", sort=False)):
        colour = PALETTE.get(reward)
        for seed, s in t.groupby("seed"):
            ax.plot(s["step"], s["gain_ma"], color=colour, lw=0.7, alpha=0.6)
        band = t.groupby("step")["gain_ma"].agg(["mean", "min", "max"])
        ax.fill_between(band.index, band["min"], band["max"], color=colour, alpha=0.2,
                        label=f"range over {t['seed'].nunique()} seed(s)")
        ax.plot(band.index, band["mean"], color=colour, lw=2, label="mean over seeds")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(f"{reward}: policy - frozen policy ({window}-step mean)")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("paired reward gain")
    fig.tight_layout()
    return fig, data


def answer_statistics(stats: pd.DataFrame) -> tuple[plt.Figure, pd.DataFrame]:
    """Along GRPO checkpoints (step 0 = SFT), per reward: labels per answer, distinct labels predicted, recall of
    rare vs common labels, macro-F1 (columns reward, step and those of ``reward_analysis.answer_statistics``)."""
    panels = [("labels_per_answer", "labels per answer"), ("distinct_labels", "distinct labels predicted"),
              ("recall_rare", "recall, rarer half of labels"), ("recall_common", "recall, commoner half of labels"),
              ("macro_f1", "validation macro-F1")]
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 3.6))
    for ax, (col, title) in zip(axes, panels):
        for (reward, seed), t in stats.groupby(["reward", "seed"], sort=False):
            ax.plot(t["step"], t[col], marker="o", lw=1, color=PALETTE.get(reward), label=f"{reward} (seed {seed})")
        ax.set_title(title)
        ax.set_xlabel("GRPO step (0 = SFT)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig, stats


def effect_intervals(table: pd.DataFrame, row: str, panel: str, xlabel: str) -> tuple[plt.Figure, pd.DataFrame]:
    """Registered effects as intervals: one panel per value of ``panel``, one line per ``row`` value; dot = effect
    (mean over seeds) with its 95% CI, small dots = each seed (``per_seed``), shaded band = +-SESOI, title of the
    line = its verdict (columns row, panel, effect, lo, hi, per_seed, sesoi, verdict)."""
    panels = list(dict.fromkeys(table[panel]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.55 * table.groupby(panel).size().max() + 1.4),
                             squeeze=False)
    for ax, name in zip(axes[0], panels):
        t = table.loc[table[panel] == name].reset_index(drop=True)
        y = np.arange(len(t))[::-1]
        sesoi = float(t["sesoi"].iloc[0])
        ax.axvspan(-sesoi, sesoi, color="0.9", zorder=0, label=f"+-SESOI ({sesoi:g})")
        ax.axvline(0, color="0.5", lw=0.8)
        ax.errorbar(t["effect"], y, xerr=[t["effect"] - t["lo"], t["hi"] - t["effect"]], fmt="o", color="k", capsize=3)
        for yi, seeds in zip(y, t["per_seed"]):
            values = [float(v) for v in str(seeds).split(",") if v.strip()]
            ax.plot(values, np.full(len(values), yi - 0.15), ".", color="C0", ms=4, alpha=0.8)
        ax.set_yticks(y, [f"{r}\n({v})" for r, v in zip(t[row], t["verdict"])], fontsize=8)
        ax.set_title(str(name))
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig, table


def dose_response(doses: pd.DataFrame) -> tuple[plt.Figure, pd.DataFrame]:
    """E1: each readout along the registered step counts (0 = the SFT model, evenly spaced), one line per arm
    (lr_schedule x rl_set) through the seed means, small dots = each seed (``experiment_readouts.dose_readout``'s doses)."""
    panels = list(dict.fromkeys(zip(doses["set"], doses["readout"])))
    steps = sorted(doses["grpo_steps"].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (name, readout) in zip(axes[0], panels):
        t = doses.loc[(doses["set"] == name) & (doses["readout"] == readout)].dropna(subset=["value"])
        for k, ((schedule, rl_set), arm) in enumerate(t.groupby(["lr_schedule", "rl_set"], sort=False)):
            x = [steps.index(s) for s in arm["grpo_steps"]]
            ax.plot(x, arm["value"], marker="o", lw=1, color=f"C{k}", label=f"{schedule}, {rl_set}")
            for xi, seeds in zip(x, arm["per_seed"]):
                values = [float(v) for v in str(seeds).split(",") if v.strip()]
                ax.plot([xi] * len(values), values, ".", color=f"C{k}", ms=4, alpha=0.6)
        ax.set_xticks(range(len(steps)), [str(s) for s in steps])
        ax.set_xlabel("GRPO steps (registered; 0 = SFT)")
        ax.set_title(f"{name}: {readout}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig, doses


def drift_scatter(models: pd.DataFrame, summary: pd.DataFrame) -> tuple[plt.Figure, pd.DataFrame]:
    """Each GRPO model's KL(SFT || GRPO) against its NIH macro-F1 change from its SFT start, one colour per
    experiment (columns experiment, kl, nih_change); the title gives Spearman's rho with its interval."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    sns.scatterplot(data=models, x="kl", y="nih_change", hue="experiment", ax=ax, s=36)
    ax.axhline(0, color="0.5", lw=0.8)
    row = summary.iloc[0]
    ax.set_title(f"Spearman rho {row['effect']:+.2f} [{row['lo']:+.2f}, {row['hi']:+.2f}] over {int(row['n_models'])} "
                 "models (descriptive)", fontsize=9)
    ax.set_xlabel("KL(SFT || GRPO) per answer token, NIH-like test prompts")
    ax.set_ylabel("NIH macro-F1 change from SFT")
    fig.tight_layout()
    return fig, models[["experiment", "cell", "seed", "kl", "nih_change"]]
