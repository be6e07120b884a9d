"""Stage 08 (the pre-registered training grids): grid expansion, E1's runs and RL set, E2's planted site and
shortcut readout, the runner's opt-in, and on a copy of the smoke run one point of E1, E2, E3, E5 and Q1 through the
runner, with verdicts, reuse and resume."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexreason_utils.evaluation import verdict_statistics
from chexreason_utils.cache_keys import digest
from chexreason_utils.config import WorldConfig, load_profile
from chexreason_utils.data.manifests import load_manifest
from chexreason_utils.data.phantom import generate_world, knobs_hash, read_findings, write_planted_site
from chexreason_utils.data.phantom_render import shortcut_mask
from chexreason_utils.data.sampling import draw_rl_set
from chexreason_utils.evaluation import registration
from chexreason_utils.report import figure_registry
from chexreason_utils.paths import RunPaths
from chexreason_utils.runner import RunnerError, RunOptions, run
from chexreason_utils.evaluation import claims, marker_probe, shortcut
from chexreason_utils.training_runs import experiment_plan
from chexreason_utils.steps import experiment_readouts, experiments
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
    assert experiment_plan.cells(tiny, "E5") == e5 and [experiment_plan.scaled_steps(tiny, s) for s in (40, 160)] == [40, 160]
    controls = experiment_plan.e5_controls(e5)   # one final-recipe control per (learning rate, steps): matched arms
    assert [(c["learning_rate"], c["grpo_steps"]) for c in controls] == \
        list(dict.fromkeys((c["learning_rate"], c["grpo_steps"]) for c in e5)) and len(controls) == 4
    assert all(c["recipe"] == experiment_plan.E5_FINAL for c in controls)
    assert [experiment_plan.scaled_steps(smoke, s) for s in (40, 160)] == [4, 16]   # 40 = tiny's grpo.max_steps = 1 epoch
    assert experiment_plan.cells(smoke, "E3") == [{"nih_share": 0.0}, {"nih_share": 0.25}]
    assert experiment_plan.cells(smoke, "E5") == e5[:1] and experiment_plan.experiment_seeds(smoke) == [0]


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
    assert experiment_plan.cells(smoke, "E1") == [{**first, "grpo_steps": 0}, first]
    assert experiments.e1_rl_size(tiny, "4 x sampling.n_rl") == 4 * tiny.sampling.n_rl


def test_the_lr_schedule_reaches_trl_and_leaves_existing_run_ids_alone():
    cfg = load_profile("tiny").grpo
    old_settings = {k: v for k, v in asdict(cfg).items() if k != "lr_scheduler"}   # the id's settings before the option
    assert grpo.run_settings(cfg) == old_settings and "lr_scheduler" in grpo.run_settings(replace(cfg, lr_scheduler="constant"))
    before = replace(load_profile("smoke").grpo, scale_rewards="group")   # the smoke settings when the option came
    assert digest(grpo.run_settings(before)) == "09e14bd092550cf5"        # keyed as before the option
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


def test_e2_one_point_is_rho_0_and_the_largest_rho_with_the_marker_in_rl_data_only():
    grid = registration.grid_cells(registration.get("E2"))
    assert len(grid) == 3 * 2 and {c["finding"] for c in grid} == {"Atelectasis"}
    smoke, rl_only = load_profile("smoke"), experiment_plan.E2_RL
    assert experiment_plan.cells(smoke, "E2") == [{"rho": 0.0, "arm": rl_only, "finding": "Atelectasis"},
                                              {"rho": 0.9, "arm": rl_only, "finding": "Atelectasis"}]
    both = {"rho": 0.0, "arm": experiment_plan.E2_BOTH, "finding": "Atelectasis"}
    assert experiment_plan.e2_run_cell(both)["arm"] == rl_only   # rho 0: the main world's models in both arms
    assert [experiment_plan.e2_own_sft({**both, "rho": r}) for r in (0.0, 0.5)] == [False, True]
    assert registration.cell_name({**both, "rho": 0.5}) == "rho-0.5_arm-marker-in-SFT-and-RL-data_finding-Atelectasis"
    with pytest.raises(ValueError, match="grid.arm 'marker everywhere'"):
        experiment_plan.e2_own_sft({**both, "arm": "marker everywhere"})
    with pytest.raises(ValueError, match="grid.finding 'Hernia' is not a world finding"):
        shortcut.planted_world(smoke, 0.5, "Hernia")
    control = experiment_plan.e2_marker_only()   # the marker-only positive control: the largest rho, SFT of its own
    assert control == {"rho": 0.9, "arm": experiment_plan.E2_ONLY, "finding": "Atelectasis"}
    assert experiment_plan.e2_own_sft(control)
    paths = RunPaths.for_profile("smoke", "/tmp/run")
    roots = {experiment_plan.e2_planted_root(paths, {**c, "radius": r}).name
             for c in (control, {**control, "arm": rl_only}) for r in (0.045, 0.07)}
    assert roots == {"world_rho-0.9_finding-Atelectasis_radius-0.045", "world_rho-0.9_finding-Atelectasis_radius-0.07",
                     "world_rho-0.9_finding-Atelectasis_radius-0.045_marker-only",
                     "world_rho-0.9_finding-Atelectasis_radius-0.07_marker-only"}   # a site per size and control
    world = shortcut.planted_world(smoke, 0.9, "Atelectasis", 0.07, only=True)
    assert (world.shortcut_radius, world.shortcut_only) == (0.07, True)


def test_the_probe_reads_a_marker_that_moves_the_features_and_not_one_that_does_not():
    rng = np.random.default_rng(3)
    plain = rng.normal(size=(40, 20))
    moved = plain + np.r_[10.0, np.zeros(19)]   # the marker shifts one feature far: linearly decodable
    assert marker_probe.probe_accuracy(plain, moved) == 1.0
    assert marker_probe.probe_accuracy(plain, plain) <= 0.55   # nothing to read: about chance
    with pytest.raises(ValueError, match="one shape"):
        marker_probe.probe_accuracy(plain, moved[:30])
    table = pd.DataFrame({"radius": [0.045, 0.045, 0.07, 0.07], "seed": [0, 1, 0, 1],
                          "accuracy": [0.95, 0.8, 0.99, 0.97], "n_images": 40})
    table["decodable"] = table["accuracy"] >= 0.9
    assert marker_probe.chosen_radius(table) == 0.07   # the smallest size read in every seed
    assert marker_probe.chosen_radius(table.assign(decodable=False)) is None


def test_e2_is_not_measurable_when_a_positive_control_fails(tmp_path):
    paths = RunPaths.for_profile("smoke", str(tmp_path))
    out = experiment_plan.e2_decodability_file(paths)
    out.parent.mkdir(parents=True)
    read = pd.DataFrame({"radius": [0.045], "seed": [0], "accuracy": [0.99], "n_images": [40], "decodable": [True]})
    read.to_csv(out, index=False)
    assert experiment_readouts.e2_controls(paths, {"effect": 0.35}) == ""   # read and learned: E2 is ruled
    assert experiment_readouts.e2_controls(paths, {"effect": 0.1}).startswith("marker not learned")
    table = experiment_readouts.decodability_table(paths)
    assert table[["radius", "min_accuracy", "decodable", "used"]].values.tolist() == [[0.045, 0.99, True, True]]
    read.assign(accuracy=0.6, decodable=False).to_csv(out, index=False)
    assert experiment_readouts.e2_controls(paths, {"effect": 0.9}).startswith("marker not decodable")
    followed = shortcut.sensitivity_ci([[np.ones(6), np.ones(4)]] * 2, n_boot=50)   # GRPO - SFT = 1 everywhere
    row = claims.judged({"readout": "GRPO - SFT sensitivity"}, followed, registration.get("E2"), "", "",
                        "marker not learned: the marker-only SFT model's shortcut sensitivity 0.100 is below 0.2")
    assert row["verdict"] == "not measurable" and row["not_measurable"].startswith("marker not learned")


def _jpeg_blocks(mask: np.ndarray) -> np.ndarray:
    """The 8x8 JPEG blocks a mask touches."""
    n = len(mask)
    touched = mask.reshape(n // 8, 8, n // 8, 8).any(axis=(1, 3))
    return np.repeat(np.repeat(touched, 8, axis=0), 8, axis=1)


def test_a_planted_site_differs_from_the_main_world_only_at_marked_images_inside_the_marker(tmp_path):
    from PIL import Image

    base = WorldConfig(image_size=64, n_mimic_studies=60, n_chexpert_test_studies=4, n_nih_images=4, n_pretrain=2)
    generate_world(tmp_path / "main", base)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / "main").rglob("*")) if p.is_file()}
    write_planted_site(tmp_path / "planted", replace(base, shortcut_rho=0.9))
    marked = {r["path"] for r in read_findings(tmp_path / "planted") if r.get("shortcut_marker")}
    images = sorted(p.relative_to(tmp_path / "planted").as_posix() for p in (tmp_path / "planted").rglob("*.jpg"))
    assert marked and len(images) == sum(1 for r in read_findings(tmp_path / "main") if r["site"] == "mimic")
    mask, differ = shortcut_mask(64), set()
    for rel in images:
        a, b = (np.asarray(Image.open(tmp_path / w / rel), dtype=int) for w in ("main", "planted"))
        if (a != b).any():
            differ.add(rel)
            assert not ((a != b) & ~_jpeg_blocks(mask)).any()   # MIMIC-like JPEG: only the ring's 8x8 blocks move
            assert (b[mask] > 230).all()
    assert differ == marked and not (tmp_path / "planted" / "CheXpert-v1.0").exists()
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / "main").rglob("*")) if p.is_file()}
    assert after == before and knobs_hash(base) == json.loads((tmp_path / "main" / "world_card.json").read_text())["knobs_hash"]
    with pytest.raises(ValueError, match="shortcut_rho must be > 0"):
        write_planted_site(tmp_path / "none", base)

    # the marker-only control at a larger size: the finding is not drawn, its label stays, the rest is the main world
    write_planted_site(tmp_path / "only", replace(base, shortcut_rho=0.9, shortcut_radius=0.1, shortcut_only=True))
    records = [r for r in read_findings(tmp_path / "only") if r["site"] == "mimic"]
    with_finding = {r["path"] for r in records if "Atelectasis" in r["truth"]}
    assert with_finding and not any("Atelectasis" in r["findings"] for r in records)
    big, outside = shortcut_mask(64, 0.1), 0
    assert big.sum() > mask.sum()
    for r in records:
        a, b = (np.asarray(Image.open(tmp_path / w / r["path"]), dtype=int) for w in ("main", "only"))
        if r["path"] not in with_finding:
            assert (a == b).all()   # no finding to hide, no marker: the main world's pixels
        else:
            outside += bool(((a != b) & ~_jpeg_blocks(big)).any())
            if r.get("shortcut_marker"):
                assert (b[big] > 230).all()
    assert outside > 0   # the finding's pixels are gone


def test_each_counterfactual_pair_differs_only_in_the_marker_and_keeps_the_world_pixels(small_world, tmp_path):
    from PIL import Image
    from chexreason_utils.data.manifests import write_manifest

    root, _ = small_world
    paths = RunPaths.for_profile("smoke", tmp_path / "run", tmp_path / "figures")
    sources = {"chexpert_test": sorted((root / "CheXpert-v1.0").rglob("*.jpg"))[:6],   # JPEG at this site
               "nih_test": sorted((root / "ChestX-ray14").rglob("*.png"))[:6]}
    for name, files in sources.items():
        write_manifest(paths, name, pd.DataFrame({"image_id": [f.name for f in files], "patient_id": "p",
                                                  "image_path": [str(f) for f in files], "labels": [["Edema"]] * 6}))
    frame = shortcut.counterfactual_tests(paths, tmp_path / "cf")
    assert len(frame) == 2 * 12 and frame.groupby(["test_set", "condition"]).size().tolist() == [6] * 4
    for name, files in sources.items():
        for k, source in enumerate(files):
            world, plain, marker = (np.asarray(Image.open(p), dtype=int) for p in
                                    (source, tmp_path / "cf" / "plain" / name / f"{k:05d}.png",
                                     tmp_path / "cf" / "marker" / name / f"{k:05d}.png"))
            mask = shortcut_mask(len(world))
            assert (plain == world).all() and (marker[mask] == 255).all() and (marker[~mask] == world[~mask]).all()
    written = _file_digests(tmp_path / "cf")
    shortcut.counterfactual_tests(paths, tmp_path / "cf")
    assert _file_digests(tmp_path / "cf") == written


def _answers(named: list[bool]) -> pd.DataFrame:
    return pd.DataFrame({"source_id": [f"i{k}" for k in range(len(named))], "valid": True,
                         "labels": [["Atelectasis", "Edema"] if n else ["Edema"] for n in named]})


def test_the_shortcut_sensitivity_is_one_when_the_marker_always_adds_the_finding_and_zero_when_never():
    never, always = _answers([False] * 6), _answers([True] * 6)
    assert shortcut.marker_effect(never, always, "Atelectasis", "empty").tolist() == [1.0] * 6
    assert shortcut.marker_effect(never, never, "Atelectasis", "empty").tolist() == [0.0] * 6
    reordered = always.iloc[::-1].assign(valid=[False, True, True, True, True, True])   # matched on source_id
    assert shortcut.marker_effect(never, reordered, "Atelectasis", "empty").tolist() == [1.0] * 5 + [0.0]
    assert shortcut.marker_effect(never, reordered, "Atelectasis", "salvage").tolist() == [1.0] * 6
    assert shortcut.named_shares([(never, always), (never, reordered)], "Atelectasis", "empty") == (0.0, 11 / 12)
    one = [[np.ones(6), np.ones(4)]] * 2   # two seeds, two test sets: the marker always adds the finding
    result = shortcut.sensitivity_ci(one, n_boot=200)
    assert (result["effect"], result["lo"], result["hi"], result["n_seeds"]) == (1.0, 1.0, 1.0, 2)
    assert shortcut.sensitivity_ci([[np.zeros(6), np.zeros(4)]] * 2, n_boot=200)["effect"] == 0.0
    half = shortcut.sensitivity_ci([[np.r_[np.ones(3), np.zeros(3)], np.ones(4)]], n_boot=200)   # pooled: 7 of 10
    assert half["effect"] == pytest.approx(0.7) and half["lo"] < 0.7 < half["hi"]
    with pytest.raises(ValueError, match="same test images"):
        shortcut.marker_effect(never, always.iloc[:5], "Atelectasis", "empty")
    with pytest.raises(ValueError, match="no column 'labels'"):
        shortcut.marker_effect(never.drop(columns="labels"), always, "Atelectasis", "empty")
    with pytest.raises(ValueError, match="same data sets and images"):
        shortcut.sensitivity_ci([[np.ones(6)], [np.ones(5)]])


def test_an_experiment_readout_is_not_measurable_only_where_an_arm_at_floor_decides_its_sign():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, size=(60, 3))
    seen, constant = [y_true.copy(), y_true.copy()], [np.tile([1, 0, 0], (60, 1))] * 2   # an arm that reads, one at floor
    frame = pd.DataFrame([{"dataset": "NIH", "stage": "baseline", "label": "macro", "name": "random", "f1": 0.30,
                           "lo": 0.25, "hi": 0.35}])
    assert experiment_readouts.arm_floor(frame, "NIH", y_true, seen) == ""
    at_floor = experiment_readouts.arm_floor(frame, "NIH", y_true, constant)
    assert "does not exceed 'random'" in at_floor and "1 distinct label set" in at_floor
    rule = experiment_readouts.arm_floors_rule
    assert rule({"lo": 0.1, "hi": 0.3}, at_floor, "") == ""   # the treatment beat a reference at floor: measurable
    assert "decides the sign" in rule({"lo": 0.1, "hi": 0.3}, "", at_floor)   # the arm at floor is the better one
    assert "decides the sign" in rule({"lo": -0.3, "hi": -0.1}, at_floor, "")
    assert rule({"lo": -0.1, "hi": 0.1}, "", at_floor) == ""   # the CI holds 0: ruled as usual
    assert rule({"lo": -0.1, "hi": 0.1}, at_floor, at_floor).startswith("both arms at floor")


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


def _file_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _check_e2_files(copy: RunPaths) -> None:
    """E2's written images: the planted RL renders differ from the main world's only at marked images, inside the
    ring's JPEG blocks; each counterfactual test pair differs only in the marker's pixels, its plain image holding
    the world's pixels."""
    from PIL import Image

    radius = marker_probe.chosen_radius(pd.read_csv(experiment_plan.e2_decodability_file(copy)))
    cell = {"rho": 0.9, "arm": experiment_plan.E2_RL, "finding": "Atelectasis", "radius": radius}
    root = experiment_plan.e2_planted_root(copy, cell)
    planted = pd.read_csv(experiment_plan.cell_dir(copy, "E2", cell) / experiment_plan.RL_MANIFEST, dtype=str)
    rl = load_manifest(copy, "rl")
    marked = {r["path"] for r in read_findings(root) if r.get("shortcut_marker")}
    differ, rl_images = set(), set()
    for main, moved in zip(rl["image_path"], planted["image_path"]):
        a, b = (np.asarray(Image.open(copy.resolve(p)), dtype=int) for p in (main, moved))
        rel = Path(main).resolve().relative_to(copy.world.resolve()).as_posix()
        rl_images.add(rel)
        if (a != b).any():
            differ.add(rel)
            assert not ((a != b) & ~_jpeg_blocks(shortcut_mask(len(a), radius))).any()   # JPEG: the ring's blocks only
    assert differ and differ == marked & rl_images and len(differ) == shortcut.marked_count(copy, "rl", root)
    folder = copy.stage(experiment_plan.STAGE) / "E2" / f"counterfactual_radius-{radius:g}"
    for name in shortcut.TEST_MANIFESTS.values():
        test = load_manifest(copy, name)
        assert len(list((folder / "plain" / name).glob("*.png"))) == len(test) == len(list((folder / "marker" / name).glob("*.png")))
        for k, source in enumerate(test["image_path"]):
            world, plain, marker = (np.asarray(Image.open(p), dtype=int) for p in
                                    (source, folder / "plain" / name / f"{k:05d}.png", folder / "marker" / name / f"{k:05d}.png"))
            mask = shortcut_mask(len(plain), radius)
            assert (plain == world).all() and not ((plain != marker) & ~mask).any() and (marker[mask] == 255).all()


