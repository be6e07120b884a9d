"""Stage 07 (open questions): the pre-registered experiments that need no training (``registration``).

- E0 ``label_count_decomposition``: the SFT -> GRPO change on each test set split into a pure label-count part and
  a residual (``label_count``) under each count-matching order, and the no-model oracles, on 04's cached
  predictions.
- E4 ``shift_attribution``: the NIH-like test site regenerated with one factor at a time at its MIMIC-like value
  (``data.phantom.write_nih_variant``, folders under ``07_open_questions/e4/``), its test images selected by 01's
  rule, the SFT model and ChexReason scored there (cached predictions keyed on the variant images' bytes), and the
  change on each variant compared with the change on the main NIH test.

Each readout carries the shared verdict (``claims.judge``) with the registration's SESOI and sign.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation import claims, metrics, registration, verdict_statistics
from ..evaluation.claims import FLOOR_CLAIM
from ..evaluation import label_count
from ..config import Config, training_seeds
from ..data.phantom import NIH_VARIANT_FACTORS, nih_variant_current, write_nih_variant
from ..jobs import run_jobs
from ..data.manifests import in_run
from ..evaluation.metrics import eval_labels, matrices, test_datasets
from ..paths import RunPaths
from ..queries.stage_outputs import claim_arm_floors, pool_prevalence, read_evaluation
from ..queries.entries import entry_predictions, test_entries
from ..queries.predictions import predict_image_sets
from ..data.nih import nih_test_selection

STAGE = "07_open_questions"


def _pair_matrices(cfg: Config, paths: RunPaths, dataset: str) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """(y_true, {"SFT": [per seed], "GRPO": [per seed]}) of 04's test entries on ``dataset`` (cached predictions)."""
    pair = test_entries(cfg, paths, dataset)
    labels, seeds = eval_labels(cfg, dataset), training_seeds(cfg)
    preds = dict(zip(pair, entry_predictions(cfg, paths, list(pair.values()))))
    y_true = matrices(preds["SFT"][seeds[0]], cfg, labels)[0]
    return y_true, {name: [matrices(by_seed[s], cfg, labels)[1] for s in seeds] for name, by_seed in preds.items()}


