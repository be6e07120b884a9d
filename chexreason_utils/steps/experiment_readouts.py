"""Stage 08's readouts: what the pre-registered grids' runs (``experiments.run_cells``) measure, each ruled readout
with the shared verdict (``claims.judged``: the registration's SESOI and sign).

- E1 ``dose_readout``: CheXpert / NIH macro-F1 and validation labels per answer at each dose, and their registered
  slopes against log3(steps / 40).
- E2 ``shortcut_readout`` (the counterfactual test images: ``shortcut``): the base, SFT and GRPO models' shortcut
  sensitivity on every test image with and without the marker, and GRPO - SFT, behind two positive controls
  (``e2_controls``: the marker decodable from the image tokens, ``decodability_table``; the marker-only SFT model
  follows it).
- E3 ``multisite_readout``: each run's final checkpoint scored on both test sets (cached predictions), the change
  from SFT per share and the change minus the change at share 0.
- Q1 ``reward_unit_readout``: the change from SFT on both test sets per reward, the change minus the change under
  hard, and labels per answer on validation (E3 and Q1 share ``changes_from_sft``).
- E5 ``collapse_readout``: the collapsed runs of each cell against its matched final recipe (C5's count rule), the
  06 detector's collapse shares as description.
- The floor rule reads the direction (``arm_floor``, ``arm_floors_rule``): a ruled readout is not measurable
  only where an arm at floor (against 04's best trivial baseline) decides its sign; E1's arms are its smallest
  and largest dose, E3's and Q1's the two GRPO runs of the difference.
- ``experiment_family``: the family-wise view of EXPERIMENTS.md, 07's members and every experiment readout ruled.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..evaluation import claims, metrics, registration, scores, verdict_statistics
from ..evaluation.metrics import eval_labels, matrices, weighted_macro_f1
from ..labels import CHEXPERT_LABELS
from ..paths import RunPaths
from ..evaluation import marker_probe, shortcut
from ..queries.entries import SETS, base_models, test_entries, zero_shot_prompt
from ..queries.predictions import predict_image_sets, predict_many
from ..queries.stage_outputs import read_evaluation, read_family_members, sft_start
from ..training_runs.diagnostics import folder_diagnostics, step_flags
from ..training_runs.experiment_plan import (E2_ONLY, E5_FINAL, STAGE, e2_decodability_file, e2_own_sft, e2_planted_root,
                                             e5_control, experiment_seeds, final_tag, scaled_steps)

E1_UNIT = 40   # E1's slope is against log3(steps / 40) (registered steps, the tiny profile's)


def arm_floor(frame: pd.DataFrame, dataset: str, y_true: np.ndarray, preds: list[np.ndarray]) -> str:
    """``scores.floor_reason`` of one arm of a readout (its seeds' prediction matrices on ``dataset``): its
    seed-mean macro-F1 and the fewest distinct label sets of any seed against the best trivial baseline of 04's
    scores ``frame`` ("" when it is above floor)."""
    ones = np.ones((1, len(y_true)))
    f1 = float(np.mean([weighted_macro_f1(y_true, p, ones)[0] for p in preds]))
    return scores.floor_reason(f1, min(scores.distinct_sets(p) for p in preds), scores.best_baseline(frame, dataset))


def arm_floors_rule(result: dict, reference_floor: str, treatment_floor: str) -> str:
    """The directional floor rule (``verdict_statistics.directional_floor``) on a readout's CI and its two arms."""
    return verdict_statistics.directional_floor(result["lo"], result["hi"], reference_floor, treatment_floor)


def changes_from_sft(cfg: Config, paths: RunPaths, runs: pd.DataFrame, reg_id: str, factor: str, reference,
                      contrast: str, note: str) -> pd.DataFrame:
    """Per test set and value of ``factor`` (a column of ``runs``): the final checkpoint's macro-F1 change from SFT
    (descriptive) and, for each value but ``reference``, that change minus the change at ``reference`` (= the two
    GRPO models' paired difference, SFT cancels: the registered readout ``contrast``, with its verdict); mean over
    seeds, 95% CI over seeds x images."""
    reg, E, seeds = registration.get(reg_id), cfg.evaluation, experiment_seeds(cfg)
    frame = read_evaluation(paths).scores
    values = list(dict.fromkeys(runs[factor]))
    if reference not in values:
        raise ValueError(f"{reg_id} needs the {factor} {reference!r} cell (the change there is its reference)")
    rows = []
    for dataset in reg.sesoi:
        pair, labels = test_entries(cfg, paths, dataset), eval_labels(cfg, dataset)
        prompt = pair["GRPO"].keys.prompt
        sft = predict_many(cfg, paths, [(*pair["SFT"].models[s], SETS[dataset], pair["SFT"].keys.prompt)
                                        for s in seeds])
        by_value = {}
        for value in values:
            chosen = runs.loc[runs[factor] == value].set_index("seed").loc[seeds]
            frames = predict_many(cfg, paths, [(final_tag(paths, r), r.final_checkpoint, SETS[dataset], prompt)
                                               for r in chosen.reset_index().itertuples()])
            by_value[value] = [matrices(f, cfg, labels)[1] for f in frames]
        y_true = matrices(sft[0], cfg, labels)[0]
        sft_preds = [matrices(f, cfg, labels)[1] for f in sft]
        f1 = lambda ps: float(np.mean([weighted_macro_f1(y_true, p, np.ones((1, len(y_true))))[0] for p in ps]))  # noqa: E731
        for value in values:
            change = metrics.paired_bootstrap(y_true, sft_preds, by_value[value], E.n_bootstrap, E.bootstrap_seed)
            base = {"test_set": dataset, factor: value, "sft_macro_f1": f1(sft_preds),
                    "grpo_macro_f1": f1(by_value[value]), "n_images": len(y_true)}
            rows.append({**scores.contrast_row({**base, "readout": "change from SFT"}, change),
                         "verdict": "descriptive", "sesoi": reg.sesoi_of(dataset), "note": note})
            if value != reference:
                diff = metrics.paired_bootstrap(y_true, by_value[reference], by_value[value], E.n_bootstrap,
                                                E.bootstrap_seed)
                floor = arm_floors_rule(diff, arm_floor(frame, dataset, y_true, by_value[reference]),
                                        arm_floor(frame, dataset, y_true, by_value[value]))
                rows.append(claims.judged({**base, "readout": contrast}, diff, reg, dataset, floor))
    return pd.DataFrame(rows)


def multisite_readout(cfg: Config, paths: RunPaths, runs: pd.DataFrame) -> pd.DataFrame:
    """E3: per test set and share, the change from SFT and the change minus the change at share 0
    (``changes_from_sft``)."""
    return changes_from_sft(cfg, paths, runs, "E3", "nih_share", 0, "change - change at share 0",
                             "the registration rules on the change minus the change at share 0")


def reward_unit_readout(cfg: Config, paths: RunPaths, runs: pd.DataFrame) -> pd.DataFrame:
    """Q1: per test set and reward, the change from SFT and the change minus the change under hard
    (``changes_from_sft``); then, per
    reward and for the SFT model, the scored labels named per answer on validation (03's checkpoint prompt;
    descriptive: mean over seeds, each seed's beside it)."""
    reference = registration.get("Q1").grid["reward"][0]
    table = changes_from_sft(cfg, paths, runs, "Q1", "reward", reference, f"change - change under {reference}",
                              f"the registration rules on the change minus the change under {reference}")
    seeds, fmt = experiment_seeds(cfg), cfg.grpo.start_format
    models = {"SFT": [(*map(str, sft_start(cfg, paths, s)), "val", fmt) for s in seeds]}
    for reward in dict.fromkeys(runs["reward"]):
        chosen = runs.loc[runs["reward"] == reward].set_index("seed").loc[seeds].reset_index()
        models[reward] = [(final_tag(paths, r), r.final_checkpoint, "val", fmt) for r in chosen.itertuples()]
    rows = []
    for model, jobs in models.items():
        per_seed = [float(matrices(f, cfg, CHEXPERT_LABELS)[1].sum(axis=1).mean()) for f in predict_many(cfg, paths, jobs)]
        rows.append({"test_set": "validation", "reward": model, "readout": "labels per answer", "verdict": "descriptive",
                     "effect": float(np.mean(per_seed)), "per_seed": ", ".join(f"{v:.3f}" for v in per_seed),
                     "note": "no SESOI registered for this readout"})
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True)


