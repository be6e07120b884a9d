"""Stage 00 (setup), one function per step the notebook shows: the competence gate recorded before any model
(``register_gate``), the phantom world (``setup_world``, ``world_table``), the two tiny base models
(``world_corpus`` and ``instruction_examples``, then ``build_bases``, ``vision_pretrain_bases``, ``pretrain_bases``
and ``instruct_bases``: one pair per training seed, so a replicate is a whole model), what their instruction data
holds (``instruction_cards``), a zero-shot look at them (``zero_shot_demo``), and the paper profile's inventory of
data files and model ids (``inventory``)."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation import competence_gate, evaluate
from ..train import instruct, models, sft, vision_pretraining
from .. import prompts
from ..config import Config, training_seeds
from ..data import DataLayoutError
from ..data import mimic, nih
from ..data.padchest import TABLE_FILES as PADCHEST_TABLES
from ..data.phantom import CAPTIONS, generate_world, load_findings
from ..labels import CHEXPERT_LABELS
from ..jobs import run_jobs
from ..jsonl_store import write_if_changed
from ..train.model_registry import ROLES, TINY_CLASSES, base_model, frozen_vision, vision_objective
from ..paths import RunPaths, run_relative
from ..train.teacher import TemplateTeacher, TraceRequest
from ..train.trainer_log import log_rows


def register_gate(paths: RunPaths) -> pd.DataFrame:
    """Record the competence gate in the run before its models are built (``competence_gate.register``; an edited
    gate stops here); what each part asks."""
    gate = competence_gate.load()
    competence_gate.register(paths, gate)
    return pd.DataFrame([{"part": name, "asks": " ".join(part["what"].split())} for name, part in gate.parts.items()])


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


def instruction_examples(cfg: Config, paths: RunPaths) -> dict[str, pd.DataFrame]:
    """Each base's instruction-tuning data (``instruct.build_examples`` on its own pretraining pool), checked to
    hold none of the held-out prompts (``instruct.check_held_out``); stops if a base is not a tiny model."""
    m = cfg.models
    for role in ROLES:
        if getattr(m, role) not in TINY_CLASSES:
            raise ValueError(f"models.{role} = {getattr(m, role)!r} is not a tiny model ({', '.join(TINY_CLASSES)})")
    instructions = {role: instruct.build_examples(paths.world / "pretrain" / role, role, m.n_instruct, cfg.seed)
                    for role in ROLES}
    for examples in instructions.values():
        instruct.check_held_out(examples)
    return instructions


def instruction_preview(examples: pd.DataFrame, paths: RunPaths, n: int = 3) -> pd.DataFrame:
    """The first ``n`` instruction examples with their images named relative to the run folder: a page shows the
    same text wherever the run folder lies (an absolute path, cut to the column width before the page replaces the
    run folder's name, would not)."""
    shown = examples.head(n)
    return shown.assign(image=[run_relative(paths, p) for p in shown["image"]])


def _role_seed_jobs(cfg: Config, paths: RunPaths, **extra) -> list[dict]:
    """One job per (training seed, role): every seed builds its own pair of bases."""
    return [dict(cfg=cfg, paths=paths, role=role, seed=seed, **extra) for seed in training_seeds(cfg) for role in ROLES]


def build_bases(cfg: Config, paths: RunPaths, corpus: list[str]) -> pd.DataFrame:
    """Both tiny bases of every training seed built from their configs, randomly initialised under that seed, with
    a tokenizer trained on ``corpus`` (``build_base``); one job each (``jobs.run_jobs``)."""
    return pd.DataFrame(run_jobs(build_base, _role_seed_jobs(cfg, paths, corpus=corpus), cfg.workers))


def build_base(cfg: Config, paths: RunPaths, role: str, seed: int, corpus: list[str]) -> dict:
    """One tiny base, built into ``models/seed-<s>/<name>-random`` (kept if it is already there)."""
    m = cfg.models
    name = getattr(m, role)
    raw = paths.base_models(seed) / f"{name}-random"
    if not (raw / "config.json").exists():
        models.TINY_BUILDERS[TINY_CLASSES[name]](corpus, raw, hidden=m.tiny_hidden, layers=m.tiny_layers,
                                                  image_size=m.tiny_image_size, vocab=m.tiny_vocab, seed=seed)
    return {"seed": seed, "role": role, "model": name, "class": TINY_CLASSES[name],
            "path": str(raw.relative_to(paths.root))}


def vision_pretrain_bases(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Every built base's vision tower and projector pretrained on its domain's large pool under its seed
    (``vision_pretrain_base``); one job each."""
    return pd.DataFrame(run_jobs(vision_pretrain_base, _role_seed_jobs(cfg, paths), cfg.workers))


def _vision_settings(cfg: Config, seed: int) -> vision_pretraining.VisionSettings:
    m = cfg.models
    return vision_pretraining.VisionSettings(objective=vision_objective(cfg), epochs=m.vision_epochs,
                                             learning_rate=m.vision_lr, seed=seed)


def vision_pretrain_base(cfg: Config, paths: RunPaths, role: str, seed: int) -> dict:
    """One built base whose vision tower + projector is pretrained (``models.vision_objective``) on
    ``pretrain/vision/<role>`` into ``models/seed-<s>/<name>-vision`` (the built base itself when the objective is
    none or the world has no such pool): its objective, pool size and first and last epoch loss (its seconds stay
    in the folder's record: a page that shows them would differ between two identical runs)."""
    name = getattr(cfg.models, role)
    settings = _vision_settings(cfg, seed)
    raw = paths.base_models(seed) / f"{name}-random"
    row = {"seed": seed, "role": role, "model": name, "objective": settings.objective, "images": 0,
           "first_loss": np.nan, "final_loss": np.nan, "path": str(raw.relative_to(paths.root))}
    if settings.objective == "none":
        return row
    out = paths.base_models(seed) / f"{name}-vision"
    done = out / vision_pretraining.SETTINGS_FILE
    record = json.loads(done.read_text()) if done.is_file() else None
    pool = paths.world / "pretrain" / "vision" / role
    current = record is not None and record["settings"] == asdict(settings) and \
        record["images"] == cfg.world.n_vision_pretrain and \
        record.get("base_weights") == vision_pretraining.weights_digest(raw)
    if not current:
        record = vision_pretraining.pretrain(raw, pool, role, out, settings)
    return {**row, "images": record["images"], "first_loss": record["epoch_losses"][0],
            "final_loss": record["epoch_losses"][-1], "path": str(out.relative_to(paths.root))}


def pretrain_bases(cfg: Config, paths: RunPaths, vision: pd.DataFrame) -> pd.DataFrame:
    """Every vision-pretrained base (``vision_pretrain_bases``) given its short domain pretraining, captioning its
    own pool (``pretrain_base``); one job each."""
    jobs = [dict(cfg=cfg, paths=paths, role=row["role"], seed=row["seed"], start=row["path"])
            for row in vision.to_dict("records")]
    return pd.DataFrame(run_jobs(pretrain_base, jobs, cfg.workers))


def _pool(paths: RunPaths, role: str) -> tuple[Path, list[dict]]:
    pool = paths.world / "pretrain" / role   # radiographs + reports (medical), scenes + captions (general)
    return pool, [json.loads(line) for line in (pool / CAPTIONS).read_text().splitlines()]


def _pretrain_settings(cfg: Config):
    m = cfg.models
    return replace(cfg.sft, learning_rate=m.pretrain_lr, max_steps=m.pretrain_steps, eval_steps=0, warmup_ratio=0.05)


def pretrain_base(cfg: Config, paths: RunPaths, role: str, seed: int, start: str) -> dict:
    """One base (``start``, relative to the run: the built or vision-pretrained one) fully fine-tuned under its
    ``seed`` to caption its pool ("Describe this image.") into ``models/seed-<s>/<name>-pretrained``: the pool, its
    size, the final training loss and the checkpoint."""
    name = getattr(cfg.models, role)
    pool, caps = _pool(paths, role)
    data = sft.make_dataset(["Describe this image."] * len(caps), [c["text"] for c in caps],
                            [str(pool / c["image"]) for c in caps])
    pre = sft.train_sft(paths.root / start, data, None, paths.base_models(seed) / f"{name}-pretrained",
                        _pretrain_settings(cfg), full_finetune=True, seed=seed, device=cfg.device,
                        freeze_vision=frozen_vision(cfg, "bases"))
    return {"seed": seed, "role": role, "model": name, "pretrain_pool": pool.name, "pretrain_examples": len(caps),
            "pretrain_final_loss": _final_loss(pre), "path": str(pre.out_dir.relative_to(paths.root))}


def instruct_bases(cfg: Config, paths: RunPaths, instructions: dict[str, pd.DataFrame],
                   pretrained: pd.DataFrame) -> pd.DataFrame:
    """Every pretrained base (``pretrain_bases``) instruction-tuned on its role's ``instructions``
    (``instruct_base``), one job each: the table of the bases the later stages use, two per training seed."""
    jobs = [dict(cfg=cfg, paths=paths, role=row["role"], seed=row["seed"], examples=instructions[row["role"]],
                 pretrained=row) for row in pretrained.to_dict("records")]
    return pd.DataFrame(run_jobs(instruct_base, jobs, cfg.workers))


def instruct_base(cfg: Config, paths: RunPaths, role: str, seed: int, examples: pd.DataFrame,
                  pretrained: dict) -> dict:
    """One pretrained base (a row of ``pretrain_bases``) fully fine-tuned under its ``seed`` on its instruction
    ``examples`` into ``models/seed-<s>/<name>``, with a ``model_card.json`` beside it saying what it saw; its row
    of the models table."""
    m = cfg.models
    name = getattr(m, role)
    it_cfg = replace(_pretrain_settings(cfg), learning_rate=m.instruct_lr, max_steps=m.instruct_steps,
                     batch_size=m.instruct_batch_size)
    it = sft.train_sft(paths.root / pretrained["path"], sft.make_dataset(list(examples["instruction"]), list(examples["target"]), list(examples["image"])),
                       None, paths.base_models(seed) / name, it_cfg, full_finetune=True, seed=seed, device=cfg.device,
                       freeze_vision=frozen_vision(cfg, "bases"))
    model_card = {"role": role, "model": name, "class": TINY_CLASSES[name],
                  "vision_pretraining": {**asdict(_vision_settings(cfg, seed)), "frozen_after": cfg.models.freeze_vision,
                                         "pool": f"pretrain/vision/{role}", "images": cfg.world.n_vision_pretrain},
                  "pretraining": {"pool": f"pretrain/{role}", "domain": instruct.DOMAINS[role],
                                  "examples": pretrained["pretrain_examples"], "instruction": "Describe this image.",
                                  "steps": m.pretrain_steps, "learning_rate": m.pretrain_lr},
                  "instruction_tuning": {**instruct.card(examples, role), "steps": m.instruct_steps,
                                         "learning_rate": m.instruct_lr, "batch_size": m.instruct_batch_size,
                                         "seed": seed}}
    write_if_changed(it.out_dir / RunPaths.MODEL_CARD, json.dumps(model_card, indent=2, sort_keys=True))
    return {"seed": seed, "role": role, "model": name, "class": TINY_CLASSES[name],
            "parameters": models.parameter_count(it.out_dir),
            "pretrain_pool": pretrained["pretrain_pool"], "pretrain_examples": pretrained["pretrain_examples"],
            "pretrain_final_loss": pretrained["pretrain_final_loss"], "instruct_examples": len(examples),
            "instruct_final_loss": _final_loss(it), "path": str(it.out_dir.relative_to(paths.root))}


def instruction_cards(paths: RunPaths, models_table: pd.DataFrame) -> pd.DataFrame:
    """What each role's instruction data holds (task kinds, counts, formats, domain), from the ``model_card.json``
    of the first seed's base (every seed tunes on the same examples)."""
    first = models_table[models_table["seed"] == models_table["seed"].iloc[0]]
    cards = {row.role: json.loads((paths.root / row.path / RunPaths.MODEL_CARD).read_text()) for row in first.itertuples()}
    return pd.DataFrame({role: card["instruction_tuning"] for role, card in cards.items()})


def _final_loss(result: sft.SFTResult) -> float:
    train_rows = log_rows(result.log, "loss")
    return float(train_rows["loss"].iloc[-1]) if len(train_rows) else np.nan


def zero_shot_demo(cfg: Config, paths: RunPaths, n_images: int = 16) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each base of every training seed, zero-shot with every prompt variant on the first ``n_images`` frontal
    MIMIC-like images: the valid-output rate per seed and variant, and the first seed's answer to the first image
    for each (role, variant). Every seed's answers are kept beside its bases, so no seed's files depend on which
    other seeds run."""
    records = sorted((r for r in load_findings(paths.world).values() if r["site"] == "mimic" and r["view"] != "LATERAL"),
                     key=lambda r: r["path"])[:n_images]
    images = pd.DataFrame({"image_id": [r["image_id"] for r in records],
                           "image_path": [str(paths.world / r["path"]) for r in records]})
    seeds = training_seeds(cfg)
    keys = [(seed, role, variant) for seed in seeds for role in ROLES for variant in cfg.cross_model.prompt_variants]
    preds = run_jobs(_zero_shot_job, [dict(cfg=cfg, paths=paths, seed=s, role=r, variant=v, images=images)
                                      for s, r, v in keys], cfg.workers)
    rates, answers = [], []
    for (seed, role, variant), pred in zip(keys, preds):
        rates.append({"seed": seed, "model": role, "variant": variant, "images": len(pred),
                      "valid_rate": pred["valid"].mean()})
        if seed == seeds[0]:
            answers.append({"model": role, "variant": variant, "answer": pred["raw"].iloc[0],
                            "valid": pred["valid"].iloc[0], "reason": pred["reason"].iloc[0]})
    return pd.DataFrame(rates), pd.DataFrame(answers)


def _zero_shot_job(cfg: Config, paths: RunPaths, seed: int, role: str, variant: str, images: pd.DataFrame) -> pd.DataFrame:
    return evaluate.predict(base_model(cfg, paths, role, seed), images, variant,
                            paths.zero_shot_demo_file(role, variant, seed), cfg.evaluation.batch_size,
                            cfg.evaluation.max_new_tokens, cfg.device, progress=False)


DATA_LAYOUT = ("MIMIC-CXR-JPG: <data.mimic_root>/mimic-cxr-2.0.0-{chexpert,metadata,split}.csv.gz + files/pNN/pSUBJECT/"
               "sSTUDY/DICOM.jpg; CheXpert: <data.chexpert_root>/<data.chexpert_test_csv> + the test/ images it lists; "
               f"NIH ChestX-ray14: <data.nih_root>/{nih.ENTRY_FILES[0]} + {nih.SPLIT_LISTS['test']} + images*/; "
               f"PadChest (optional): <data.padchest_root>/{PADCHEST_TABLES[0]} + <ImageDir>/<ImageID>")


def inventory(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Paper profile: which data files and model ids the run will use. A missing data file is a one-line
    ``DataLayoutError`` naming every missing file and the expected layout, so the run stops here, in 00."""
    d = cfg.data
    checks = [("MIMIC-CXR-JPG labels", paths.resolve(d.mimic_root) / mimic.CHEXPERT_CSV),
              ("MIMIC-CXR-JPG metadata", paths.resolve(d.mimic_root) / mimic.METADATA_CSV),
              ("MIMIC-CXR-JPG split", paths.resolve(d.mimic_root) / mimic.SPLIT_CSV),
              ("CheXpert test labels", paths.resolve(d.chexpert_root) / d.chexpert_test_csv),
              ("NIH Data_Entry", paths.resolve(d.nih_root) / nih.ENTRY_FILES[0]),
              ("NIH test list", paths.resolve(d.nih_root) / nih.SPLIT_LISTS["test"])]
    if d.padchest_root:
        root = paths.resolve(d.padchest_root)
        checks.append(("PadChest labels", root / next((f for f in PADCHEST_TABLES if (root / f).exists()),
                                                      PADCHEST_TABLES[0])))
    rows = [{"item": k, "where": str(v), "present": v.exists()} for k, v in checks]
    missing = [f"{r['item']} ({r['where']})" for r in rows if not r["present"]]
    if missing:
        raise DataLayoutError(f"{len(missing)} data file(s) missing: {'; '.join(missing)}. Expected layout: {DATA_LAYOUT}. "
                              "Point data.mimic_root, data.chexpert_root, data.nih_root (and data.padchest_root, "
                              "optional) at your copies "
                              "(-p data.mimic_root=/data/mimic-cxr-jpg/2.0.0 ...)")
    rows += [{"item": f"{role} model", "where": getattr(cfg.models, role), "present": None} for role in ROLES]
    if not d.padchest_root:
        rows.append({"item": "PadChest", "where": "not scored (data.padchest_root is empty)", "present": None})
    return pd.DataFrame(rows)
