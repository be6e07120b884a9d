"""What several stages read of earlier stages' outputs: the pool prevalence 01 wrote, the SFT model GRPO starts
from (02), a GRPO run's checkpoints and their validation scores (03), the frames 04 wrote and the entries at floor
each claim involves. Each stage's own module (``steps/``) imports these from here, never from another stage."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import Config
from ..evaluation import claims, scores
from ..evaluation.scoring_plan import checkpoints_to_score, scoring_plan as plan_scoring
from ..evaluation.metrics import test_datasets
from ..paths import RunPaths, checkpoint_step, model_tag
from ..train import grpo


def pool_prevalence(paths: RunPaths) -> dict[str, float]:
    """Label -> fraction of the training pool's images that carry it."""
    table = pd.read_csv(paths.pool_prevalence_file)
    return dict(zip(table["label"], table["fraction"]))


def sft_start(cfg: Config, paths: RunPaths, seed: int) -> tuple[str, Path]:
    """(cache tag, folder) of the medical SFT model GRPO starts from, for one seed."""
    fmt = cfg.grpo.start_format
    return model_tag(f"sft-medical-{fmt}", seed), paths.sft_model("medical", fmt, seed)


def read_checkpoint_scores(paths: RunPaths, reward: str, seed: int) -> pd.DataFrame:
    """The ``checkpoint_scores.csv`` 03 wrote for one GRPO run and seed (read, never rewritten, by later stages)."""
    path = paths.checkpoint_scores(reward, seed)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run 03_grpo first (it scores every checkpoint)")
    return pd.read_csv(path)


def grpo_checkpoint(paths: RunPaths, reward: str, which: str, seed: int) -> Path:
    """The best-F1 or final checkpoint of one GRPO run and seed, from its checkpoint_scores.csv."""
    table = read_checkpoint_scores(paths, reward, seed)
    row = table.loc[table["is_best_f1" if which == "best_f1" else "is_final"]].iloc[0]
    return paths.grpo_run(reward, seed) / row["checkpoint"]


def grpo_models(cfg: Config, paths: RunPaths, reward: str, seed: int,
                evaluation_set: str | None = None) -> list[tuple[int, str, Path]]:
    """(step, cache tag, folder) of the SFT start (step 0) and of the checkpoints of one GRPO run: all of them, or
    those the profile's scoring plan (``scoring_plan``) scores on ``evaluation_set`` (val or a test manifest;
    the test sets' best-F1 checkpoint is read from the run's validation scores)."""
    tag, folder = sft_start(cfg, paths, seed)
    out = [(0, tag, folder)]
    found = grpo.checkpoints(paths.grpo_run(reward, seed))
    if evaluation_set is not None:
        best = None
        if evaluation_set != "val":
            table = read_checkpoint_scores(paths, reward, seed)
            best = int(table.loc[table["is_best_f1"], "step"].iloc[0]) if table["is_best_f1"].any() else None
        plan = plan_scoring(cfg.evaluation, [checkpoint_step(c) for c in found], best,
                            test_sets=() if evaluation_set == "val" else (evaluation_set,))
        found = checkpoints_to_score(found, plan, evaluation_set)
    for c in found:
        out.append((checkpoint_step(c), model_tag(f"grpo-{reward}-{c.name}", seed), c))
    return out


@dataclass
class Evaluation:
    scores: pd.DataFrame      # the scores frame (``scores`` module)
    contrasts: pd.DataFrame   # paired differences and claim effects with CIs


def read_evaluation(paths: RunPaths) -> Evaluation:
    """The two frames 04 wrote (05 and later read them, never recompute them)."""
    for f in (paths.scores_file, paths.contrasts_file):
        if not f.exists():
            raise FileNotFoundError(f"{f} not found: run 04_evaluation first (it writes the scores frame)")
    return Evaluation(scores.read_scores(paths.scores_file), pd.read_csv(paths.contrasts_file))


def read_family_members(paths: RunPaths) -> pd.DataFrame:
    """The members of 07's family-wise view (claims, E0, E4), which stage 08 extends with the experiments'."""
    if not paths.family_members_file.exists():
        raise FileNotFoundError(f"{paths.family_members_file} not found: run 07_open_questions first (its family-wise "
                                "view writes the members)")
    return pd.read_csv(paths.family_members_file)


def claim_arm_floors(cfg: Config, frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Per claim contrast (C1-C3, C4's two scaffold gains, C2 and C3 on PadChest), the entries at floor in its reference arm and in its
    treatment arm (``scores.entries_at_floor``; "" for none), for the directional floor rule
    (``verdict_statistics.directional_floor``). A scaffold gain's reference arm is the model's other SFT formats."""
    chex = {"stage": "grpo", "name": cfg.evaluation.test_grpo_reward, "checkpoint": cfg.evaluation.test_grpo_checkpoint}
    sft = {"stage": "sft", "model": "medical"}
    arms = {"C1": ({"dataset": "CheXpert", **sft}, {"dataset": "CheXpert", **chex}),
            "C2": ({"dataset": "NIH", **sft}, {"dataset": "NIH", **chex}),
            "C3": ({"dataset": "NIH", "stage": "base", "model": "medical"}, {"dataset": "NIH", **sft})}
    if "PadChest" in test_datasets(cfg):
        arms["C2 PadChest"] = ({"dataset": "PadChest", **sft}, {"dataset": "PadChest", **chex})
        arms["C3 PadChest"] = ({"dataset": "PadChest", "stage": "base", "model": "medical"}, {"dataset": "PadChest", **sft})
    if cfg.sft.general_model_too:
        others = [f for f in cfg.sft.formats if f != claims.SCAFFOLD]
        for role in ("general", "medical"):
            arms[f"C4 {role} gain"] = ({"dataset": "validation", "stage": "sft", "model": role, "name": others},
                                       {"dataset": "validation", "stage": "sft", "model": role, "name": claims.SCAFFOLD})
    return {key: (scores.entries_at_floor(frame, ref), scores.entries_at_floor(frame, treat))
            for key, (ref, treat) in arms.items()}

