"""Run the numbered notebooks in order with papermill, skipping stages whose inputs are unchanged.

A stage's fingerprint covers its notebook's bytes, the parameters injected into it, the config sections it
reads (``stage.STAGE_SECTIONS``), the source of the ``chexreason_utils`` package it calls, and a digest of
every earlier stage's outputs as they are on disk. A stage
is skipped when its fingerprint and its own outputs match the last successful run recorded in
``manifest.json``; ``force`` recomputes. A failing stage stops the run, naming the notebook, cell and error.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import progress
from .config import Config, load_profile
from .paths import NOTEBOOK_DIR, REPO_ROOT, RunPaths
from .report import write_report
from .stage import STAGE_SECTIONS, stage_outputs

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "papermill", "numpy",
            "pandas", "scikit-learn", "matplotlib", "seaborn")


class RunnerError(RuntimeError):
    """A problem the user can fix (missing notebooks, bad stage name, undefined parameter)."""


class StageFailed(RuntimeError):
    def __init__(self, stage: str, message: str):
        super().__init__(f"stage {stage} failed: {message}")
        self.stage = stage


@dataclass
class StageResult:
    name: str
    status: str            # ran | skipped | failed | not run
    wall_s: float = 0.0
    reason: str = ""
    fingerprint: str = ""
    output_digest: str = ""


@dataclass
class RunOptions:
    profile: str = "tiny"
    run_dir: str | None = None
    figure_dir: str | None = None
    only: list[str] = field(default_factory=list)
    start: str | None = None
    force: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    notebook_dir: Path = NOTEBOOK_DIR
    kernel: str = "python3"
    log_output: bool = False


def discover(notebook_dir: Path) -> list[Path]:
    notebook_dir = Path(notebook_dir)
    if not notebook_dir.is_dir():
        raise RunnerError(f"notebook directory not found: {notebook_dir} (expected numbered notebooks like 00_setup.ipynb)")
    found = sorted(p for p in notebook_dir.iterdir() if NOTEBOOK_PATTERN.match(p.name))
    if not found:
        raise RunnerError(f"no numbered notebooks (NN_name.ipynb) in {notebook_dir}")
    return found


def select(notebooks: list[Path], only: list[str], start: str | None) -> list[Path]:
    """Pick stages by number or name prefix: ``only=['00', '01']`` or ``start='02'``."""
    def matches(nb: Path, key: str) -> bool:
        return nb.stem == key or nb.stem.split("_", 1)[0] == key.zfill(2)

    for key in [*only, *([start] if start else [])]:
        if not any(matches(nb, key) for nb in notebooks):
            raise RunnerError(f"no stage {key!r}; stages are: {', '.join(nb.stem for nb in notebooks)}")
    if only:
        return [nb for nb in notebooks if any(matches(nb, k) for k in only)]
    if start:
        first = next(i for i, nb in enumerate(notebooks) if matches(nb, start))
        return notebooks[first:]
    return notebooks


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def output_digest(root: Path, stage: str) -> str:
    """A cheap digest of a stage's outputs: relative path, size and mtime of every file."""
    entries = []
    for rel in stage_outputs(stage):
        base = root / rel
        if base.is_file():
            st = base.stat()
            entries.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
        elif base.is_dir():
            for p in sorted(base.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    entries.append(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}")
    return _sha("\n".join(entries))


def code_digest() -> str:
    """The library's source: editing chexreason_utils reruns the stages (its own caches keep that cheap)."""
    package = Path(__file__).parent
    return _sha(b"".join(p.relative_to(package).as_posix().encode() + p.read_bytes()
                         for p in sorted(package.rglob("*.py"))))


def fingerprint(nb: Path, params: dict, cfg: Config, upstream: dict[str, str], code: str = "") -> str:
    sections = STAGE_SECTIONS.get(nb.stem, tuple(cfg.to_dict()))
    relevant = {s: cfg.section(s) for s in sections}
    payload = json.dumps({"notebook": _sha(nb.read_bytes()), "params": params, "config": relevant,
                          "code": code, "upstream": upstream}, sort_keys=True, default=str)
    return _sha(payload)


def check_parameters(nb: Path, params: dict) -> None:
    import papermill

    declared = set(papermill.inspect_notebook(str(nb)))
    missing = sorted(set(params) - declared)
    if missing:
        raise RunnerError(f"{nb.name}: its parameters cell does not define {', '.join(missing)}; "
                          f"declared: {', '.join(sorted(declared)) or 'nothing (no cell tagged parameters?)'}")


def _load_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _execute(nb: Path, out: Path, params: dict, opts: RunOptions, progress_log: Path | None = None) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from .execution import ENGINE

    try:
        with watch_stage(nb.stem, progress_log) as watcher:
            papermill.execute_notebook(str(nb), str(out), parameters=params, kernel_name=opts.kernel,
                                       cwd=str(nb.parent), progress_bar=False, log_output=opts.log_output,
                                       engine_name=ENGINE, on_cell=watcher.set_cell if watcher else None)
    except PapermillExecutionError as exc:
        raise StageFailed(nb.stem, f"cell {exc.cell_index} of the executed notebook (In [{exc.exec_count}]): {exc.ename}: "
                                   f"{exc.evalue}  [full traceback in {out}]") from None


@contextmanager
def watch_stage(stage: str, progress_log: Path | None):
    """While a stage runs: its kernel (and worker processes) write progress and timing records to
    ``progress_log`` (started afresh), and a watcher thread prints them with a heartbeat naming the cell."""
    if progress_log is None:
        yield None
        return
    progress_log.parent.mkdir(parents=True, exist_ok=True)
    progress_log.write_text("")
    saved = {k: os.environ.get(k) for k in (progress.PROGRESS_ENV, progress.STAGE_ENV)}
    os.environ[progress.PROGRESS_ENV], os.environ[progress.STAGE_ENV] = str(progress_log), stage
    progress.write_record({"kind": "start", "task": stage})
    watcher = progress.Watcher(progress_log, stage, out=lambda line: print(line, flush=True))
    watcher.start()
    try:
        yield watcher
    finally:
        watcher.stop()
        progress.write_record({"kind": "end", "task": stage})
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run(opts: RunOptions) -> list[StageResult]:
    """Run the selected stages; raises StageFailed on the first failure (after writing the manifest)."""
    cfg = load_profile(opts.profile, opts.overrides)
    paths = RunPaths.for_profile(cfg.profile, opts.run_dir, opts.figure_dir)
    notebooks = discover(opts.notebook_dir)
    selected = select(notebooks, opts.only, opts.start)
    params = {"profile": opts.profile, "run_dir": str(paths.root), "figure_dir": str(paths.figures),
              "overrides": dict(opts.overrides)}
    for nb in selected:
        check_parameters(nb, params)

    paths.root.mkdir(parents=True, exist_ok=True)
    paths.executed_notebooks.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(paths.manifest)
    previous = manifest.get("stages", {})
    stages = dict(previous)
    code = code_digest()
    results: list[StageResult] = []
    failure: StageFailed | None = None
    for nb in notebooks:
        if nb not in selected:
            continue
        upstream = {p.stem: output_digest(paths.root, p.stem) for p in notebooks if p.stem < nb.stem}
        fp = fingerprint(nb, params, cfg, upstream, code)
        last = previous.get(nb.stem, {})
        if failure is not None:
            results.append(StageResult(nb.stem, "not run", reason="an earlier stage failed", fingerprint=fp))
            continue
        unchanged = (last.get("status") in ("ran", "skipped") and last.get("fingerprint") == fp
                     and last.get("output_digest") == output_digest(paths.root, nb.stem))
        if unchanged and not opts.force:
            result = StageResult(nb.stem, "skipped", reason="notebook, parameters and inputs unchanged",
                                 fingerprint=fp, output_digest=last["output_digest"])
            print(f"[{nb.stem}] skipped: {result.reason}", flush=True)
        else:
            reason = "forced" if opts.force else _why(last, fp)
            print(f"[{nb.stem}] running ({reason}) ...", flush=True)
            t0 = time.perf_counter()
            try:
                _execute(nb, paths.executed_notebooks / nb.name, params, opts, paths.root / "logs" / f"{nb.stem}.jsonl")
                status = "ran"
            except StageFailed as exc:
                failure, status, reason = exc, "failed", str(exc)
            wall = time.perf_counter() - t0
            result = StageResult(nb.stem, status, wall, reason, fp,
                                 output_digest(paths.root, nb.stem) if status == "ran" else "")
            print(f"[{nb.stem}] {status} in {wall:.1f} s", flush=True)
        results.append(result)
        stages[nb.stem] = {"status": result.status, "wall_s": round(result.wall_s, 2), "reason": result.reason,
                           "fingerprint": result.fingerprint, "output_digest": result.output_digest}
        _write_manifest(paths, cfg, opts, stages)
    print(summary_table(results), flush=True)
    if failure is not None:
        raise failure
    print(f"report: {write_report(paths, cfg.profile)[0]}", flush=True)
    return results


def _why(last: dict, fp: str) -> str:
    if not last:
        return "never run"
    if last.get("status") not in ("ran", "skipped"):
        return f"last run {last.get('status')}"
    if last.get("fingerprint") != fp:
        return "notebook, parameters, library code or inputs changed"
    return "outputs changed since last run"


def _write_manifest(paths: RunPaths, cfg: Config, opts: RunOptions, stages: dict) -> None:
    manifest = {"profile": cfg.profile, "run_dir": str(paths.root), "figure_dir": str(paths.figures),
                "overrides": opts.overrides, "parameters": cfg.to_dict(),
                "seeds": {"global": cfg.seed, "world": cfg.world.seed, "sampling": cfg.sampling.seed,
                          "grpo": cfg.grpo.seed, "bootstrap": cfg.evaluation.bootstrap_seed, "training": cfg.seeds},
                "packages": _versions(), "git_commit": _git_commit(), "stages": stages}
    tmp = paths.manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    tmp.replace(paths.manifest)


def summary_table(results: list[StageResult]) -> str:
    lines = [f"{'stage':<28} {'status':<8} {'wall':>8}  reason", "-" * 72]
    for r in results:
        lines.append(f"{r.name:<28} {r.status:<8} {r.wall_s:>7.1f}s  {r.reason}")
    lines.append(f"{'total':<28} {'':<8} {sum(r.wall_s for r in results):>7.1f}s")
    return "\n".join(lines)
