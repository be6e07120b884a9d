"""Stage 04 (evaluation): the one route from predictions to every table.

``evaluate_run`` lists every entry the paper's tables and our figures score — base models with each prompt
variant, SFT formats of both models, GRPO checkpoints and their best-F1 / final selections, on validation and every
test set (CheXpert, NIH and, where the profile has it, PadChest) — predicts all of them in one batch of independent jobs (cached), and writes two tidy frames under
``04_evaluation/``: the scores frame (``scores``: entry × seed × label, with the mean over seeds and its CI, the
supervised image-only reference (``training_runs.image_reference``) and the trivial baselines of every set) and the contrasts (the paired SFT -> GRPO differences and every claim's
effect, with CIs), and the floor criterion (``reporting.floor_criterion``) that 05 shows. ``reporting`` builds the
tables from those two files alone; 05 reads them too. It also writes the per-image predictions it scored under the
figures folder (``prediction_export``), from which ``recompute`` (``chexreason verify``) recomputes the scores frame,
the claims and the competence gate with the same ``score``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import Config, training_seeds
from ..data.manifests import load_manifest
from ..evaluation import claims, competence_gate, metrics, prediction_export, scores
from ..evaluation.prediction_export import Scored
from ..evaluation.metrics import eval_labels, matrices, test_datasets, valid_mask
from ..labels import CHEXPERT_LABELS
from ..paths import RunPaths
from ..train.model_registry import ROLES
from ..queries.entries import entries, entry_predictions, nih_entries, sets, zero_shot_prompt
from ..queries.stage_outputs import Evaluation, claim_arm_floors
from ..report import reporting
from ..training_runs import image_reference
from ..training_runs.diagnostics import collapse_evidence


def evaluate_run(cfg: Config, paths: RunPaths) -> Evaluation:
    """Predict and score every entry, measure the contrasts, write both frames under ``04_evaluation/`` and the
    per-image predictions they come from under the figures folder (``prediction_export``)."""
    todo = entries(cfg, paths)
    scored = [Scored(e.keys, e.steps, by_seed) for e, by_seed in zip(todo, entry_predictions(cfg, paths, todo))]
    references = [Scored(image_reference.entry_keys(dataset, name), {}, by_seed)
                  for name, by_dataset in image_reference.reference_predictions(cfg, paths, sets(cfg)).items()
                  for dataset, by_seed in by_dataset.items()]
    commonest = scores.commonest_set(load_manifest(paths, "sft")["truth"])
    collapse = collapse_evidence(cfg, paths)
    evaluation = score(cfg, scored, references, commonest, collapse)
    paths.evaluation.mkdir(parents=True, exist_ok=True)
    evaluation.scores.to_csv(paths.scores_file, index=False)
    evaluation.contrasts.to_csv(paths.contrasts_file, index=False)
    reporting.floor_criterion(evaluation.scores).to_csv(paths.floor_criterion_file, index=False)
    prediction_export.write(paths.figures, cfg, scored + references, evaluation.scores, commonest,
                            competence_gate.load().digest, collapse)
    return evaluation


def score(cfg: Config, scored: list[Scored], references: list[Scored], sft_commonest_set,
          collapse: dict | None) -> Evaluation:
    """The scores frame and the contrasts of the model entries ``scored`` and the image-only ``references`` (each
    with its predictions merged with the truth), the trivial baselines (with the SFT pool's commonest label set)
    and claim C5's ``collapse`` evidence: the one computation ``evaluate_run`` and ``recompute`` share."""
    E = cfg.evaluation
    mats, parts = [], []
    for entry, is_model in [(e, True) for e in scored] + [(e, False) for e in references]:
        labels = _labels(cfg, entry.keys.dataset)
        pairs = {s: matrices(f, cfg, labels) for s, f in entry.by_seed.items()}
        y_true = next(iter(pairs.values()))[0]
        frame = scores.entry_scores(entry.keys, y_true, {s: p for s, (_, p) in pairs.items()},
                                    {s: valid_mask(f) for s, f in entry.by_seed.items()}, labels, E.n_bootstrap,
                                    E.bootstrap_seed)
        for seed, step in entry.steps.items():
            frame.loc[frame["seed"].eq(seed).fillna(False).astype(bool), "step"] = step
        parts.append(frame)
        if is_model:
            mats.append((entry, y_true, {s: p for s, (_, p) in pairs.items()}))
    for dataset in dict.fromkeys(e.keys.dataset for e, _, _ in mats):
        y_true = next(y for e, y, _ in mats if e.keys.dataset == dataset)
        parts.append(scores.baseline_scores(dataset, y_true, _labels(cfg, dataset), [sft_commonest_set],
                                            E.n_bootstrap, E.bootstrap_seed))
    score_frame = pd.concat(parts, ignore_index=True)
    return Evaluation(score_frame, measure_contrasts(cfg, mats, score_frame, collapse))


def recompute(folder) -> dict[str, pd.DataFrame]:
    """From a figures folder alone (``prediction_export``'s files): the scores frame, the claims table and the
    competence gate's summary, recomputed by ``score``, ``claims.claims_table`` and ``competence_gate``, keyed by
    the committed file each is compared with."""
    cfg, inputs = prediction_export.read_config(folder), prediction_export.read_inputs(folder)
    gate = competence_gate.load()
    if gate.digest != inputs["competence_gate_digest"]:
        raise ValueError(f"{gate.file} (sha256 {gate.digest}...) is not the gate the run was judged by "
                         f"({inputs['competence_gate_digest']}..., {folder}/{prediction_export.INPUTS})")
    everything = prediction_export.read(folder)
    is_reference = [e.keys.stage == scores.REFERENCE["stage"] for e in everything]
    evaluation = score(cfg, [e for e, r in zip(everything, is_reference) if not r],
                       [e for e, r in zip(everything, is_reference) if r], inputs["sft_commonest_set"],
                       inputs["collapse"])
    gate_rows = competence_gate.judge(evaluation.scores, gate, zero_shot_prompt(cfg))
    return {prediction_export.SCORES: evaluation.scores,
            "claims.csv": claims.claims_table(evaluation.contrasts, claims.sesoi(cfg), claims.active(cfg)),
            "competence_gate.csv": competence_gate.summary(gate_rows)}


def _labels(cfg: Config, dataset: str):
    """The labels scored on ``dataset``: every CheXpert label on validation, the profile's on a test set."""
    return eval_labels(cfg, dataset) if dataset != "validation" else CHEXPERT_LABELS


def judge_gate(cfg: Config, paths: RunPaths, frame: pd.DataFrame) -> pd.DataFrame:
    """The competence gate on this run's scores (``competence_gate.judge``), after checking the run recorded the
    gate's text before its models were built; written to ``04_evaluation/competence_gate.csv``."""
    gate = competence_gate.load()
    competence_gate.check_registered(paths, gate)
    table = competence_gate.judge(frame, gate, zero_shot_prompt(cfg))
    table.to_csv(paths.evaluation / "competence_gate.csv", index=False)
    return table


def read_floor_criterion(paths: RunPaths) -> pd.DataFrame:
    """The floor criterion 04 wrote (``reporting.floor_criterion``), for 05."""
    path = paths.floor_criterion_file
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run 04_evaluation first (it writes the floor criterion)")
    return pd.read_csv(path).fillna({"reason": ""})


def _matrices_of(mats: list, seeds: list[int], **keys) -> tuple[np.ndarray, list[np.ndarray]]:
    """(y_true, one prediction matrix per seed — or the one of a fixed model) of the entry with ``keys``."""
    for entry, y_true, preds in mats:
        if all(getattr(entry.keys, k) == v for k, v in keys.items()):
            return y_true, [preds[None]] if None in preds else [preds[s] for s in seeds]
    raise LookupError(f"no evaluated entry with {keys}")


def measure_contrasts(cfg: Config, mats: list, frame: pd.DataFrame, collapse: dict | None) -> pd.DataFrame:
    """The paired SFT -> GRPO differences on each test set and the change of the CheXpert - NIH (and - PadChest) gap (mean over
    seeds, paired per seed and image, seed x image CI, probability of improvement), and the effect of every claim
    (``claims.measure``, with the entries at floor from the scores ``frame`` and C5's ``collapse`` evidence,
    ``training_runs.diagnostics.collapse_evidence``)."""
    E, seeds = cfg.evaluation, training_seeds(cfg)
    chex = {"checkpoint": E.test_grpo_checkpoint, "name": E.test_grpo_reward}
    tests = {}
    for ds in test_datasets(cfg):
        y, sft = _matrices_of(mats, seeds, dataset=ds, stage="sft")
        _, grpo_preds = _matrices_of(mats, seeds, dataset=ds, stage="grpo", **chex)
        _, base = _matrices_of(mats, seeds, dataset=ds, stage="base", model="medical")
        tests[ds] = (y, {"base": base, "sft": sft, "grpo": grpo_preds})
    rows = [scores.contrast_row({"kind": "paired difference", "contrast": f"SFT -> GRPO on {ds}"},
                                metrics.paired_bootstrap(y, p["sft"], p["grpo"], E.n_bootstrap, E.bootstrap_seed))
            for ds, (y, p) in tests.items()]
    arms = {d: (y, p["sft"], p["grpo"]) for d, (y, p) in tests.items()}
    rows += [scores.contrast_row({"kind": "paired difference", "contrast": f"change of the CheXpert - {d} gap, SFT -> GRPO"},
                                 metrics.gap_change(arms["CheXpert"], arms[d], E.n_bootstrap, E.bootstrap_seed))
             for d in arms if d != "CheXpert"]
    evidence: dict = dict(tests)
    if cfg.sft.general_model_too:
        by_role = {role: {f: _matrices_of(mats, seeds, dataset="validation", stage="sft", model=role, name=f)
                          for f in cfg.sft.formats} for role in ROLES}
        y_val = next(iter(by_role["medical"].values()))[0]
        evidence["validation formats"] = (y_val, {role: {f: p for f, (_, p) in by_fmt.items()}
                                                  for role, by_fmt in by_role.items()})
    evidence["collapse"] = collapse
    measured = claims.measure(evidence, claim_arm_floors(cfg, frame), E.n_bootstrap, E.bootstrap_seed,
                              claims.active(cfg))
    rows += claims.contrast_rows(measured)
    return pd.DataFrame(rows)


def subgroup_table(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """NIH macro-F1 per sex and age band of the SFT model and ChexReason, per seed (``reporting.subgroup_scores``
    on the cached predictions, which carry sex and age)."""
    todo = nih_entries(cfg, paths)
    labels = eval_labels(cfg, "NIH")
    preds = dict(zip(todo, entry_predictions(cfg, paths, list(todo.values()))))
    first = next(iter(preds["SFT"].values()))
    return reporting.subgroup_scores(first, matrices(first, cfg, labels)[0],
                                     {name: {s: matrices(f, cfg, labels)[1] for s, f in by_seed.items()}
                                      for name, by_seed in preds.items()}, labels)
