"""The papermill runner on small fixture notebooks made here."""
import json
import subprocess
import sys
import time

import pytest

from chexreason_utils.runner import RunnerError, RunOptions, StageFailed, run
from conftest import write_notebook

PARAMS = 'profile = "smoke"\nrun_dir = ""\nfigure_dir = ""\noverrides = {}'


def make_stages(folder, second_source="x = 2"):
    folder.mkdir(exist_ok=True)
    write_notebook(folder / "00_first.ipynb", [("md", "# first"), ("params", PARAMS),
        ("code", "from pathlib import Path\nout = Path(run_dir) / '00_first'\nout.mkdir(exist_ok=True)\n"
                 "(out / 'seen.json').write_text(repr((profile, overrides)))")])
    write_notebook(folder / "01_second.ipynb", [("params", PARAMS), ("code", second_source),
        ("code", "from pathlib import Path\n(Path(run_dir) / 'order.txt').write_text(str(Path(run_dir, '00_first', 'seen.json').exists()))")])
    return folder


def opts(tmp_path, profile="smoke", **kw):
    return RunOptions(profile=profile, run_dir=str(tmp_path / "run"), figure_dir=str(tmp_path / "fig"),
                      notebook_dir=tmp_path / "nbs", **kw)


def test_order_injection_skip_force_and_manifest(tmp_path):
    make_stages(tmp_path / "nbs", second_source="import time\ntime.sleep(0.3)")
    t0 = time.perf_counter()
    first = run(opts(tmp_path, overrides={"sft.max_steps": 3}))
    first_s = time.perf_counter() - t0
    assert [r.status for r in first] == ["ran", "ran"]
    assert (tmp_path / "run" / "order.txt").read_text() == "True"          # 00 ran before 01
    assert "{'sft.max_steps': 3}" in (tmp_path / "run" / "00_first" / "seen.json").read_text()
    again = run(opts(tmp_path, overrides={"sft.max_steps": 3}))
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert all("unchanged" in r.reason for r in again)
    t0 = time.perf_counter()
    forced = run(opts(tmp_path, overrides={"sft.max_steps": 3}, force=True, only=["01"]))
    forced_s = time.perf_counter() - t0
    assert [(r.name, r.status) for r in forced] == [("01_second", "ran")]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["overrides"] == {"sft.max_steps": 3}
    assert manifest["parameters"]["sft"]["max_steps"] == 3
    assert {"torch", "transformers", "trl", "python"} <= set(manifest["packages"])
    assert manifest["packages"]["torch"].startswith("2.13.0")
    assert "git_commit" in manifest and manifest["seeds"]["global"] == 0
    assert set(manifest["stages"]) == {"00_first", "01_second"}
    # wall_s is the time a stage's notebook ran, inside the run() call that ran it: 01 sleeps 0.3 s
    assert first[0].wall_s > 0 and first[1].wall_s >= 0.3 and first[0].wall_s + first[1].wall_s <= first_s
    walls = {name: s["wall_s"] for name, s in manifest["stages"].items()}
    assert walls["01_second"] == round(forced[0].wall_s, 2) and 0.3 <= walls["01_second"] <= forced_s
    assert manifest["stages"]["00_first"]["status"] == "skipped" and walls["00_first"] == 0   # last run: skipped


def test_changed_parameter_or_upstream_output_reruns(tmp_path):
    make_stages(tmp_path / "nbs")
    run(opts(tmp_path))
    changed = run(opts(tmp_path, overrides={"seed": 5}))
    assert [r.status for r in changed] == ["ran", "ran"]
    (tmp_path / "run" / "00_first" / "extra.txt").write_text("changed upstream output")
    after = run(opts(tmp_path, overrides={"seed": 5}))
    assert [r.status for r in after] == ["ran", "ran"]


def test_failure_names_notebook_cell_and_error(tmp_path):
    make_stages(tmp_path / "nbs", second_source="raise ValueError('boom in cell')")
    with pytest.raises(StageFailed, match=r"01_second failed: cell 2 of the executed notebook \(In \[3\]\): ValueError: boom in cell"):
        run(opts(tmp_path))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["01_second"]["status"] == "failed"
    assert manifest["stages"]["00_first"]["status"] == "ran"


