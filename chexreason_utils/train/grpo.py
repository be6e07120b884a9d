"""A thin wrapper over ``trl.GRPOTrainer`` with the paper's settings (docs/paper.md, Hyperparameters: GRPO).

4 completions per prompt, temperature 0.8, top-p 0.95, beta 0.15 to the SFT checkpoint, ``dr_grpo`` loss,
epsilon 0.15 / 0.22, token-level importance ratio; learning rate, steps, batch and completion length are
profile parameters (the paper does not state them).

The reference policy is the SFT checkpoint in both worlds:
- LoRA (real models): the SFT adapter is loaded trainable and trl keeps a frozen copy as the reference.
- Full fine-tuning (tiny models): the policy is loaded *from the saved SFT folder*, because with beta > 0
  and no PEFT trl reloads the reference from ``model.config._name_or_path``.
Checkpoints every ``save_steps`` hold the model, optimizer, RNG and the collapse-guard window
(``reward_state.json``, written last: a checkpoint without it was cut off and is not resumed from); rerunning an
interrupted run resumes from the last complete one with every weight restored strictly (``resume.StrictRestore``),
so it ends with the weights of an uninterrupted run. ``resume.prepare`` ties a folder to its settings: a folder
left by a run with other settings is cleared rather than resumed.

Frozen-policy control (``cfg.frozen_control``): the SFT policy, never updated, scores the very same prompt batches
in the same order with the same sampling settings, so that what GRPO gained is measured against what the start
policy gets on those batches (easy first batches make any raw curve misleading). It is a second trainer built with
the same seed and trained through trl's public ``train()`` with learning rate 0, so its sampler yields the policy's
batches; its reward has its own collapse-guard window. Written to ``<out_dir>/control/``, checkpointed and resumed
there as the run is.
Each step's sampling, in the run and in the control, is seeded by (seed, step): the two draw with common random
numbers (identical completions at step 1, less noise in the paired gain later), and a resumed control equals an
uninterrupted one. Every completion of both runs carries its ``image_path``, so the batches can be compared.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import datasets
import pandas as pd
import torch
from accelerate import PartialState
from transformers import PrinterCallback, TrainerCallback

from .. import run_records
from . import resume
from ..config import GRPOConfig
from ..cache_keys import digest, files_digest, model_fingerprint
from .models import device_and_dtype, is_adapter, load_model, load_processor
from ..paths import RunPaths, checkpoint_name
from ..prompts import completion_text, requires_think, user_message
from .rewards import CollapseGuard, reward_functions
from .vision_pretraining import vision_parameters
from ..tracking import Tracking
from .trainer_progress import ProgressCallback, task_name

REWARD_STATE = "reward_state.json"


@dataclass
class GRPORun:
    name: str
    out_dir: Path
    log: pd.DataFrame
    checkpoints: list[Path]
    resumed_from: str | None
    reused: bool
    control: pd.DataFrame | None = None   # frozen-policy control per step (see control_log); None when disabled


def make_dataset(instruction: str, image_paths: list[str], truths: list[list[str]],
                 logged_paths: list[str] | None = None) -> datasets.Dataset:
    """GRPO prompts: the instruction with one image, its truth labels and the image's name as logged with each
    completion (``logged_paths``, e.g. run-relative so that a copied run folder still matches; default the path)."""
    ds = datasets.Dataset.from_dict({"prompt": [user_message(instruction)] * len(image_paths),
                                     "image": list(image_paths), "truth": [list(t) for t in truths],
                                     "image_path": [str(p) for p in logged_paths or image_paths]})
    return ds.cast_column("image", datasets.Image(mode="RGB"))


def checkpoints(out_dir: Path) -> list[Path]:
    """A GRPO run's complete checkpoints, by step."""
    return resume.checkpoints(out_dir, REWARD_STATE)


