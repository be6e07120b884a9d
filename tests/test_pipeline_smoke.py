"""The whole smoke profile through the runner, then GRPO reference / resume and evaluation behaviour on it."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from chexreason_utils.evaluation import verdict_statistics
from chexreason_utils.evaluation import evaluate, scores
from chexreason_utils.report import figure_registry
from chexreason_utils.train import grpo, models
from chexreason_utils import jsonl_store, prompts
from chexreason_utils.config import load_profile
from chexreason_utils.data.manifests import load_manifest
from chexreason_utils.jobs import run_jobs
from chexreason_utils.paths import RunPaths, checkpoint_step
from chexreason_utils.train.model_registry import base_model
from chexreason_utils.runner import EXPERIMENT_STAGES, run
from chexreason_utils.queries import entries as evaluation_entries
from chexreason_utils.training_runs import grpo as grpo_runs
from chexreason_utils.steps import evaluation as evaluation_steps

pytestmark = pytest.mark.pipeline


def test_every_registered_figure_and_table_is_made(smoke_run):
    paths, results, _ = smoke_run
    assert [r.status for r in results] == ["ran"] * 8
    for art in figure_registry.ARTIFACTS:
        for name in art.files() if art.notebook not in EXPERIMENT_STAGES else ():   # steps/test_experiments.py: those
            assert (paths.figures / name).stat().st_size > 0, name
    table5 = pd.read_csv(paths.figures / "table5_chexpert.csv")
    assert list(table5["source"].unique()) == ["reported (paper)", "reproduced (smoke, mean of 2 seeds)",
                                               "seed 0", "seed 1", "image-only CNN", "trivial baselines"]
    assert len(table5) == 6 * 15


def test_one_evaluation_route_the_tables_are_read_from_the_scores_frame(smoke_run):
    paths, _, _ = smoke_run
    frame = scores.read_scores(paths.scores_file)
    assert set(frame["dataset"]) == {"validation", "CheXpert", "NIH", "PadChest"}   # smoke scores PadChest
    assert set(frame["stage"]) == {"base", "sft", "grpo", "reference", "baseline"}
    assert set(frame["seed"].dropna()) == {0, 1} and set(frame["aggregate"]) == {"seed", "mean"}
    assert frame.loc[frame["aggregate"] == "mean", "seed"].isna().all()
    sft_chexpert = scores.select(frame, dataset="CheXpert", stage="sft", seed=1)
    table5 = pd.read_csv(paths.figures / "table5_chexpert.csv").set_index(["source", "label"])
    for row in sft_chexpert.loc[~sft_chexpert["label"].isin(["micro", "macro"])].itertuples():
        assert table5.loc[("seed 1", row.label), "MedGemma SFT"] == pytest.approx(row.f1, abs=5e-4)
    mean_macro = frame.loc[(frame["aggregate"] == "mean") & (frame["label"] == "macro")]
    assert mean_macro[["lo", "hi"]].notna().all().all() and (mean_macro["lo"] <= mean_macro["hi"]).all()
    contrasts = pd.read_csv(paths.contrasts_file)
    assert contrasts.loc[contrasts["kind"] == "claim", "contrast"].tolist() == ["C1", "C2", "C3", "C4", "C5",
                                                                                "C2 PadChest", "C3 PadChest", "C6"]
    assert len(pd.read_csv(paths.figures / "paired_differences.csv")) == 5   # 3 test sets, 2 gap changes


def test_claims_table_has_a_verdict_per_claim_from_every_seed(smoke_run):
    paths, _, _ = smoke_run
    table = pd.read_csv(paths.figures / "claims.csv")
    assert table["claim"].tolist() == ["C1", "C2", "C3", "C4", "C5", "C2 PadChest", "C3 PadChest", "C6"]
    assert table[["effect", "lo", "hi", "verdict"]].notna().all().all() and (table["seeds"] == 2).all()
    assert table.columns[:3].tolist() == ["claim", "verdict", "effect [95% CI]"]
    assert set(table["verdict"]) <= set(verdict_statistics.VERDICTS)
    criterion = evaluation_steps.read_floor_criterion(paths)
    assert len(criterion) == 2 * len(load_profile("smoke").sft.formats) * 2 and criterion["passes"].dtype == bool
    assert "in the phantom world" in (paths.figures / "claims.md").read_text()
    for seed in (0, 1):
        assert (paths.grpo_run("hard", seed) / "checkpoint_scores.csv").exists()
        assert (paths.grpo_run("ablation-hard", seed) / "log_history.csv").exists()


def test_the_image_reference_is_scored_per_seed_everywhere_and_beats_the_trivial_baselines(smoke_run):
    """What the pixels allow: the CNN trained on the site's pool beats the best trivial baseline's CI upper bound on
    every evaluation set (its mean over seeds), and every reference has a row per seed on every set."""
    paths, _, _ = smoke_run
    frame = scores.read_scores(paths.scores_file)
    macro = frame.loc[(frame["label"] == "macro") & (frame["stage"] == "reference")]
    for dataset in ("validation", "CheXpert", "NIH", "PadChest"):
        for name in scores.REFERENCES:
            rows = macro.loc[(macro["dataset"] == dataset) & (macro["name"] == name)]
            assert sorted(rows["seed"].dropna()) == [0, 1] and (rows["aggregate"] == scores.MEAN).sum() == 1
        pool = macro.loc[(macro["dataset"] == dataset) & (macro["name"] == "site pool") & (macro["aggregate"] == "mean")]
        best = scores.best_baseline(frame, dataset)
        assert pool["f1"].iloc[0] > best["hi"], (dataset, pool["f1"].iloc[0], best["name"], best["hi"])
    assert len(load_manifest(paths, "reference_pool")) > len(load_manifest(paths, "sft"))
    assert not set(load_manifest(paths, "reference_pool")["patient_id"]) & set(load_manifest(paths, "val")["patient_id"])
    gate = pd.read_csv(paths.evaluation / "competence_gate.csv")
    assert list(gate["part"].unique()) == ["a_reference", "b_off_floor", "c_zero_shot"] and gate["passes"].dtype == bool
    report = (paths.figures / "REPORT.md").read_text()
    assert -1 < report.index("## The competence gate") < report.index("## Claims")


def test_instruction_tuned_bases_have_cards_and_their_zero_shot_answers_parse(smoke_run):
    paths, _, _ = smoke_run
    for role, name in (("medical", "tiny-gemma3"), ("general", "tiny-qwen2_5_vl")):
        card = json.loads((paths.base_models(0) / name / "model_card.json").read_text())["instruction_tuning"]
        assert card["examples"] > 0 and card["finding_names_in_targets"] == (role == "medical")
    for role in ("medical", "general"):
        rows = [r for f in sorted((paths.base_models(0) / "zero_shot_demo").glob(f"{role}__*.jsonl"))
                for r in jsonl_store.read_rows(f)[0]]
        assert len(rows) >= 9
        assert all(prompts.parse_output(r["raw"]).valid == r["valid"] for r in rows)


def test_each_seed_builds_its_own_bases_and_the_claims_pair_them(smoke_run):
    """A replicate is a whole model (issue 36): the two training seeds' bases differ in nearly every tensor, the base
    entries have one score row per seed, and C3's per-seed values are each seed's SFT minus that seed's own base."""
    paths, _, _ = smoke_run
    cfg = load_profile("smoke")
    for role in ("medical", "general"):
        w0, w1 = (models.load_model(base_model(cfg, paths, role, s), device="cpu").state_dict() for s in cfg.seeds)
        same = [k for k in w0 if torch.equal(w0[k], w1[k])]
        assert len(same) < 0.1 * len(w0), (role, same)
    macro = scores.select(scores.read_scores(paths.scores_file), dataset="NIH", label="macro", aggregate=scores.SEED)
    base = scores.select(macro, stage="base", model="medical").set_index("seed")["f1"]
    sft = scores.select(macro, stage="sft", model="medical").set_index("seed")["f1"]
    assert sorted(base.index) == cfg.seeds
    contrasts = pd.read_csv(paths.contrasts_file).set_index("contrast")
    c3 = [float(v) for v in contrasts.loc["C3", "per_seed"].split(",")]
    assert c3 == pytest.approx([sft[s] - base[s] for s in cfg.seeds], abs=6e-4)