def label_count_decomposition(cfg: Config, paths: RunPaths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """E0: (decomposition, oracles). Decomposition: per test set, the measured SFT -> GRPO change, and its length
    part and residual under each count-matching order (``label_count.ORDERS``; effect, 95% seed x image CI, each
    seed's value, verdict), each part's verdict over the orders (``over_orders``), and the scored labels named per
    image; oracles: macro-F1 of ``label_count.ORACLES`` on each set's truths (image-bootstrap CI)."""
    reg, E = registration.get("E0"), cfg.evaluation
    arms = claim_arm_floors(cfg, read_evaluation(paths).scores)
    prevalence = pool_prevalence(paths)
    rows, oracle_rows = [], []
    for dataset in [d for d in reg.grid["test_set"] if d in test_datasets(cfg)]:
        y_true, preds = _pair_matrices(cfg, paths, dataset)
        order = label_count.commonness_order(eval_labels(cfg, dataset), prevalence)
        for which in label_count.ORDERS:
            parts = label_count.decompose(y_true, preds["SFT"], preds["GRPO"],
                                          label_count.orders(order, which, E.bootstrap_seed), E.n_bootstrap,
                                          E.bootstrap_seed)
            per_image = parts["labels_per_image"]
            change = parts[label_count.PARTS[0]]   # the parts split this change: a floor deciding its sign rules them
            floor = verdict_statistics.directional_floor(change["lo"], change["hi"], *arms[FLOOR_CLAIM[dataset]])
            for part in label_count.PARTS if which == label_count.ORDERS[0] else label_count.PARTS[1:]:
                rows.append({**claims.judged({"test_set": dataset, "part": part,
                                              "order": "" if part == label_count.PARTS[0] else which},
                                             parts[part], reg, dataset, floor),
                             "labels_per_image_sft": float(np.mean(per_image["SFT"])),
                             "labels_per_image_grpo": float(np.mean(per_image["GRPO"]))})
        for strategy in label_count.ORACLES:
            ci = metrics.bootstrap_macro_f1(y_true, label_count.oracle(y_true, order, strategy), E.n_bootstrap,
                                            E.bootstrap_seed)
            oracle_rows.append({"test_set": dataset, "strategy": strategy, "macro_f1": ci["effect"], "lo": ci["lo"],
                                "hi": ci["hi"], "truth_labels_per_image": float(y_true.sum(axis=1).mean()),
                                "n_images": len(y_true)})
    table = pd.DataFrame(rows)
    table["over_orders"] = [over_orders(table, t, p) for t, p in zip(table["test_set"], table["part"])]
    table["readout"] = [f"{p}, {o}" if o else p for p, o in zip(table["part"], table["order"])]
    return table, pd.DataFrame(oracle_rows)


def over_orders(table: pd.DataFrame, test_set: str, part: str) -> str:
    """E0's verdict of one part over the count-matching orders (its amendment): the shared verdict when every
    order gives it, else "inconclusive (the order decides)"."""
    verdicts = set(table.loc[(table["test_set"] == test_set) & (table["part"] == part), "verdict"])
    return verdicts.pop() if len(verdicts) == 1 else "inconclusive (the order decides)"


def e0_family_rows(decomposition: pd.DataFrame) -> pd.DataFrame:
    """E0's members of the family view: per test set, the length part and the residual over the orders (the
    measured change is C1 / C2's contrast, already a member): its verdict over orders, the interval spanning every
    order's CI, and the largest of the orders' p (each order must give the verdict)."""
    e0, rows = registration.get("E0"), []
    for (test_set, part), g in decomposition.loc[decomposition["part"] != label_count.PARTS[0]].groupby(
            ["test_set", "part"], sort=False):
        verdict = g["over_orders"].iloc[0]
        rows.append({"readout": f"E0 {test_set} {part}", "verdict": verdict.split(" (")[0],
                     "effect": g["effect"].iloc[0], "lo": g["lo"].min(), "hi": g["hi"].max(), "df": g["df"].min(),
                     "direction": e0.direction_of(test_set), "sesoi": g["sesoi"].iloc[0],
                     "p": max(verdict_statistics.p_from_ci(lo, hi, df) for lo, hi, df in zip(g["lo"], g["hi"], g["df"])),
                     "not_measurable": "; ".join(sorted(set(g.loc[g["verdict"] == "not measurable", "note"])))
                     if verdict == "not measurable" else ""})
    return pd.DataFrame(rows)


def _render_variant(root: Path, world, factor: str) -> None:
    """One variant site, in a worker; the world writer's progress bars are kept out of the runner's output."""
    with contextlib.redirect_stderr(io.StringIO()):
        write_nih_variant(root, world, factor)


def variant_manifest(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """The E4 test images of every variant: each variant's NIH-like site regenerated under
    ``07_open_questions/e4/<factor>/`` and its test set selected by 01's rule; ``image_id`` is
    ``<factor>/<image>``, ``variant`` the factor."""
    factors = registration.get("E4").grid["factor"]
    for factor in factors:
        if factor != "all" and factor not in NIH_VARIANT_FACTORS:
            raise ValueError(f"E4 registration: grid.factor {factor!r} is not a world factor "
                             f"({', '.join(NIH_VARIANT_FACTORS)} or all)")
    roots = {factor: paths.stage(STAGE) / "e4" / factor for factor in factors}
    run_jobs(_render_variant, [dict(root=root, world=cfg.world, factor=f) for f, root in roots.items()
                               if not nih_variant_current(root, cfg.world, f)], cfg.workers)
    frames = []
    for factor, root in roots.items():
        _, frame, _ = nih_test_selection(cfg, root / "ChestX-ray14")
        frames.append(frame.assign(image_id=factor + "/" + frame["image_id"].astype(str), variant=factor,
                                   truth=list(frame["labels"])).drop(columns="labels"))
    frame = pd.concat(frames, ignore_index=True)
    frame.assign(labels=[list(t) for t in frame["truth"]], image_path=[in_run(paths, p) for p in frame["image_path"]]) \
        .drop(columns="truth").to_csv(paths.stage(STAGE) / "e4" / "test_images.csv", index=False)
    return frame


def variant_predictions(cfg: Config, paths: RunPaths, frame: pd.DataFrame) -> dict[str, dict]:
    """{"SFT" | "GRPO": {seed: predictions on the variant images, merged with their truth}}; the missing
    prediction files are made in one batch of jobs (``predictions.predict_image_sets``: cached in the shared
    prediction folder under ``e4_nih_<image_set_digest>``)."""
    entries = test_entries(cfg, paths, "NIH")
    keys = [(name, s) for name, e in entries.items() for s in e.models]
    got = predict_image_sets(cfg, paths, [(*entries[name].models[s], frame, "e4_nih", entries[name].keys.prompt)
                                          for name, s in keys])
    out: dict[str, dict] = {}
    for (name, s), predictions in zip(keys, got):
        out.setdefault(name, {})[s] = predictions
    return out


def shift_attribution(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """E4: per variant, the SFT -> GRPO change on its NIH test ("change on the variant") and that change minus the
    change on the main NIH test ("attribution", images resampled per set; the registered readout, with its
    verdict), with SFT's and GRPO's macro-F1 there. Where the main NIH test's drop is smaller than the SESOI asked
    of a factor, every attribution is not measurable (``verdict_statistics.room_for_effect``)."""
    if not cfg.world.enabled:
        raise ValueError("E4 re-renders the phantom world's NIH-like site: it needs world.enabled (not the paper "
                         "profile)")
    reg, E = registration.get("E4"), cfg.evaluation
    labels, seeds = eval_labels(cfg, "NIH"), training_seeds(cfg)
    y_main, main = _pair_matrices(cfg, paths, "NIH")
    main_change = metrics.paired_bootstrap(y_main, main["SFT"], main["GRPO"], E.n_bootstrap, E.bootstrap_seed)
    drop = main_change["effect"]
    floor = verdict_statistics.directional_floor(main_change["lo"], main_change["hi"],   # the change attributed
                                                 *claim_arm_floors(cfg, read_evaluation(paths).scores)["C2"])
    room = verdict_statistics.room_for_effect(max(0.0, -drop), reg.sesoi_of(""), "the main NIH test's SFT -> GRPO drop")
    frame = variant_manifest(cfg, paths)
    preds = variant_predictions(cfg, paths, frame)
    rows = []
    for factor in reg.grid["factor"]:
        mats = {m: [matrices(by_seed[s].loc[by_seed[s]["variant"] == factor], cfg, labels) for s in seeds]
                for m, by_seed in preds.items()}
        y_var = mats["SFT"][0][0]
        sft, grpo = [p for _, p in mats["SFT"]], [p for _, p in mats["GRPO"]]
        change = metrics.paired_bootstrap(y_var, sft, grpo, E.n_bootstrap, E.bootstrap_seed)
        attribution = metrics.gap_change((y_var, sft, grpo), (y_main, main["SFT"], main["GRPO"]), E.n_bootstrap,
                                         E.bootstrap_seed)
        f1 = lambda ps: float(np.mean([metrics.weighted_macro_f1(y_var, p, np.ones((1, len(p))))[0] for p in ps]))  # noqa: E731
        rows.append({**claims.judged({"factor": factor, "readout": "attribution"}, attribution, reg, "", floor, room),
                     "change_on_variant": change["effect"], "change_lo": change["lo"], "change_hi": change["hi"],
                     "sft_macro_f1": f1(sft), "grpo_macro_f1": f1(grpo), "n_images": len(y_var),
                     "truth_labels_per_image": float(y_var.sum(axis=1).mean())})
    return pd.DataFrame(rows)


def family_table(cfg: Config, paths: RunPaths, decomposition: pd.DataFrame,
                 attribution: pd.DataFrame | None) -> tuple[pd.DataFrame, dict]:
    """The family-wise view of every verdict this report rules (``verdict_statistics.family_table``): the claims
    (04's contrasts, ``claims.family_rows``), E0's readouts and E4's attributions (when run), each with its
    unadjusted and Holm-adjusted verdict and p and its ``mde_80``; and the summary (readouts ruled, false sign
    verdicts chance alone would give). The members are written to ``07_open_questions/family_members.csv``, which
    stage 08 extends with the experiments' readouts."""
    evaluation = read_evaluation(paths)
    sesoi = claims.sesoi(cfg)
    table = claims.claims_table(evaluation.contrasts, sesoi, claims.active(cfg))
    parts = [claims.family_rows(table, evaluation.contrasts, sesoi)]
    parts.append(e0_family_rows(decomposition))
    if attribution is not None:
        e4 = registration.get("E4")
        parts.append(attribution.assign(readout="E4 " + attribution["factor"], direction=e4.direction_of("")))
    members = verdict_statistics.family_members(parts)
    members.to_csv(paths.family_members_file, index=False)
    return verdict_statistics.family_table(members)
