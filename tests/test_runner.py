"""The papermill runner on small fixture notebooks made here."""
import json
import subprocess
import sys

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


def opts(tmp_path, **kw):
    return RunOptions(profile="smoke", run_dir=str(tmp_path / "run"), figure_dir=str(tmp_path / "fig"),
                      notebook_dir=tmp_path / "nbs", **kw)


def test_order_injection_skip_force_and_manifest(tmp_path):
    make_stages(tmp_path / "nbs")
    first = run(opts(tmp_path, overrides={"sft.max_steps": 3}))
    assert [r.status for r in first] == ["ran", "ran"]
    assert (tmp_path / "run" / "order.txt").read_text() == "True"          # 00 ran before 01
    assert "{'sft.max_steps': 3}" in (tmp_path / "run" / "00_first" / "seen.json").read_text()
    again = run(opts(tmp_path, overrides={"sft.max_steps": 3}))
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert all("unchanged" in r.reason for r in again)
    forced = run(opts(tmp_path, overrides={"sft.max_steps": 3}, force=True, only=["01"]))
    assert [(r.name, r.status) for r in forced] == [("01_second", "ran")]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["overrides"] == {"sft.max_steps": 3}
    assert manifest["parameters"]["sft"]["max_steps"] == 3
    assert {"torch", "transformers", "trl", "python"} <= set(manifest["packages"])
    assert manifest["packages"]["torch"].startswith("2.13.0")
    assert "git_commit" in manifest and manifest["seeds"]["global"] == 0
    assert set(manifest["stages"]) == {"00_first", "01_second"}
    assert all(s["wall_s"] >= 0 for s in manifest["stages"].values())


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