def counterfactual_predictions(cfg: Config, paths: RunPaths, frame: pd.DataFrame,
                                models: list[tuple[str, str, str]]) -> dict[tuple[str, str], tuple[pd.DataFrame, ...]]:
    """{(tag, test set): (predictions without the marker, with it), merged with ``frame``'s rows} of (tag, model,
    kind) models on the counterfactual images of each test set, with 04's prompt of the kind's entry (base: the
    zero-shot prompt; SFT; GRPO) on that set (``predict_image_sets``, as E4's variants)."""
    prompts = {d: {"base": zero_shot_prompt(cfg), **{k: e.keys.prompt for k, e in test_entries(cfg, paths, d).items()}}
               for d in shortcut.TEST_MANIFESTS}
    keys, requests = [], []
    for dataset, images in frame.groupby("test_set", sort=False):
        for tag, model, kind in models:
            keys.append((tag, dataset))
            requests.append((tag, model, images, f"e2_{SETS[dataset]}", prompts[dataset][kind]))
    merged = dict(zip(keys, predict_image_sets(cfg, paths, requests)))
    return {key: tuple(f.loc[f["condition"] == c] for c in shortcut.CONDITIONS) for key, f in merged.items()}


E2_NOTES = {"base": "each seed's own base (a fixed base model: the image-only CI)",
            "SFT": "the frozen-policy control is this policy (its weights never move): its sensitivity is this row's",
            "GRPO": "the run's final checkpoint"}


