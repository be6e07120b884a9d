"""The run-directory layout: the only module that knows where artifacts live.

Paths are anchored at the repository (or an explicit run root), never at the caller's working directory,
because papermill runs notebooks in the caller's cwd while JupyterLab and nbmake use the notebook's folder.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

PACKAGE_DIR = Path(__file__).resolve().parent   # chexreason_utils/ itself
REPO_ROOT = Path(os.environ.get("CHEXREASON_ROOT", PACKAGE_DIR.parent))
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
FIGURE_ROOT = REPO_ROOT / "figures"
FIGURES_PREFIX = "<figures>/"   # a manifest name of a file in the figure folder (run_relative)
ADAPTER_CONFIG = "adapter_config.json"   # a PEFT adapter folder's config (peft names it so): an adapter, not full weights
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")   # a trainer's checkpoint folder (transformers names them so)


@dataclass(frozen=True)
class RunPaths:
    """Every artifact location of one run (``runs/<profile>/`` unless a run root is given)."""

    root: Path
    figures: Path

    # File names inside one training run's folder (the trainers get the folder, not a RunPaths).
    LOG_HISTORY: ClassVar[str] = "log_history.csv"             # the trainer's log, one row per logged step
    RUN_INFO: ClassVar[str] = "run_info.json"                  # id and settings of a finished run
    CHECKPOINT_SCORES: ClassVar[str] = "checkpoint_scores.csv"  # 03's validation scores of a GRPO run
    CONTROL: ClassVar[str] = "control"                         # a GRPO run's frozen-policy control folder
    CONTROL_LOG: ClassVar[str] = "log.csv"                     # ... its rewards per generation step
    CONTROL_COMPLETIONS: ClassVar[str] = "completions.parquet"  # ... and its completions
    MODEL_CARD: ClassVar[str] = "model_card.json"              # what a tiny base model saw (00)
    FINDINGS: ClassVar[str] = "phantom_findings.jsonl"          # in the world folder: what each phantom image shows

    @classmethod
    def for_profile(cls, profile: str, run_dir: str | Path | None = None,
                    figure_dir: str | Path | None = None) -> "RunPaths":
        root = Path(run_dir).resolve() if run_dir else REPO_ROOT / "runs" / profile
        figures = Path(figure_dir).resolve() if figure_dir else FIGURE_ROOT / profile
        return cls(root=root, figures=figures)

    def resolve(self, path: str | Path) -> Path:
        """A configured data path: absolute as given, relative ones under the run root."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.root / p

    def stage(self, name: str) -> Path:
        return self.root / name

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def sampling(self) -> Path:
        return self.root / "01_sampling"

    @property
    def sft(self) -> Path:
        return self.root / "02_sft"

    @property
    def grpo(self) -> Path:
        return self.root / "03_grpo"

    @property
    def predictions(self) -> Path:
        """Prediction cache shared by stages 03-06, keyed by model fingerprint and prompt."""
        return self.root / "predictions"

    @property
    def tracking(self) -> Path:
        """Experiment-tracker logs (``tracking``): no stage's output, so never digested by the runner."""
        return self.root / "tracking"

    @property
    def executed_notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def report(self) -> Path:
        """The run's report page (``REPORT.md``; ``REPORT.html`` beside it), in the figure directory."""
        return self.figures / "REPORT.md"

    @property
    def notebooks_html(self) -> Path:
        """The executed notebooks as HTML, beside the report."""
        return self.figures / "notebooks"

    @property
    def logs(self) -> Path:
        """Run records (``run_records``), one file per stage; never beside outputs."""
        return self.root / "logs"

    def stage_records(self, name: str) -> Path:
        """The record file of one stage run (progress, timings, counts): ``logs/<stage>.jsonl``."""
        return self.logs / f"{name}.jsonl"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def manifest_file(self, name: str) -> Path:
        """One sampled image set (sft, rl, val, chexpert_test, nih_test, ...): ``01_sampling/<name>.csv``."""
        return self.sampling / f"{name}.csv"

    @property
    def pool_prevalence_file(self) -> Path:
        return self.sampling / "pool_prevalence.csv"

    @property
    def load_report_file(self) -> Path:
        """Rows kept and dropped (and why) by the three dataset loaders."""
        return self.sampling / "load_report.csv"

    def traces_file(self, fmt: str) -> Path:
        """Cached teacher rationales of one SFT format."""
        return self.sft / "traces" / f"{fmt}.jsonl"

    def base_models(self, seed: int) -> Path:
        """The tiny base models one training seed builds (00): ``models/seed-<s>/<name>[-random|-vision|-pretrained]``."""
        return self.models / f"seed-{seed}"

    def zero_shot_demo_file(self, role: str, variant: str, seed: int) -> Path:
        """00's zero-shot answers of one seed's base model with one prompt variant, beside that seed's bases."""
        return self.base_models(seed) / "zero_shot_demo" / f"{role}__{variant}.jsonl"

    def sft_model(self, role: str, fmt: str, seed: int) -> Path:
        """One SFT run of one training seed: ``02_sft/seed-<s>/<role>/<format>``."""
        return self.sft / f"seed-{seed}" / role / fmt

    def grpo_run(self, name: str, seed: int) -> Path:
        """One GRPO run (a reward, or the 06 ablation) of one training seed: ``03_grpo/seed-<s>/<name>``."""
        return self.grpo / f"seed-{seed}" / name

    @property
    def completions_pages(self) -> Path:
        """03's completions browser pages (``browser``), beside the report."""
        return self.figures / "completions"

    def completions_page(self, name: str) -> Path:
        """The completions browser of one GRPO run over its seeds."""
        return self.completions_pages / f"{name}.html"

    def grpo_log(self, name: str, seed: int) -> Path:
        return self.grpo_run(name, seed) / self.LOG_HISTORY

    def checkpoint_scores(self, name: str, seed: int) -> Path:
        return self.grpo_run(name, seed) / self.CHECKPOINT_SCORES

    @property
    def evaluation(self) -> Path:
        return self.root / "04_evaluation"

    @property
    def scores_file(self) -> Path:
        """04's scores frame: every entry x seed x label (``scores``)."""
        return self.evaluation / "scores.csv"

    @property
    def contrasts_file(self) -> Path:
        """04's paired differences and claim effects with their CIs."""
        return self.evaluation / "contrasts.csv"

    @property
    def floor_criterion_file(self) -> Path:
        """04's floor criterion: every SFT entry of both models vs the best trivial baseline, per seed (05 shows it)."""
        return self.evaluation / "floor_criterion.csv"

    @property
    def family_members_file(self) -> Path:
        """07's family-wise view's members (claims, E0, E4), before the adjustment; 08 adds the experiments'."""
        return self.stage("07_open_questions") / "family_members.csv"

    def reference_dir(self, training_set: str, seed: int) -> Path:
        """04's supervised image reference fitted on one training set (``sft``, ``reference_pool``) for one seed."""
        return self.evaluation / "reference" / f"{training_set}-seed-{seed}"

    @property
    def competence_gate_record(self) -> Path:
        """The competence gate's text as it stood when this run's base models were first built (00)."""
        return self.root / "competence_gate.registered.yaml"

    def prediction_file(self, tag: str, manifest: str, prompt: str) -> Path:
        """Cached predictions of one model (``tag``: see ``model_tag``) on one manifest with one prompt."""
        return self.predictions / f"{tag}__{manifest}__{prompt}.jsonl"


