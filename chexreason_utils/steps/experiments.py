"""Stage 08 (experiments, run only with ``--experiments``): the training grids of the pre-registered experiments.

Each cell of a registration's grid (``registration.grid_cells``; ``experiments.cells: one_point`` runs one) and
training seed is one GRPO run through ``steps.grpo.run_grpo`` (so ``train_grpo`` resumes an interrupted run and
reuses a finished one by its run id) from that seed's Free-Reasoning SFT model, in
``08_experiments/<E>/<cell>/seed-<s>/``; the runs go out as one batch of jobs (``jobs.run_jobs``, ``workers`` at
once), each writing a progress line when it ends. Registered step counts are the tiny profile's
(``experiments.steps_scale`` converts them).

- E3 ``multisite_readout``: a share of the RL prompts from the NIH-like site (``data.sampling.mix_rl_prompts``,
  no NIH test patient), reward ``evaluation.test_grpo_reward``; each run's final checkpoint scored on both test
  sets (cached predictions), the change from SFT per share and the change minus the change at share 0.
- E5 ``collapse_readout``: the 06 ablation recipe with each cell's iterations, learning rate and steps, reward
  ``diagnostics.ablation_reward``; the 06 detector's collapse share per run, cell minus the final recipe (03's run).

Every ruled readout carries the shared verdict (``claims.judge``) with the registration's SESOI and sign.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import run_records
from ..config import Config, training_seeds
from ..data.manifests import in_run, load_manifest, manifest_frame
from ..data.sampling import mix_rl_prompts
from ..evaluation import claims, metrics, registration, scores
from ..evaluation.metrics import eval_labels, matrices, weighted_macro_f1
from ..jobs import run_jobs
from ..paths import RunPaths, model_tag
from .diagnostics import folder_diagnostics
from .evaluation import SETS, claim_floors, read_evaluation, test_entries
from .grpo import ablation_name, grpo_plan, is_finished, run_grpo
from .open_questions import FLOOR_CLAIM, _judged
from .predictions import predict_many
from .sampling import nih_test_selection

STAGE = "08_experiments"
BUILT = ("E3", "E5")
RL_MANIFEST = "rl_manifest.csv"   # E3: a cell's RL set, written beside its runs


def experiment_seeds(cfg: Config) -> list[int]:
    """The training seeds every cell runs: the first ``experiments.max_seeds`` of ``seeds`` (0: all)."""
    seeds = training_seeds(cfg)
    return seeds[:cfg.experiments.max_seeds] if cfg.experiments.max_seeds else seeds


def scaled_steps(cfg: Config, registered) -> int:
    """A registered GRPO step count (the tiny profile's) in this profile's steps (``experiments.steps_scale``)."""
    return max(1, int(round(float(registered) * cfg.experiments.steps_scale)))


def cells(cfg: Config, reg_id: str) -> list[dict]:
    """The cells of ``reg_id`` this profile runs: the whole grid, or (``one_point``) the first cell that trains
    beside its reference (E3: share 0 and the first share above it; E5: the first cell)."""
    grid = registration.grid_cells(registration.get(reg_id))
    if cfg.experiments.cells == "all":
        return grid
    if reg_id == "E3":
        return [next(c for c in grid if c["nih_share"] == 0), next(c for c in grid if c["nih_share"] > 0)]
    return grid[:1]


def cell_dir(paths: RunPaths, reg_id: str, cell: dict) -> Path:
    return paths.stage(STAGE) / reg_id / registration.cell_name(cell)


def e3_rl_set(cfg: Config, paths: RunPaths, share: float) -> pd.DataFrame:
    """E3's RL prompts at ``share``: the RL manifest with that share replaced by NIH-like images of patients
    outside the NIH test manifest (labels CheXpert-mapped by the loader), chosen with ``sampling.seed``."""
    rl = load_manifest(paths, "rl")
    if share == 0:
        return rl
    nih, _, _ = nih_test_selection(cfg, paths.resolve(cfg.data.nih_root))
    pool = manifest_frame(nih.dataset).rename(columns={"labels": "truth"})
    return mix_rl_prompts(rl, pool, load_manifest(paths, "nih_test"), share, cfg.sampling.seed)


def recipe(cfg: Config, paths: RunPaths, reg_id: str, cell: dict, seed: int) -> dict:
    """The ``run_grpo`` arguments of one cell and seed (reward, grpo_cfg, manifest, out_dir). The runs read no
    frozen-policy control (neither readout uses it), so theirs is off; E3's share 0 is 03's run of that seed when
    it is the identical run (``is_finished``), else trained here."""
    if reg_id == "E3":
        share, reward = float(cell["nih_share"]), cfg.evaluation.test_grpo_reward
        if share == 0 and is_finished(cfg, paths, reward, seed, paths.grpo_run(reward, seed)):
            return dict(reward=reward, grpo_cfg=cfg.grpo, manifest=None, out_dir=paths.grpo_run(reward, seed))
        manifest = e3_rl_set(cfg, paths, share)
        grpo_cfg = replace(cfg.grpo, frozen_control=False)
    elif reg_id == "E5":
        reward, manifest, where = cfg.diagnostics.ablation_reward, None, f"{registration.get('E5').file.name}: grid"
        ablation = grpo_plan(replace(cfg, diagnostics=replace(cfg.diagnostics, run_ablation=True)))[ablation_name(cfg)][1]
        grpo_cfg = replace(ablation, num_iterations=int(cell["num_iterations"]),
                           learning_rate=registration.multiple_of(cell["learning_rate"], cfg.grpo.learning_rate, where),
                           max_steps=scaled_steps(cfg, cell["grpo_steps"]), frozen_control=False)
    else:
        raise ValueError(f"stage 08 builds {', '.join(BUILT)}, not {reg_id!r}")
    return dict(reward=reward, grpo_cfg=grpo_cfg, manifest=manifest,
                out_dir=cell_dir(paths, reg_id, cell) / f"seed-{seed}")


def _cell_job(cfg: Config, paths: RunPaths, reg_id: str, cell: dict, seed: int) -> dict:
    t0, spec = time.perf_counter(), recipe(cfg, paths, reg_id, cell, seed)
    run = run_grpo(cfg, paths, spec["reward"], seed, out_dir=spec["out_dir"], grpo_cfg=spec["grpo_cfg"],
                   manifest=spec["manifest"])
    name = registration.cell_name(cell)
    run_records.write_record({"kind": "step", "task": f"{reg_id} {name} seed {seed} ({'reused' if run.reused else 'trained'})",
                              "step": 1, "total": 1, "unit": "run", "elapsed": round(time.perf_counter() - t0, 2)})
    return {"experiment": reg_id, "cell": name, "seed": seed, "out_dir": str(run.out_dir), "reused": run.reused,
            "final_checkpoint": str(run.checkpoints[-1]) if run.checkpoints else "",
            "steps": int(run.log["step"].max()) if "step" in run.log and len(run.log) else 0}


def run_cells(cfg: Config, paths: RunPaths, reg_id: str) -> pd.DataFrame:
    """Every cell x seed run of ``reg_id`` (one job each, ``workers`` at once), one row per run; E3's RL sets are
    written first into each cell's folder (``RL_MANIFEST``)."""
    todo = cells(cfg, reg_id)
    if reg_id == "E3":
        for cell in todo:
            folder = cell_dir(paths, reg_id, cell)
            folder.mkdir(parents=True, exist_ok=True)
            rl = e3_rl_set(cfg, paths, float(cell["nih_share"]))
            rl.assign(truth=[list(t) for t in rl["truth"]], image_path=[in_run(paths, p) for p in rl["image_path"]]) \
                [["image_id", "patient_id", "image_path", "truth"]].to_csv(folder / RL_MANIFEST, index=False)
    jobs = [dict(cfg=cfg, paths=paths, reg_id=reg_id, cell=c, seed=s) for c in todo for s in experiment_seeds(cfg)]
    table = pd.DataFrame(run_jobs(_cell_job, jobs, cfg.workers))
    run_records.count(f"{reg_id} runs reused", int(table["reused"].sum()))
    run_records.count(f"{reg_id} runs trained", int((~table["reused"]).sum()))
    return table.assign(**{k: [c[k] for c in todo for _ in experiment_seeds(cfg)] for k in todo[0]})


def _final_tag(paths: RunPaths, row) -> str:
    """The prediction-cache tag of a run's final checkpoint (03's own tag for 03's run: cached by 04)."""
    ckpt = Path(row.final_checkpoint)
    if Path(row.out_dir).parent.parent == paths.grpo:
        return model_tag(f"grpo-{Path(row.out_dir).name}-{ckpt.name}", row.seed)
    return model_tag(f"{row.experiment.lower()}-{row.cell}-{ckpt.name}", row.seed)


def multisite_readout(cfg: Config, paths: RunPaths, runs: pd.DataFrame) -> pd.DataFrame:
    """E3: per test set and share, the final checkpoint's macro-F1 change from SFT (descriptive) and, for each
    share above 0, that change minus the change at share 0 (= the two GRPO models' paired difference; the
    registered readout, with its verdict); mean over seeds, 95% CI over seeds x images."""
    reg, E, seeds = registration.get("E3"), cfg.evaluation, experiment_seeds(cfg)
    floors = claim_floors(cfg, read_evaluation(paths).scores)
    shares = list(dict.fromkeys(runs["nih_share"]))
    if 0 not in shares:
        raise ValueError("E3 needs the share-0 cell (the change at share 0 is its reference)")
    rows = []
    for dataset in reg.sesoi:
        pair, labels = test_entries(cfg, paths, dataset), eval_labels(cfg, dataset)
        prompt = pair["GRPO"].keys.prompt
        sft = predict_many(cfg, paths, [(*pair["SFT"].models[s], SETS[dataset], pair["SFT"].keys.prompt)
                                        for s in seeds])
        by_share = {}
        for share in shares:
            chosen = runs.loc[runs["nih_share"] == share].set_index("seed").loc[seeds]
            frames = predict_many(cfg, paths, [(_final_tag(paths, r), r.final_checkpoint, SETS[dataset], prompt)
                                               for r in chosen.reset_index().itertuples()])
            by_share[share] = [matrices(f, cfg, labels)[1] for f in frames]
        y_true = matrices(sft[0], cfg, labels)[0]
        sft_preds = [matrices(f, cfg, labels)[1] for f in sft]
        f1 = lambda ps: float(np.mean([weighted_macro_f1(y_true, p, np.ones((1, len(y_true))))[0] for p in ps]))  # noqa: E731
        for share in shares:
            change = metrics.paired_bootstrap(y_true, sft_preds, by_share[share], E.n_bootstrap, E.bootstrap_seed)
            base = {"test_set": dataset, "nih_share": share, "sft_macro_f1": f1(sft_preds),
                    "grpo_macro_f1": f1(by_share[share]), "n_images": len(y_true)}
            rows.append({**scores.contrast_row({**base, "readout": "change from SFT"}, change),
                         "verdict": "descriptive", "sesoi": reg.sesoi_of(dataset),
                         "note": "the registration rules on the change minus the change at share 0"})
            if share != 0:
                diff = metrics.paired_bootstrap(y_true, by_share[0], by_share[share], E.n_bootstrap, E.bootstrap_seed)
                rows.append({**_judged({**base, "readout": "change - change at share 0"}, diff, reg, dataset,
                                       floors[FLOOR_CLAIM[dataset]])})
    return pd.DataFrame(rows)


def collapse_readout(cfg: Config, paths: RunPaths, runs: pd.DataFrame) -> pd.DataFrame:
    """E5: per cell, the 06 detector's collapse share of each seed's run and of the final recipe (03's run of
    ``diagnostics.ablation_reward``), and cell - final (mean over seeds, 95% CI over seeds; not measurable when
    the detector fires in no run of either arm), with its verdict."""
    reg, seeds = registration.get("E5"), experiment_seeds(cfg)
    share = lambda folder: claims.collapse_share(*folder_diagnostics(cfg, paths, Path(folder)))  # noqa: E731
    final = [share(paths.grpo_run(cfg.diagnostics.ablation_reward, s)) for s in seeds]
    rows = []
    for name, group in runs.groupby("cell", sort=False):
        cell = group.set_index("seed").loc[seeds]
        shares = [share(f) for f in cell["out_dir"]]
        result = metrics.seed_image_ci(lambda s, w: shares[s] - final[s], len(seeds), ())
        row = scores.contrast_row({"cell": name, **{k: cell[k].iloc[0] for k in reg.grid if k != "seeds"},
                                   "readout": "cell - final recipe collapse share"}, result)
        row["not_measurable"] = "" if max(shares + final) > 0 else "the detector fired in no run of either arm"
        verdict, note = claims.judge(row, reg.direction_of(), reg.sesoi_of(), f"{reg.file.name}: sesoi")
        rows.append({**row, "verdict": verdict, "note": note, "sesoi": reg.sesoi_of(),
                     "cell_share": float(np.mean(shares)), "final_share": float(np.mean(final)),
                     "steps": int(cell["steps"].max())})
    return pd.DataFrame(rows)