def e2_controls(paths: RunPaths, sensitivity: dict) -> str:
    """Why E2's GRPO - SFT readouts are not measurable by its positive controls (registration
    rules.decodability, rules.marker_only), or "": no registered marker size decodable in every seed, or the
    marker-only SFT model's seed-mean ``sensitivity`` (its ``shortcut.sensitivity_ci``) below
    controls.marker_only_sensitivity."""
    reg = registration.get("E2")
    if marker_probe.chosen_radius(pd.read_csv(e2_decodability_file(paths))) is None:
        return (f"marker not decodable: the probe reaches {reg.control('probe_accuracy'):g} held-out accuracy at no "
                f"registered size in every seed")
    bar = float(reg.control("marker_only_sensitivity"))
    if not sensitivity["effect"] >= bar:
        return (f"marker not learned: the marker-only SFT model's shortcut sensitivity {sensitivity['effect']:.3f} is "
                f"below the registered {bar:g}")
    return ""


def shortcut_readout(cfg: Config, paths: RunPaths, runs: pd.DataFrame) -> pd.DataFrame:
    """E2: per cell (rho x arm), the shortcut sensitivity (``shortcut.marker_effect``: naming the finding with the
    marker minus without it, on ``shortcut.counterfactual_tests`` at the cells' marker size) of the base model, the
    cell's SFT model and its GRPO run's final checkpoint (descriptive, with the share naming the finding with and
    without the marker), and GRPO - SFT (the registered readout, with its verdict; not measurable when a positive
    control fails: ``e2_controls``); first the marker-only control's SFT sensitivity; mean over seeds, 95% CI over
    seeds x images of both test sets pooled (``shortcut.sensitivity_ci``); with the RL and SFT images that carry
    the marker."""
    reg, E, seeds = registration.get("E2"), cfg.evaluation, experiment_seeds(cfg)
    radius = float(runs["radius"].iloc[0])
    frame = shortcut.counterfactual_tests(paths, paths.stage(STAGE) / "E2" / f"counterfactual_radius-{radius:g}",
                                          radius)
    bases = base_models(cfg, paths, "medical")
    trained = runs.loc[runs["arm"] != E2_ONLY]
    models = [*[(tag, model, "base") for tag, model in bases.values()],
              *[(r.sft_tag, r.sft_model, "SFT") for r in runs.itertuples()],
              *[(r.tag, r.final_checkpoint, "GRPO") for r in trained.itertuples()]]
    pairs = counterfactual_predictions(cfg, paths, frame, list(dict.fromkeys(models)))
    rows, blocked = [], None
    for name, group in sorted(runs.groupby("cell", sort=False), key=lambda g: g[1]["arm"].iloc[0] != E2_ONLY):
        cell = group.set_index("seed").loc[seeds]
        first, finding = cell.iloc[0], cell["finding"].iloc[0]
        control = first["arm"] == E2_ONLY
        tags = {"SFT": list(cell["sft_tag"])} if control else \
            {"base": [bases[None][0]] if None in bases else [bases[s][0] for s in seeds], "SFT": list(cell["sft_tag"]),
             "GRPO": list(cell["tag"])}
        per = {model: [[shortcut.marker_effect(*pairs[(t, d)], finding, E.invalid_policy)
                        for d in shortcut.TEST_MANIFESTS] for t in by_seed] for model, by_seed in tags.items()}
        named = {model: np.mean([shortcut.named_shares([pairs[(t, d)] for d in shortcut.TEST_MANIFESTS], finding,
                                                       E.invalid_policy) for t in by_seed], axis=0)
                 for model, by_seed in tags.items()}
        root = e2_planted_root(paths, first)
        what = {"cell": name, "rho": first["rho"], "arm": first["arm"], "finding": finding, "radius": radius,
                "marked_rl_images": shortcut.marked_count(paths, "rl", root) if first["rho"] > 0 and not control else 0,
                "marked_sft_images": shortcut.marked_count(paths, "sft", root) if e2_own_sft(first) else 0,
                "n_images": sum(len(d) for d in per["SFT"][0])}
        for model, by_seed in per.items():
            result = shortcut.sensitivity_ci(by_seed, E.n_bootstrap, E.bootstrap_seed)
            if control:
                blocked = e2_controls(paths, result)
            bar = f"passes (registered bar {reg.control('marker_only_sensitivity'):g})"
            note = f"positive control: {'fails, ' + blocked if blocked else bar}" if control else E2_NOTES[model]
            rows.append({**scores.contrast_row({**what, "model": model, "readout": "shortcut sensitivity"}, result),
                         "not_measurable": "", "verdict": "descriptive", "note": note, "sesoi": reg.sesoi_of(),
                         "named_without_marker": named[model][0], "named_with_marker": named[model][1]})
        if control:
            continue
        diff = [[g - s for g, s in zip(grpo_, sft_)] for grpo_, sft_ in zip(per["GRPO"], per["SFT"])]
        rows.append(claims.judged({**what, "model": "GRPO - SFT", "readout": "GRPO - SFT sensitivity"},
                                  shortcut.sensitivity_ci(diff, E.n_bootstrap, E.bootstrap_seed), reg, "", "",
                                  blocked or ""))
    return pd.DataFrame(rows)


