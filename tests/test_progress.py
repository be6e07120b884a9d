"""Progress lines, heartbeats, timing and count records: what a headless run prints while a stage works."""
import json
import os
import time
from types import SimpleNamespace

from chexreason_utils import progress, run_records
from chexreason_utils.runner import RunOptions, run
from conftest import write_notebook


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bar_writes_throttled_progress_records_under_the_runner(tmp_path, monkeypatch):
    log = tmp_path / "stage.jsonl"
    monkeypatch.setenv(run_records.RECORDS_ENV, str(log))
    bar = progress.Bar("SFT medical/free_reasoning", 200)
    for step in range(1, 121):
        bar.set(step)                       # fast steps: nothing within the first 10 s
    monkeypatch.setattr(progress, "REPORT_EVERY_S", 0.0)
    bar.set(121)
    bar.close()                             # stopped early at 121 of 200: the last state is written once more
    done = progress.Bar("predict val", 32, unit="image")
    done.update(32)                         # a short task: one line, when it finishes
    done.close()
    rows = records(log)
    assert [(r["task"][:3], r["step"], r["total"]) for r in rows] == [("SFT", 121, 200), ("SFT", 121, 200),
                                                                      ("pre", 32, 32)]
    assert all(r["kind"] == "step" for r in rows)


def test_interactive_bar_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(run_records.RECORDS_ENV, raising=False)
    assert not run_records.headless()
    bar = progress.Bar("predict x", 3, enabled=False)
    bar.update(3)
    bar.close()
    run_records.record_time("predict x", "load", 1.0)   # no record file: a no-op
    run_records.count("lines redone", 2)
    assert list(tmp_path.iterdir()) == []


def test_watcher_prints_each_new_line_and_a_heartbeat_naming_the_cell(tmp_path):
    log = tmp_path / "stage.jsonl"
    printed = []
    watcher = progress.Watcher(log, "02_sft", heartbeat_s=3600, out=printed.append)
    watcher.poll()                          # no file yet: nothing
    run_records.write_record({"kind": "step", "task": "SFT medical/free_reasoning", "step": 120, "total": 200,
                           "elapsed": 41.2}, log)
    run_records.write_record({"kind": "time", "task": "SFT medical/free_reasoning", "phase": "load", "seconds": 1}, log)
    with open(log, "a") as f:
        f.write('{"kind": "step", "task": "half a line')      # being written: read on a later poll
    watcher.poll()
    assert printed == ["[02_sft] SFT medical/free_reasoning: step 120/200, 41 s"]
    watcher.set_cell(6, 12, "\nimport pandas as pd\nroles = ['medical']\nresults = {}")
    watcher.heartbeat_s = 0
    watcher.poll()
    assert printed[1].startswith("[02_sft] still running") and "cell 6/12" in printed[1]
    assert "roles = ['medical']" in printed[1] and "SFT medical/free_reasoning: step 120/200" in printed[1]


def test_training_callback_reports_steps_and_splits_the_time(tmp_path, monkeypatch):
    from chexreason_utils.train.trainer_progress import ProgressCallback, task_name

    log = tmp_path / "stage.jsonl"
    monkeypatch.setenv(run_records.RECORDS_ENV, str(log))
    monkeypatch.setattr(progress, "REPORT_EVERY_S", 0.0)
    task = task_name("SFT", tmp_path / "02_sft" / "medical" / "free_reasoning")
    assert task == "SFT medical/free_reasoning"
    assert task_name("GRPO", tmp_path / "run" / "03_grpo" / "hard") == "GRPO hard"
    assert task_name("SFT", tmp_path / "02_sft" / "medical" / "only_label" / "seed2") == "SFT medical/only_label/seed2"
    assert task_name("SFT", tmp_path / "run" / "models" / "tiny-gemma3") == "SFT models/tiny-gemma3"
    cb = ProgressCallback(task)
    reward = cb.timed_reward(lambda completions, **kw: [1.0] * len(completions))
    assert reward.__name__ == "<lambda>"                # trl names the metric after it
    state = SimpleNamespace(global_step=0, max_steps=2)
    cb.on_train_begin(None, state, None)
    for step in (1, 2):
        cb.rollout_begin()                       # GRPO's training_step: generation ...
        time.sleep(0.02)
        assert reward(["a", "b"]) == [1.0, 1.0]  # ... then scoring ...
        time.sleep(0.01)
        cb.rollout_end()                         # ... then the loss
        cb.rollout_begin()                       # a step reusing the buffered batch: no reward call
        cb.rollout_end()
        state.global_step = step
        cb.on_step_end(None, state, None)
    time.sleep(0.05)
    cb.on_evaluate(None, state, None)
    time.sleep(0.03)
    cb.on_save(None, state, None)
    cb.on_train_end(None, state, None)
    rows = records(log)
    assert [(r["step"], r["total"]) for r in rows if r["kind"] == "step"] == [(1, 2), (2, 2)]
    times = {r["phase"]: r["seconds"] for r in rows if r["kind"] == "time"}
    assert set(times) == {"train.steps", "train.eval", "train.checkpoint", "train.generate", "train.rollout"}
    assert times["train.eval"] >= 0.05 and times["train.checkpoint"] >= 0.03
    assert times["train.steps"] >= times["train.rollout"] >= times["train.generate"] + 0.02
    assert times["train.generate"] >= 0.04


