"""Stage 08 (experiments, run only with ``--experiments``): the training runs of the pre-registered grids.

Each cell of a registration's grid (``registration.grid_cells``; ``experiments.cells: one_point`` runs one) and
training seed is one GRPO run through ``training_runs.grpo.run_grpo`` (so ``train_grpo`` resumes an interrupted run and
reuses a finished one by its run id) from that seed's Free-Reasoning SFT model (or E2's, trained here), in
``08_experiments/<E>/<cell>/seed-<s>/``; the runs go out as one batch of jobs (``jobs.run_jobs``, ``workers`` at
once), each writing a progress line when it ends. Registered step counts are the tiny profile's
(``experiments.steps_scale`` converts them). ``recipe`` says what each experiment trains:

- E1 (``dose_runs``): GRPO steps x learning-rate schedule x RL set (``sampling.n_rl`` images, or a larger set drawn
  by 01's sampler rule outside every SFT, validation and test patient: ``e1_rl_set``); step 0 is the seed's SFT
  model; a linear-decay run per dose, one constant-LR run of the largest dose per RL set whose checkpoints at the
  smaller doses are those doses' models (``e1_run_cell``).
- E2 (``shortcut_runs``; the planted site: ``shortcut``): first the decodability check (``e2_decodability``), which
  sets the marker's size; per rho, a MIMIC-like site with the marker planted
  (``08_experiments/E2/world_rho-<rho>_finding-<finding>_radius-<size>/``), reward ``evaluation.test_grpo_reward``;
  arm "marker in RL data only" runs GRPO on the RL manifest's planted renders from the seed's SFT model, arm "marker
  in SFT and RL data" first an SFT run of 02's recipe on the planted SFT images; rho 0 is the main world's models in
  both arms. The marker-only control (the finding not drawn) trains SFT only.
- E3: a share of the RL prompts from the NIH-like site (``data.sampling.mix_rl_prompts``, no NIH test patient:
  ``e3_rl_set``), reward ``evaluation.test_grpo_reward``.
- Q1: E1's 40-step cell (linear, 01's RL set) under each registered reward (``train.rewards``).
- E5: the 06 ablation recipe with each cell's iterations, learning rate and steps, reward
  ``diagnostics.ablation_reward``, and each cell's matched control: the final recipe with the cell's learning rate
  and steps (``experiment_plan.e5_control``).

A cell identical to 03's run of a seed (E3's share 0, E2's rho 0, E1's and Q1's cell of 03's settings) is that run.
The readouts of the runs are ``experiment_readouts``.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .. import run_records
from ..config import Config
from ..data.mimic import load_pool
from ..data.manifests import in_run, load_manifest, manifest_frame
from ..data.nih import nih_test_selection
from ..data.phantom import planted_site_current
from ..data.sampling import draw_rl_set, mix_rl_prompts
from ..cache_keys import digest, file_digest, model_fingerprint
from ..evaluation import marker_probe, registration, shortcut
from ..jobs import run_jobs
from ..paths import RunPaths, checkpoint_name, model_tag
from ..queries.entries import base_models
from ..queries.stage_outputs import sft_start
from ..training_runs.experiment_plan import (BUILT, E2_ONLY, E5_FINAL, N_RL, RL_MANIFEST, cell_dir, cells,
                                             checkpoint_tag, e2_decodability_file, e2_marker_only, e2_own_sft,
                                             e2_planted_root, e2_run_cell, e2_sft_dir, e5_controls, experiment_seeds,
                                             scaled_steps)
from ..training_runs.grpo import ablation_name, grpo_inputs, grpo_plan, run_grpo
from ..training_runs.sft import run_sft
from ..train import grpo

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
    s = cfg.sampling
    pool = load_pool(cfg, paths)
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


def recipe(cfg: Config, paths: RunPaths, reg_id: str, cell: dict, seed: int) -> tuple[grpo.GRPOInputs, Path]:
    """The run record of one cell and seed (``training_runs.grpo.grpo_inputs``: reward, settings, RL prompts, start model)
    and the folder it runs in. The runs read no frozen-policy control (no computed readout uses it; E1's
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
        changed = dict(learning_rate=registration.multiple_of(cell["learning_rate"], cfg.grpo.learning_rate, where),
                       max_steps=scaled_steps(cfg, cell["grpo_steps"]), frozen_control=False)
        if cell.get("recipe") == E5_FINAL:   # a matched control: 03's recipe at the cell's learning rate and steps
            grpo_cfg = replace(cfg.grpo, **changed)
            same_as_03 = reward in cfg.grpo.rewards and \
                replace(grpo_cfg, frozen_control=cfg.grpo.frozen_control) == cfg.grpo
        else:
            ablation = grpo_plan(replace(cfg, diagnostics=replace(cfg.diagnostics, run_ablation=True)))[ablation_name(cfg)][1]
            grpo_cfg = replace(ablation, num_iterations=int(cell["num_iterations"]), **changed)
    else:
        raise ValueError(f"stage 08 builds {', '.join(BUILT)}, not {reg_id!r}")
    if same_as_03:
        ours = grpo_inputs(cfg, paths, reward, seed)
        if grpo.is_finished(ours, paths.grpo_run(reward, seed)):
            return ours, paths.grpo_run(reward, seed)
    return (grpo_inputs(cfg, paths, reward, seed, grpo_cfg, manifest, start),
            cell_dir(paths, reg_id, cell) / f"seed-{seed}")


def _cell_job(cfg: Config, paths: RunPaths, reg_id: str, cell: dict, seed: int) -> dict:
    t0 = time.perf_counter()
    run = run_grpo(cfg, paths, *recipe(cfg, paths, reg_id, cell, seed))
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
    seeds = experiment_seeds(cfg)
    if reg_id == "E5":   # the cells, then their matched controls (``recipe`` E5_FINAL; empty for the cells)
        todo = todo + e5_controls(todo)
    table = pd.DataFrame(_run_batch(cfg, paths, reg_id, todo, seeds))
    factors = list(dict.fromkeys(k for c in todo for k in c))
    return table.assign(**{k: [c.get(k) for c in todo for _ in seeds] for k in factors})


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
                row.update(tag=checkpoint_tag(paths, "E1", run["cell"], run["out_dir"], ckpt, seed), model=str(ckpt),
                           reused=run["reused"])
            rows.append(row)
    return pd.DataFrame(rows).fillna({"tag": "", "model": ""})


def _e2_sft_job(cfg: Config, paths: RunPaths, cell: dict, seed: int) -> dict:
    """E2's SFT of one cell and seed: 02's recipe (medical model, GRPO's start format, the seed) on the SFT
    manifest's planted renders, with a progress line."""
    t0, out_dir = time.perf_counter(), e2_sft_dir(paths, cell, seed)
    images = list(shortcut.planted_manifest(paths, "sft", e2_planted_root(paths, cell))["image_path"])
    result = run_sft(cfg, paths, "medical", cfg.grpo.start_format, seed, out_dir=out_dir, image_paths=images)
    run_records.write_record({"kind": "step", "task": f"E2 {registration.cell_name(cell)} SFT seed {seed} "
                              f"({'reused' if result.reused else 'trained'})", "step": 1, "total": 1, "unit": "run",
                              "elapsed": round(time.perf_counter() - t0, 2)})
    return {"cell": registration.cell_name(cell), "seed": seed, "reused": result.reused}


def e2_decodability(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """E2's decodability check (``marker_probe.decodability``, registration rules.decodability) on every
    experiment seed's medical base, cached in ``e2_decodability_file`` under a key of the bases' weights, the
    images and the registered numbers."""
    reg = registration.get("E2")
    bases = {s: folder for s, (_, folder) in base_models(cfg, paths, "medical").items()
             if s in experiment_seeds(cfg)}
    images = list(load_manifest(paths, "sft")["image_path"])[:int(reg.control("probe_images"))]
    radii, threshold = [float(r) for r in reg.control("marker_radius")], float(reg.control("probe_accuracy"))
    key = digest({"bases": {s: model_fingerprint(f) for s, f in bases.items()},
                  "images": [file_digest(p) for p in images], "radii": radii, "threshold": threshold})
    out = e2_decodability_file(paths)
    if out.is_file():
        cached = pd.read_csv(out)
        if len(cached) and (cached["key"] == key).all():
            return cached
    table = marker_probe.decodability(bases, images, radii, threshold).assign(key=key)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


def shortcut_runs(cfg: Config, paths: RunPaths, todo: list[dict]) -> pd.DataFrame:
    """E2: one row per cell and seed with its SFT model (sft_tag, sft_model) and GRPO run. First the decodability
    check (``e2_decodability``), whose smallest decodable size (the largest registered one when none is) every
    cell's marker takes (column ``radius``); then the planted MIMIC-like site of each rho > 0
    (``shortcut.write_planted``, skipped when current) and its RL set (``RL_MANIFEST`` in each cell's folder), the
    SFT runs of the arm "marker in SFT and RL data" and of the marker-only control (``e2_marker_only``: its row has
    no GRPO run), then the GRPO runs (rho 0: one run for both arms, 03's when identical); each a batch of jobs,
    ``workers`` at once."""
    seeds, planted = experiment_seeds(cfg), {}
    radius = marker_probe.chosen_radius(e2_decodability(cfg, paths))
    radius = radius if radius is not None else max(float(r) for r in registration.get("E2").control("marker_radius"))
    todo = [{**c, "radius": radius} for c in todo]
    control = {**e2_marker_only(), "radius": radius}
    for cell in [c for c in todo if float(c["rho"]) > 0] + [control]:
        planted[e2_planted_root(paths, cell)] = shortcut.planted_world(cfg, float(cell["rho"]), cell["finding"], radius,
                                                                       only=cell["arm"] == E2_ONLY)
    run_jobs(shortcut.write_planted, [dict(root=root, world=world) for root, world in planted.items()
                                      if not planted_site_current(root, world)], cfg.workers)
    for cell in (c for c in todo if float(c["rho"]) > 0):
        rl = shortcut.planted_manifest(paths, "rl", e2_planted_root(paths, cell))
        _write_rl_set(paths, cell_dir(paths, "E2", cell), rl)
    trained = [c for c in todo if e2_own_sft(c)] + [control]
    sft_rows = run_jobs(_e2_sft_job, [dict(cfg=cfg, paths=paths, cell=c, seed=s) for c in trained for s in seeds],
                        cfg.workers)
    run_records.count("E2 SFT runs reused", sum(bool(r["reused"]) for r in sft_rows))
    run_records.count("E2 SFT runs trained", sum(not r["reused"] for r in sft_rows))
    runs = list({registration.cell_name(r): r for r in map(e2_run_cell, todo)}.values())
    done = {(row["cell"], row["seed"]): row for row in _run_batch(cfg, paths, "E2", runs, seeds)}
    rows = []
    for cell in todo + [control]:
        for seed in seeds:
            folder = e2_sft_dir(paths, cell, seed)
            sft_tag, sft_model = sft_start(cfg, paths, seed) if folder is None else \
                (model_tag(f"e2-{registration.cell_name(cell)}-sft", seed), folder)
            row = {**cell, "experiment": "E2", "cell": registration.cell_name(cell), "seed": seed,
                   "sft_tag": sft_tag, "sft_model": str(sft_model)}
            if cell["arm"] == E2_ONLY:   # the control trains SFT only
                rows.append({**row, "run_cell": "", "out_dir": "", "final_checkpoint": "", "tag": "", "reused": True,
                             "steps": 0})
                continue
            run = done[(registration.cell_name(e2_run_cell(cell)), seed)]
            rows.append({**row, **run, "cell": registration.cell_name(cell), "run_cell": run["cell"],
                         "tag": checkpoint_tag(paths, "E2", run["cell"], run["out_dir"], Path(run["final_checkpoint"]),
                                                seed)})
    return pd.DataFrame(rows)