def test_the_smoke_profile_learns(smoke_run):
    """What the resume and cache tests rest on: the medical SFT model answers with labels, and GRPO moves its weights
    (KL > 0 after the first step, groups with reward spread). On main SFT answered '<think>' only and the hard reward
    was 0 at every step."""
    paths, _, _ = smoke_run
    cfg = load_profile("smoke")
    for seed in cfg.seeds:
        pred = evaluation_entries.entry_predictions(cfg, paths, [e for e in evaluation_entries.entries(cfg, paths) if
                                                                 e.keys.dataset == "validation" and e.keys.stage == "sft"
                                                                 and e.keys.model == "medical" and
                                                                 e.keys.name == "free_reasoning"])[0][seed]
        assert pred["valid"].mean() > 0.5 and pred["labels"].map(len).mean() >= 0.9, pred["raw"].head().tolist()
        for reward in cfg.grpo.rewards:
            log = pd.read_csv(paths.grpo_log(reward, seed)).dropna(subset=["reward"])
            assert log["kl"].iloc[1:].gt(0).all(), (reward, seed, log["kl"].tolist())
            assert log["frac_reward_zero_std"].mean() < 1.0, (reward, seed)


def test_a_second_run_recomputes_nothing(smoke_run):
    _, _, opts = smoke_run
    t0 = time.perf_counter()
    again = run(opts)
    assert [r.status for r in again] == ["skipped"] * 8
    assert time.perf_counter() - t0 < 30


