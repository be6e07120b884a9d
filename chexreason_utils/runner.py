"""Run the numbered notebooks in order with papermill, skipping stages whose inputs are unchanged.

A stage's fingerprint covers its notebook's bytes, the parameters injected into it (not the run and figure
folders: a moved run is the same run), the current value of each config leaf it read when it last ran
(recorded at run time in its kernel and its workers, ``config_reads``; a notebook that records nothing is
fingerprinted on the whole config; ``workers`` and ``report_to`` never count, see ``config_reads.NOT_RESULTS``), the source of the
``chexreason_utils`` package, and a digest of every earlier stage's outputs as they are on disk (file contents
by run-relative name, ``FileDigests``). A stage's outputs are its own folders, its registered figures and tables
(``figure_registry``) and the files it wrote into shared folders (predictions, figures), found by comparing
those folders before and after it ran. A stage is skipped when its fingerprint and its outputs match the last
successful run recorded in ``manifest.json``, so a changed value it reads (named in the printed reason) or a
missing or changed output reruns it; ``force`` recomputes. A failing stage stops the run, naming the notebook,
cell and error. What a stage counted, dropped or redid (``run_records.count``) is printed under the summary table,
one line per stage.
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

from . import arithmetic, config_reads, progress, run_records
from .config import Config, load_profile
from .report.figure_registry import ARTIFACTS
from .paths import NOTEBOOK_DIR, PACKAGE_DIR, REPO_ROOT, RunPaths, run_absolute, run_relative
from .stage import READS_FILE, RECORD_FILES, WORKER_READS_FILE, stage_outputs

DIGEST_CACHE = "file_digests.json"
WHERE_PARAMS = ("run_dir", "figure_dir", "overrides")   # not fingerprinted: where a run is, and (in the config
                                                        # values) what it changes
NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")
EXPERIMENT_STAGES = ("08_experiments",)   # run only when asked (RunOptions.experiments: `make experiments`)
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
    reads: list[str] = field(default_factory=lambda: [""])
    config: dict[str, str] = field(default_factory=dict)
    shared_outputs: list[str] = field(default_factory=list)
    report: dict[str, int] = field(default_factory=dict)


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
    experiments: bool = False   # also run EXPERIMENT_STAGES (the training grids), reusing 00-07 when current


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


def _stat(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


class FileDigests:
    """Content digests of output files, cached by size and mtime in ``<run>/file_digests.json`` (keyed by
    ``run_relative`` name), so only new or rewritten files are read again."""

    def __init__(self, paths: RunPaths):
        self.paths, self.file = paths, paths.root / DIGEST_CACHE
        try:
            self.cache = json.loads(self.file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.cache = {}

    def of(self, path: Path) -> str:
        stat = _stat(path)
        if stat == "missing":
            return stat
        name = run_relative(self.paths, path)
        if self.cache.get(name, [None])[0] != stat:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            self.cache[name] = [stat, digest.hexdigest()]
        return self.cache[name][1]

    def save(self) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.cache, sort_keys=True))
        tmp.replace(self.file)


def output_files(paths: RunPaths, stage: str, shared: list[str] = ()) -> list[Path]:
    """Every file a stage owns: its folders' files (not the bookkeeping files), its registered figures and
    tables, and the files it wrote into shared folders (``run_relative`` names; missing ones included, so their
    loss is seen)."""
    files = {run_absolute(paths, p) for p in shared}
    files |= {paths.figures / name for a in ARTIFACTS if a.notebook == stage for name in a.files()}
    for rel in stage_outputs(stage):
        base = paths.root / rel
        files |= {p for p in base.rglob("*") if p.is_file() and p.name not in RECORD_FILES} if base.is_dir() else {base}
    return sorted(files)


def output_digest(paths: RunPaths, stage: str, shared: list[str], digests: FileDigests) -> str:
    """A digest of a stage's outputs: the run-relative name and content digest of every file (or that it is
    missing); a file rewritten with the same bytes, or a run folder copied elsewhere, digests the same."""
    return _sha("\n".join(f"{run_relative(paths, p)}:{digests.of(p)}" for p in output_files(paths, stage, shared)))


def _snapshot(paths: RunPaths) -> dict[str, str]:
    """Size and mtime of every file in the folders several stages write into, by ``run_relative`` name."""
    return {run_relative(paths, p): _stat(p) for folder in (paths.predictions, paths.figures) if folder.is_dir()
            for p in folder.rglob("*") if p.is_file()}


def _shared_outputs(before: dict[str, str], after: dict[str, str], previous: list[str]) -> list[str]:
    """Shared files this run wrote, plus those an earlier run of the stage wrote that still exist (a rerun
    that finds them cached does not touch them, yet they are still this stage's)."""
    return sorted({p for p, st in after.items() if before.get(p) != st} | {p for p in previous if p in after})


def code_digest() -> str:
    """The library's source and the experiments' registrations: editing either reruns the stages (its own caches
    keep that cheap)."""
    package = PACKAGE_DIR
    return _sha(b"".join(p.relative_to(package).as_posix().encode() + p.read_bytes()
                         for p in sorted([*package.rglob("*.py"), *package.glob("registrations/*.yaml")])))


def fingerprint(nb: Path, params: dict, config: dict[str, str], upstream: dict[str, str], code: str = "") -> str:
    """``config``: ``config_reads.values`` of the keys the stage reads. ``WHERE_PARAMS`` are left out: the run
    and figure folders (a moved run is the same run) and ``overrides`` (what it changes is in the config values,
    and ``workers`` must not count)."""
    payload = json.dumps({"notebook": _sha(nb.read_bytes()),
                          "params": {k: v for k, v in params.items() if k not in WHERE_PARAMS},
                          "config": config, "code": code, "upstream": upstream}, sort_keys=True, default=str)
    return _sha(payload)


def recorded_reads(paths: RunPaths, stage: str) -> list[str]:
    """The config keys a stage's last run read, in its kernel and its workers ('' = everything, for a notebook
    that records nothing)."""
    folder = paths.stage(stage)
    try:
        kernel = json.loads((folder / READS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return [""]
    return config_reads.minimal([*kernel, *config_reads.read_keys(folder / WORKER_READS_FILE)])


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
    saved = os.environ.get(run_records.RECORDS_ENV)
    os.environ[run_records.RECORDS_ENV] = str(progress_log)
    run_records.write_record({"kind": "start", "task": stage})
    watcher = progress.Watcher(progress_log, stage, out=lambda line: print(line, flush=True))
    watcher.start()
    try:
        yield watcher
    finally:
        watcher.stop()
        run_records.write_record({"kind": "end", "task": stage})
        if saved is None:
            os.environ.pop(run_records.RECORDS_ENV, None)
        else:
            os.environ[run_records.RECORDS_ENV] = saved


def run(opts: RunOptions) -> list[StageResult]:
    """Run the selected stages; raises StageFailed on the first failure (after writing the manifest)."""
    cfg = load_profile(opts.profile, opts.overrides)
    paths = RunPaths.for_profile(cfg.profile, opts.run_dir, opts.figure_dir)
    print(arithmetic_line(arithmetic.enter(cfg.arithmetic)), flush=True)
    notebooks = discover(opts.notebook_dir)
    if not opts.experiments:
        asked = [nb.stem for nb in select(notebooks, opts.only, None) if nb.stem in EXPERIMENT_STAGES] if opts.only else []
        if asked:
            raise RunnerError(f"{', '.join(asked)} runs only with --experiments (make experiments)")
        notebooks = [nb for nb in notebooks if nb.stem not in EXPERIMENT_STAGES]
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
    digests = FileDigests(paths)
    results: list[StageResult] = []
    failure: StageFailed | None = None
    for nb in notebooks:
        if nb not in selected:
            continue
        upstream = {p.stem: output_digest(paths, p.stem, _shared(paths, stages.get(p.stem, {})), digests)
                    for p in notebooks if p.stem < nb.stem}
        last = previous.get(nb.stem, {})
        reads, shared = last.get("reads", [""]), _shared(paths, last)
        config = config_reads.values(cfg, reads)
        fp = fingerprint(nb, params, config, upstream, code)
        if failure is not None:
            results.append(StageResult(nb.stem, "not run", reason="an earlier stage failed", fingerprint=fp))
            continue
        unchanged = (last.get("status") in ("ran", "skipped") and last.get("fingerprint") == fp
                     and last.get("output_digest") == output_digest(paths, nb.stem, shared, digests))
        if unchanged and not opts.force:
            result = StageResult(nb.stem, "skipped", reason="notebook, parameters and inputs unchanged",
                                 fingerprint=fp, output_digest=last["output_digest"], reads=reads, config=config,
                                 shared_outputs=shared)
            print(f"[{nb.stem}] skipped: {result.reason}", flush=True)
        else:
            reason = "forced" if opts.force else _why(last, fp, config)
            print(f"[{nb.stem}] running ({reason}) ...", flush=True)
            before = _snapshot(paths)
            t0 = time.perf_counter()
            try:
                _execute(nb, paths.executed_notebooks / nb.name, params, opts, paths.stage_records(nb.stem))
                status = "ran"
            except StageFailed as exc:
                failure, status, reason = exc, "failed", str(exc)
            wall = time.perf_counter() - t0
            reads = recorded_reads(paths, nb.stem)
            config = config_reads.values(cfg, reads)
            shared = _shared_outputs(before, _snapshot(paths), shared)
            result = StageResult(nb.stem, status, wall, reason, fingerprint(nb, params, config, upstream, code),
                                 output_digest(paths, nb.stem, shared, digests) if status == "ran" else "", reads, config,
                                 shared, run_records.counts(paths.stage_records(nb.stem)))
            print(f"[{nb.stem}] {status} in {wall:.1f} s", flush=True)
        results.append(result)
        stages[nb.stem] = {"status": result.status, "wall_s": round(result.wall_s, 2), "reason": result.reason,
                           "fingerprint": result.fingerprint, "output_digest": result.output_digest,
                           "reads": result.reads, "config": result.config, "shared_outputs": result.shared_outputs,
                           "report": result.report}
        _write_manifest(paths, cfg, opts, stages)
        digests.save()
    print(summary_table(results), flush=True)
    if failure is not None:
        raise failure
    from .report.page import write_experiments, write_report   # the report stack, once the stages are done

    print(f"report: {write_report(paths, cfg.profile)[0]}", flush=True)
    if opts.experiments:
        print(f"experiments: {write_experiments(paths, cfg.profile)[0]}", flush=True)
    return results


def arithmetic_line(mode: str) -> str:
    """What a run says at its start about its float path (``arithmetic``)."""
    line = f"arithmetic: {arithmetic.describe(arithmetic.record())}"
    if arithmetic.differs_from_committed(mode):
        line += ("; numbers and bytes will differ from a portable run's and from the committed figures, which are "
                 "portable (make figures PORTABLE=1, or -p arithmetic=portable, reproduces them)")
    return line


def _shared(paths: RunPaths, entry: dict) -> list[str]:
    """A manifest entry's shared outputs as ``run_relative`` names (older manifests hold absolute paths)."""
    return [run_relative(paths, p) for p in entry.get("shared_outputs", [])]


def _why(last: dict, fp: str, config: dict[str, str], at_most: int = 6) -> str:
    if not last:
        return "never run"
    if last.get("status") not in ("ran", "skipped"):
        return f"last run {last.get('status')}"
    if last.get("fingerprint") != fp:
        changed = sorted(k for k in config if last.get("config", {}).get(k) != config[k])
        more = f" (+{len(changed) - at_most} more)" if len(changed) > at_most else ""
        return (f"config changed: {', '.join(changed[:at_most])}{more}" if changed
                else "notebook, parameters, library code or inputs changed")
    return "outputs missing or changed since last run"


def _write_manifest(paths: RunPaths, cfg: Config, opts: RunOptions, stages: dict) -> None:
    manifest = {"profile": cfg.profile, "run_dir": str(paths.root), "figure_dir": str(paths.figures),
                "overrides": opts.overrides, "parameters": cfg.to_dict(),
                "seeds": {"global": cfg.seed, "world": cfg.world.seed, "sampling": cfg.sampling.seed,
                          "grpo": cfg.grpo.seed, "bootstrap": cfg.evaluation.bootstrap_seed, "training": cfg.seeds},
                "packages": _versions(), "git_commit": _git_commit(), "arithmetic": arithmetic.record(),
                "stages": stages}
    tmp = paths.manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    tmp.replace(paths.manifest)


def summary_table(results: list[StageResult]) -> str:
    lines = [f"{'stage':<28} {'status':<8} {'wall':>8}  reason", "-" * 72]
    for r in results:
        lines.append(f"{r.name:<28} {r.status:<8} {r.wall_s:>7.1f}s  {r.reason}")
    lines.append(f"{'total':<28} {'':<8} {sum(r.wall_s for r in results):>7.1f}s")
    lines += [f"{r.name}: " + "; ".join(f"{what} {n}" for what, n in r.report.items()) for r in results if r.report]
    return "\n".join(lines)
