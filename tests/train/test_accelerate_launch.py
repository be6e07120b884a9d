"""SFT, GRPO and evaluation under ``accelerate launch`` with 2 CPU processes (gloo).

accelerate 1.15 starts several CPU processes only through its multi-GPU launcher (torchrun): ``--cpu`` alone
falls back to one process unless MPI is set up. Without CUDA the package asks for the CPU state, so the
processes talk over gloo. Deselect with ``-m "not multiprocess"``.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexreason_utils.evaluation import evaluate
from chexreason_utils.paths import PACKAGE_DIR
from chexreason_utils.train.models import build_tiny_gemma3

pytestmark = pytest.mark.multiprocess
JOB = Path(__file__).with_name("accelerate_job.py")
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(JOB)]


def _launch(work: Path) -> dict:
    # the children import the package under test, from wherever this file lies
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(LAUNCH + [str(work)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((work / "summary.json").read_text())


def test_two_processes_train_resume_and_predict_like_one(tmp_path):
    texts = ["<think>The image shows it.</think><solution>Edema, No Finding, Cardiomegaly</solution>"] * 30
    build_tiny_gemma3(texts, tmp_path / "base", hidden=32, layers=1, image_size=56, vocab=300)
    rng, rows = np.random.default_rng(0), []
    for i in range(8):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (56, 56), dtype=np.uint8)).save(path)
        rows.append({"image_id": path.name, "image_path": str(path), "truth": ["Edema", "No Finding"][i % 2]})
    images = pd.DataFrame(rows)
    images.to_csv(tmp_path / "images.csv", index=False)

    first = _launch(tmp_path)
    assert first["processes"] == 2 and first["sft_steps"] == 2 and first["grpo_steps"] == 2
    assert first["checkpoints"] == ["checkpoint-1", "checkpoint-2"] and first["predicted"] == 8
    merged = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert sorted(r["image_id"] for r in merged) == sorted(images["image_id"])      # each image once
    assert not evaluate.shard_files(tmp_path / "pred.jsonl")

    one = evaluate.predict(tmp_path / "sft", images, "free_reasoning", tmp_path / "one.jsonl", batch_size=4,
                           max_new_tokens=12, device="cpu", progress=False)
    assert dict(zip(one["image_id"], one["raw"])) == {r["image_id"]: r["raw"] for r in merged}

    (tmp_path / "grpo" / "run_info.json").unlink()                  # as if cut off after checkpoint 1
    shutil.rmtree(tmp_path / "grpo" / "checkpoint-2")
    second = _launch(tmp_path)
    assert second["resumed_from"].endswith("checkpoint-1") and second["grpo_steps"] == 2
    assert len((tmp_path / "pred.jsonl").read_text().splitlines()) == 8            # nothing predicted twice
