"""Stage 08 (the pre-registered training grids): grid expansion, E1's runs and RL set, the runner's opt-in, and on a
copy of the smoke run one point of E1, E3 and E5 through the runner, with verdicts, reuse and resume."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexreason_utils.cache_keys import digest
from chexreason_utils.config import load_profile
from chexreason_utils.data.manifests import load_manifest
from chexreason_utils.data.sampling import draw_rl_set
from chexreason_utils.evaluation import claims, registration
from chexreason_utils.report import figure_registry
from chexreason_utils.paths import RunPaths
from chexreason_utils.runner import RunnerError, RunOptions, run
from chexreason_utils.steps import experiments
from chexreason_utils.train import grpo


def test_each_grid_expands_to_its_registered_cells():
    e5 = registration.grid_cells(registration.get("E5"))
    assert len(e5) == 2 * 2 * 2 and len({registration.cell_name(c) for c in e5}) == 8
    assert {(c["num_iterations"], c["learning_rate"], c["grpo_steps"]) for c in e5} == \
        {(i, lr, s) for i in (2, 4) for lr in ("1 x grpo.learning_rate", "5 x grpo.learning_rate") for s in (40, 160)}
    assert [c["nih_share"] for c in registration.grid_cells(registration.get("E3"))] == [0.0, 0.25, 0.5]
    assert registration.multiple_of("5 x grpo.learning_rate", 2e-4, "E5") == pytest.approx(1e-3)
    with pytest.raises(registration.RegistrationError, match="neither a number"):
        registration.multiple_of("five", 1.0, "E5")
    tiny, smoke = load_profile("tiny"), load_profile("smoke")
    assert experiments.cells(tiny, "E5") == e5 and [experiments.scaled_steps(tiny, s) for s in (40, 160)] == [40, 160]
    assert [experiments.scaled_steps(smoke, s) for s in (40, 160)] == [4, 16]   # 40 = tiny's grpo.max_steps = 1 epoch
    assert experiments.cells(smoke, "E3") == [{"nih_share": 0.0}, {"nih_share": 0.25}]
    assert experiments.cells(smoke, "E5") == e5[:1] and experiments.experiment_seeds(smoke) == [0]


def test_e1_runs_one_run_per_linear_dose_and_one_checkpointed_constant_run():
    grid = registration.grid_cells(registration.get("E1"))
    assert len(grid) == 4 * 2 * 2 and {c["rl_set"] for c in grid} == {"sampling.n_rl", "4 x sampling.n_rl"}
    tiny, smoke = load_profile("tiny"), load_profile("smoke")
    runs = {registration.cell_name(r) for r in map(experiments.e1_run_cell, grid) if r is not None}
    assert len(runs) == 2 * (3 + 1)   # per RL set: three linear runs, one constant
    constant = experiments.e1_run_cell({"grpo_steps": 40, "lr_schedule": "constant", "rl_set": "sampling.n_rl"})
    assert constant["grpo_steps"] == 360 and experiments.e1_run_cell({**constant, "grpo_steps": 0}) is None
    settings = experiments.e1_settings(tiny, constant)
    assert (settings.max_steps, settings.save_steps, settings.lr_scheduler) == (360, 40, "constant")
    assert experiments.e1_settings(smoke, constant).save_steps == 4   # gcd of 4, 12, 36: a checkpoint at each dose
    assert experiments.e1_settings(tiny, {**constant, "lr_schedule": "linear", "grpo_steps": 120}).save_steps == 40
    first = {"grpo_steps": 40, "lr_schedule": "linear", "rl_set": "sampling.n_rl"}
    assert replace(experiments.e1_settings(tiny, first), frozen_control=True) == tiny.grpo   # = 03's run: reused
    assert experiments.cells(smoke, "E1") == [{**first, "grpo_steps": 0}, first]
    assert experiments.e1_rl_size(tiny, "4 x sampling.n_rl") == 4 * tiny.sampling.n_rl


def test_the_lr_schedule_reaches_trl_and_leaves_existing_run_ids_alone():
    cfg = load_profile("tiny").grpo
    old_settings = {k: v for k, v in asdict(cfg).items() if k != "lr_scheduler"}   # the id's settings before the option
    assert grpo.run_settings(cfg) == old_settings and "lr_scheduler" in grpo.run_settings(replace(cfg, lr_scheduler="constant"))
    assert digest(grpo.run_settings(load_profile("smoke").grpo)) == "09e14bd092550cf5"   # as before the option
    assert grpo.trl_config(cfg, Path("unused"), "cpu").lr_scheduler_type.value == "linear"
    assert grpo.trl_config(replace(cfg, lr_scheduler="constant"), Path("unused"), "cpu").lr_scheduler_type.value == "constant"


def test_the_larger_rl_set_keeps_out_every_excluded_patient_or_says_why():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(60)], "patient_id": [f"p{k // 2}" for k in range(60)]})
    labels = rng.integers(0, 2, (60, 14))
    excluded = [f"p{k}" for k in range(10)]   # 20 images
    drawn = draw_rl_set(frame, labels, excluded, 30, 0.05, 0.3, 4.0, 1, "E1 RL set '4 x sampling.n_rl'")
    assert len(drawn) == 30 and drawn["image_id"].is_unique and not set(drawn["patient_id"]) & set(excluded)
    with pytest.raises(ValueError, match=r"asked for 41 images but only 40 are available.*E1 RL set.*20 images of the 10"):
        draw_rl_set(frame, labels, excluded, 41, 0.05, 0.3, 4.0, 1, "E1 RL set '4 x sampling.n_rl'")


def test_the_experiment_stage_runs_only_when_asked(tmp_path):
    opts = RunOptions(profile="smoke", run_dir=str(tmp_path / "run"), figure_dir=str(tmp_path / "fig"), only=["08"])
    with pytest.raises(RunnerError, match="only with --experiments"):
        run(opts)


def _copy_of(paths: RunPaths, where: Path) -> RunOptions:
    """The smoke run and its figures copied (a moved run is the same run), so the fixture's folder stays as made."""
    shutil.copytree(paths.root, where / "run", symlinks=True)
    shutil.copytree(paths.figures, where / "figures", symlinks=True)
    return RunOptions(profile="smoke", run_dir=str(where / "run"), figure_dir=str(where / "figures"))