def test_grpo_rollouts_are_timed_through_public_trainer_methods_only(tmp_path, monkeypatch):
    """A one-step GRPO run of a tiny model records both rollout phases; the trainer overrides only public
    ``GRPOTrainer`` methods that trl still has (a rename there fails here, not silently)."""
    from dataclasses import replace

    import numpy as np
    from PIL import Image
    from trl import GRPOTrainer

    from chexreason_utils.config import load_profile
    from chexreason_utils.prompts import PROMPT_VARIANTS
    from chexreason_utils.train import grpo, models

    cls = grpo.timed_grpo_trainer()
    overridden = {n for n in vars(cls) if callable(vars(cls)[n]) and n != "__init__"}
    assert overridden == {"training_step", "compute_loss"}
    assert all(callable(getattr(GRPOTrainer, n, None)) and not n.startswith("_") for n in overridden)

    log = tmp_path / "stage.jsonl"
    monkeypatch.setenv(run_records.RECORDS_ENV, str(log))
    corpus = list(PROMPT_VARIANTS.values()) + ["<think>heart.</think><solution>Cardiomegaly</solution>"] * 10
    sft_dir = models.TINY_BUILDERS["gemma3"](corpus, tmp_path / "tiny", hidden=64, vocab=500)
    image = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype("uint8")).convert("RGB").save(image)
    cfg = replace(load_profile("smoke").grpo, max_steps=1, prompts_per_step=1, max_completion_length=8,
                  frozen_control=False)
    data = grpo.make_dataset(next(iter(PROMPT_VARIANTS.values())), [str(image)] * 2, [["Cardiomegaly"]] * 2)
    trainer, _ = grpo.build_trainer(grpo.GRPOInputs(sft_dir, data, cfg, "hard", {}), tmp_path / "03_grpo" / "hard",
                                    "cpu")
    assert type(trainer).__name__ == "TimedGRPOTrainer" and isinstance(trainer, GRPOTrainer)
    trainer.train()
    times = {r["phase"]: r["seconds"] for r in records(log) if r["kind"] == "time"}
    assert times["train.rollout"] >= times["train.generate"] > 0


def test_runner_prints_progress_of_a_cell_and_no_transport_warning(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.5)
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "00_work.ipynb", [
        ("params", 'profile = "smoke"\nrun_dir = ""\nfigure_dir = ""\noverrides = {}'),
        ("code", "import time\nfrom chexreason_utils.progress import Bar\nbar = Bar('SFT medical/free_reasoning', 2)\n"
                 "time.sleep(1.5)\nbar.update(2)\nbar.close()")])
    run(RunOptions(profile="smoke", run_dir=str(tmp_path / "run"), figure_dir=str(tmp_path / "fig"), notebook_dir=nbs))
    out = capfd.readouterr()
    assert "[00_work] SFT medical/free_reasoning: step 2/2" in out.out
    assert "still running" in out.out and "cell 3/3 " in out.out and "time.sleep(1.5)" not in out.out
    assert "without encryption" not in out.out + out.err
    assert not (tmp_path / "run" / "00_work").exists()   # progress stays in logs/, out of the stage's outputs


def test_worker_processes_write_to_the_same_progress_file(tmp_path, monkeypatch):
    from chexreason_utils.jobs import run_jobs

    log = tmp_path / "stage.jsonl"
    monkeypatch.setenv(run_records.RECORDS_ENV, str(log))   # spawned workers inherit it
    run_jobs(run_records.record_time, [{"task": f"SFT medical/free_reasoning seed {s}", "phase": "load", "seconds": 1.0}
                                    for s in (1, 2)], workers=2)
    rows = records(log)
    assert sorted(r["task"][-6:] for r in rows) == ["seed 1", "seed 2"]
    assert os.getpid() not in {r["pid"] for r in rows}         # written by the worker processes themselves
    run_records.count("lines redone", 1)
    run_jobs(run_records.count, [{"what": "lines redone", "n": n} for n in (2, 0, 3)], workers=2)
    assert run_records.counts(log) == {"lines redone": 6}     # the kernel's and the workers' counts, in one file


def test_workers_are_kept_between_calls_and_restarted_when_the_stage_environment_changes(tmp_path, monkeypatch):
    from chexreason_utils import jobs

    monkeypatch.setenv(run_records.RECORDS_ENV, str(tmp_path / "a.jsonl"))
    first = set(jobs.run_jobs(os.getpid, [{}, {}, {}], workers=2))
    pool = set(jobs._pool[1]._processes)   # both workers: under load one of them may have run all three jobs
    again = set(jobs.run_jobs(os.getpid, [{}, {}], workers=2))
    assert len(pool) == 2 and first | again <= pool and os.getpid() not in pool   # the same workers, not this one
    assert set(jobs._pool[1]._processes) == pool
    monkeypatch.setenv(run_records.RECORDS_ENV, str(tmp_path / "b.jsonl"))
    assert not set(jobs.run_jobs(os.getpid, [{}, {}], workers=2)) & pool   # another stage: fresh workers
    jobs.shutdown()


KILLED_PARENT_SCRIPT = """
import sys, time
from chexreason_utils import jobs
jobs.run_jobs(time.sleep, [{"secs": 300}, {"secs": 300}], workers=2)
"""


def test_workers_die_with_a_killed_parent(tmp_path):
    """kill -9 of the process that runs the jobs ends its workers too (on main they trained on and held memory)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", KILLED_PARENT_SCRIPT], start_new_session=True)
    deadline = time.time() + 120
    workers: list[int] = []
    while len(workers) < 2:
        assert time.time() < deadline and proc.poll() is None, "the workers never started"
        time.sleep(0.5)
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        workers = [int(p) for p in out if _is_worker(int(p))]
    time.sleep(3)                                    # the workers are sleeping inside their job
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while any(_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), f"workers {workers} outlived their parent"


def _is_worker(pid: int) -> bool:
    from pathlib import Path

    try:
        return "spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