def test_parameter_the_notebook_does_not_define_is_an_error(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "00_only.ipynb", [("params", 'profile = "smoke"\nrun_dir = ""\nfigure_dir = ""'), ("code", "1")])
    with pytest.raises(RunnerError, match="does not define overrides"):
        run(opts(tmp_path))


def test_stage_selection_errors(tmp_path):
    make_stages(tmp_path / "nbs")
    with pytest.raises(RunnerError, match="no stage '07'"):
        run(opts(tmp_path, only=["07"]))
    started = run(opts(tmp_path, start="01"))
    assert [r.name for r in started] == ["01_second"]


@pytest.mark.parametrize("args, message", [
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--profile", "/nonexistent/p.yaml"], "profile file not found"),
    (["--profile", "smoke", "-p", "grpo.max_steps=lots"], "grpo.max_steps must be int"),
    (["--profile", "smoke", "-p", "evaluation.n_bootstrap=-5"], "evaluation.n_bootstrap = -5 is not allowed: >= 1"),
    (["--profile", "smoke", "--notebooks", "/nonexistent/nbs"], "notebook directory not found"),
])
def test_cli_errors_are_one_line_without_traceback(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "chexreason_utils", "run", "--run-dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr


def test_library_code_is_part_of_the_fingerprint(tmp_path, monkeypatch):
    from chexreason_utils import runner

    make_stages(tmp_path / "nbs")
    run(opts(tmp_path))
    monkeypatch.setattr(runner, "code_digest", lambda: "edited library")
    assert [r.status for r in run(opts(tmp_path))] == ["ran", "ran"]


START = "from chexreason_utils import start_stage\nstage = start_stage('{name}', profile, run_dir, figure_dir, overrides)\ncfg = stage.cfg"
READS = {   # what each fixture stage reads, in the ways the real notebooks and library read config
    "00_alpha": "from dataclasses import replace\nfrom pathlib import Path\nx = cfg.world.seed\n"
                "m = replace(cfg.models, tiny_vocab=5)\n"
                "(Path(run_dir) / '00_alpha' / 'card.txt').write_text('the same bytes at every run')",
    "01_beta": "from dataclasses import asdict\nx = asdict(cfg.sampling), cfg.evaluation.nih_label_set, cfg.workers",
    # the config goes to two worker processes (workers.py beside the notebooks): only what they read counts
    "02_gamma": "from chexreason_utils.jobs import run_jobs\nimport workers\n"
                "x = run_jobs(workers.read, [dict(cfg=cfg, key='grpo.hard.lambda_len'), dict(cfg=cfg, key='seeds')], 2)\n"
                "y = cfg.sft.batch_size, f'caption: profile {cfg.profile}'",
}
WORKERS = "def read(cfg, key):\n    for part in key.split('.'):\n        cfg = getattr(cfg, part)\n    return cfg\n"
# One edit per config section -> the stages that read the edited value (every stage reads seed in start_stage;
# workers is read by 01 but can never change results, so it reruns nothing; 00 rewrites card.txt with the same
# bytes, which changes nothing downstream).
EDITS = [("seed", 3, {"00_alpha", "01_beta", "02_gamma"}), ("device", "cuda", set()), ("workers", 3, set()), ("report_to", "tensorboard", set()),
         ("world.seed", 8, {"00_alpha"}), ("world.n_pretrain", 7, set()), ("data.check_images", False, set()),
         ("sampling.n_sft", 50, {"01_beta"}), ("models.tiny_hidden", 64, {"00_alpha"}), ("models.tiny_vocab", 333, set()),
         ("sft.batch_size", 2, {"02_gamma"}), ("sft.learning_rate", 0.5, set()), ("grpo.hard.lambda_len", 0.3, {"02_gamma"}),
         ("grpo.beta", 0.2, set()), ("evaluation.nih_label_set", "with_effusion", {"01_beta"}),
         ("evaluation.batch_size", 3, set()), ("reference.epochs", 5, set()), ("cross_model.general_zero_shot", False, set()),
         ("diagnostics.set_margin", 0.2, set()), ("claims.sesoi_c1", 0.05, set()), ("experiments.steps_scale", 0.5, set()),
         ("profile", "smoke-copy", {"02_gamma"}),
         ("seeds", [4, 5], {"02_gamma"})]
# Two rounds of edits: world.seed alone (only 00 reruns, and its unchanged card.txt reruns nothing after it), then
# every other edit at once, where each stage's printed reason must name exactly the edited values it reads (a stage
# reruns when any value it read changed, so one round answers for every edit; seven stage executions, not fourteen).
ROUNDS = [("world.seed",), tuple(key for key, _, _ in EDITS if key != "world.seed")]


def _fixture_stages(tmp_path):
    import yaml

    from chexreason_utils.config import PROFILE_DIR

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    (nbs / "workers.py").write_text(WORKERS)
    for name, source in READS.items():
        write_notebook(nbs / f"{name}.ipynb", [("params", PARAMS), ("code", START.format(name=name)), ("code", source)])
    profile = tmp_path / "copy.yaml"
    raw = yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())
    profile.write_text(yaml.safe_dump(raw))
    return profile, raw