def _run_ids(folder: Path) -> dict[str, str]:
    return {str(p.parent.relative_to(folder)): json.loads(p.read_text())["run_id"]
            for p in sorted(folder.rglob(RunPaths.RUN_INFO))}


def check_one_point_grids(paths: RunPaths, where: Path) -> None:
    """The body of the smoke test (callable on any finished smoke run)."""
    opts = _copy_of(paths, where)
    copy = RunPaths.for_profile("smoke", opts.run_dir, opts.figure_dir)
    report = copy.report.read_text().replace(str(paths.root), str(copy.root))   # its manifest's path moved
    opts.experiments = True
    results = run(opts)
    assert [r.status for r in results] == ["skipped"] * 8 + ["ran"]
    assert copy.report.read_text() == report   # REPORT.md leaves stage 08 out
    page = (copy.figures / "EXPERIMENTS.md").read_text()
    for art in (a for a in figure_registry.ARTIFACTS if a.notebook == experiments.STAGE):
        assert all((copy.figures / name).stat().st_size > 0 for name in art.files()), art.id
        assert f"### {art.title}" in page
    assert "## E2" in page and "not built in this version" in page and "## E0" not in page   # E0, E4: REPORT.md
    assert "*Not computed: The registered readout 'paired reward gain" in page   # E1 says what it leaves out

    doses, slopes = pd.read_csv(copy.figures / "e1_dose_response.csv"), pd.read_csv(copy.figures / "e1_slopes.csv")
    assert set(doses["grpo_steps"]) == {0, 40} and set(doses["steps"]) == {0, 4} and doses["value"].notna().all()
    assert set(doses["set"]) == set(slopes["set"]) == {"CheXpert", "NIH", "validation"}
    assert (slopes["verdict"] == "not measurable").all() and slopes["note"].str.contains("two non-zero").all()

    e3 = pd.read_csv(copy.figures / "e3_multisite.csv")
    assert set(e3["test_set"]) == {"CheXpert", "NIH"} and set(e3["nih_share"]) == {0.0, 0.25}
    ruled = e3.loc[e3["readout"] == "change - change at share 0"]
    assert len(ruled) == 2 and ruled["verdict"].isin(claims.VERDICTS).all()   # one seed: not measurable
    mixed = pd.read_csv(experiments.cell_dir(copy, "E3", {"nih_share": 0.25}) / experiments.RL_MANIFEST, dtype=str)
    rl, nih_test = load_manifest(copy, "rl"), load_manifest(copy, "nih_test")
    from_nih = mixed.loc[~mixed["image_id"].isin(rl["image_id"])]
    assert len(mixed) == len(rl) and len(from_nih) == round(0.25 * len(rl))
    assert not set(from_nih["patient_id"]) & set(nih_test["patient_id"])   # no NIH test patient in E3's RL set
    e5 = pd.read_csv(copy.figures / "e5_collapse.csv")
    assert len(e5) == 1 and e5["verdict"].isin(claims.VERDICTS).all() and e5["steps"].tolist() == [4]

    cfg = load_profile("smoke", {"workers": 1})   # in this process: no pool to start (workers change no result)
    e1_runs = experiments.run_cells(cfg, copy, "E1")   # smoke's 4-step linear run of 01's RL set is 03's
    assert e1_runs["reused"].all() and e1_runs["model"].tolist() == [str(copy.sft_model("medical", "free_reasoning", 0)),
                                                                      str(copy.grpo_run("hard", 0) / "checkpoint-4")]
    e3_runs = experiments.run_cells(cfg, copy, "E3")
    assert e3_runs["reused"].all() and Path(e3_runs["out_dir"].iloc[0]) == copy.grpo_run("hard", 0)   # 03's run
    folder = copy.stage(experiments.STAGE)
    ids, files = _run_ids(folder), sorted(p for p in folder.rglob("*") if p.is_file())
    e5_runs = experiments.run_cells(cfg, copy, "E5")   # a second call trains nothing
    assert e5_runs["reused"].all() and _run_ids(folder) == ids and sorted(p for p in folder.rglob("*") if p.is_file()) == files
    before = experiments.collapse_readout(cfg, copy, e5_runs)

    run_dir = Path(e5_runs["out_dir"].iloc[0])   # interrupted after its first checkpoint: resumes from it
    first, last = grpo.checkpoints(run_dir)
    shutil.rmtree(last)
    (run_dir / RunPaths.RUN_INFO).unlink()
    resumed = experiments.run_cells(cfg, copy, "E5")
    assert not resumed["reused"].any() and _run_ids(folder) == ids
    assert json.loads((run_dir / RunPaths.RUN_INFO).read_text())["resumed_from"] == str(first)
    pd.testing.assert_frame_equal(experiments.collapse_readout(cfg, copy, resumed), before)


@pytest.mark.pipeline
def test_one_point_grids_run_resume_and_carry_verdicts(smoke_run, tmp_path):
    paths, _, _ = smoke_run
    check_one_point_grids(paths, tmp_path)