def decodability_table(paths: RunPaths) -> pd.DataFrame:
    """E2's decodability check as stage 08 ran it (``experiments.e2_decodability``): per registered size, the
    probe's held-out accuracy per seed, its minimum, whether every seed reaches the bar, and the size E2 used."""
    table = pd.read_csv(e2_decodability_file(paths))
    chosen = marker_probe.chosen_radius(table)
    out = table.groupby("radius", sort=True).agg(
        min_accuracy=("accuracy", "min"), decodable=("decodable", "all"), n_images=("n_images", "first"),
        per_seed=("accuracy", lambda a: ", ".join(f"{v:.3f}" for v in a))).reset_index()
    return out.assign(used=out["radius"] == chosen)


def collapse_readout(cfg: Config, paths: RunPaths, runs: pd.DataFrame) -> pd.DataFrame:
    """E5 (``run_cells``' rows: the cells, then their matched controls, ``recipe`` E5_FINAL): per cell, its runs
    against its control's, the final recipe with the cell's learning rate and steps (registration
    rules.matched_control), by C5's count rule (``claims.collapse_count`` on ``claims.collapse_axis``, with the
    detector's neighbourhood; the effect is the difference of the shares of collapsed runs), its verdict; as
    description the 06 detector's collapse share of both and cell - control (mean over seeds, CI over seeds)."""
    reg, seeds = registration.get("E5"), experiment_seeds(cfg)
    diagnostics = {f: folder_diagnostics(cfg, paths, Path(f)) for f in runs["out_dir"]}   # each run's log read once
    share = lambda folder: claims.collapse_share(*diagnostics[folder])  # noqa: E731
    flags = lambda frame: [step_flags(cfg, paths, diagnostics[f][0]) for f in frame["out_dir"]]  # noqa: E731
    is_control = runs["recipe"].eq(E5_FINAL).fillna(False).astype(bool)
    controls = {name: g.set_index("seed").loc[seeds] for name, g in runs[is_control].groupby("cell", sort=False)}
    rows = []
    for name, group in runs[~is_control].groupby("cell", sort=False):
        cell = group.set_index("seed").loc[seeds]
        factors = {k: cell[k].iloc[0] for k in reg.grid if k != "seeds"}
        matched = registration.cell_name(e5_control(factors))
        control = controls[matched]
        counted = claims.collapse_count({"unstable": flags(cell), "final": flags(control),
                                         "axis": cfg.claims.collapse_axis,
                                         "min_steps": cfg.diagnostics.episode_min_steps})
        shares, final = [share(f) for f in cell["out_dir"]], [share(f) for f in control["out_dir"]]
        described = metrics.seed_image_ci(lambda s, w: shares[s] - final[s], len(seeds), ())
        row = scores.contrast_row({"cell": name, **factors, "control": matched,
                                   "readout": "collapsed runs: cell - matched final recipe"}, counted)
        rows.append({**row, "verdict": counted["rule_verdict"], "note": counted["rule_note"], "p": counted["rule_p"],
                     "rule": "count",
                     "sesoi": reg.sesoi_of(), "cell_share": float(np.mean(shares)), "final_share": float(np.mean(final)),
                     "share_difference": described["effect"], "share_lo": max(-1.0, described["lo"]),
                     "share_hi": min(1.0, described["hi"]), "steps": int(cell["steps"].max())})
    return pd.DataFrame(rows)