def test_editing_a_config_value_reruns_exactly_the_stages_that_read_it(tmp_path, capsys):
    import yaml

    from chexreason_utils.config import Config

    profile, raw = _fixture_stages(tmp_path)
    options = opts(tmp_path, profile=str(profile))
    assert [r.status for r in run(options)] == ["ran"] * 3
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert {"sampling.n_sft", "evaluation.nih_label_set", "workers", "seed"} <= set(stages["01_beta"]["reads"])
    assert {"grpo.hard.lambda_len", "seeds", "sft.batch_size"} <= set(stages["02_gamma"]["reads"])   # workers' too
    assert "grpo" not in stages["02_gamma"]["reads"] and "" not in stages["02_gamma"]["reads"]
    # every stage reads the arithmetic mode as it starts (it decides every float); switching it needs a fresh
    # process, so it is edited in test_arithmetic's run test, not here
    assert all("arithmetic" in stage["reads"] for stage in stages.values())
    assert {key.split(".")[0] for key, _, _ in EDITS} | {"arithmetic"} == \
        {f.name for f in __import__("dataclasses").fields(Config)}
    edits = {key: (new, readers) for key, new, readers in EDITS}
    for keys in ROUNDS:
        for key in keys:
            *parents, leaf = key.split(".")
            section = raw
            for part in parents:
                section = section.setdefault(part, {})
            section[leaf] = edits[key][0]
        profile.write_text(yaml.safe_dump(raw))
        reasons = {r.name: r.reason for r in run(options) if r.status == "ran"}
        expected = {stage: sorted(k for k in keys if stage in edits[k][1]) for stage in READS}
        assert reasons == {stage: f"config changed: {', '.join(ks)}" for stage, ks in expected.items() if ks}, keys
    assert f"[02_gamma] running ({reasons['02_gamma']}) ..." in capsys.readouterr().out   # printed as it starts


def test_a_copied_run_folder_reruns_as_unchanged(tmp_path):
    import shutil

    profile, _ = _fixture_stages(tmp_path)
    make_stages(tmp_path / "nbs")       # stages that write into the run folder, the shared folders and figures
    write_notebook(tmp_path / "nbs" / "04_evaluation.ipynb", [("params", FOUR[0]), ("code", FOUR[1])])
    assert {r.status for r in run(opts(tmp_path, profile=str(profile)))} == {"ran"}
    shutil.copytree(tmp_path / "run", tmp_path / "moved", copy_function=shutil.copy)   # new mtimes too
    moved = RunOptions(profile=str(profile), run_dir=str(tmp_path / "moved"), figure_dir=str(tmp_path / "fig"),
                       notebook_dir=tmp_path / "nbs")
    results = run(moved)
    assert [r.status for r in results] == ["skipped"] * len(results), [(r.name, r.reason) for r in results]
    manifest = (tmp_path / "moved" / "manifest.json").read_text()
    stages = json.loads(manifest)["stages"]
    assert all(not p.startswith("/") for s in stages.values() for p in s["shared_outputs"])


