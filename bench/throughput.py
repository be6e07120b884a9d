"""Trainer and generation throughput against bare PyTorch loops on identical inputs (issue 21).

    python bench/throughput.py                 # SFT, GRPO step and generation, tiny Gemma3 (tiny profile sizes)
    python bench/throughput.py --only sft --reps 5

Builds a tiny Gemma3 as stage 00 does (``models.build_tiny_gemma3``, the tiny profile's sizes; random weights:
throughput does not depend on them) and synthetic examples of one prompt and one target over distinct images, so
every batch has the same tokens and shapes and the bare loop and the trainer see identical batches. Each
comparison alternates the two ``--reps`` times in one process, on one thread, and prints the medians of CPU
seconds (on a shared machine wall time measures the neighbours):
- SFT: ``sft.train_sft`` with the tiny profile's settings, the CPU time of a 2n-step run minus that of an n-step
  run (loading, data preparation and saving cancel; n is below the checkpoint interval), against forward +
  backward + AdamW on n collated batches of the same examples;
- GRPO: trl's loss (``GRPOTrainer.compute_loss``) + backward + AdamW against a bare policy-gradient loss with the
  same KL term, on the same generated completions: those of a short run, recorded by a trainer subclass as trl hands
  them to its public ``compute_loss`` (generation itself is measured under "generation");
- generation: ``evaluate.predict`` (whole call) against a bare batched greedy ``model.generate`` of the same inputs;
- ``--only sft-variants``: the bare SFT step eager, under ``torch.compile`` and under bf16 autocast, and whether
  reruns give bit-identical losses (the condition for adopting either).
Non-padding tokens per second (SFT, GRPO: prompt + completion; generation: new tokens). Run it with nothing
else on the machine; a ratio is what to read on a busy one.
"""
import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chexreason_utils.evaluation import evaluate
from chexreason_utils.train import grpo, models, sft, sft_data
from chexreason_utils import prompts  # noqa: E402
from chexreason_utils.config import load_profile  # noqa: E402

TARGET = ("<think>Analysis: the cardiac silhouette is enlarged and the costophrenic angles are blunted on both sides, "
          "with hazy opacities in the lower zones; no pneumothorax is seen.</think>"
          "<solution>Cardiomegaly, Pleural Effusion, Edema</solution>")


def setup(root: Path, n_images: int):
    cfg = load_profile("tiny")
    m = cfg.models
    corpus = [prompts.prompt_for(f) for f in cfg.sft.formats] * 5 + [TARGET] * 30
    base = models.build_tiny_gemma3(corpus, root / "gemma3", hidden=m.tiny_hidden, layers=m.tiny_layers,
                                    vocab=m.tiny_vocab)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_images):
        paths.append(str(root / f"img{i}.png"))
        Image.fromarray((rng.random((128, 128)) * 255).astype("uint8")).save(paths[-1])
    return cfg, base, paths