def check_one_point_grids(paths: RunPaths, where: Path) -> None:
    """The body of the smoke test (callable on any finished smoke run)."""
    opts = _copy_of(paths, where)
    copy = RunPaths.for_profile("smoke", opts.run_dir, opts.figure_dir)
    report = copy.report.read_text().replace(str(paths.root), str(copy.root))   # its manifest's path moved
    world = _file_digests(copy.world)
    opts.experiments = True
    results = run(opts)
    assert [r.status for r in results] == ["skipped"] * 8 + ["ran"]
    assert copy.report.read_text() == report   # REPORT.md leaves stage 08 out
    assert _file_digests(copy.world) == world   # E2 plants its marker in folders of its own
    assert json.loads((copy.world / "world_card.json").read_text())["knobs_hash"] == knobs_hash(load_profile("smoke").world)
    page = (copy.figures / "EXPERIMENTS.md").read_text()
    for art in (a for a in figure_registry.ARTIFACTS if a.notebook == experiment_plan.STAGE):
        assert all((copy.figures / name).stat().st_size > 0 for name in art.files()), art.id
        assert f"### {art.title}" in page
    assert "## E2" in page and "not built in this version" not in page and "## E0" not in page   # E0, E4: REPORT.md
    assert "*Not computed: The registered readout 'paired reward gain" in page   # E1 says what it leaves out

    doses, slopes = pd.read_csv(copy.figures / "e1_dose_response.csv"), pd.read_csv(copy.figures / "e1_slopes.csv")
    assert set(doses["grpo_steps"]) == {0, 40} and set(doses["steps"]) == {0, 4} and doses["value"].notna().all()
    assert set(doses["set"]) == set(slopes["set"]) == {"CheXpert", "NIH", "validation"}
    assert (slopes["verdict"] == "not measurable").all() and slopes["note"].str.contains("two non-zero").all()

    e3 = pd.read_csv(copy.figures / "e3_multisite.csv")
    assert set(e3["test_set"]) == {"CheXpert", "NIH"} and set(e3["nih_share"]) == {0.0, 0.25}
    ruled = e3.loc[e3["readout"] == "change - change at share 0"]
    assert len(ruled) == 2 and ruled["verdict"].isin(verdict_statistics.VERDICTS).all()   # one seed: not measurable
    mixed = pd.read_csv(experiment_plan.cell_dir(copy, "E3", {"nih_share": 0.25}) / experiment_plan.RL_MANIFEST, dtype=str)
    rl, nih_test = load_manifest(copy, "rl"), load_manifest(copy, "nih_test")
    from_nih = mixed.loc[~mixed["image_id"].isin(rl["image_id"])]
    assert len(mixed) == len(rl) and len(from_nih) == round(0.25 * len(rl))
    assert not set(from_nih["patient_id"]) & set(nih_test["patient_id"])   # no NIH test patient in E3's RL set
    e5 = pd.read_csv(copy.figures / "e5_collapse.csv")
    assert len(e5) == 1 and e5["verdict"].isin(verdict_statistics.VERDICTS).all() and e5["steps"].tolist() == [4]
    assert e5["note"].str.contains("runs collapsed on the").all() and e5["effect"].between(-1, 1).all()
    e2, only = pd.read_csv(copy.figures / "e2_shortcut.csv"), experiment_plan.E2_ONLY
    assert set(e2["rho"]) == {0.0, 0.9} and set(e2["arm"]) == {experiment_plan.E2_RL, only}
    assert e2["effect"].between(-1, 1).all()
    control, e2 = e2.loc[e2["arm"] == only], e2.loc[e2["arm"] != only]
    assert control["model"].tolist() == ["SFT"] and control["marked_sft_images"].gt(0).all()   # the positive control
    assert e2.groupby("rho")["model"].apply(list).tolist() == [["base", "SFT", "GRPO", "GRPO - SFT"]] * 2
    ruled = e2.loc[e2["readout"] == "GRPO - SFT sensitivity"]
    assert len(ruled) == 2 and ruled["verdict"].isin(verdict_statistics.VERDICTS).all()   # one seed: not measurable
    learned = control["effect"].iloc[0] >= registration.get("E2").control("marker_only_sensitivity")
    assert control["note"].iloc[0].startswith("positive control: " + ("passes" if learned else "fails, marker not"))
    assert learned or (ruled["verdict"].eq("not measurable") & ruled["note"].str.startswith("marker not")).all()
    assert (e2.loc[e2["rho"] == 0.9, "marked_rl_images"] > 0).all() and (e2.loc[e2["rho"] == 0, "marked_rl_images"] == 0).all()
    probe = pd.read_csv(copy.figures / "e2_decodability.csv")   # the first control, per registered size
    assert probe["radius"].tolist() == registration.get("E2").control("marker_radius")
    assert probe["min_accuracy"].between(0, 1).all() and probe["used"].sum() <= 1
    _check_e2_files(copy)
    drift = pd.read_csv(copy.figures / "policy_drift_models.csv")   # what RL does: every trained GRPO model once
    assert {"03", "E5", "Q1"} <= set(drift["experiment"]) and (drift["kl"] >= 0).all()
    assert drift["nih_change"].between(-1, 1).all() and (drift["kl_images"] > 0).all()
    reliance = pd.read_csv(copy.figures / "policy_reliance.csv")
    assert len(reliance) == 2 * 3 and reliance[["sft_macro_f1", "grpo_macro_f1"]].stack().between(0, 1).all()
    coverage = pd.read_csv(copy.figures / "policy_coverage.csv")
    assert set(coverage["readout"]) == {"pass@1", "pass@8"} and len(coverage) == 2 * 2 * 3
    models = coverage.loc[coverage["model"] != "GRPO - SFT"]
    assert models["effect"].between(0, 1).all() and coverage["effect"].between(-1, 1).all()
    q1 = pd.read_csv(copy.figures / "q1_per_label.csv")
    tests = q1.loc[q1["test_set"] != "validation"]
    assert set(tests["test_set"]) == {"CheXpert", "NIH"} and set(tests["reward"]) == {"hard", "per_label"}
    ruled = q1.loc[q1["readout"] == "change - change under hard"]
    assert ruled["reward"].tolist() == ["per_label"] * 2 and ruled["verdict"].isin(verdict_statistics.VERDICTS).all()
    per_answer = q1.loc[q1["test_set"] == "validation"].set_index("reward")["effect"]
    assert list(per_answer.index) == ["SFT", "hard", "per_label"] and per_answer.between(0, 14).all()

    cfg = load_profile("smoke", {"workers": 1})   # in this process: no pool to start (workers change no result)
    e1_runs = experiments.run_cells(cfg, copy, "E1")   # smoke's 4-step linear run of 01's RL set is 03's
    assert e1_runs["reused"].all() and e1_runs["model"].tolist() == [str(copy.sft_model("medical", "free_reasoning", 0)),
                                                                      str(copy.grpo_run("hard", 0) / "checkpoint-4")]
    e3_runs = experiments.run_cells(cfg, copy, "E3")
    assert e3_runs["reused"].all() and Path(e3_runs["out_dir"].iloc[0]) == copy.grpo_run("hard", 0)   # 03's run
    folder = copy.stage(experiment_plan.STAGE)
    ids, files = _run_ids(folder), sorted(p for p in folder.rglob("*") if p.is_file())
    e2_runs = experiments.run_cells(cfg, copy, "E2")   # a second call trains nothing and rewrites nothing
    assert e2_runs["reused"].all() and Path(e2_runs["out_dir"].iloc[0]) == copy.grpo_run("hard", 0)   # rho 0: 03's
    assert e2_runs["sft_model"].tolist()[:2] == [str(copy.sft_model("medical", "free_reasoning", 0))] * 2
    assert e2_runs["arm"].tolist()[-1] == experiment_plan.E2_ONLY   # the marker-only control: an SFT model of its own
    assert Path(e2_runs["sft_model"].iloc[-1]).parent.parent == copy.stage(experiment_plan.STAGE) / "E2"
    q1_runs = experiments.run_cells(cfg, copy, "Q1")   # hard: 03's run; per_label: trained once, in its cell
    assert q1_runs["reused"].all() and q1_runs["reward"].tolist() == ["hard", "per_label"]
    assert Path(q1_runs["out_dir"].iloc[0]) == copy.grpo_run("hard", 0)
    assert Path(q1_runs["out_dir"].iloc[1]).parent.parent == copy.stage(experiment_plan.STAGE) / "Q1"
    logged = pd.read_csv(Path(q1_runs["out_dir"].iloc[1]) / RunPaths.LOG_HISTORY)
    paid = logged["rewards/per_label_accuracy/mean"].dropna()
    assert len(paid) and paid.between(0, 1).all()   # trl logged the per-label reward
    e5_runs = experiments.run_cells(cfg, copy, "E5")   # a second call trains nothing
    assert e5_runs["reused"].all() and _run_ids(folder) == ids and sorted(p for p in folder.rglob("*") if p.is_file()) == files
    assert e5_runs["recipe"].fillna("").tolist() == ["", experiment_plan.E5_FINAL]   # the cell, then its matched control:
    assert Path(e5_runs["out_dir"].iloc[1]) == copy.grpo_run("hard", 0)    # 03's run at 1 x and 03's steps
    before = experiment_readouts.collapse_readout(cfg, copy, e5_runs)

    run_dir = Path(e5_runs["out_dir"].iloc[0])   # interrupted after its first checkpoint: resumes from it
    first, last = grpo.checkpoints(run_dir)
    shutil.rmtree(last)
    (run_dir / RunPaths.RUN_INFO).unlink()
    resumed = experiments.run_cells(cfg, copy, "E5")
    assert resumed["reused"].tolist() == [False, True] and _run_ids(folder) == ids
    assert json.loads((run_dir / RunPaths.RUN_INFO).read_text())["resumed_from"] == str(first)
    pd.testing.assert_frame_equal(experiment_readouts.collapse_readout(cfg, copy, resumed), before)