def run_relative(paths: RunPaths, path: str | Path) -> str:
    """How the manifest names a file: relative to the run folder, ``<figures>/...`` in the figure folder, else
    absolute (so a run folder copied elsewhere, with its figures, reads as the same run)."""
    path = Path(path)
    for base, prefix in ((paths.root, ""), (paths.figures, FIGURES_PREFIX)):
        if path.is_absolute() and path.is_relative_to(base):
            return prefix + path.relative_to(base).as_posix()
    return path.as_posix()


def run_absolute(paths: RunPaths, name: str) -> Path:
    """The file a manifest name (``run_relative``) stands for."""
    if name.startswith(FIGURES_PREFIX):
        return paths.figures / name[len(FIGURES_PREFIX):]
    return paths.root / name   # an absolute name stays itself


def checkpoint_name(step: int) -> str:
    """The folder name of a trainer's checkpoint at ``step``: ``checkpoint-<step>``."""
    return f"checkpoint-{int(step)}"


def is_checkpoint_name(name: str) -> bool:
    return _CHECKPOINT_NAME.fullmatch(str(name)) is not None


def checkpoint_step(path: str | Path) -> int:
    """The step of a ``checkpoint-<step>`` folder name (or path)."""
    match = _CHECKPOINT_NAME.fullmatch(Path(path).name)
    if not match:
        raise ValueError(f"{path} is not a checkpoint-<step> folder")
    return int(match.group(1))


def model_tag(kind: str, seed: int | None = None) -> str:
    """Prediction-cache tag: a trained or seed-built model's tag carries its training seed; a fixed (hub) base
    model's has none."""
    return kind if seed is None else f"seed-{seed}-{kind}"
