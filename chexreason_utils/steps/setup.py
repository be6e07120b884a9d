"""Stage 00 (setup): the phantom world, the two tiny base models with their pretraining and instruction tuning,
a zero-shot look at them, and the paper profile's inventory of data files and model ids."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation import evaluate
from ..train import instruct, models, sft
from .. import prompts
from ..config import Config
from ..data import DataLayoutError
from ..data import nih
from ..data.phantom import CAPTIONS, generate_world, load_findings
from ..labels import CHEXPERT_LABELS
from ..jobs import run_jobs
from ..jsonl_store import write_if_changed
from ..train.model_registry import ROLES, TINY_CLASSES, base_model
from ..paths import RunPaths
from ..train.teacher import TemplateTeacher, TraceRequest
from ..train.trainer_log import log_rows
from ..report import figures, plotting


@dataclass
class Setup:
    """What stage 00 made or found, as the notebook shows it; None where the profile has no such part."""

    world: pd.DataFrame               # target vs drawn prevalence; the paper profile: the data files and model ids
    world_counts: pd.Series | None    # images, studies and patients per site
    figures: dict                     # figure id -> the figure, saved with its data (``world_examples``)
    models: pd.DataFrame | None       # the two tiny bases (``prepare_tiny_models``)
    instruction_data: pd.DataFrame | None
    zero_shot_rates: pd.DataFrame | None   # valid-output rate, variant x model
    zero_shot_answers: pd.DataFrame | None


def run_setup(cfg: Config, paths: RunPaths, n_images: int = 16) -> Setup:
    """Stage 00 for any profile: the phantom world (``world.enabled``) and the tiny bases with their zero-shot
    look (``models.build_tiny``), or else the paper profile's ``inventory`` (which stops on a missing data file)."""
    if cfg.world.enabled:
        card = setup_world(cfg, paths)
        fig, data = figures.world_examples(paths.world)
        plotting.save_figure(fig, "world_examples", data, paths.figures)
        world = dict(world=world_table(card), world_counts=pd.Series(card["counts"]), figures={"world_examples": fig})
    else:
        world = dict(world=inventory(cfg, paths), world_counts=None, figures={})
    if not cfg.models.build_tiny:
        return Setup(**world, models=None, instruction_data=None, zero_shot_rates=None, zero_shot_answers=None)
    models_table = prepare_tiny_models(cfg, paths)
    rates, answers = zero_shot_demo(cfg, paths, n_images)
    return Setup(**world, models=models_table, instruction_data=instruction_cards(paths, models_table),
                 zero_shot_rates=rates.pivot(index="variant", columns="model", values="valid_rate"),
                 zero_shot_answers=answers)


def world_table(card: dict) -> pd.DataFrame:
    """The world card's target label prevalences beside the drawn ones, MIMIC-like and CheXpert-like sites."""
    return pd.DataFrame({"MIMIC target": card["prevalence_targets"]["mimic"],
                         "MIMIC drawn": card["realised_prevalence"]["mimic_studies"],
                         "CheXpert target": card["prevalence_targets"]["chexpert_test"],
                         "CheXpert drawn": card["realised_prevalence"]["chexpert_test_studies"]})


def setup_world(cfg: Config, paths: RunPaths) -> dict:
    """The phantom world (tiny / smoke profiles): images, labels and pretraining pools; its card."""
    return generate_world(paths.world, cfg.world)


def world_corpus(world_root: Path) -> list[str]:
    """Text the tiny tokenizers are trained on: prompts, labels, template traces, reports and captions."""
    texts = list(prompts.PROMPT_VARIANTS.values()) + [s["prompt"] for s in prompts.SFT_FORMATS.values()]
    texts.append(", ".join(CHEXPERT_LABELS))
    teacher = TemplateTeacher()
    for rec in list(load_findings(world_root).values())[:600]:
        labels = tuple(rec["findings"]) or ("No Finding",)
        for fmt in prompts.SFT_FORMATS:
            texts.append(prompts.format_target(fmt, list(labels), teacher.trace(
                TraceRequest(rec["image_id"], rec["path"], labels, fmt, tuple(rec["findings"].items())))))
    for pool in ("medical", "general"):
        f = world_root / "pretrain" / pool / CAPTIONS
        texts += [json.loads(line)["text"] for line in f.read_text().splitlines()]
    return texts