def test_grpo_reference_is_the_sft_model_not_the_base(smoke_run, tmp_path):
    paths, _, _ = smoke_run
    cfg = load_profile("smoke")
    sft_dir = paths.sft_model("medical", "free_reasoning", 0)
    manifest = load_manifest(paths, "rl")
    data = grpo.make_dataset("x", list(manifest["image_path"][:4]), list(manifest["truth"][:4]))
    trainer, _ = grpo.build_trainer(grpo.GRPOInputs(sft_dir, data, cfg.grpo, "hard", {}), tmp_path, "cpu")
    ref = trainer.ref_model
    assert ref.config._name_or_path == str(sft_dir)
    sft_model = models.load_model(sft_dir, device="cpu")
    base = models.load_model(base_model(cfg, paths, "medical", 0), device="cpu")
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    ref_w, sft_w, base_w = (dict(m.named_parameters())[name] for m in (ref, sft_model, base))
    assert torch.equal(ref_w, sft_w) and not torch.equal(ref_w, base_w)


RESUME_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_pipeline_smoke import resume_run
resume_run(sys.argv[1], sys.argv[2])
"""


def resume_run(run_root, out):
    """The GRPO run the resume test interrupts: nuanced, 6 steps, a checkpoint every 2, one torch thread (in this
    process through ``run_jobs``, as in the subprocess that is killed)."""
    cfg = load_profile("smoke")
    paths = RunPaths.for_profile("smoke", str(run_root), str(run_root) + "/figures")
    grpo_cfg = replace(cfg.grpo, max_steps=6, save_steps=2, frozen_control=False,
                       nuanced=replace(cfg.grpo.nuanced, min_window=1))
    return run_jobs(_nuanced_run, [dict(cfg=cfg, paths=paths, grpo_cfg=grpo_cfg, out_dir=Path(out))], workers=1)[0]


def _nuanced_run(cfg, paths, grpo_cfg, out_dir):
    return grpo_runs.run_grpo(cfg, paths, grpo_runs.grpo_inputs(cfg, paths, "nuanced", 0, grpo_cfg), out_dir)


def test_a_killed_grpo_run_resumes_to_the_weights_of_an_uninterrupted_one(smoke_run, tmp_path, capfd):
    """Killed after checkpoint-2 and rerun: every step's reward and KL and the final weights equal those of a run that
    was never interrupted (on main the resumed policy was the SFT model again: KL 0 at the first resumed step)."""
    from safetensors.torch import load_file

    paths, _, _ = smoke_run
    whole_dir, out = tmp_path / "whole", tmp_path / "grpo"
    resume_run(paths.root, whole_dir)           # uninterrupted, in this process (one thread, as the killed one)
    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(paths.root), str(out), str(Path(__file__).parent)],
                            text=True, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not grpo.checkpoints(out):                # reward_state.json, written last, marks a complete checkpoint
        assert proc.poll() is None and time.time() < deadline, \
            "the GRPO run ended before its first checkpoint: " + (proc.stderr.read()[-3000:] if proc.poll() is not None else "")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "run_info.json").exists()
    window_at_2 = json.loads((out / "checkpoint-2" / "reward_state.json").read_text())["history"]
    done = [c.name for c in grpo.checkpoints(out)]
    capfd.readouterr()
    again = resume_run(paths.root, out)
    assert again.resumed_from == str(out / done[-1]) and "restored all" in capfd.readouterr().out
    assert [c.name for c in grpo.checkpoints(out)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    a, b = (pd.read_csv(d / "log_history.csv").dropna(subset=["reward"]) for d in (whole_dir, out))
    assert b["step"].tolist() == a["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert a["kl"].iloc[2:].min() > 0                                      # the weights move
    for column in ("reward", "kl", "entropy"):
        assert a[column].to_numpy() == pytest.approx(b[column].to_numpy(), rel=1e-4, abs=1e-7), column
    wa, wb = (load_file(str(d / "checkpoint-6" / "model.safetensors")) for d in (whole_dir, out))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-7) for k in wa)
    window_at_6 = json.loads((out / "checkpoint-6" / "reward_state.json").read_text())["history"]
    assert len(window_at_6) > len(window_at_2) and window_at_6[:len(window_at_2)] == window_at_2
    cfg = load_profile("smoke")
    changed = _nuanced_run(cfg, paths, replace(cfg.grpo, max_steps=2, save_steps=2, frozen_control=False), out)
    assert changed.resumed_from is None and [c.name for c in changed.checkpoints] == ["checkpoint-2"]


def test_evaluation_resumes_redoes_a_truncated_row_and_batches_match(smoke_run, tmp_path):
    paths, _, _ = smoke_run
    model = paths.sft_model("medical", "free_reasoning", 0)
    images = load_manifest(paths, "val")[["image_id", "image_path"]].iloc[:6]
    out = tmp_path / "pred.jsonl"
    first = evaluate.predict(model, images, "free_reasoning", out, batch_size=6, max_new_tokens=48, device="cpu")
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:-1]) + text[-1][: len(text[-1]) // 2])      # crash while writing the last row
    again = evaluate.predict(model, images, "free_reasoning", out, batch_size=6, max_new_tokens=48, device="cpu")
    rows, broken = jsonl_store.read_rows(out)
    assert broken == 0 and len(rows) == 6
    assert again["raw"].tolist() == first["raw"].tolist()
    single = evaluate.predict(model, images, "free_reasoning", tmp_path / "single.jsonl", batch_size=1,
                              max_new_tokens=48, device="cpu")
    assert single["labels"].tolist() == first["labels"].tolist()
    assert {"image_id", "raw", "labels", "valid", "reason"} <= set(first.columns)


def test_predictions_are_redone_exactly_when_what_shapes_them_changes(smoke_run, tmp_path):
    """The prediction key covers the model, the instruction and the generation settings: on main an edited
    max_new_tokens regenerated nothing and every cached row stayed."""
    paths, _, _ = smoke_run
    cfg = load_profile("smoke")
    images = load_manifest(paths, "val")[["image_id", "image_path"]].iloc[:4]
    model = paths.sft_model("medical", "free_reasoning", 0)
    copy = tmp_path / "retrained"
    shutil.copytree(model, copy)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    kwargs = dict(batch_size=4, max_new_tokens=cfg.evaluation.max_new_tokens, device="cpu", progress=False)
    evaluate.predict(model, images, "free_reasoning", a, **kwargs)
    evaluate.predict(copy, images, "free_reasoning", b, **kwargs)
    before = a.read_bytes(), b.read_bytes()
    evaluate.predict(model, images, "free_reasoning", a, **kwargs)
    evaluate.predict(shutil.copytree(copy, tmp_path / "moved"), images, "free_reasoning", b, **kwargs)
    assert (a.read_bytes(), b.read_bytes()) == before            # same model, prompt, settings (a copy too): reused

    short = evaluate.predict(model, images, "free_reasoning", a, **{**kwargs, "max_new_tokens": 2})
    processor = models.load_processor(model)
    assert all(len(processor.tokenizer(t, add_special_tokens=False)["input_ids"]) <= 2 for t in short["raw"])
    assert len(a.read_text().splitlines()) == 4                  # the old rows are gone, not mixed in
    assert b.read_bytes() == before[1]

    from safetensors.torch import load_file, save_file
    weights = load_file(str(copy / "model.safetensors"))
    first = next(iter(weights))
    weights[first] = weights[first] + 1e-3
    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    evaluate.predict(copy, images, "free_reasoning", b, **kwargs)   # retrained: redone
    rows = jsonl_store.read_rows(b)[0]
    assert len(rows) == 4 and {r["key"] for r in rows} == {evaluate.prediction_key(copy, "free_reasoning",
                                                                                  kwargs["max_new_tokens"])}
    assert evaluate.prediction_key(model, "free_reasoning", 96) != evaluate.prediction_key(model, "free_reasoning", 96,
                                                                                          (3136, 12544))


def test_the_controls_batches_are_the_policys_batches(smoke_run):
    """Same prompts in the same order, step by step, for the main runs and for the ablation (two iterations per
    generated batch: the control scores the generation steps only)."""
    paths, _, _ = smoke_run
    cfg = load_profile("smoke")
    folders = [paths.grpo_run(name, s) for name in grpo_runs.grpo_plan(cfg) for s in cfg.seeds]
    for folder in folders:
        control, policy = grpo.control_log(folder), grpo.policy_batches(folder)
        both = policy.merge(control[["step", "image_paths"]], on="step", suffixes=("", "_control"))
        assert len(both) == len(control) > 0, folder
        assert (both["image_paths"] == both["image_paths_control"]).all(), folder
        assert both["image_paths"].str.count(r"\|").eq(cfg.grpo.prompts_per_step * cfg.grpo.num_generations - 1).all()
        first = grpo.completions_table(folder).query("step == 1")
        ctrl = pd.read_parquet(folder / paths.CONTROL / paths.CONTROL_COMPLETIONS).query("step == 1")
        texts = [prompts.completion_text(c) for c in first["completion"]]
        assert texts == ctrl["completion"].tolist(), f"{folder}: step 1 samples differ (same weights, same seed)"
    ablation = grpo.control_log(paths.grpo_run(grpo_runs.ablation_name(cfg), cfg.seeds[0]))
    assert ablation["step"].tolist() == list(range(1, cfg.grpo.max_steps + 1, cfg.diagnostics.ablation_num_iterations))


def test_an_interrupted_control_resumes_to_the_same_numbers(smoke_run, tmp_path):
    paths, _, _ = smoke_run
    cfg = load_profile("smoke")
    folder = tmp_path / "hard"
    seed = cfg.seeds[0]
    shutil.copytree(paths.grpo_run("hard", seed), folder)
    control = folder / paths.CONTROL
    whole, texts = grpo.control_log(folder), pd.read_parquet(control / paths.CONTROL_COMPLETIONS)
    shutil.rmtree(grpo.checkpoints(control)[-1])   # cut off after its first checkpoint: the last steps are redone
    kept = checkpoint_step(grpo.checkpoints(control)[-1])
    for logged in (control / "completions").glob("completions_*.parquet"):
        if int(logged.stem.split("_")[1]) > kept:
            logged.unlink()
    (control / paths.CONTROL_LOG).unlink()
    (control / paths.CONTROL_COMPLETIONS).unlink()
    again = grpo.run_control(grpo_runs.grpo_inputs(cfg, paths, "hard", seed), folder, "cpu")
    pd.testing.assert_frame_equal(again, whole)
    pd.testing.assert_frame_equal(pd.read_parquet(control / paths.CONTROL_COMPLETIONS), texts)


COMPARED = (".safetensors", ".json", ".jsonl", ".csv", ".parquet", ".png", ".pdf", ".md", ".tex")
# times, run ids, the runner's file-digest cache (keyed by mtime), trl's model card (README.md), whose tags trl
# writes in set order, and the contrasts, which are inference across seeds
NOT_COMPARED = {"manifest.json", "run_info.json", "trainer_state.json", "config_reads.json", "file_digests.json",
                "README.md", "contrasts.csv"}
TIMING_COLUMNS = ("runtime", "per_second", "step_time")


def _comparable(run_dir, seed):
    """Relative path -> bytes of every model, prediction, CSV and table in a run directory (its parent folder written
    as <tmp>, timing columns of trainer logs dropped, only ``seed``'s rows of tables with a seed column); executed
    notebooks, progress logs, the manifest and run-id files are not compared."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if (not path.is_file() or path.suffix not in COMPARED or path.name in NOT_COMPARED
                or rel.parts[0] in ("notebooks", "logs")):
            continue
        data = path.read_bytes()
        if path.suffix == ".csv":
            frame = pd.read_csv(path)
            if path.name == "log_history.csv":
                frame = frame.drop(columns=[c for c in frame if c.endswith(TIMING_COLUMNS)])
            if "seed" in frame:
                frame = frame[frame["seed"] == seed]
            data = frame.to_csv(index=False).encode()
        if path.suffix in (".json", ".jsonl", ".csv", ".md", ".tex"):   # absolute paths inside the run
            data = data.replace(str(run_dir.parent).encode(), b"<tmp>")
        out[str(rel)] = data
    return out