def cpu_seconds(fn) -> float:
    """CPU seconds of this process spent in ``fn()`` (steadier than wall time on a shared machine)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def median_pair(reps: int, first, second) -> tuple[float, float]:
    a, b = [], []
    for _ in range(reps):
        a.append(first())
        b.append(second())
    return statistics.median(a), statistics.median(b)


def bench_sft(cfg, base, paths, root: Path, reps: int, steps: int) -> dict:
    fmt = "reasoning_a"
    bs = cfg.sft.batch_size
    data = sft.make_dataset([prompts.prompt_for(fmt)] * (bs * 2 * steps), [TARGET] * (bs * 2 * steps),
                            paths[:bs * 2 * steps])
    sft_cfg = cfg.sft
    processor = models.load_processor(base)
    prepared = []
    prepare_s = cpu_seconds(lambda: prepared.append(sft_data.prepare([data], processor, sft_cfg.max_length)))
    (rows,), collator = prepared[0]
    batches = [collator([rows[i] for i in range(s * bs, (s + 1) * bs)]) for s in range(steps)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    runs = iter(range(reps))

    def trainer() -> float:   # 2n steps minus n steps: loading, data preparation and saving cancel out
        k = next(runs)
        seconds = [cpu_seconds(lambda: sft.train_sft(base, data, None, root / f"sft{k}-{n}", replace(sft_cfg, max_steps=n),
                                                     full_finetune=True, seed=0, device="cpu")) for n in (steps, 2 * steps)]
        return seconds[1] - seconds[0]

    def bare() -> float:
        model = models.load_model(base, device="cpu").train()
        opt = torch.optim.AdamW(model.parameters(), lr=sft_cfg.learning_rate, weight_decay=sft_cfg.weight_decay)
        t0 = time.process_time()
        for batch in batches:
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time.process_time() - t0

    t_trainer, t_bare = median_pair(reps, trainer, bare)
    shape = f"{steps} x {tuple(batches[0]['input_ids'].shape)}"
    return {"what": f"SFT step ({shape})", "trainer": tokens / t_trainer, "bare": tokens / t_bare,
            "note": f"one-off data preparation {prepare_s:.2f} s for {len(data)} examples"}


def bench_sft_variants(cfg, base, paths, reps: int, steps: int) -> list[dict]:
    """The bare SFT step eager, under ``torch.compile`` and under bf16 autocast; whether two runs of each from the
    same weights give bit-identical losses."""
    bs = cfg.sft.batch_size
    data = sft.make_dataset([prompts.prompt_for("reasoning_a")] * (bs * steps), [TARGET] * (bs * steps), paths[:bs * steps])
    (rows,), collator = sft_data.prepare([data], models.load_processor(base), cfg.sft.max_length)
    batches = [collator([rows[i] for i in range(s * bs, (s + 1) * bs)]) for s in range(steps)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    variants = {"eager fp32": (False, False), "torch.compile fp32": (True, False), "bf16 autocast": (False, True)}

    def run(compiled: bool, bf16: bool) -> tuple[float, list[float]]:
        model = models.load_model(base, device="cpu").train()
        forward = torch.compile(model) if compiled else model
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft.learning_rate, weight_decay=cfg.sft.weight_decay)
        losses = []
        step = lambda b: losses.append(forward(**b).loss)  # noqa: E731
        for b in batches[:1]:   # warm-up (compilation), not timed
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                forward(**b).loss.backward()
            opt.zero_grad(set_to_none=True)
        t0 = time.process_time()
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                step(b)
            losses[-1].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time.process_time() - t0, [float(x) for x in losses]

    rows_out = []
    for name, (compiled, bf16) in variants.items():
        runs = [run(compiled, bf16) for _ in range(reps)]
        identical = all(losses == runs[0][1] for _, losses in runs)
        rows_out.append({"what": f"bare SFT step, {name}", "trainer": float("nan"),
                         "bare": tokens / statistics.median(seconds for seconds, _ in runs),
                         "note": f"losses of {reps} runs bit-identical: {identical}"})
    return rows_out


def bench_grpo(cfg, base, paths, root: Path, reps: int, steps: int) -> dict:
    g = replace(cfg.grpo, max_steps=steps, save_steps=steps)
    fmt = g.start_format
    n = g.prompts_per_step
    train = grpo.make_dataset(prompts.prompt_for(fmt), paths[:n * steps], [["Cardiomegaly"]] * (n * steps))
    inputs, recording = [], [True]

    class Recorded(grpo.timed_grpo_trainer()):
        """Keeps the generated and scored batch trl hands its public ``compute_loss`` at each training step."""

        def compute_loss(self, model, batch, return_outputs=False, num_items_in_batch=None):
            if recording[0]:
                inputs.append({k: v.detach() if torch.is_tensor(v) else v for k, v in batch.items()})
            return super().compute_loss(model, batch, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    trainer, _ = grpo.build_trainer(grpo.GRPOInputs(base, train, g, "hard", {}), root / "grpo", device="cpu",
                                    trainer_class=Recorded)
    trainer.train()   # the run's own rollouts: one batch a step, recorded as trl passes it to the loss
    recording[0] = False
    trainer.model.train()
    tokens = sum(int(i["prompt_mask"].sum() + i["completion_mask"].sum()) for i in inputs)
    model = trainer.model
    opt = torch.optim.AdamW(model.parameters(), lr=g.learning_rate)

    def timed_steps(loss_fn) -> float:
        t0 = time.process_time()
        for batch in inputs:
            loss_fn(batch).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time.process_time() - t0

    def bare_loss(batch):
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        images = {k: batch[k] for k in ("pixel_values", "token_type_ids", "image_grid_thw") if k in batch}
        if "token_type_ids" in images:
            images["token_type_ids"] = torch.cat([images["token_type_ids"], torch.zeros_like(batch["completion_ids"])], 1)
        width = batch["completion_ids"].shape[1]
        logits = model(input_ids=ids, attention_mask=mask, **images).logits[:, -width - 1:-1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, batch["completion_ids"][..., None])[..., 0]
        ratio = torch.exp(logp - logp.detach())
        kl = torch.exp(batch["ref_per_token_logps"] - logp) - (batch["ref_per_token_logps"] - logp) - 1
        per_token = -ratio * batch["advantages"][:, None] + g.beta * kl
        return (per_token * batch["completion_mask"]).sum() / (len(ids) * g.max_completion_length)

    t_trainer, t_bare = median_pair(reps, lambda: timed_steps(lambda b: trainer.compute_loss(model, b)),
                                    lambda: timed_steps(bare_loss))
    mean_len = statistics.mean(float(i["completion_mask"].sum(1).float().mean()) for i in inputs)
    return {"what": f"GRPO loss step ({steps} x {n * g.num_generations} completions)", "trainer": tokens / t_trainer,
            "bare": tokens / t_bare, "note": f"mean completion {mean_len:.0f} tokens, beta {g.beta}"}


def bench_generation(cfg, base, paths, root: Path, reps: int) -> dict:
    bs, new = cfg.evaluation.batch_size, cfg.evaluation.max_new_tokens
    images = pd.DataFrame({"image_id": [f"i{k}" for k in range(bs)], "image_path": paths[:bs]})
    fmt = cfg.grpo.start_format
    model = models.load_model(base, device="cpu").eval()
    processor = models.load_processor(base)
    text = processor.apply_chat_template([prompts.user_message(prompts.prompt_for(fmt))], add_generation_prompt=True,
                                         tokenize=False)[0]
    inputs = evaluate.generation_batch(processor, text, [[Image.open(p).convert("RGB")] for p in paths[:bs]])
    generated = []
    runs = iter(range(reps))

    def predict() -> float:
        t0 = time.process_time()
        evaluate.predict(base, images, fmt, root / f"pred{next(runs)}.jsonl", batch_size=bs, max_new_tokens=new,
                         device="cpu", progress=False)
        return time.process_time() - t0

    def bare() -> float:
        t0 = time.process_time()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=new, do_sample=False)[:, inputs["input_ids"].shape[1]:]
        generated.append(int((out != processor.tokenizer.pad_token_id).sum()))
        return time.process_time() - t0

    t_predict, t_bare = median_pair(reps, predict, bare)
    tokens = generated[0]
    return {"what": f"generation ({bs} images, <= {new} new tokens, greedy)", "trainer": tokens / t_predict,
            "bare": tokens / t_bare, "note": "evaluate.predict timed whole (model load, images, decode, parse, write)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["sft", "grpo", "generation", "sft-variants"], action="append",
                   help="default: sft, grpo, generation")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--sft-steps", type=int, default=24)
    p.add_argument("--grpo-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    only = set(args.only or ["sft", "grpo", "generation"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg, base, paths = setup(root, max(2 * 16 * args.sft_steps, 128))
        if "sft" in only:
            rows.append(bench_sft(cfg, base, paths, root, args.reps, args.sft_steps))
        if "grpo" in only:
            rows.append(bench_grpo(cfg, base, paths, root, args.reps, args.grpo_steps))
        if "generation" in only:
            rows.append(bench_generation(cfg, base, paths, root, args.reps))
        if "sft-variants" in only:
            rows.extend(bench_sft_variants(cfg, base, paths, args.reps, args.sft_steps))
    table = pd.DataFrame(rows).rename(columns={"trainer": "ours tok/s", "bare": "bare tok/s"})
    table["ratio"] = table["ours tok/s"] / table["bare tok/s"]
    print(f"\n{args.threads} thread(s), median of {args.reps} alternating repetitions")
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.2f}" if x < 10 else f"{x:,.0f}"))


if __name__ == "__main__":
    main()