FOUR = (PARAMS + "\n", "from pathlib import Path\nimport shutil\nfrom chexreason_utils import start_stage\n"
        "stage = start_stage('04_evaluation', profile, run_dir, figure_dir, overrides)\n"
        "pred = Path(run_dir) / 'predictions' / 'model__val.jsonl'\npred.parent.mkdir(exist_ok=True)\n"
        "if not pred.exists():\n    pred.write_text('{}')   # a cache: written once, reused after\n"
        "Path(figure_dir).mkdir(exist_ok=True)\nfor name in ('headline.png', 'headline.pdf', 'headline.csv'):\n"
        "    (Path(figure_dir) / name).write_text(name)\nstage.note(redone_lines=2)")


def test_deleting_a_registered_or_shared_output_reruns_the_stage_that_makes_it(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "04_evaluation.ipynb", [("params", FOUR[0]), ("code", FOUR[1])])
    write_notebook(nbs / "05_after.ipynb", [("params", PARAMS), ("code", "x = 1")])
    assert [r.status for r in run(opts(tmp_path))] == ["ran", "ran"]
    assert "04_evaluation: redone lines 2" in capsys.readouterr().out      # the stage's counts, in the summary
    assert [r.status for r in run(opts(tmp_path))] == ["skipped", "skipped"]
    (tmp_path / "fig" / "headline.png").unlink()
    again = run(opts(tmp_path))
    assert again[0].status == "ran" and "outputs missing or changed" in again[0].reason
    assert again[1].status == "skipped"          # its input was remade with the same bytes: unchanged
    assert (tmp_path / "fig" / "headline.png").exists()
    (tmp_path / "run" / "predictions" / "model__val.jsonl").unlink()     # written by an earlier run of 04
    assert [r.status for r in run(opts(tmp_path))] == ["ran", "skipped"]   # remade with the same bytes
    assert [r.status for r in run(opts(tmp_path))] == ["skipped", "skipped"]


def test_every_registered_artifact_is_an_output_of_its_notebook(tmp_path):
    from chexreason_utils.report.figure_registry import ARTIFACTS
    from chexreason_utils.paths import RunPaths
    from chexreason_utils.runner import output_files

    paths = RunPaths.for_profile("smoke", tmp_path / "run", tmp_path / "fig")
    for art in ARTIFACTS:
        owned = set(output_files(paths, art.notebook))
        assert {paths.figures / name for name in art.files()} <= owned, art.id


def test_paper_profile_with_empty_data_roots_fails_in_00_naming_the_files(tmp_path):
    roots = {key: tmp_path / key for key in ("mimic_root", "chexpert_root", "nih_root")}
    for folder in roots.values():
        folder.mkdir()
    proc = subprocess.run([sys.executable, "-m", "chexreason_utils", "run", "--profile", "paper", "--run-dir",
                           str(tmp_path / "run"), "--figure-dir", str(tmp_path / "fig"),
                           *[a for key, folder in roots.items() for a in ("-p", f"data.{key}={folder}")]],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "stage 00_setup failed" in error[0] and "6 data file(s) missing" in error[0]
    for name in ("mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-split.csv.gz",
                 "test_labels.csv", "Data_Entry_2017_v2020.csv", "test_list.txt", "Expected layout"):
        assert name in error[0]
    assert "00_setup" in proc.stdout and "01_sampling" in proc.stdout and "not run" in proc.stdout


def test_two_kernels_started_at_once_in_one_folder_both_answer(tmp_path, monkeypatch):
    """Both smoke runs of the suite start a kernel in notebooks/ at the same moment: with jupyter_client's default
    IPC socket names (``kernel-ipc-<n>`` in the working directory) they took the same sockets and one kernel
    never answered ("Kernel didn't respond in 60 seconds")."""
    import asyncio

    from chexreason_utils.execution import IPCKernelManager

    monkeypatch.chdir(tmp_path)

    async def start_both():
        managers = [IPCKernelManager(kernel_name="python3") for _ in range(2)]
        await asyncio.gather(*(m.start_kernel() for m in managers))
        clients = [m.client() for m in managers]
        try:
            for c in clients:
                c.start_channels()
            await asyncio.gather(*(c.wait_for_ready(timeout=120) for c in clients))
            return [m.ip for m in managers]
        finally:
            for c in clients:
                c.stop_channels()
            await asyncio.gather(*(m.shutdown_kernel(now=True) for m in managers))

    ips = asyncio.run(start_both())
    assert ips[0] != ips[1] and not list(tmp_path.iterdir())     # own sockets, none in the working directory