class SaveRewardState(TrainerCallback):
    """Writes the processor and then the collapse-guard window (``{}`` for a reward without a guard) into every
    checkpoint folder: ``reward_state.json`` is the last file of a complete checkpoint."""

    def __init__(self, guard: CollapseGuard | None, processor):
        self.guard, self.processor = guard, processor

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / checkpoint_name(state.global_step)
        if ckpt.is_dir() and state.is_world_process_zero:   # under accelerate launch: the main process's guard
            self.processor.save_pretrained(str(ckpt))
            if self.guard is not None:
                self.guard.save(ckpt / REWARD_STATE)
            else:
                (ckpt / REWARD_STATE).write_text("{}")


def generation_seed(seed: int, step: int) -> int:
    """The torch seed set before the generation of (1-based) ``step``, in the run and in its control alike."""
    return seed * 100_003 + step


class SeedGeneration(TrainerCallback):
    """Seeds torch before every step, so a step's sampling depends on (seed, step) only: the control draws with
    the same random numbers as the policy (identical completions at step 1, where both are the SFT policy)."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_step_begin(self, args, state, control, **kwargs):
        torch.manual_seed(generation_seed(self.seed, state.global_step + 1))


@dataclass(frozen=True)
class GRPOInputs:
    """Everything one GRPO run is a function of, resolved once (``training_runs.grpo.grpo_inputs``) and handed to
    ``train_grpo``, ``is_finished`` and the control: the start model (an SFT folder, full model or LoRA adapter), the
    prompt dataset, the settings with every derived value resolved (the hard reward's length threshold), the reward
    and the pool prevalences it reads."""
    sft_dir: Path
    train: datasets.Dataset
    cfg: GRPOConfig
    reward: str
    prevalence: dict
    freeze_vision: bool = False   # keep the vision tower and projector as the start model has them

    @functools.cached_property
    def run_id(self) -> str:
        """The run's key: start model, prompts, truths and image bytes, settings, reward and its prevalences (and a
        frozen vision tower, when it is)."""
        images = [i["path"] for i in self.train.cast_column("image", datasets.Image(decode=False))["image"]]
        return digest({"sft_fp": model_fingerprint(self.sft_dir), "prompts": list(self.train["prompt"]),
                       "truth": list(self.train["truth"]), "images": files_digest(images),
                       "cfg": run_settings(self.cfg), "reward": self.reward, "prev": self.prevalence,
                       "sampling": "seeded per step", **({"freeze_vision": True} if self.freeze_vision else {})})


def is_finished(inputs: GRPOInputs, out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a finished run of exactly these inputs (``train_grpo`` would reuse it)."""
    return resume.finished_run(Path(out_dir), inputs.run_id) is not None


def train_grpo(inputs: GRPOInputs, out_dir: Path, device: str = "auto", tracking: Tracking = Tracking()) -> GRPORun:
    """GRPO from ``inputs`` (its start model, prompts, settings and ``hard`` or ``nuanced`` reward) into
    ``out_dir``; ``tracking``: where trl reports (the policy's run and, as ``tracking.control()``, the control's;
    not part of the run id)."""
    out_dir = Path(out_dir)
    finished = resume.finished_run(out_dir, inputs.run_id)
    if finished is not None:
        info, log = finished
        control = _control(inputs, out_dir, device, tracking)
        return GRPORun(inputs.reward, out_dir, log, checkpoints(out_dir), info.get("resumed_from"), reused=True,
                       control=control)

    state = PartialState(cpu=device_and_dtype(device)[0] == "cpu")   # the trainer's state (gloo on CPU)
    if state.is_main_process:
        resume.prepare(out_dir, inputs.run_id, "GRPO", complete=REWARD_STATE)
    state.wait_for_everyone()
    existing = checkpoints(out_dir)
    resume_from = str(existing[-1]) if existing else None
    trainer, guard = build_trainer(inputs, out_dir, device, resume_from, tracking)
    if resume_from and guard is not None:
        guard.load(Path(resume_from) / REWARD_STATE)
    with tracking.environment():
        trainer.train(resume_from_checkpoint=resume_from)
        tracking.finish()
    log = pd.DataFrame(trainer.state.log_history)   # restored from the checkpoint on resume, so complete
    if state.is_main_process:
        sft_dir = inputs.sft_dir
        resume.save_finished(out_dir, inputs.run_id, log, reward=inputs.reward, sft_dir=str(sft_dir),
                             reference="frozen SFT adapter" if is_adapter(sft_dir) else str(sft_dir),
                             resumed_from=resume_from, global_step=trainer.state.global_step)
    state.wait_for_everyone()
    del trainer
    control = _control(inputs, out_dir, device, tracking)
    return GRPORun(inputs.reward, out_dir, log, checkpoints(out_dir), resume_from, reused=False, control=control)


