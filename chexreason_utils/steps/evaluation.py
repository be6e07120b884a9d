"""Stage 04 (evaluation): the one route from predictions to every table.

``evaluate_run`` lists every entry the paper's tables and our figures score — base models with each prompt
variant, SFT formats of both models, GRPO checkpoints and their best-F1 / final selections, on validation, CheXpert
and NIH — predicts all of them in one batch of independent jobs (cached), and writes two tidy frames under
``04_evaluation/``: the scores frame (``scores``: entry × seed × label, with the mean over seeds and its CI, and
the trivial baselines of every set) and the contrasts (the paired SFT -> GRPO differences and every claim's
effect, with CIs), and the floor criterion (``reporting.floor_criterion``) that 05 shows. ``reporting`` builds the
tables from those two files alone; 05 reads them too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
import pandas as pd

from ..evaluation import claims, metrics, scores
from ..report import reporting
from ..config import CHECKPOINT_CHOICES, Config, training_seeds
from ..labels import CHEXPERT_LABELS
from ..data.manifests import load_manifest
from ..evaluation.metrics import eval_labels, matrices, valid_mask
from ..train.model_registry import ROLES, base_model
from ..paths import RunPaths, checkpoint_name, model_tag
from ..evaluation.scores import EntryKeys
from ..queries.stage_outputs import Evaluation, claim_floors, grpo_models, read_checkpoint_scores, sft_start
from .diagnostics import collapse_evidence
from ..queries.predictions import predict_many

SETS = {"validation": "val", "CheXpert": "chexpert_test", "NIH": "nih_test"}   # dataset -> manifest


@dataclass
class Entry:
    """One model on one data set with one prompt: its frame keys and, per training seed (None: a fixed model),
    the (cache tag, model folder or id) to predict with."""
    keys: scores.EntryKeys
    models: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)   # seed -> GRPO step, for the best-F1 / final selections


def zero_shot_prompt(cfg: Config) -> str:
    """The prompt the base models are tested with: the profile's variant, else GRPO's start format."""
    return cfg.evaluation.prompt_variant or cfg.grpo.start_format


def _base(cfg, paths, dataset, role, prompt) -> Entry:
    return Entry(EntryKeys(dataset, role, stage="base", name=prompt, checkpoint="base", step=np.nan, prompt=prompt),
                 {None: (model_tag(f"base-{role}"), base_model(cfg, paths, role))})


def _grpo_entries(cfg: Config, paths: RunPaths, dataset: str) -> list[Entry]:
    """Every GRPO checkpoint the scoring plan scores on ``dataset`` (one entry per step, the seeds that have it),
    and the best-F1 / final selections of every reward run (the chosen step may differ between seeds)."""
    fmt, by_step, picked = cfg.grpo.start_format, {}, {}
    for reward in cfg.grpo.rewards:
        for seed in training_seeds(cfg):
            for step, tag, model in grpo_models(cfg, paths, reward, seed, SETS[dataset])[1:]:
                by_step.setdefault((reward, step), {})[seed] = (tag, model)
            chosen = read_checkpoint_scores(paths, reward, seed).set_index("step")
            for which in CHECKPOINT_CHOICES:
                step = int(chosen.index[chosen[f"is_{which}"]][0])
                entry = picked.setdefault((reward, which), Entry(EntryKeys(dataset, "medical", stage="grpo", name=reward,
                                                                           checkpoint=which, step=np.nan, prompt=fmt)))
                entry.models[seed] = (model_tag(f"grpo-{reward}-{checkpoint_name(step)}", seed),
                                      paths.grpo_run(reward, seed) / checkpoint_name(step))
                entry.steps[seed] = step
    steps = [Entry(EntryKeys(dataset, "medical", stage="grpo", name=reward, checkpoint=checkpoint_name(step), step=step,
                             prompt=fmt), models)
             for (reward, step), models in sorted(by_step.items())]
    return steps + list(picked.values())


def entries(cfg: Config, paths: RunPaths) -> list[Entry]:
    """Everything the evaluation scores (see the module docstring), in table order."""
    seeds, fmt = training_seeds(cfg), cfg.grpo.start_format
    roles = [r for r in ROLES if r == "medical" or cfg.sft.general_model_too]
    zs_roles = [r for r in ROLES if r == "medical" or cfg.cross_model.general_zero_shot]
    out = [_base(cfg, paths, "validation", role, v) for role in zs_roles for v in cfg.cross_model.prompt_variants]
    out += [Entry(EntryKeys("validation", role, stage="sft", name=f, checkpoint="sft", step=0, prompt=f),
                  {s: (model_tag(f"sft-{role}-{f}", s), paths.sft_model(role, f, s)) for s in seeds})
            for role in roles for f in cfg.sft.formats]
    out += _grpo_entries(cfg, paths, "validation")
    for dataset in ("CheXpert", "NIH"):
        out += [_base(cfg, paths, dataset, role, zero_shot_prompt(cfg)) for role in ROLES]
        out.append(Entry(EntryKeys(dataset, "medical", stage="sft", name=fmt, checkpoint="sft", step=0, prompt=fmt),
                         {s: sft_start(cfg, paths, s) for s in seeds}))
        out += _grpo_entries(cfg, paths, dataset)
    return out


def entry_predictions(cfg: Config, paths: RunPaths, todo: list[Entry]) -> list[dict]:
    """Per entry ``{seed: predictions merged with the truth}``; all missing prediction files are made in one
    batch of independent jobs."""
    requests = [(tag, model, SETS[e.keys.dataset], e.keys.prompt) for e in todo for tag, model in e.models.values()]
    frames = iter(predict_many(cfg, paths, requests))
    return [{seed: next(frames) for seed in e.models} for e in todo]


def evaluate_run(cfg: Config, paths: RunPaths) -> Evaluation:
    """Predict and score every entry, measure the contrasts, write both frames under ``04_evaluation/``."""
    E = cfg.evaluation
    todo = entries(cfg, paths)
    mats, parts = [], []
    for entry, by_seed in zip(todo, entry_predictions(cfg, paths, todo)):
        labels = eval_labels(cfg, entry.keys.dataset) if entry.keys.dataset != "validation" else CHEXPERT_LABELS
        pairs = {s: matrices(f, cfg, labels) for s, f in by_seed.items()}
        y_true = next(iter(pairs.values()))[0]
        frame = scores.entry_scores(entry.keys, y_true, {s: p for s, (_, p) in pairs.items()},
                                    {s: valid_mask(f) for s, f in by_seed.items()}, labels, E.n_bootstrap,
                                    E.bootstrap_seed)
        for seed, step in entry.steps.items():
            frame.loc[frame["seed"].eq(seed).fillna(False).astype(bool), "step"] = step
        parts.append(frame)
        mats.append((entry, y_true, {s: p for s, (_, p) in pairs.items()}))
    sft_truths = load_manifest(paths, "sft")["truth"]
    for dataset in SETS:
        y_true = next(y for e, y, _ in mats if e.keys.dataset == dataset)
        labels = eval_labels(cfg, dataset) if dataset != "validation" else CHEXPERT_LABELS
        parts.append(scores.baseline_scores(dataset, y_true, labels, sft_truths, E.n_bootstrap, E.bootstrap_seed))
    score_frame = pd.concat(parts, ignore_index=True)
    contrasts = measure_contrasts(cfg, paths, mats, score_frame)
    paths.evaluation.mkdir(parents=True, exist_ok=True)
    score_frame.to_csv(paths.scores_file, index=False)
    contrasts.to_csv(paths.contrasts_file, index=False)
    reporting.floor_criterion(score_frame).to_csv(paths.floor_criterion_file, index=False)
    return Evaluation(score_frame, contrasts)


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


def measure_contrasts(cfg: Config, paths: RunPaths, mats: list, frame: pd.DataFrame) -> pd.DataFrame:
    """The paired SFT -> GRPO differences on each test set and the change of the CheXpert - NIH gap (mean over
    seeds, paired per seed and image, seed x image CI, probability of improvement), and the effect of every claim
    (``claims.measure``, with the entries at floor from the scores ``frame``)."""
    E, seeds = cfg.evaluation, training_seeds(cfg)
    chex = {"checkpoint": E.test_grpo_checkpoint, "name": E.test_grpo_reward}
    tests = {}
    for ds in ("CheXpert", "NIH"):
        y, sft = _matrices_of(mats, seeds, dataset=ds, stage="sft")
        _, grpo_preds = _matrices_of(mats, seeds, dataset=ds, stage="grpo", **chex)
        _, base = _matrices_of(mats, seeds, dataset=ds, stage="base", model="medical")
        tests[ds] = (y, {"base": base, "sft": sft, "grpo": grpo_preds})
    rows = [scores.contrast_row({"kind": "paired difference", "contrast": f"SFT -> GRPO on {ds}"},
                                metrics.paired_bootstrap(y, p["sft"], p["grpo"], E.n_bootstrap, E.bootstrap_seed))
            for ds, (y, p) in tests.items()]
    cx, nih = ((tests[d][0], tests[d][1]["sft"], tests[d][1]["grpo"]) for d in ("CheXpert", "NIH"))
    rows.append(scores.contrast_row({"kind": "paired difference", "contrast": "change of the CheXpert - NIH gap, SFT -> GRPO"},
                                    metrics.gap_change(cx, nih, E.n_bootstrap, E.bootstrap_seed)))
    evidence: dict = dict(tests)
    if cfg.sft.general_model_too:
        by_role = {role: {f: _matrices_of(mats, seeds, dataset="validation", stage="sft", model=role, name=f)
                          for f in cfg.sft.formats} for role in ROLES}
        y_val = next(iter(by_role["medical"].values()))[0]
        evidence["validation formats"] = (y_val, {role: {f: p for f, (_, p) in by_fmt.items()}
                                                  for role, by_fmt in by_role.items()})
    evidence["collapse"] = collapse_evidence(cfg, paths)
    measured = claims.measure(evidence, claim_floors(cfg, frame), E.n_bootstrap, E.bootstrap_seed)
    rows += claims.contrast_rows(measured)
    return pd.DataFrame(rows)


def test_entries(cfg: Config, paths: RunPaths, dataset: str) -> dict[str, Entry]:
    """The ``dataset`` entries of the medical SFT model and of ChexReason (the chosen GRPO checkpoint)."""
    chex = {"checkpoint": cfg.evaluation.test_grpo_checkpoint, "name": cfg.evaluation.test_grpo_reward}
    wanted = {"SFT": {"stage": "sft"}, "GRPO": {"stage": "grpo", **chex}}
    found = [e for e in entries(cfg, paths) if e.keys.dataset == dataset]
    return {label: next(e for e in found if all(getattr(e.keys, k) == v for k, v in keys.items())) for label, keys in wanted.items()}


def nih_entries(cfg: Config, paths: RunPaths) -> dict[str, Entry]:
    """The NIH entries of the medical SFT model and of ChexReason (the chosen GRPO checkpoint)."""
    return test_entries(cfg, paths, "NIH")


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