@pytest.mark.repro
def test_a_second_clean_smoke_run_in_another_process_gives_identical_bytes(smoke_run, second_smoke_run):
    """Same machine and profile -> the same world, bases, manifests, seed-1 SFT and GRPO weights and predictions, byte
    for byte. The fixture ran seeds 0 and 1 with the default workers (one per core); the second run
    (``conftest.SECOND_RUN``) runs seed 1 alone with one worker through stage 03, GRPO's chain only, so it also shows
    that neither the worker count, the other seeds nor the other SFT runs change a run's results. Figures average over
    seeds, so they are not compared here (``test_project_hygiene`` checks that saving a figure twice gives the same
    bytes)."""
    paths, _, _ = smoke_run
    proc, run_dir, _, log = second_smoke_run
    assert proc.wait(timeout=3000) == 0, log.read_text()[-3000:]
    first, second = _comparable(paths.root, 1), _comparable(run_dir, 1)
    missing = sorted(set(second) - set(first))
    assert not missing, f"the second run wrote {len(missing)} files the first did not, e.g. {missing[:10]}"
    kinds = pd.Series([Path(name).suffix for name in second]).value_counts()
    assert kinds.get(".safetensors", 0) >= 10 and kinds.get(".jsonl", 0) >= 10, kinds.to_dict()
    trained = {Path(name).parts[1] for name in second if name.startswith(("02_sft/seed-", "03_grpo/seed-"))}
    assert trained == {"seed-1"}, trained
    differ = [name for name in second if first[name] != second[name]]
    assert not differ, f"{len(differ)} of {len(second)} files differ, e.g. {differ[:10]}"