def _control(inputs: GRPOInputs, out_dir: Path, device: str, tracking: Tracking) -> pd.DataFrame | None:
    """The frozen-policy control, in a one-process run only: under ``accelerate launch`` a second trainer would
    wait on collectives the other processes never reach. The control is resumable, so the notebook's
    one-process call of the same (reused) run computes it afterwards."""
    if PartialState().num_processes > 1:
        print("frozen-policy control skipped under several processes; a one-process call of this run computes it")
        return None
    return run_control(inputs, out_dir, device, tracking.control())


def trl_config(cfg: GRPOConfig, out_dir: Path, dev: str, tracking: Tracking = Tracking()):
    """The ``trl.GRPOConfig`` of a run: the profile's GRPO settings on device ``dev``, reporting to ``tracking``."""
    from trl import GRPOConfig as TRLGRPOConfig

    return TRLGRPOConfig(
        output_dir=str(out_dir), learning_rate=cfg.learning_rate, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations, gradient_accumulation_steps=1,
        num_generations=cfg.num_generations, temperature=cfg.temperature, top_p=cfg.top_p, beta=cfg.beta,
        loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high,
        num_iterations=cfg.num_iterations, steps_per_generation=cfg.steps_per_generation,
        importance_sampling_level=cfg.importance_sampling_level, max_completion_length=cfg.max_completion_length,
        save_strategy="steps", save_steps=cfg.save_steps, logging_steps=1, log_completions=True,
        num_completions_to_print=0, seed=cfg.seed, data_seed=cfg.seed, disable_tqdm=True, **tracking.trainer_args(),
        log_unique_prompts=tracking.report_to == "wandb",   # one row a step: wandb 0.31 cannot type a table of VLM prompts
        bf16=dev == "cuda", use_cpu=dev == "cpu", dataloader_num_workers=0, warmup_steps=0.0, lr_scheduler_type=cfg.lr_scheduler,
        activation_checkpointing=dev == "cuda",   # trl's default (on) recomputes activations: memory we lack only on GPU
        **vllm_args(cfg))


TRL_ARGUMENTS = ("beta", "epsilon", "epsilon_high", "loss_type", "scale_rewards", "importance_sampling_level",
                 "num_generations", "temperature", "top_p", "num_iterations", "steps_per_generation", "learning_rate",
                 "max_completion_length", "max_steps")   # trl.GRPOConfig arguments set from the same-named option


def argument_table(cfg: GRPOConfig, paper: GRPOConfig, dev: str = "cpu") -> pd.DataFrame:
    """The ``TRL_ARGUMENTS`` of the ``trl.GRPOConfig`` that ``trl_config`` builds from ``cfg`` and from the paper
    profile's ``paper``: the paper's value ("open" where the option's paper tag is not ``stated``), this profile's,
    and the tag."""
    tags = {f.name: f.metadata.get("paper") for f in fields(GRPOConfig)}
    ours, theirs = trl_config(cfg, Path("unused"), dev), trl_config(paper, Path("unused"), dev)
    return pd.DataFrame([{"trl argument": name,
                          "paper": getattr(theirs, name) if tags[name] == "stated" else "open",
                          "this profile": getattr(ours, name),
                          "paper says": "stated" if tags[name] == "stated" else "open"}
                         for name in TRL_ARGUMENTS]).astype({"paper": str, "this profile": str})