def e1_predictions(cfg: Config, paths: RunPaths, live: pd.DataFrame) -> dict[str, list[pd.DataFrame]]:
    """Each live row's predictions (cached) on the CheXpert and NIH tests (04's prompts: the SFT entry's at step 0,
    ChexReason's after) and on validation (03's checkpoint prompt)."""
    out = {}
    for dataset in ("CheXpert", "NIH"):
        pair = test_entries(cfg, paths, dataset)
        prompt = lambda steps: pair["SFT" if steps == 0 else "GRPO"].keys.prompt  # noqa: E731
        out[dataset] = predict_many(cfg, paths, [(r.tag, r.model, SETS[dataset], prompt(r.steps)) for r in live.itertuples()])
    out["validation"] = predict_many(cfg, paths, [(r.tag, r.model, "val", cfg.grpo.start_format) for r in live.itertuples()])
    return out


def dose_readout(cfg: Config, paths: RunPaths, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """E1: (doses, slopes). Doses: per arm (lr_schedule x rl_set), step count and seed-mean, CheXpert and NIH
    macro-F1 and validation scored labels per answer (each seed's beside it). Slopes: per arm, the registered
    least-squares slope against log3(steps / 40) over the non-zero doses, per seed, mean over seeds with its 95% CI
    over seeds x images (``metrics.slope_ci``): macro-F1 with the verdict (the registration's SESOI and sign per
    set), labels per answer descriptive (no SESOI registered); an arm with fewer than two doses is not measurable."""
    reg, E, seeds = registration.get("E1"), cfg.evaluation, experiment_seeds(cfg)
    frame = read_evaluation(paths).scores
    live = runs.loc[runs["skipped"] == ""].reset_index(drop=True)
    frames = e1_predictions(cfg, paths, live)
    labels = {"CheXpert": eval_labels(cfg, "CheXpert"), "NIH": eval_labels(cfg, "NIH"), "validation": CHEXPERT_LABELS}
    readout = {"CheXpert": "macro-F1", "NIH": "macro-F1", "validation": "labels per answer"}
    y_true = {d: matrices(frames[d][0], cfg, labels[d])[0] for d in frames}
    preds = {d: [matrices(f, cfg, labels[d])[1] for f in frames[d]] for d in frames}

    def stat(d: str, i: int, w: np.ndarray) -> np.ndarray:   # row i's value on image weights w (rows, n)
        if d == "validation":
            return w @ preds[d][i].sum(axis=1) / w.sum(axis=1)
        return weighted_macro_f1(y_true[d], preds[d][i], w)

    ones = {d: np.ones((1, len(y)), float) for d, y in y_true.items()}
    dose_rows, slope_rows = [], []
    for (schedule, rl_set), arm in runs.groupby(["lr_schedule", "rl_set"], sort=False):
        idx = {(r.grpo_steps, r.seed): i for i, r in live.iterrows() if (r.lr_schedule, r.rl_set) == (schedule, rl_set)}
        what = {"lr_schedule": schedule, "rl_set": rl_set}
        for steps in dict.fromkeys(arm["grpo_steps"]):
            note = arm.loc[arm["grpo_steps"] == steps, "skipped"].iloc[0]
            for d in frames:
                values = [float(stat(d, idx[(steps, s)], ones[d])[0]) for s in seeds] if not note else []
                dose_rows.append({**what, "grpo_steps": steps, "steps": scaled_steps(cfg, steps) if steps else 0,
                                  "set": d, "readout": readout[d], "value": np.mean(values) if values else np.nan,
                                  "per_seed": ", ".join(f"{v:.6f}" for v in values), "n_images": len(y_true[d]),
                                  "note": note})
        doses = sorted({k[0] for k in idx if k[0] > 0})
        reason = arm["skipped"].max() or ("" if len(doses) > 1 else
                                          f"a slope needs two non-zero step counts; this profile runs {doses}")
        for d in frames:
            base = {**what, "set": d, "readout": f"slope of {readout[d]} per tripling of steps",
                    "doses": ", ".join(str(s) for s in doses), "n_images": len(y_true[d])}
            result = metrics.slope_ci(lambda j, s, w: stat(d, idx[(doses[j], seeds[s])], w),
                                      [math.log(s / E1_UNIT, 3) for s in doses], len(seeds), len(y_true[d]),
                                      E.n_bootstrap, E.bootstrap_seed) if not reason else None
            if reason:
                slope_rows.append({**base, "effect": np.nan, "lo": np.nan, "hi": np.nan, "per_seed": "",
                                   "not_measurable": reason, "verdict": "not measurable", "note": reason,
                                   "sesoi": reg.sesoi.get(d, np.nan)})
            elif d == "validation":
                slope_rows.append({**scores.contrast_row(base, result), "not_measurable": "", "verdict": "descriptive",
                                   "note": "no SESOI registered for this readout", "sesoi": np.nan})
            else:   # the floor rule's arms: the smallest and the largest dose
                ends = [[preds[d][idx[(doses[j], s)]] for s in seeds] for j in (0, -1)]
                floor = arm_floors_rule(result, *(arm_floor(frame, d, y_true[d], p) for p in ends))
                slope_rows.append(claims.judged(base, result, reg, d, floor))
    return pd.DataFrame(dose_rows), pd.DataFrame(slope_rows)


FAMILY_KEYS = {"E1": ("lr_schedule", "rl_set", "set"), "E2": ("rho", "arm"), "E3": ("test_set", "nih_share"),
               "E5": ("cell",), "Q1": ("test_set", "reward")}   # what names an experiment's readout in the family view


def experiment_family(paths: RunPaths, readouts: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict]:
    """The registered family of EXPERIMENTS.md (``verdict_statistics.family_table``): 07's members (the claims, E0
    and E4; ``read_family_members``) and every ruled readout of ``readouts`` (experiment id -> its readout table;
    descriptive rows are not members), named by ``FAMILY_KEYS``."""
    parts = [read_family_members(paths)]
    for reg_id, table in readouts.items():
        ruled = table.loc[table["verdict"] != "descriptive"]
        names = ruled[list(FAMILY_KEYS[reg_id])].astype(str).agg(", ".join, axis=1)
        parts.append(ruled.assign(readout=f"{reg_id} " + names))
    return verdict_statistics.family_table(verdict_statistics.family_members(parts))
