"""Which vision-pretraining objective (issue 36): for each objective (none = no vision pretraining, multilabel,
contrastive, both), both tiny bases are rebuilt from the run's built bases of the seed (``models/seed-<s>/<name>-random``) through stage
00's steps (vision pretraining, caption pretraining, instruction tuning), SFT'd as stage 02 does in the run's
formats, and scored on the VALIDATION set only (macro-F1, as 04 scores it), beside the supervised CNN reference
(``train.image_reference``) fitted on the same SFT images. Seconds spent per objective are printed too.

    python bench/vision_pretraining.py --run-dir /tmp/vis-smoke --images 600
    python bench/vision_pretraining.py --run-dir runs/tiny --objectives none both --epochs 4

The run needs 00_setup and 01_sampling. Nothing is written into it: each objective gets a scratch run folder under
``--out`` whose world and manifests are hard links to the run's; a vision pool of ``--images`` per domain is generated there
when the run's world has a different one.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from chexreason_utils.config import load_profile  # noqa: E402
from chexreason_utils.data.manifests import load_manifest  # noqa: E402
from chexreason_utils.data.phantom import write_vision_pretraining  # noqa: E402
from chexreason_utils.evaluation import evaluate, metrics  # noqa: E402
from chexreason_utils.paths import RunPaths  # noqa: E402
from chexreason_utils.steps import setup  # noqa: E402
from chexreason_utils.train import image_reference, vision_pretraining  # noqa: E402
from chexreason_utils.train.model_registry import ROLES  # noqa: E402
from chexreason_utils.training_runs.sft import run_sft  # noqa: E402


def scratch_run(run: RunPaths, root: Path, pool: Path, seed: int) -> RunPaths:
    """A run folder holding hard links to ``run``'s world (its vision pool: ``pool``'s) and manifests, and links to
    its built bases of ``seed`` (hard links keep every image path inside the scratch world, as the teacher needs)."""
    world = root / "world"
    if not world.exists():
        shutil.copytree(run.world, world, copy_function=os.link,
                        ignore=lambda folder, names: ["vision"] if Path(folder).name == "pretrain" else [])
        shutil.copytree(pool, world / "pretrain" / "vision", copy_function=os.link)
    if not (root / "01_sampling").exists():
        shutil.copytree(run.sampling, root / "01_sampling", copy_function=os.link)
    scratch = RunPaths(root.resolve(), root.resolve() / "figures")
    scratch.base_models(seed).mkdir(parents=True, exist_ok=True)
    for raw in run.base_models(seed).glob("*-random"):
        if not (scratch.base_models(seed) / raw.name).exists():
            (scratch.base_models(seed) / raw.name).symlink_to(raw.resolve())
    return scratch


def validation_macro(cfg, paths: RunPaths, model: Path, prompt: str, out: Path) -> tuple[float, float]:
    """Validation macro-F1 and valid-output rate of ``model`` answering ``prompt`` (as 04 predicts and scores)."""
    val = load_manifest(paths, "val")
    pred = evaluate.predict(model, val[["image_id", "image_path"]], prompt, out, cfg.evaluation.batch_size,
                            cfg.evaluation.max_new_tokens, "cpu", progress=False)
    frame = val.merge(pred, on="image_id", how="left")
    return metrics.scores(frame, cfg)["macro_f1"], float(frame["valid"].mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a run directory that has done 00_setup and 01_sampling")
    p.add_argument("--objectives", nargs="*", default=list(vision_pretraining.OBJECTIVES))
    p.add_argument("--roles", nargs="*", default=list(ROLES), help="base models (default: both)")
    p.add_argument("--formats", nargs="*", default=None, help="SFT formats (default: the run's)")
    p.add_argument("--images", type=int, default=0, help="vision pool per domain (default: the run's world's)")
    p.add_argument("--epochs", type=int, default=0, help="vision-pretraining epochs (default: the run's)")
    p.add_argument("--lr", type=float, default=0.0, help="vision-pretraining learning rate (default: the run's)")
    p.add_argument("--freeze", default=None, help="models.freeze_vision: no | bases | bases_and_sft (default: the run's)")
    p.add_argument("--seed", type=int, default=None, help="training seed of SFT (default: the run's first)")
    p.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(2)
    run = json.loads((Path(args.run_dir) / "manifest.json").read_text())
    cfg = load_profile(run["profile"], run.get("overrides") or {})
    paths = RunPaths.for_profile(cfg.profile, args.run_dir)
    m = cfg.models
    world = replace(cfg.world, n_vision_pretrain=args.images or cfg.world.n_vision_pretrain)
    cfg = replace(cfg, world=world, models=replace(m, vision_epochs=args.epochs or m.vision_epochs,
                                                   vision_lr=args.lr or m.vision_lr,
                                                   freeze_vision=args.freeze or m.freeze_vision))
    seed = cfg.seeds[0] if args.seed is None else args.seed
    formats = args.formats or cfg.sft.formats
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        pool = paths.world / "pretrain" / "vision"
        card = json.loads((paths.world / "world_card.json").read_text())
        if card["counts"].get("vision_pretrain", {}).get("medical") != world.n_vision_pretrain:
            pool = out / f"pool-{world.n_vision_pretrain}" / "pretrain" / "vision"
            if not (pool / "general" / "captions.jsonl").is_file():
                write_vision_pretraining(pool.parents[1], world)
        t0 = time.time()
        ref = image_reference.fit_cached(load_manifest(paths, "sft"), load_manifest(paths, "val"),
                                         image_reference.ReferenceSettings(seed=seed), out / f"reference-{seed}")
        val = load_manifest(paths, "val")
        rows.append({"objective": "CNN reference (SFT images)", "model": "-", "format": "-",
                     "val_macro_f1": metrics.scores(ref.predict(val), cfg)["macro_f1"], "valid": 1.0,
                     "seconds": round(time.time() - t0, 1)})
        for objective in args.objectives:
            ocfg = replace(cfg, models=replace(cfg.models, vision_objective=objective))
            folder = out / (objective if ocfg.models.freeze_vision == "no" else f"{objective}-{ocfg.models.freeze_vision}")
            opaths = scratch_run(paths, folder, pool, seed)
            t0 = time.time()
            vision = pd.DataFrame([setup.vision_pretrain_base(ocfg, opaths, role, seed) for role in args.roles])
            t_vision = time.time() - t0
            pretrained = pd.DataFrame([setup.pretrain_base(ocfg, opaths, r["role"], seed, r["path"])
                                       for r in vision.to_dict("records")])
            instructions = setup.instruction_examples(ocfg, opaths)
            for r in pretrained.to_dict("records"):
                setup.instruct_base(ocfg, opaths, r["role"], seed, instructions[r["role"]], r)
            t_base = time.time() - t0
            for role in args.roles:
                for fmt in formats:
                    t1 = time.time()
                    result = run_sft(ocfg, opaths, role, fmt, seed)
                    f1, valid = validation_macro(ocfg, opaths, result.out_dir, fmt, folder / f"val-{role}-{fmt}.jsonl")
                    rows.append({"objective": objective, "frozen": ocfg.models.freeze_vision, "model": role,
                                 "format": fmt, "val_macro_f1": f1,
                                 "valid": valid, "vision_s": round(t_vision, 1), "bases_s": round(t_base, 1),
                                 "sft_eval_s": round(time.time() - t1, 1)})
            print(pd.DataFrame(rows).tail(len(args.roles) * len(formats)).to_string(index=False), flush=True)
            print(vision[["role", "objective", "images", "first_loss", "final_loss"]].to_string(index=False),
                  flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print(f"\n{cfg.profile} run {paths.root}, seed {seed}, vision pool {world.n_vision_pretrain} per domain, "
          f"{cfg.models.vision_epochs} epochs, lr {cfg.models.vision_lr}, frozen after: {cfg.models.freeze_vision}; "
          f"validation only "
          f"({len(load_manifest(paths, 'val'))} images)")
    print(table.round(3).to_string(index=False))
    wide = table.loc[table["model"] != "-"].pivot_table(index="objective", columns=["model", "format"],
                                                        values="val_macro_f1")
    print("\nvalidation macro-F1 after SFT:\n" + wide.round(3).to_string())


if __name__ == "__main__":
    main()
