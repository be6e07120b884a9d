"""Experiment tracking through trl's ``report_to``: none (default), tensorboard, trackio or wandb, offline first.

Logs go under ``<run>/tracking/`` (no stage owns that folder, so the runner never digests it: event files carry
wall times) with trl's metric names, one tracker run per training: ``sft-<model>-<format>-seed<s>``,
``grpo-<model>-<run>-seed<s>`` and its frozen-policy control ``grpo-<model>-<run>-seed<s>-control``, so runs of a
stage, model, format or reward group by name. wandb runs offline unless ``WANDB_MODE`` says otherwise
(``wandb sync <run>/tracking/wandb/offline-run-*`` uploads one later). No trained weight or score depends on this.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TRACKERS = ("none", "tensorboard", "trackio", "wandb")
PROJECT = "chexreason"


@dataclass(frozen=True)
class Tracking:
    """Where one training reports: ``report_to`` (a ``TRACKERS`` name), the tracking folder and the run name."""

    report_to: str = "none"
    folder: Path | None = None
    name: str = ""

    def __post_init__(self):
        if self.report_to not in TRACKERS:
            raise ValueError(f"report_to {self.report_to!r}: choose one of {', '.join(TRACKERS)}")
        if self.report_to != "none" and (self.folder is None or not self.name):
            raise ValueError(f"report_to={self.report_to} needs a tracking folder and a run name")

    def trainer_args(self) -> dict:
        """The ``TrainingArguments`` fields: ``report_to``, ``run_name`` and (trackio's) ``project``."""
        if self.report_to == "none":
            return {"report_to": "none"}
        return {"report_to": self.report_to, "run_name": self.name, "project": PROJECT}

    def control(self) -> "Tracking":
        """The frozen-policy control's own tracker run, beside the policy's."""
        return Tracking(self.report_to, self.folder, f"{self.name}-control" if self.name else "")

    def finish(self) -> None:
        """End this training's tracker run (transformers leaves a wandb run open, and the next training in the same
        process would log into it)."""
        if self.report_to == "wandb":
            import wandb

            wandb.finish()

    @contextmanager
    def environment(self):
        """The environment the trackers read while a trainer is built and trains (restored afterwards)."""
        if self.report_to == "none":
            yield
            return
        folder = Path(self.folder)
        values = {"tensorboard": {"TENSORBOARD_LOGGING_DIR": str(folder / "tensorboard" / self.name)},
                  "trackio": {"TRACKIO_DIR": str(folder / "trackio")},
                  "wandb": {"WANDB_DIR": str(folder), "WANDB_PROJECT": PROJECT,
                            "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}}[self.report_to]
        for path in (values.get("TENSORBOARD_LOGGING_DIR"), values.get("TRACKIO_DIR"), values.get("WANDB_DIR")):
            if path:
                Path(path).mkdir(parents=True, exist_ok=True)
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def run_name(stage: str, model: str | Path, variant: str, seed: int) -> str:
    """``<stage>-<model>-<variant>-seed<s>``; the model by its folder or hub name (``medgemma-4b-it``)."""
    return f"{stage}-{Path(str(model)).name}-{variant}-seed{seed}"
