"""A thin wrapper over ``trl.SFTTrainer`` with the paper's recipe (docs/paper.md, Hyperparameters: SFT).

Data is prompt/completion with one image per example, so the loss falls on the assistant tokens only
(trl's ``completion_only_loss``), tokenised and image-processed once per run (``sft_data``); on the CPU
the loss comes from the model's full logits (``sft_cpu``). Real models get LoRA on the language model's
attention and MLP projections (vision tower frozen); tiny random-init models are fully fine-tuned, because LoRA cannot sharpen a random
model's output distribution (docs/engineering.md). Every run writes a complete folder that GRPO and the
evaluation load from, its log history as CSV, and ``run_info.json``; a folder whose ``run_info.json``
matches the requested run is reused, not retrained. Checkpoints go to ``trainer/`` (tied to the run by
``resume.prepare``): an interrupted run resumes from its last one with every weight restored strictly
(``resume.StrictRestore``), its optimiser, scheduler, RNG and early-stopping state, and its log, so it ends where
an uninterrupted run ends; a folder left by a run with other settings is cleared. The best checkpoint (lowest
held-out loss) is saved through ``from_pretrained``, not by the Trainer's raw state-dict reload.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import pandas as pd
from transformers import EarlyStoppingCallback

from .. import run_records
from . import resume, sft_data
from ..config import SFTConfig
from ..cache_keys import digest, files_digest, model_fingerprint
from .models import device_and_dtype, is_adapter, load_model, load_processor, lora_config
from .vision_pretraining import vision_parameters
from ..prompts import user_message
from ..run_records import count
from .trainer_progress import ProgressCallback, task_name
from ..tracking import Tracking


@dataclass
class SFTResult:
    out_dir: Path
    log: pd.DataFrame
    reused: bool
    resumed_from: str | None = None


def make_dataset(prompts: list[str], targets: list[str], image_paths: list[str]) -> datasets.Dataset:
    """Prompt/completion rows with one lazily decoded RGB image each."""
    if not (len(prompts) == len(targets) == len(image_paths)):
        raise ValueError("prompts, targets and image_paths must have the same length")
    ds = datasets.Dataset.from_dict({
        "prompt": [user_message(p) for p in prompts],
        "completion": [[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t in targets],
        "images": [[p] for p in image_paths]})
    return ds.cast_column("images", datasets.Sequence(datasets.Image(mode="RGB")))


def content_hash(ds: datasets.Dataset | None) -> str | None:
    """A key of prompts, completions and the bytes of the images (Dataset fingerprints are random per process, and
    a path says nothing of what is in the file)."""
    if ds is None:
        return None
    paths = ds.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))["images"]
    return digest([list(ds["prompt"]), list(ds["completion"]), files_digest(i["path"] for row in paths for i in row)])


def _run_id(base: str, train: datasets.Dataset, evalset: datasets.Dataset | None, cfg: SFTConfig,
            full_finetune: bool, seed: int, image_pixels: tuple[int, int] = (0, 0), freeze_vision: bool = False) -> str:
    payload = {"base_fp": model_fingerprint(base), "cfg": asdict(cfg), "full": full_finetune, "seed": seed,
               "train": content_hash(train), "eval": content_hash(evalset)}
    if any(image_pixels):
        payload["image_pixels"] = list(image_pixels)
    if freeze_vision:
        payload["freeze_vision"] = True
    return digest(payload)


def train_sft(base: str | Path, train: datasets.Dataset, evalset: datasets.Dataset | None, out_dir: Path,
              cfg: SFTConfig, full_finetune: bool = False, seed: int = 0, device: str = "auto",
              image_pixels: tuple[int, int] = (0, 0), tracking: Tracking = Tracking(),
              freeze_vision: bool = False) -> SFTResult:
    """Fine-tune ``base`` (folder or hub id) and save the result in ``out_dir``.

    ``freeze_vision``: keep the vision tower and multimodal projector as they are (full fine-tuning of the rest).
    ``image_pixels``: (min, max) image area of a dynamic-resolution processor; saved with the result.
    ``tracking``: where trl reports its logs (not part of the run id: no result depends on it)."""
    from transformers import PrinterCallback
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from .sft_cpu import CPUSFTTrainer

    out_dir = Path(out_dir)
    run_id = _run_id(str(base), train, evalset, cfg, full_finetune, seed, image_pixels, freeze_vision)
    finished = resume.finished_run(out_dir, run_id)
    if finished is not None:
        count("SFT runs reused")
        return SFTResult(out_dir, finished[1], reused=True)
    resume_from = resume.prepare(out_dir / "trainer", run_id, "SFT")
    task = task_name("SFT", out_dir)
    dev, dtype = device_and_dtype(device)
    with run_records.timed(task, "load"):
        model = load_model(base, device=dev)
        for param in vision_parameters(model) if freeze_vision else []:
            param.requires_grad_(False)
        processor = load_processor(base, *image_pixels)
    steps_per_epoch = math.ceil(len(train) / (cfg.batch_size * cfg.grad_accum))
    eval_every = cfg.eval_steps or steps_per_epoch
    args = TRLSFTConfig(
        output_dir=str(out_dir / "trainer"), per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=max(cfg.batch_size, 8), gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, logging_steps=cfg.logging_steps, seed=seed, data_seed=seed,
        eval_strategy="steps" if evalset is not None else "no", eval_steps=eval_every,
        save_strategy="steps", save_steps=eval_every,   # kept until the run ends (no mtime-based rotation)
        metric_for_best_model="eval_loss" if evalset is not None else None, greater_is_better=False,
        restore_callback_states_from_checkpoint=True,
        bf16=dtype.is_floating_point and dev == "cuda", activation_checkpointing=cfg.gradient_checkpointing and dev == "cuda",
        max_length=cfg.max_length, completion_only_loss=True, disable_tqdm=True, **tracking.trainer_args(),
        use_cpu=dev == "cpu", dataloader_num_workers=0, **sft_data.train_args())
    callbacks = [EarlyStopping(early_stopping_patience=cfg.early_stopping_patience)] if evalset is not None else []
    callbacks += [ProgressCallback(task), resume.StrictRestore(resume_from)]
    with run_records.timed(task, "prepare data"):
        (train_rows, eval_rows), collator = sft_data.prepare([train, evalset], processor, cfg.max_length)
    with tracking.environment(), run_records.timed(task, "build"):
        trainer_class = CPUSFTTrainer if dev == "cpu" else SFTTrainer
        trainer = trainer_class(model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows,
                                data_collator=collator, processing_class=processor,
                                peft_config=None if full_finetune or is_adapter(base) else
                                lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout), callbacks=callbacks)
        trainer.remove_callback(PrinterCallback)   # progress lines come from ProgressCallback; logs go to the CSV
    with tracking.environment():
        trainer.train(resume_from_checkpoint=resume_from)
        tracking.finish()
    log = pd.DataFrame(trainer.state.log_history)
    if not trainer.accelerator.is_main_process:      # under accelerate launch: one process writes the result
        trainer.accelerator.wait_for_everyone()
        return SFTResult(out_dir, log, reused=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_records.timed(task, "save"):
        _save_best(trainer, out_dir, full_finetune or is_adapter(base), dev)
        processor.save_pretrained(str(out_dir))
    resume.save_finished(out_dir, run_id, log, base=str(base), full_finetune=full_finetune, train_examples=len(train),
                         eval_examples=len(evalset) if evalset else 0,
                         best_checkpoint=trainer.state.best_model_checkpoint, global_step=trainer.state.global_step,
                         resumed_from=resume_from)
    _remove_trainer_checkpoints(out_dir / "trainer")
    trainer.accelerator.wait_for_everyone()
    return SFTResult(out_dir, log, reused=False, resumed_from=resume_from)


class EarlyStopping(EarlyStoppingCallback):
    """transformers' early stopping without ``load_best_model_at_end``: the Trainer's best-model reload is a raw
    ``load_state_dict(strict=False)`` that misses Gemma3's and Qwen2.5-VL's key mapping, so ``_save_best`` loads the
    best checkpoint itself (the Trainer still tracks and keeps it, through ``metric_for_best_model``)."""

    def on_train_begin(self, args, state, control, **kwargs):
        if args.metric_for_best_model is None:
            raise ValueError("early stopping needs metric_for_best_model")


def _save_best(trainer, out_dir: Path, full_model: bool, device: str) -> None:
    """Save the best checkpoint (lowest held-out loss; the final weights when there is no held-out set), reloaded
    through ``from_pretrained`` (full models: the key mapping applies) or restored strictly into the adapter."""
    best = trainer.state.best_model_checkpoint
    if best and Path(best).is_dir() and not is_adapter(best) and full_model:
        load_model(best, device=device).save_pretrained(str(out_dir), safe_serialization=True)
        return
    if best and Path(best).is_dir():
        resume.restore(trainer.model, best)
    trainer.save_model(str(out_dir))


def _remove_trainer_checkpoints(folder: Path) -> None:
    """Intermediate SFT checkpoints are not needed once the best model is saved beside them."""
    import shutil

    if folder.is_dir():
        shutil.rmtree(folder)
