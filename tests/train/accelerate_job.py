"""Run by tests/train/test_accelerate_launch.py under ``accelerate launch``: SFT, GRPO and sharded evaluation of a
tiny model, exactly through the package's functions. Usage: python tests/train/accelerate_job.py WORKDIR"""
import json
import sys
from pathlib import Path

import pandas as pd
from accelerate import PartialState

from chexreason_utils.evaluation import evaluate
from chexreason_utils.train import grpo, sft
from chexreason_utils import prompts
from chexreason_utils.config import load_profile

work = Path(sys.argv[1])
cfg = load_profile("smoke", {"sft.max_steps": 2, "sft.batch_size": 2, "grpo.max_steps": 2, "grpo.save_steps": 1,
                             "grpo.prompts_per_step": 1, "grpo.max_completion_length": 12})
images = pd.read_csv(work / "images.csv")
fmt = "free_reasoning"
targets = [prompts.format_target(fmt, [t], "The image shows it.") for t in images["truth"]]
data = sft.make_dataset([prompts.prompt_for(fmt)] * len(images), targets, list(images["image_path"]))
result = sft.train_sft(work / "base", data, None, work / "sft", cfg.sft, full_finetune=True, seed=0, device="cpu")
rl = grpo.make_dataset(prompts.prompt_for(fmt), list(images["image_path"]), [[t] for t in images["truth"]])
run = grpo.train_grpo(grpo.GRPOInputs(work / "sft", rl, cfg.grpo, "hard", {}), work / "grpo", device="cpu")
pred = evaluate.predict_sharded(work / "sft", images[["image_id", "image_path"]], fmt, work / "pred.jsonl",
                                batch_size=4, max_new_tokens=12, device="cpu", progress=False)
state = PartialState()
if state.is_main_process:
    (work / "summary.json").write_text(json.dumps({
        "processes": state.num_processes, "sft_steps": int(result.log["step"].max()),
        "grpo_steps": int(run.log["step"].max()), "resumed_from": run.resumed_from,
        "checkpoints": [c.name for c in run.checkpoints], "predicted": int(pred["raw"].notna().sum())}))