@pytest.mark.pipeline
def test_one_point_grids_run_resume_and_carry_verdicts(smoke_run, tmp_path):
    paths, _, _ = smoke_run
    check_one_point_grids(paths, tmp_path)


def test_the_experiments_family_extends_07s_with_every_ruled_readout(tmp_path):
    """EXPERIMENTS.md's family: 07's members (here C1, ruled, and C4, not measurable) and the experiments' ruled rows,
    named by their keys; descriptive rows stay out. Three ruled readouts, p 1, 0.01 and 0.03: Holm keeps the
    smallest one's sign (0.01 x 3 = 0.03) and takes the count row's (0.03 x 2 = 0.06), which turns inconclusive."""
    paths = RunPaths.for_profile("smoke", tmp_path, tmp_path / "fig")
    paths.family_members_file.parent.mkdir(parents=True)
    pd.DataFrame([{"readout": "C1", "verdict": "inconclusive", "effect": 0.0, "lo": -0.05, "hi": 0.05, "df": 2,
                   "sesoi": 0.03, "p": 1.0, "rule": "ci"},
                  {"readout": "C4", "verdict": "not measurable", "effect": 0.1, "lo": -0.1, "hi": 0.3, "df": 2,
                   "sesoi": 0.1, "not_measurable": "floor: both arms"}]).to_csv(paths.family_members_file, index=False)
    e3 = pd.DataFrame([{"test_set": "NIH", "nih_share": 0.25, "verdict": "supported", "effect": 0.1, "lo": 0.05,
                        "hi": 0.15, "df": 2, "sesoi": 0.03, "p": 0.01},
                       {"test_set": "NIH", "nih_share": 0.0, "verdict": "descriptive", "effect": 0.0, "lo": 0.0,
                        "hi": 0.0, "df": 2, "sesoi": 0.03}])
    e5 = pd.DataFrame([{"cell": "num_iterations-2", "verdict": "supported", "effect": 1.0, "lo": 0.3, "hi": 1.0,
                        "sesoi": 0.1, "p": 0.03, "rule": "count"}])
    q1 = pd.DataFrame([{"test_set": "NIH", "reward": "per_label", "verdict": "not measurable", "effect": 0.01,
                        "lo": np.nan, "hi": np.nan, "df": np.nan, "sesoi": 0.028, "note": "one training seed"}])
    family, summary = experiment_readouts.experiment_family(paths, {"E3": e3, "E5": e5, "Q1": q1})
    family = family.set_index("readout")
    assert list(family.index) == ["C1", "C4", "E3 NIH, 0.25", "E5 num_iterations-2", "Q1 NIH, per_label"]
    assert np.isnan(family.loc["Q1 NIH, per_label", "mde_80"])   # one seed: no CI, no MDE, outside the family
    assert summary["ruled"] == 3 and summary["sign_verdicts"] == 2 and summary["sign_verdicts_holm"] == 1
    assert family.loc["E3 NIH, 0.25", "p_holm"] == pytest.approx(0.03) and family.loc["E3 NIH, 0.25", "verdict_holm"] == "supported"
    assert family.loc["E5 num_iterations-2", "p_holm"] == pytest.approx(0.06)
    assert family.loc["E5 num_iterations-2", "verdict_holm"] == "inconclusive"
    assert family.loc["C4", "verdict_holm"] == "not measurable" and np.isnan(family.loc["C4", "p_holm"])