def build_trainer(inputs: GRPOInputs, out_dir: Path, device: str = "auto", resume_from: str | None = None,
                  tracking: Tracking = Tracking(), trainer_class: type | None = None):
    """The configured ``GRPOTrainer`` of ``inputs`` writing to ``out_dir`` (policy and reference = the SFT
    checkpoint) and its collapse guard; ``resume_from``: the checkpoint whose weights are restored strictly when
    training starts; ``tracking``: where trl reports; ``trainer_class``: a subclass of ``timed_grpo_trainer()``
    (bench/throughput.py records the loss inputs through one)."""
    cfg = inputs.cfg
    funcs, guard = reward_functions(inputs.reward, cfg, inputs.prevalence, requires_think(cfg.start_format))

    task = task_name("GRPO", out_dir)
    dev, _ = device_and_dtype(device)
    with run_records.timed(task, "load"):
        policy = load_model(inputs.sft_dir, device=dev, trainable_adapter=True)
        processor = load_processor(inputs.sft_dir)
    for param in vision_parameters(policy) if inputs.freeze_vision else []:
        param.requires_grad_(False)   # the Trainer's optimiser takes only parameters that require grad
    args = trl_config(cfg, out_dir, dev, tracking)
    timer = ProgressCallback(task)
    funcs = [timer.timed_reward(funcs[0]), *funcs[1:]]   # the first reward call ends a rollout's generation
    with tracking.environment(), run_records.timed(task, "build"):   # includes loading the reference model
        trainer = (trainer_class or timed_grpo_trainer())(
            timer, model=policy, reward_funcs=funcs, args=args, train_dataset=inputs.train, processing_class=processor,
            callbacks=[SaveRewardState(guard, processor), timer, SeedGeneration(cfg.seed),
                       resume.StrictRestore(resume_from)])
    trainer.remove_callback(PrinterCallback)   # progress lines come from ProgressCallback; logs go to the CSV
    return trainer, guard


