"""Stage 08 (experiments, run only with ``--experiments``): the training grids of the pre-registered experiments.

Each cell of a registration's grid (``registration.grid_cells``; ``experiments.cells: one_point`` runs one) and
training seed is one GRPO run through ``steps.grpo.run_grpo`` (so ``train_grpo`` resumes an interrupted run and
reuses a finished one by its run id) from that seed's Free-Reasoning SFT model (or E2's, trained here), in
``08_experiments/<E>/<cell>/seed-<s>/``; the runs go out as one batch of jobs (``jobs.run_jobs``, ``workers`` at
once), each writing a progress line when it ends. Registered step counts are the tiny profile's
(``experiments.steps_scale`` converts them).

- E1 ``dose_readout``: GRPO steps x learning-rate schedule x RL set (``sampling.n_rl`` images, or a larger set
  drawn by 01's sampler rule outside every SFT, validation and test patient: ``e1_rl_set``); step 0 is the seed's
  SFT model; a linear-decay run per dose, one constant-LR run of the largest dose per RL set whose checkpoints at
  the smaller doses are those doses' models (``e1_run_cell``). Readouts: CheXpert / NIH macro-F1 and validation
  labels per answer at each dose, and their registered slopes against log3(steps / 40).

- E2 ``shortcut_readout`` (the planted site and the counterfactual test images: ``shortcut``): per rho, a MIMIC-like
  site with the marker planted (``08_experiments/E2/world_rho-<rho>_finding-<finding>/``), reward
  ``evaluation.test_grpo_reward``; arm "marker in RL data only" runs GRPO on the RL manifest's planted renders from
  the seed's SFT model, arm "marker in SFT and RL data" first an SFT run of 02's recipe on the planted SFT images
  (``shortcut_runs``); rho 0 is the main world's models in both arms (03's run when identical). The base, SFT and
  GRPO models' shortcut sensitivity on every test image with and without the marker, and GRPO - SFT.
- E3 ``multisite_readout``: a share of the RL prompts from the NIH-like site (``data.sampling.mix_rl_prompts``,
  no NIH test patient), reward ``evaluation.test_grpo_reward``; each run's final checkpoint scored on both test
  sets (cached predictions), the change from SFT per share and the change minus the change at share 0.
- Q1 ``reward_unit_readout``: E1's 40-step cell (linear, 01's RL set) under each registered reward, the hard reward
  (03's run when identical) and ``per_label`` (``train.rewards``: balanced accuracy over the labels in place of
  Jaccard); the change from SFT on both test sets per reward, the change minus the change under hard, and labels
  per answer on validation.
- E5 ``collapse_readout``: the 06 ablation recipe with each cell's iterations, learning rate and steps, reward
  ``diagnostics.ablation_reward``; the 06 detector's collapse share per run, cell minus the final recipe (03's run).

Every ruled readout carries the shared verdict (``claims.judge``) with the registration's SESOI and sign.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import run_records
from ..config import Config, training_seeds
from ..data.phantom import planted_site_current
from ..data.manifests import in_run, load_manifest, manifest_frame
from ..data import load_mimic
from ..data.sampling import draw_rl_set, mix_rl_prompts
from ..evaluation import claims, metrics, registration, scores
from ..evaluation.metrics import eval_labels, matrices, weighted_macro_f1
from ..jobs import run_jobs
from ..labels import CHEXPERT_LABELS
from ..paths import RunPaths, checkpoint_name, model_tag
from ..train.model_registry import base_model
from . import shortcut
from .diagnostics import folder_diagnostics
from .evaluation import SETS, claim_floors, read_evaluation, test_entries, zero_shot_prompt
from .grpo import ablation_name, grpo_plan, is_finished, run_grpo
from .open_questions import FLOOR_CLAIM, _cached, _digest, _judged, _predict_variants
from .predictions import predict_many
from .sampling import nih_test_selection
from .sft import _sft_job, sft_start

STAGE = "08_experiments"
BUILT = ("E1", "E2", "E3", "E5", "Q1")
RL_MANIFEST = "rl_manifest.csv"   # E3, E1: a cell's RL set, written beside its runs
N_RL = "sampling.n_rl"   # E1's registered RL set of 01's size (the RL manifest itself)
E1_UNIT = 40             # E1's slope is against log3(steps / 40) (registered steps, the tiny profile's)
E2_BOTH, E2_RL = "marker in SFT and RL data", "marker in RL data only"   # E2's registered arms


def experiment_seeds(cfg: Config) -> list[int]:
    """The training seeds every cell runs: the first ``experiments.max_seeds`` of ``seeds`` (0: all)."""
    seeds = training_seeds(cfg)
    return seeds[:cfg.experiments.max_seeds] if cfg.experiments.max_seeds else seeds


def scaled_steps(cfg: Config, registered) -> int:
    """A registered GRPO step count (the tiny profile's) in this profile's steps (``experiments.steps_scale``)."""
    return max(1, int(round(float(registered) * cfg.experiments.steps_scale)))


def cells(cfg: Config, reg_id: str) -> list[dict]:
    """The cells of ``reg_id`` this profile runs: the whole grid, or (``one_point``) the first cell that trains
    beside its reference (E1: step 0 and the smallest dose, linear, 01's RL set; E3: share 0 and the first share
    above it; E2: rho 0 and the largest rho, marker in RL data only (no SFT of its own); Q1: both rewards; E5: the
    first cell)."""
    grid = registration.grid_cells(registration.get(reg_id))
    if cfg.experiments.cells == "all":
        return grid
    if reg_id == "E2":
        top = max(c["rho"] for c in grid)
        return [c for c in grid if c["arm"] == E2_RL and c["rho"] in (0, top)]
    if reg_id == "E3":
        return [next(c for c in grid if c["nih_share"] == 0), next(c for c in grid if c["nih_share"] > 0)]
    if reg_id == "Q1":   # one step count: both rewards
        return grid
    if reg_id == "E1":   # step 0 and the smallest dose of one arm (linear, the RL manifest)
        first = min(c["grpo_steps"] for c in grid if c["grpo_steps"] > 0)
        return [c for c in grid if c["grpo_steps"] <= first and c["lr_schedule"] == "linear" and c["rl_set"] == N_RL]
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


def e1_rl_size(cfg: Config, rl_set: str) -> int:
    """The number of RL images of E1's ``rl_set``: ``sampling.n_rl`` or ``k x sampling.n_rl``."""
    if rl_set == N_RL:
        return cfg.sampling.n_rl
    return int(round(registration.multiple_of(rl_set, cfg.sampling.n_rl, "E1_dose_response.yaml: grid.rl_set")))


def e1_rl_set(cfg: Config, paths: RunPaths, rl_set: str) -> pd.DataFrame:
    """E1's RL prompts of arm ``rl_set``: the RL manifest, or ``e1_rl_size`` images drawn by 01's sampler rule
    (greedy, the RL seed ``sampling.seed + 1``) from the MIMIC-like pool outside every patient of the SFT,
    validation and both test manifests; a ValueError naming the numbers when the pool is too small."""
    if rl_set == N_RL:
        return load_manifest(paths, "rl")
    d, s = cfg.data, cfg.sampling
    pool = load_mimic(paths.resolve(d.mimic_root), d.uncertainty_policy, splits=s.pool_splits,
                      check_images=d.check_images)
    excluded = [p for name in ("sft", "val", "chexpert_test", "nih_test") for p in load_manifest(paths, name)["patient_id"]]
    drawn = draw_rl_set(manifest_frame(pool.dataset), pool.labels(), excluded, e1_rl_size(cfg, rl_set), s.min_fraction,
                        s.max_fraction, s.overrep_penalty, s.seed + 1, f"E1 RL set {rl_set!r}")
    return drawn.rename(columns={"labels": "truth"})


def e1_run_cell(cell: dict) -> dict | None:
    """The cell whose run holds E1 ``cell``'s model: None at step 0 (the SFT model), the cell itself with linear
    decay (the decay depends on max_steps), the largest dose of its RL set with a constant rate (one run, its
    checkpoints at every dose)."""
    if cell["grpo_steps"] == 0:
        return None
    if cell["lr_schedule"] == "linear":
        return cell
    return {**cell, "grpo_steps": max(registration.get("E1").grid["grpo_steps"])}


def e1_settings(cfg: Config, cell: dict):
    """The GRPO settings of E1's run cell: its scaled steps and schedule, no control; checkpoints every gcd of the
    scaled doses (so a constant-rate run has one at each dose, and disk stays small), except a linear run of 03's
    length, which keeps 03's ``save_steps`` so that 03's identical run is reused."""
    doses = [scaled_steps(cfg, s) for s in registration.get("E1").grid["grpo_steps"] if s > 0]
    steps = scaled_steps(cfg, cell["grpo_steps"])
    as_03 = cell["lr_schedule"] == "linear" and steps == cfg.grpo.max_steps
    return replace(cfg.grpo, max_steps=steps, lr_scheduler=cell["lr_schedule"], frozen_control=False,
                   save_steps=cfg.grpo.save_steps if as_03 else math.gcd(*doses))


def e2_run_cell(cell: dict) -> dict:
    """The cell whose run holds E2 ``cell``'s models: at rho 0 both arms are the main world's (one run)."""
    return {**cell, "arm": E2_RL} if float(cell["rho"]) == 0 else cell


def e2_planted_root(paths: RunPaths, cell: dict) -> Path:
    """The planted MIMIC-like site of E2 ``cell``'s rho and finding (shared by both arms)."""
    return paths.stage(STAGE) / "E2" / f"world_rho-{float(cell['rho']):g}_finding-{cell['finding']}"


def e2_own_sft(cell: dict) -> bool:
    """Whether E2 ``cell`` trains an SFT model of its own (marker in SFT and RL data, rho > 0), not 02's."""
    if cell["arm"] not in (E2_BOTH, E2_RL):
        raise ValueError(f"E2 registration: grid.arm {cell['arm']!r}; the arms are {E2_BOTH!r} and {E2_RL!r}")
    return float(cell["rho"]) > 0 and cell["arm"] == E2_BOTH


def e2_sft_dir(paths: RunPaths, cell: dict, seed: int) -> Path | None:
    """The SFT model E2 ``cell`` trains (``e2_own_sft``) for ``seed``; None: the seed's 02 model."""
    return cell_dir(paths, "E2", cell) / f"sft-seed-{seed}" if e2_own_sft(cell) else None


def recipe(cfg: Config, paths: RunPaths, reg_id: str, cell: dict, seed: int) -> dict:
    """The ``run_grpo`` arguments of one cell and seed (reward, grpo_cfg, manifest, out_dir, start: the SFT
    model, None for the seed's 02 model). The runs read no frozen-policy control (no computed readout uses it; E1's
    paired reward gain is left out, as its page says), so theirs is off; E3's share 0, E2's rho 0 and E1's cell of
    03's settings and RL set (and Q1's cell of the same, under each reward), is 03's run of that seed when it is the
    identical run (``is_finished``), else trained here. E2 at rho > 0: the RL manifest's planted renders, from E2's SFT model in the arm that plants it there."""
    reward, start, same_as_03 = cfg.evaluation.test_grpo_reward, None, False
    if reg_id in ("E1", "Q1"):
        reward, grpo_cfg = cell.get("reward", reward), e1_settings(cfg, cell)
        same_as_03 = cell["rl_set"] == N_RL and replace(grpo_cfg, frozen_control=cfg.grpo.frozen_control) == cfg.grpo
        manifest = None if cell["rl_set"] == N_RL else e1_rl_set(cfg, paths, cell["rl_set"])
    elif reg_id == "E2":
        cell, grpo_cfg = e2_run_cell(cell), replace(cfg.grpo, frozen_control=False)
        same_as_03 = float(cell["rho"]) == 0
        manifest = None if same_as_03 else shortcut.planted_manifest(paths, "rl", e2_planted_root(paths, cell))
        start = e2_sft_dir(paths, cell, seed)
    elif reg_id == "E3":
        share = float(cell["nih_share"])
        same_as_03, grpo_cfg = share == 0, replace(cfg.grpo, frozen_control=False)
        manifest = e3_rl_set(cfg, paths, share)
    elif reg_id == "E5":
        reward, manifest, where = cfg.diagnostics.ablation_reward, None, f"{registration.get('E5').file.name}: grid"
        ablation = grpo_plan(replace(cfg, diagnostics=replace(cfg.diagnostics, run_ablation=True)))[ablation_name(cfg)][1]
        grpo_cfg = replace(ablation, num_iterations=int(cell["num_iterations"]),
                           learning_rate=registration.multiple_of(cell["learning_rate"], cfg.grpo.learning_rate, where),
                           max_steps=scaled_steps(cfg, cell["grpo_steps"]), frozen_control=False)
    else:
        raise ValueError(f"stage 08 builds {', '.join(BUILT)}, not {reg_id!r}")
    if same_as_03 and is_finished(cfg, paths, reward, seed, paths.grpo_run(reward, seed)):
        return dict(reward=reward, grpo_cfg=cfg.grpo, manifest=None, out_dir=paths.grpo_run(reward, seed), start=None)
    return dict(reward=reward, grpo_cfg=grpo_cfg, manifest=manifest, start=start,
                out_dir=cell_dir(paths, reg_id, cell) / f"seed-{seed}")


def _cell_job(cfg: Config, paths: RunPaths, reg_id: str, cell: dict, seed: int) -> dict:
    t0, spec = time.perf_counter(), recipe(cfg, paths, reg_id, cell, seed)
    run = run_grpo(cfg, paths, spec["reward"], seed, out_dir=spec["out_dir"], grpo_cfg=spec["grpo_cfg"],
                   manifest=spec["manifest"], start=spec["start"])
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
    if reg_id == "E1":
        return dose_runs(cfg, paths, todo)
    if reg_id == "E2":
        return shortcut_runs(cfg, paths, todo)
    if reg_id == "E3":
        for cell in todo:
            _write_rl_set(paths, cell_dir(paths, reg_id, cell), e3_rl_set(cfg, paths, float(cell["nih_share"])))
    table = pd.DataFrame(_run_batch(cfg, paths, reg_id, todo, experiment_seeds(cfg)))
    return table.assign(**{k: [c[k] for c in todo for _ in experiment_seeds(cfg)] for k in todo[0]})


def _run_batch(cfg: Config, paths: RunPaths, reg_id: str, cells_: list[dict], seeds: list[int]) -> list[dict]:
    """``_cell_job`` of every cell x seed (one job each, ``workers`` at once), rows in job order; the reused and
    trained runs counted for the runner's summary."""
    jobs = [dict(cfg=cfg, paths=paths, reg_id=reg_id, cell=c, seed=s) for c in cells_ for s in seeds]
    rows = run_jobs(_cell_job, jobs, cfg.workers)
    run_records.count(f"{reg_id} runs reused", sum(bool(r["reused"]) for r in rows))
    run_records.count(f"{reg_id} runs trained", sum(not r["reused"] for r in rows))
    return rows


def _write_rl_set(paths: RunPaths, folder: Path, rl: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rl.assign(truth=[list(t) for t in rl["truth"]], image_path=[in_run(paths, p) for p in rl["image_path"]]) \
        [["image_id", "patient_id", "image_path", "truth"]].to_csv(folder / RL_MANIFEST, index=False)


def dose_runs(cfg: Config, paths: RunPaths, todo: list[dict]) -> pd.DataFrame:
    """E1: one row per cell and seed with its model (tag, folder): the seed's SFT model at step 0, else the
    checkpoint at the cell's scaled dose of its ``e1_run_cell`` run (one job per run, ``workers`` at once). An
    arm whose larger RL set the world cannot supply is not run: its rows say why (``skipped``), and it is counted.
    A larger RL set is written into each of its run cells' folders (``RL_MANIFEST``)."""
    seeds, skipped = experiment_seeds(cfg), {}
    runs = list({registration.cell_name(r): r for r in map(e1_run_cell, todo) if r is not None}.values())
    for rl_set in dict.fromkeys(r["rl_set"] for r in runs if r["rl_set"] != N_RL):
        try:
            rl = e1_rl_set(cfg, paths, rl_set)
        except ValueError as err:
            skipped[rl_set] = f"arm not run: {err}"
            print(f"E1: {skipped[rl_set]}", flush=True)
            run_records.count(f"E1 runs skipped (RL set {rl_set}: the world's pool is too small)",
                              sum(r["rl_set"] == rl_set for r in runs) * len(seeds))
            continue
        for r in (r for r in runs if r["rl_set"] == rl_set):
            _write_rl_set(paths, cell_dir(paths, "E1", r), rl)
    runs = [r for r in runs if r["rl_set"] not in skipped]
    done = {(row["cell"], row["seed"]): row for row in _run_batch(cfg, paths, "E1", runs, seeds)}
    rows = []
    for cell in todo:
        for seed in seeds:
            row = {**cell, "experiment": "E1", "cell": registration.cell_name(cell), "seed": seed,
                   "steps": scaled_steps(cfg, cell["grpo_steps"]) if cell["grpo_steps"] else 0,
                   "skipped": skipped.get(cell["rl_set"], "") if cell["grpo_steps"] else "", "reused": True}
            if cell["grpo_steps"] == 0:
                row["tag"], row["model"] = map(str, sft_start(cfg, paths, seed))
            elif not row["skipped"]:
                run = done[(registration.cell_name(e1_run_cell(cell)), seed)]
                ckpt = Path(run["out_dir"]) / checkpoint_name(row["steps"])
                if not ckpt.is_dir():
                    raise FileNotFoundError(f"E1 {row['cell']} seed {seed}: no checkpoint {ckpt} in its run")
                row.update(tag=_checkpoint_tag(paths, "E1", run["cell"], run["out_dir"], ckpt, seed), model=str(ckpt),
                           reused=run["reused"])
            rows.append(row)
    return pd.DataFrame(rows).fillna({"tag": "", "model": ""})


def _e2_sft_job(cfg: Config, paths: RunPaths, cell: dict, seed: int) -> dict:
    """E2's SFT of one cell and seed: 02's recipe (medical model, GRPO's start format, the seed) on the SFT
    manifest's planted renders, with a progress line."""
    t0, out_dir = time.perf_counter(), e2_sft_dir(paths, cell, seed)
    images = list(shortcut.planted_manifest(paths, "sft", e2_planted_root(paths, cell))["image_path"])
    result = _sft_job(cfg, paths, "medical", cfg.grpo.start_format, seed, out_dir=out_dir, image_paths=images)
    run_records.write_record({"kind": "step", "task": f"E2 {registration.cell_name(cell)} SFT seed {seed} "
                              f"({'reused' if result.reused else 'trained'})", "step": 1, "total": 1, "unit": "run",
                              "elapsed": round(time.perf_counter() - t0, 2)})
    return {"cell": registration.cell_name(cell), "seed": seed, "reused": result.reused}


def shortcut_runs(cfg: Config, paths: RunPaths, todo: list[dict]) -> pd.DataFrame:
    """E2: one row per cell and seed with its SFT model (sft_tag, sft_model) and GRPO run. First the planted
    MIMIC-like site of each rho > 0 (``shortcut.write_planted``, skipped when current) and its RL set
    (``RL_MANIFEST`` in each cell's folder), then the SFT runs of the arm "marker in SFT and RL data", then the
    GRPO runs (rho 0: one run for both arms, 03's when identical); each a batch of jobs, ``workers`` at once."""
    seeds, planted = experiment_seeds(cfg), {}
    for cell in (c for c in todo if float(c["rho"]) > 0):
        planted[e2_planted_root(paths, cell)] = shortcut.planted_world(cfg, float(cell["rho"]), cell["finding"])
    run_jobs(shortcut.write_planted, [dict(root=root, world=world) for root, world in planted.items()
                                      if not planted_site_current(root, world)], cfg.workers)
    for cell in (c for c in todo if float(c["rho"]) > 0):
        rl = shortcut.planted_manifest(paths, "rl", e2_planted_root(paths, cell))
        _write_rl_set(paths, cell_dir(paths, "E2", cell), rl)
    trained = [c for c in todo if e2_own_sft(c)]
    sft_rows = run_jobs(_e2_sft_job, [dict(cfg=cfg, paths=paths, cell=c, seed=s) for c in trained for s in seeds],
                        cfg.workers)
    run_records.count("E2 SFT runs reused", sum(bool(r["reused"]) for r in sft_rows))
    run_records.count("E2 SFT runs trained", sum(not r["reused"] for r in sft_rows))
    runs = list({registration.cell_name(r): r for r in map(e2_run_cell, todo)}.values())
    done = {(row["cell"], row["seed"]): row for row in _run_batch(cfg, paths, "E2", runs, seeds)}
    rows = []
    for cell in todo:
        for seed in seeds:
            run = done[(registration.cell_name(e2_run_cell(cell)), seed)]
            folder = e2_sft_dir(paths, cell, seed)
            sft_tag, sft_model = sft_start(cfg, paths, seed) if folder is None else \
                (model_tag(f"e2-{registration.cell_name(cell)}-sft", seed), folder)
            rows.append({**cell, **run, "cell": registration.cell_name(cell), "run_cell": run["cell"],
                         "tag": _checkpoint_tag(paths, "E2", run["cell"], run["out_dir"], Path(run["final_checkpoint"]),
                                                seed),
                         "sft_tag": sft_tag, "sft_model": str(sft_model)})
    return pd.DataFrame(rows)


def _checkpoint_tag(paths: RunPaths, reg_id: str, cell: str, out_dir, ckpt: Path, seed: int) -> str:
    """The prediction-cache tag of a checkpoint of one run: 03's own tag for 03's run (cached by 03 and 04), else
    the experiment's and cell's."""
    if Path(out_dir).parent.parent == paths.grpo:
        return model_tag(f"grpo-{Path(out_dir).name}-{ckpt.name}", seed)
    return model_tag(f"{reg_id.lower()}-{cell}-{ckpt.name}", seed)


def _final_tag(paths: RunPaths, row) -> str:
    """The prediction-cache tag of a run's final checkpoint (``_checkpoint_tag``)."""
    return _checkpoint_tag(paths, row.experiment, row.cell, row.out_dir, Path(row.final_checkpoint), row.seed)


def _changes_from_sft(cfg: Config, paths: RunPaths, runs: pd.DataFrame, reg_id: str, factor: str, reference,
                      contrast: str, note: str) -> pd.DataFrame:
    """Per test set and value of ``factor`` (a column of ``runs``): the final checkpoint's macro-F1 change from SFT
    (descriptive) and, for each value but ``reference``, that change minus the change at ``reference`` (= the two
    GRPO models' paired difference, SFT cancels: the registered readout ``contrast``, with its verdict); mean over
    seeds, 95% CI over seeds x images."""
    reg, E, seeds = registration.get(reg_id), cfg.evaluation, experiment_seeds(cfg)
    floors = claim_floors(cfg, read_evaluation(paths).scores)
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
            frames = predict_many(cfg, paths, [(_final_tag(paths, r), r.final_checkpoint, SETS[dataset], prompt)
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
                rows.append({**_judged({**base, "readout": contrast}, diff, reg, dataset,
                                       floors[FLOOR_CLAIM[dataset]])})
    return pd.DataFrame(rows)


def multisite_readout(cfg: Config, paths: RunPaths, runs: pd.DataFrame) -> pd.DataFrame:
    """E3: per test set and share, the change from SFT and the change minus the change at share 0
    (``_changes_from_sft``)."""
    return _changes_from_sft(cfg, paths, runs, "E3", "nih_share", 0, "change - change at share 0",
                             "the registration rules on the change minus the change at share 0")


def reward_unit_readout(cfg: Config, paths: RunPaths, runs: pd.DataFrame) -> pd.DataFrame:
    """Q1: per test set and reward, the change from SFT and the change minus the change under hard
    (``_changes_from_sft``); then, per
    reward and for the SFT model, the scored labels named per answer on validation (03's checkpoint prompt;
    descriptive: mean over seeds, each seed's beside it)."""
    reference = registration.get("Q1").grid["reward"][0]
    table = _changes_from_sft(cfg, paths, runs, "Q1", "reward", reference, f"change - change under {reference}",
                              f"the registration rules on the change minus the change under {reference}")
    seeds, fmt = experiment_seeds(cfg), cfg.grpo.start_format
    models = {"SFT": [(*map(str, sft_start(cfg, paths, s)), "val", fmt) for s in seeds]}
    for reward in dict.fromkeys(runs["reward"]):
        chosen = runs.loc[runs["reward"] == reward].set_index("seed").loc[seeds].reset_index()
        models[reward] = [(_final_tag(paths, r), r.final_checkpoint, "val", fmt) for r in chosen.itertuples()]
    rows = []
    for model, jobs in models.items():
        per_seed = [float(matrices(f, cfg, CHEXPERT_LABELS)[1].sum(axis=1).mean()) for f in predict_many(cfg, paths, jobs)]
        rows.append({"test_set": "validation", "reward": model, "readout": "labels per answer", "verdict": "descriptive",
                     "effect": float(np.mean(per_seed)), "per_seed": ", ".join(f"{v:.3f}" for v in per_seed),
                     "note": "no SESOI registered for this readout"})
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True)


def _counterfactual_predictions(cfg: Config, paths: RunPaths, frame: pd.DataFrame,
                                models: list[tuple[str, str, str]]) -> dict[tuple[str, str], tuple[pd.DataFrame, ...]]:
    """{(tag, test set): (predictions without the marker, with it), merged with ``frame``'s rows} of (tag, model,
    kind) models on the counterfactual images of each test set, with 04's prompt of the kind's entry (base: the
    zero-shot prompt; SFT; GRPO) on that set; the missing files made in one batch of jobs, cached in the shared
    prediction folder keyed on the images' bytes (as E4's variants)."""
    prompts = {d: {"base": zero_shot_prompt(cfg), **{k: e.keys.prompt for k, e in test_entries(cfg, paths, d).items()}}
               for d in shortcut.TEST_MANIFESTS}
    todo = {}
    for dataset, images in frame.groupby("test_set", sort=False):
        name = f"e2_{SETS[dataset]}_{_digest(images)}"
        for tag, model, kind in models:
            prompt = prompts[dataset][kind]
            todo[(tag, dataset)] = (images, dict(cfg=cfg, model=str(model), images=images[["image_id", "image_path"]],
                                                 prompt=prompt, out=paths.prediction_file(tag, name, prompt)))
    missing = [job for _, job in todo.values()
               if not _cached(cfg, job["out"], job["model"], job["prompt"], job["images"]["image_id"])]
    run_jobs(_predict_variants, missing, cfg.workers)
    merged = {key: images.merge(_predict_variants(**job), on="image_id", how="left")
              for key, (images, job) in todo.items()}
    return {key: tuple(f.loc[f["condition"] == c] for c in shortcut.CONDITIONS) for key, f in merged.items()}


E2_NOTES = {"base": "one fixed model (no seed): the image-only CI",
            "SFT": "the frozen-policy control is this policy (its weights never move): its sensitivity is this row's",
            "GRPO": "the run's final checkpoint"}


def shortcut_readout(cfg: Config, paths: RunPaths, runs: pd.DataFrame) -> pd.DataFrame:
    """E2: per cell (rho x arm), the shortcut sensitivity (``shortcut.marker_effect``: naming the finding with the
    marker minus without it, on ``shortcut.counterfactual_tests``) of the base model, the cell's SFT model and its
    GRPO run's final checkpoint (descriptive, with the share naming the finding with and without the marker), and
    GRPO - SFT (the registered readout, with its verdict); mean over seeds, 95% CI over seeds x images of both test
    sets pooled (``shortcut.sensitivity_ci``); with the RL and SFT images that carry the marker."""
    reg, E, seeds = registration.get("E2"), cfg.evaluation, experiment_seeds(cfg)
    frame = shortcut.counterfactual_tests(paths, paths.stage(STAGE) / "E2" / "counterfactual")
    base = (model_tag("base-medical"), base_model(cfg, paths, "medical"), "base")
    models = [base, *[(r.sft_tag, r.sft_model, "SFT") for r in runs.itertuples()],
              *[(r.tag, r.final_checkpoint, "GRPO") for r in runs.itertuples()]]
    pairs = _counterfactual_predictions(cfg, paths, frame, list(dict.fromkeys(models)))
    rows = []
    for name, group in runs.groupby("cell", sort=False):
        cell = group.set_index("seed").loc[seeds]
        first, finding = cell.iloc[0], cell["finding"].iloc[0]
        tags = {"base": [base[0]], "SFT": list(cell["sft_tag"]), "GRPO": list(cell["tag"])}
        per = {model: [[shortcut.marker_effect(*pairs[(t, d)], finding, E.invalid_policy)
                        for d in shortcut.TEST_MANIFESTS] for t in by_seed] for model, by_seed in tags.items()}
        named = {model: np.mean([shortcut.named_shares([pairs[(t, d)] for d in shortcut.TEST_MANIFESTS], finding,
                                                       E.invalid_policy) for t in by_seed], axis=0)
                 for model, by_seed in tags.items()}
        root = e2_planted_root(paths, first)
        what = {"cell": name, "rho": first["rho"], "arm": first["arm"], "finding": finding,
                "marked_rl_images": shortcut.marked_count(paths, "rl", root) if first["rho"] > 0 else 0,
                "marked_sft_images": shortcut.marked_count(paths, "sft", root) if e2_own_sft(first) else 0,
                "n_images": sum(len(d) for d in per["SFT"][0])}
        for model, by_seed in per.items():
            result = shortcut.sensitivity_ci(by_seed, E.n_bootstrap, E.bootstrap_seed)
            rows.append({**scores.contrast_row({**what, "model": model, "readout": "shortcut sensitivity"}, result),
                         "not_measurable": "", "verdict": "descriptive", "note": E2_NOTES[model],
                         "sesoi": reg.sesoi_of(),
                         "named_without_marker": named[model][0], "named_with_marker": named[model][1]})
        diff = [[g - s for g, s in zip(grpo_, sft_)] for grpo_, sft_ in zip(per["GRPO"], per["SFT"])]
        rows.append(_judged({**what, "model": "GRPO - SFT", "readout": "GRPO - SFT sensitivity"},
                            shortcut.sensitivity_ci(diff, E.n_bootstrap, E.bootstrap_seed), reg, "", ""))
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


def _e1_predictions(cfg: Config, paths: RunPaths, live: pd.DataFrame) -> dict[str, list[pd.DataFrame]]:
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
    floors = claim_floors(cfg, read_evaluation(paths).scores)
    live = runs.loc[runs["skipped"] == ""].reset_index(drop=True)
    frames = _e1_predictions(cfg, paths, live)
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
            else:
                slope_rows.append(_judged(base, result, reg, d, floors[FLOOR_CLAIM[d]]))
    return pd.DataFrame(dose_rows), pd.DataFrame(slope_rows)