def prepare_tiny_models(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Build both tiny base models, give each its short domain pretraining (captioning its pool), then its
    instruction tuning on the same pool (``instruct``); a ``model_card.json`` beside each says what it saw.
    The two bases are independent jobs (``jobs.run_jobs``), one process each."""
    m = cfg.models
    for role in ROLES:
        if getattr(m, role) not in TINY_CLASSES:
            raise ValueError(f"models.{role} = {getattr(m, role)!r} is not a tiny model ({', '.join(TINY_CLASSES)})")
    instructions = {role: instruct.build_examples(paths.world / "pretrain" / role, role, m.n_instruct, cfg.seed)
                    for role in ROLES}
    for examples in instructions.values():
        instruct.check_held_out(examples)
    corpus = world_corpus(paths.world)
    jobs = [dict(cfg=cfg, paths=paths, role=role, corpus=corpus, examples=instructions[role]) for role in ROLES]
    return pd.DataFrame(run_jobs(_prepare_base, jobs, cfg.workers))


def _prepare_base(cfg: Config, paths: RunPaths, role: str, corpus: list[str], examples: pd.DataFrame) -> dict:
    """One tiny base: built (tokenizer trained on ``corpus``), pretrained on its pool, instruction-tuned."""
    m = cfg.models
    name = getattr(m, role)
    raw = paths.models / f"{name}-random"
    if not (raw / "config.json").exists():
        models.TINY_BUILDERS[TINY_CLASSES[name]](corpus, raw, hidden=m.tiny_hidden, layers=m.tiny_layers,
                                                  image_size=m.tiny_image_size, vocab=m.tiny_vocab, seed=cfg.seed)
    pool = paths.world / "pretrain" / role   # radiographs + reports (medical), scenes + captions (general)
    caps = [json.loads(line) for line in (pool / CAPTIONS).read_text().splitlines()]
    data = sft.make_dataset(["Describe this image."] * len(caps), [c["text"] for c in caps],
                            [str(pool / c["image"]) for c in caps])
    pre_cfg = replace(cfg.sft, learning_rate=m.pretrain_lr, max_steps=m.pretrain_steps, eval_steps=0,
                      warmup_ratio=0.05)
    pre = sft.train_sft(raw, data, None, paths.models / f"{name}-pretrained", pre_cfg, full_finetune=True,
                        seed=cfg.seed, device=cfg.device)
    it_cfg = replace(pre_cfg, learning_rate=m.instruct_lr, max_steps=m.instruct_steps,
                     batch_size=m.instruct_batch_size)
    it = sft.train_sft(pre.out_dir, sft.make_dataset(list(examples["instruction"]), list(examples["target"]), list(examples["image"])),
                       None, paths.models / name, it_cfg, full_finetune=True, seed=cfg.seed, device=cfg.device)
    model_card = {"role": role, "model": name, "class": TINY_CLASSES[name],
                  "pretraining": {"pool": f"pretrain/{role}", "domain": instruct.DOMAINS[role],
                                  "examples": len(caps), "instruction": "Describe this image.",
                                  "steps": m.pretrain_steps, "learning_rate": m.pretrain_lr},
                  "instruction_tuning": {**instruct.card(examples, role), "steps": m.instruct_steps,
                                         "learning_rate": m.instruct_lr, "batch_size": m.instruct_batch_size,
                                         "seed": cfg.seed}}
    write_if_changed(it.out_dir / RunPaths.MODEL_CARD, json.dumps(model_card, indent=2, sort_keys=True))
    return {"role": role, "model": name, "class": TINY_CLASSES[name], "parameters": models.parameter_count(it.out_dir),
            "pretrain_pool": pool.name, "pretrain_examples": len(caps), "pretrain_final_loss": _final_loss(pre),
            "instruct_examples": len(examples), "instruct_final_loss": _final_loss(it), "path": str(it.out_dir.relative_to(paths.root))}


def instruction_cards(paths: RunPaths, models_table: pd.DataFrame) -> pd.DataFrame:
    """What each base's instruction data holds (task kinds, counts, formats, domain), from its ``model_card.json``."""
    cards = {row.role: json.loads((paths.root / row.path / RunPaths.MODEL_CARD).read_text()) for row in models_table.itertuples()}
    return pd.DataFrame({role: card["instruction_tuning"] for role, card in cards.items()})


def _final_loss(result: sft.SFTResult) -> float:
    train_rows = log_rows(result.log, "loss")
    return float(train_rows["loss"].iloc[-1]) if len(train_rows) else np.nan


def zero_shot_demo(cfg: Config, paths: RunPaths, n_images: int = 16) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each base, zero-shot with every prompt variant on the first ``n_images`` frontal MIMIC-like images:
    the valid-output rate per variant, and the answer to the first image for each (role, variant)."""
    records = sorted((r for r in load_findings(paths.world).values() if r["site"] == "mimic" and r["view"] != "LATERAL"),
                     key=lambda r: r["path"])[:n_images]
    images = pd.DataFrame({"image_id": [r["image_id"] for r in records],
                           "image_path": [str(paths.world / r["path"]) for r in records]})
    keys = [(role, variant) for role in ROLES for variant in cfg.cross_model.prompt_variants]
    preds = run_jobs(_zero_shot_job, [dict(cfg=cfg, paths=paths, role=r, variant=v, images=images) for r, v in keys],
                     cfg.workers)
    rates, answers = [], []
    for (role, variant), pred in zip(keys, preds):
        rates.append({"model": role, "variant": variant, "images": len(pred), "valid_rate": pred["valid"].mean()})
        answers.append({"model": role, "variant": variant, "answer": pred["raw"].iloc[0],
                        "valid": pred["valid"].iloc[0], "reason": pred["reason"].iloc[0]})
    return pd.DataFrame(rates), pd.DataFrame(answers)


def _zero_shot_job(cfg: Config, paths: RunPaths, role: str, variant: str, images: pd.DataFrame) -> pd.DataFrame:
    return evaluate.predict(base_model(cfg, paths, role), images, variant, paths.zero_shot_demo_file(role, variant),
                            cfg.evaluation.batch_size, cfg.evaluation.max_new_tokens, cfg.device, progress=False)


DATA_LAYOUT = ("MIMIC-CXR-JPG: <data.mimic_root>/mimic-cxr-2.0.0-{chexpert,metadata,split}.csv.gz + files/pNN/pSUBJECT/"
               "sSTUDY/DICOM.jpg; CheXpert: <data.chexpert_root>/<data.chexpert_test_csv> + the test/ images it lists; "
               f"NIH ChestX-ray14: <data.nih_root>/{nih.ENTRY_FILES[0]} + {nih.SPLIT_LISTS['test']} + images*/")


def inventory(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Paper profile: which data files and model ids the run will use. A missing data file is a one-line
    ``DataLayoutError`` naming every missing file and the expected layout, so the run stops here, in 00."""
    d = cfg.data
    checks = [("MIMIC-CXR-JPG labels", paths.resolve(d.mimic_root) / "mimic-cxr-2.0.0-chexpert.csv.gz"),
              ("MIMIC-CXR-JPG metadata", paths.resolve(d.mimic_root) / "mimic-cxr-2.0.0-metadata.csv.gz"),
              ("MIMIC-CXR-JPG split", paths.resolve(d.mimic_root) / "mimic-cxr-2.0.0-split.csv.gz"),
              ("CheXpert test labels", paths.resolve(d.chexpert_root) / d.chexpert_test_csv),
              ("NIH Data_Entry", paths.resolve(d.nih_root) / nih.ENTRY_FILES[0]),
              ("NIH test list", paths.resolve(d.nih_root) / nih.SPLIT_LISTS["test"])]
    rows = [{"item": k, "where": str(v), "present": v.exists()} for k, v in checks]
    missing = [f"{r['item']} ({r['where']})" for r in rows if not r["present"]]
    if missing:
        raise DataLayoutError(f"{len(missing)} data file(s) missing: {'; '.join(missing)}. Expected layout: {DATA_LAYOUT}. "
                              "Point data.mimic_root, data.chexpert_root and data.nih_root at your copies "
                              "(-p data.mimic_root=/data/mimic-cxr-jpg/2.0.0 ...)")
    rows += [{"item": f"{role} model", "where": base_model(cfg, paths, role), "present": None} for role in ROLES]
    return pd.DataFrame(rows)