@functools.cache
def timed_grpo_trainer() -> type:
    """``trl.GRPOTrainer`` telling a ``ProgressCallback`` where each training step's rollout starts and ends,
    through the public ``training_step`` and ``compute_loss`` only (a trl rename of its private generation methods
    cannot silently stop the timing). Built on first use: trl is imported lazily."""
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        def __init__(self, timer: ProgressCallback, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.rollout_timer = timer

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.rollout_timer.rollout_begin()
            return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.rollout_timer.rollout_end()
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return TimedGRPOTrainer


# trl versions whose vLLM colocate path hands vLLM processor-expanded image tokens (trl issues 6294, 6401; the fix,
# trl PR 6718, is not released in 1.16)
VLLM_COLOCATE_BROKEN_UP_TO = "1.16"


def vllm_args(cfg: GRPOConfig, trl_version: str | None = None) -> dict:
    """The ``trl.GRPOConfig`` vLLM arguments; colocate mode refused where trl expands VLM image tokens twice."""
    if not cfg.use_vllm:
        return {"use_vllm": False}
    from packaging.version import Version

    import trl

    version = Version(trl_version or trl.__version__)
    if cfg.vllm_mode == "colocate" and version.release[:2] <= Version(VLLM_COLOCATE_BROKEN_UP_TO).release[:2]:
        raise ValueError(f"grpo.vllm_mode=colocate with trl {version}: these VLM prompts would reach vLLM with their "
                         "image tokens already expanded and be expanded again (trl issues 6294 and 6401: garbage "
                         "rollouts or an M-RoPE shape crash). Use grpo.vllm_mode=server with a vLLM server (docs/paper_profile.md, "
                         "vLLM rollouts), or grpo.use_vllm=false")
    server = {"vllm_server_base_url": cfg.vllm_server_base_url} if cfg.vllm_mode == "server" else {}
    return {"use_vllm": True, "vllm_mode": cfg.vllm_mode, **server}


def completions_table(out_dir: Path) -> pd.DataFrame:
    """All completions trl logged for a run (``completions/*.parquet``), one row per completion."""
    files = sorted(Path(out_dir).glob("completions/*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def control_log(out_dir: Path) -> pd.DataFrame | None:
    """The frozen-policy control of a run folder, one row per generation step (None if it has none)."""
    path = Path(out_dir) / RunPaths.CONTROL / RunPaths.CONTROL_LOG
    return pd.read_csv(path) if path.exists() else None


def run_control(inputs: GRPOInputs, out_dir: Path, device: str = "auto",
                tracking: Tracking = Tracking()) -> pd.DataFrame | None:
    """The frozen SFT policy's rewards on the run's batches, per generation step (``cfg.frozen_control``).

    Columns: step, reward, reward_std, one ``rewards/<component>/mean`` per component, image_paths (the step's
    prompts, ``|``-joined, in batch order). Completions go to ``control/completions.parquet``. It is a plain
    ``trainer.train()`` of the run's trainer with ``learning_rate = 0`` (the weights never move: AdamW's step is
    scaled by the learning rate) and ``beta = 0`` (no reference model to load: neither generation nor reward
    depends on beta); its rewards are read from trl's ``log_history``, its completions from trl's
    ``log_completions`` files. Checkpoints every ``save_steps`` as the run does, so an interrupted control resumes
    from its last complete one; trl reports its metrics to ``tracking``'s run.
    """
    cfg = inputs.cfg
    if not cfg.frozen_control:
        return None
    folder = Path(out_dir) / RunPaths.CONTROL
    log_path, comp_path = folder / RunPaths.CONTROL_LOG, folder / RunPaths.CONTROL_COMPLETIONS
    every = cfg.num_iterations * cfg.steps_per_generation
    last_step = (cfg.max_steps - 1) // every * every + 1
    if log_path.exists():
        rows = pd.read_csv(log_path)
        if len(rows) and int(rows["step"].iloc[-1]) == last_step:
            return rows
    existing = checkpoints(folder)
    resume_from = str(existing[-1]) if existing else None
    frozen = replace(inputs, cfg=replace(cfg, beta=0.0, learning_rate=0.0))
    trainer, guard = build_trainer(frozen, folder, device, resume_from, tracking)
    if resume_from and guard is not None:
        guard.load(Path(resume_from) / REWARD_STATE)
    with tracking.environment():
        trainer.train(resume_from_checkpoint=resume_from)
        tracking.finish()
    log = pd.DataFrame(trainer.state.log_history).dropna(subset=["reward"])   # the generation steps
    log["step"] = log["step"].astype(int)
    names = [c[len("rewards/"):-len("/mean")] for c in log.columns if c.startswith("rewards/") and c.endswith("/mean")]
    comps = pd.concat([_step_completions(folder, step, names) for step in log["step"]], ignore_index=True)
    rows = log[["step", "reward", "reward_std", *(f"rewards/{n}/mean" for n in names)]].reset_index(drop=True)
    rows["image_paths"] = comps.groupby("step", sort=True)["image_path"].agg("|".join).to_numpy()
    comps.to_parquet(comp_path, index=False)
    rows.to_csv(log_path, index=False)
    return pd.read_csv(log_path)


def _step_completions(folder: Path, step: int, names: list[str]) -> pd.DataFrame:
    """One generation step's completions from trl's ``completions/completions_<step>.parquet``: step, image_path,
    completion text and one column per reward component."""
    path = folder / "completions" / f"completions_{step:05d}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: trl logged no completions for control step {step}; rerun the control")
    table = pd.read_parquet(path)
    return pd.DataFrame({"step": step, "image_path": table["image_path"],
                         "completion": [completion_text(c) for c in table["completion"]],
                         **{n: table[n] for n in names}})


def policy_batches(out_dir: Path) -> pd.DataFrame:
    """The policy's prompts per logged step (step, image_paths ``|``-joined in batch order), from its completions."""
    table = completions_table(out_dir)
    if not len(table) or "image_path" not in table:
        raise FileNotFoundError(f"{out_dir}/completions/*.parquet holds no image_path column: rerun the GRPO run")
    return table.groupby("step", sort=True)["image_path"].agg("|".join).reset_index(name="image_paths")


def run_settings(cfg: GRPOConfig) -> dict:
    """The settings in a run's id: every option, ``lr_scheduler`` only when it is not trl's default (linear), so
    the runs made before the option existed keep their ids."""
    settings = asdict(cfg)
    if settings["lr_scheduler"] == "linear":
        del settings["lr_scheduler"]
    return settings
