"""Resumable training runs: one folder of ``checkpoint-<step>`` folders tied to its settings, and a strict restore.

One resumable-run path for SFT (``sft``) and GRPO (``grpo``): ``finished_run(out_dir, run_id)`` returns a finished
run's info and log when ``out_dir`` holds one with these settings (reused as it is); otherwise ``prepare(folder,
run_id)`` ties the checkpoint folder to the run id (``run_id.txt``): a folder left by a run with other settings is
cleared, and the last complete checkpoint of an interrupted run with these settings is returned to resume from;
``save_finished`` writes the log (restored from the checkpoint on resume, so complete) and the info last.

``StrictRestore`` makes a resume restore the *model*, not only the bookkeeping. transformers' Trainer restores the
optimiser, scheduler, RNG and step from a checkpoint, but loads its weights with ``load_state_dict(strict=False)``;
models with a checkpoint conversion mapping (Gemma3, Qwen2.5-VL in transformers 5) save the legacy key layout
(``language_model.model.*``) that matches none of the model's keys (``model.language_model.*``), so the run silently
went on from its starting weights (transformers issue 43701). The callback loads the checkpoint again through
``from_pretrained`` (which applies the key mapping) or peft's adapter loader, requires every tensor of the model to
be in it and every tensor in it to be the model's (a ``ResumeError`` naming the checkpoint otherwise), and copies
them in place before the first resumed step (the optimiser keeps its state: the parameters are the same objects).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import torch
from transformers import TrainerCallback

from ..paths import ADAPTER_CONFIG, RunPaths, checkpoint_step, is_checkpoint_name
from ..run_records import count

RUN_ID_FILE = "run_id.txt"


class ResumeError(RuntimeError):
    """A checkpoint that cannot restore the model it is meant to resume."""


def checkpoints(folder: str | Path, complete: str = "") -> list[Path]:
    """The ``checkpoint-<step>`` folders of ``folder``, by step; with ``complete``, only those holding that file
    (the one written last, so a checkpoint cut off by a kill is not resumed from)."""
    found = [p for p in Path(folder).glob("*") if is_checkpoint_name(p.name) and p.is_dir()
             and (not complete or (p / complete).is_file())]
    return sorted(found, key=checkpoint_step)


def finished_run(out_dir: str | Path, run_id: str) -> tuple[dict, pd.DataFrame] | None:
    """(info, log) of the finished run in ``out_dir`` when it has this run id; None when there is none."""
    info_path = Path(out_dir) / RunPaths.RUN_INFO
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if info.get("run_id") != run_id:
        return None
    return info, pd.read_csv(Path(out_dir) / RunPaths.LOG_HISTORY)


def save_finished(out_dir: str | Path, run_id: str, log: pd.DataFrame, **info) -> None:
    """Write a finished run's log and then its info (with the run id): the info marks the run finished."""
    log.to_csv(Path(out_dir) / RunPaths.LOG_HISTORY, index=False)
    (Path(out_dir) / RunPaths.RUN_INFO).write_text(json.dumps({"run_id": run_id, **info}, indent=2))


def prepare(folder: str | Path, run_id: str, what: str, complete: str = "trainer_state.json") -> str | None:
    """Tie ``folder`` to ``run_id`` and return its last complete checkpoint to resume from (None: start afresh).

    A folder holding checkpoints of another run id (or checkpoints without a run id) is removed first; a
    checkpoint without its ``complete`` file (cut off while being written) is never resumed from."""
    folder = Path(folder)
    started = folder / RUN_ID_FILE
    stale = started.read_text() != run_id if started.exists() else bool(checkpoints(folder))
    if stale:
        print(f"{folder} holds checkpoints of a {what} run with other settings: starting afresh (they are removed)")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    started.write_text(run_id)
    done = checkpoints(folder, complete)
    last = str(done[-1]) if done else None
    if last:
        count(f"{what} runs resumed from a checkpoint")
        print(f"resuming {what} from {last}")
    return last


def checkpoint_tensors(model, checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under ``model``'s own state-dict names; a ``ResumeError`` naming the checkpoint
    when a tensor of the model is missing from it or it holds one the model does not have."""
    checkpoint = Path(checkpoint)
    if (checkpoint / ADAPTER_CONFIG).is_file():
        from peft import get_peft_model_state_dict
        from peft.utils import load_peft_weights

        adapter = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapters[0]
        expected = get_peft_model_state_dict(model, adapter_name=adapter)
        saved = load_peft_weights(str(checkpoint), device="cpu")
        _require_same_keys(set(expected), set(saved), checkpoint)
        own = {k: v for k, v in model.state_dict().items() if ".lora_" in k and f".{adapter}." in k}
        by_saved = {_peft_saved_name(k, adapter): k for k in own}
        return {by_saved[k]: v for k, v in saved.items()}
    from transformers import AutoModelForImageTextToText

    fresh, info = AutoModelForImageTextToText.from_pretrained(str(checkpoint), dtype=next(model.parameters()).dtype,
                                                              use_safetensors=True, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise ResumeError(f"{checkpoint}: loading its weights reports {problems}")
    tensors = fresh.state_dict()
    _require_same_keys(set(model.state_dict()), set(tensors), checkpoint)
    return tensors


def _peft_saved_name(key: str, adapter: str) -> str:
    """peft's saved name of a LoRA tensor (the adapter name left out, as ``get_peft_model_state_dict`` does)."""
    return key.replace(f".{adapter}.", ".")


def _require_same_keys(model_keys: set, saved_keys: set, checkpoint: Path) -> None:
    missing, unexpected = sorted(model_keys - saved_keys), sorted(saved_keys - model_keys)
    if missing or unexpected:
        raise ResumeError(f"{checkpoint} cannot restore the model: {len(missing)} of its tensors are missing from the "
                          f"checkpoint (e.g. {missing[:3]}) and the checkpoint holds {len(unexpected)} the model does "
                          f"not have (e.g. {unexpected[:3]})")


def restore(model, checkpoint: str | Path) -> int:
    """Copy every tensor of ``checkpoint`` into ``model`` in place (strict); returns how many were restored."""
    tensors = checkpoint_tensors(model, checkpoint)
    own = model.state_dict()
    with torch.no_grad():
        for name, value in tensors.items():
            target = own[name]
            if target.shape != value.shape:
                raise ResumeError(f"{checkpoint}: tensor {name} has shape {tuple(value.shape)}, the model's "
                                  f"{tuple(target.shape)}")
            target.copy_(value.to(target.device, target.dtype))
    return len(tensors)


class StrictRestore(TrainerCallback):
    """Restores the resumed checkpoint's weights strictly at the start of training (see the module docstring)."""

    def __init__(self, checkpoint: str | None):
        self.checkpoint = checkpoint

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.checkpoint:
            n = restore(model, self.checkpoint)
            print(f"restored all {n} trained tensors of {self.checkpoint} (key layout mapped by from_pretrained)")
