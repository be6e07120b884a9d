"""Stage steps the notebooks call: each reads earlier stages' artifacts from the run directory and writes
its own. Notebooks narrate and show; the work is here so it is tested and never copied between notebooks.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import claims, evaluate, grpo, instruct, metrics, models, prompts, reward_analysis, sft
from .diagnostics import log_rows, run_diagnostics
from .config import Config, check_seeds
from .data import DataLayoutError, load_chexpert, load_mimic, load_nih
from .data.phantom import generate_world, load_findings
from .labels import (CHEXPERT_LABELS, NIH_LABEL_SETS, format_label_list, names_to_vector, split_label_list,
                     vector_to_names)
from .jobs import run_jobs
from .paths import RunPaths, model_tag
from .sampling import label_table, select_nih_test, split_train_pool
from .scoring_plan import checkpoints_to_score, scoring_plan as plan_scoring
from .stage import count
from .teacher import TemplateTeacher, TraceRequest, generate_traces, make_teacher

ROLES = ("medical", "general")
TINY_CLASSES = {"tiny-gemma3": "gemma3", "tiny-qwen2_5_vl": "qwen2_5_vl"}
MANIFESTS = ("sft", "rl", "val", "chexpert_test", "nih_test")
TEST_SETS = (("CheXpert", "chexpert_test"), ("NIH", "nih_test"))   # dataset name -> manifest


def base_model(cfg: Config, paths: RunPaths, role: str) -> str:
    """Model registry: the profile's name for a role -> a folder (tiny) or a hub id / folder (paper)."""
    name = getattr(cfg.models, role)
    return str(paths.models / name) if name in TINY_CLASSES else name


def image_pixels(cfg: Config) -> tuple[int, int]:
    """(min, max) image area for dynamic-resolution processors (Qwen2.5-VL); (0, 0): as the processor was saved."""
    return cfg.models.image_min_pixels, cfg.models.image_max_pixels


# ---- 00 setup ------------------------------------------------------------------------------------------

def setup_world(cfg: Config, paths: RunPaths) -> dict:
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
        f = world_root / "pretrain" / pool / "captions.jsonl"
        texts += [json.loads(line)["text"] for line in f.read_text().splitlines()]
    return texts


def prepare_tiny_models(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Build both tiny base models, give each its short domain pretraining (captioning its pool), then its
    instruction tuning on the same pool (``instruct``); a ``model_card.json`` beside each says what it saw."""
    m = cfg.models
    instructions = {role: instruct.build_examples(paths.world / "pretrain" / role, role, m.n_instruct, cfg.seed)
                    for role in ROLES}
    for examples in instructions.values():
        instruct.check_held_out(examples)
    corpus = world_corpus(paths.world)
    rows = []
    for role in ROLES:
        name = getattr(m, role)
        if name not in TINY_CLASSES:
            raise ValueError(f"models.{role} = {name!r} is not a tiny model ({', '.join(TINY_CLASSES)})")
        raw = paths.models / f"{name}-random"
        if not (raw / "config.json").exists():
            models.TINY_BUILDERS[TINY_CLASSES[name]](corpus, raw, hidden=m.tiny_hidden, layers=m.tiny_layers,
                                                      image_size=m.tiny_image_size, vocab=m.tiny_vocab, seed=cfg.seed)
        pool = paths.world / "pretrain" / role   # radiographs + reports (medical), scenes + captions (general)
        caps = [json.loads(line) for line in (pool / "captions.jsonl").read_text().splitlines()]
        data = sft.make_dataset(["Describe this image."] * len(caps), [c["text"] for c in caps],
                                [str(pool / c["image"]) for c in caps])
        pre_cfg = replace(cfg.sft, learning_rate=m.pretrain_lr, max_steps=m.pretrain_steps, eval_steps=0,
                          warmup_ratio=0.05)
        pre = sft.train_sft(raw, data, None, paths.models / f"{name}-pretrained", pre_cfg, full_finetune=True,
                            seed=cfg.seed, device=cfg.device)
        ex = instructions[role]
        it_cfg = replace(pre_cfg, learning_rate=m.instruct_lr, max_steps=m.instruct_steps,
                         batch_size=m.instruct_batch_size)
        it = sft.train_sft(pre.out_dir, sft.make_dataset(list(ex["instruction"]), list(ex["target"]), list(ex["image"])),
                           None, paths.models / name, it_cfg, full_finetune=True, seed=cfg.seed, device=cfg.device)
        model_card = {"role": role, "model": name, "class": TINY_CLASSES[name],
                      "pretraining": {"pool": f"pretrain/{role}", "domain": instruct.DOMAINS[role],
                                      "examples": len(caps), "instruction": "Describe this image.",
                                      "steps": m.pretrain_steps, "learning_rate": m.pretrain_lr},
                      "instruction_tuning": {**instruct.card(ex, role), "steps": m.instruct_steps,
                                             "learning_rate": m.instruct_lr, "batch_size": m.instruct_batch_size,
                                             "seed": cfg.seed}}
        (it.out_dir / "model_card.json").write_text(json.dumps(model_card, indent=2, sort_keys=True))
        rows.append({"role": role, "model": name, "class": TINY_CLASSES[name],
                     "parameters": models.parameter_count(it.out_dir),
                     "pretrain_pool": pool.name, "pretrain_examples": len(caps),
                     "pretrain_final_loss": _final_loss(pre), "instruct_examples": len(ex),
                     "instruct_final_loss": _final_loss(it), "path": str(it.out_dir)})
    return pd.DataFrame(rows)


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
    rates, answers = [], []
    for role in ROLES:
        for variant in cfg.cross_model.prompt_variants:
            pred = evaluate.predict(base_model(cfg, paths, role), images, variant,
                                    paths.models / "zero_shot_demo" / f"{role}__{variant}.jsonl",
                                    cfg.evaluation.batch_size, cfg.evaluation.max_new_tokens, cfg.device, progress=False)
            rates.append({"model": role, "variant": variant, "images": len(pred), "valid_rate": pred["valid"].mean()})
            answers.append({"model": role, "variant": variant, "answer": pred["raw"].iloc[0],
                            "valid": pred["valid"].iloc[0], "reason": pred["reason"].iloc[0]})
    return pd.DataFrame(rates), pd.DataFrame(answers)


DATA_LAYOUT = ("MIMIC-CXR-JPG: <data.mimic_root>/mimic-cxr-2.0.0-{chexpert,metadata,split}.csv.gz + files/pNN/pSUBJECT/"
               "sSTUDY/DICOM.jpg; CheXpert: <data.chexpert_root>/<data.chexpert_test_csv> + the test/ images it lists; "
               "NIH ChestX-ray14: <data.nih_root>/Data_Entry_2017_v2020.csv + test_list.txt + images*/")


def inventory(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Paper profile: which data files and model ids the run will use. A missing data file is a one-line
    ``DataLayoutError`` naming every missing file and the expected layout, so the run stops here, in 00."""
    d = cfg.data
    checks = [("MIMIC-CXR-JPG labels", paths.resolve(d.mimic_root) / "mimic-cxr-2.0.0-chexpert.csv.gz"),
              ("MIMIC-CXR-JPG metadata", paths.resolve(d.mimic_root) / "mimic-cxr-2.0.0-metadata.csv.gz"),
              ("MIMIC-CXR-JPG split", paths.resolve(d.mimic_root) / "mimic-cxr-2.0.0-split.csv.gz"),
              ("CheXpert test labels", paths.resolve(d.chexpert_root) / d.chexpert_test_csv),
              ("NIH Data_Entry", paths.resolve(d.nih_root) / "Data_Entry_2017_v2020.csv"),
              ("NIH test list", paths.resolve(d.nih_root) / "test_list.txt")]
    rows = [{"item": k, "where": str(v), "present": v.exists()} for k, v in checks]
    missing = [f"{r['item']} ({r['where']})" for r in rows if not r["present"]]
    if missing:
        raise DataLayoutError(f"{len(missing)} data file(s) missing: {'; '.join(missing)}. Expected layout: {DATA_LAYOUT}. "
                              "Point data.mimic_root, data.chexpert_root and data.nih_root at your copies "
                              "(-p data.mimic_root=/data/mimic-cxr-jpg/2.0.0 ...)")
    rows += [{"item": f"{role} model", "where": base_model(cfg, paths, role), "present": None} for role in ROLES]
    return pd.DataFrame(rows)


# ---- 01 sampling -----------------------------------------------------------------------------------------

def _manifest_frame(ds, subset: str | None = None) -> pd.DataFrame:
    cols = ["image_id", "image_path", "dataset", "patient_id", "study_id", "view", "sex", "age", "split"]
    frame = ds.select_columns(cols).to_pandas()
    frame["labels"] = [format_label_list(vector_to_names(v)).replace(", ", "|") for v in ds["labels"]]
    if subset:
        frame["subset"] = subset
    return frame


def build_manifests(cfg: Config, paths: RunPaths) -> dict:
    """Load the three datasets, sample SFT / RL / validation, select the test sets, write the manifests."""
    d, s = cfg.data, cfg.sampling
    pool = load_mimic(paths.resolve(d.mimic_root), d.uncertainty_policy, splits=s.pool_splits,
                      check_images=d.check_images)
    chex = load_chexpert(paths.resolve(d.chexpert_root), "test", d.uncertainty_policy, d.chexpert_test_csv,
                         check_images=d.check_images)
    nih = load_nih(paths.resolve(d.nih_root), splits=s.nih_splits, check_images=d.check_images)
    pool_frame, pool_labels = _manifest_frame(pool.dataset), pool.labels()
    train, selections = split_train_pool(pool_frame, pool_labels, s.n_sft, s.n_rl, s.n_val, s.min_fraction,
                                         s.max_fraction, s.overrep_penalty, s.seed, s.patient_disjoint)
    nih_frame, selections["nih_test"] = select_nih_test(
        _manifest_frame(nih.dataset), nih.labels(), s.nih_test_size, NIH_LABEL_SETS[cfg.evaluation.nih_label_set],
        s.nih_selection, s.seed, s.min_fraction, s.max_fraction, s.nih_without_scored_positive)
    frames = {name: train.loc[train["subset"] == name].reset_index(drop=True) for name in ("sft", "rl", "val")}
    frames["chexpert_test"] = _manifest_frame(chex.dataset, "test")
    frames["nih_test"] = nih_frame.reset_index(drop=True)
    paths.sampling.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_csv(paths.sampling / f"{name}.csv", index=False)
    prevalence = label_table(pool_labels, "pool")
    prevalence.to_csv(paths.sampling / "pool_prevalence.csv", index=False)
    drops = pd.concat([r.report() for r in (pool, chex, nih)], ignore_index=True)
    drops.to_csv(paths.sampling / "load_report.csv", index=False)
    for row in drops.loc[drops["reason"] != "kept"].itertuples():
        count(f"{row.source} dropped ({row.reason}{': ' + row.files if row.files else ''})", row.rows)
    return {"frames": frames, "selections": selections, "pool_labels": pool_labels, "loads": (pool, chex, nih),
            "drops": drops}


def load_manifest(paths: RunPaths, name: str) -> pd.DataFrame:
    path = paths.sampling / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} not found: run 01_sampling first")
    frame = pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "study_id": str})
    frame["truth"] = [split_label_list(str(v).replace("|", ",")) if isinstance(v, str) else [] for v in frame["labels"]]
    return frame.drop(columns="labels")   # predictions carry their own "labels"


def label_matrix(frame: pd.DataFrame, labels=CHEXPERT_LABELS) -> np.ndarray:
    return np.array([names_to_vector(t, labels) for t in frame["truth"]], dtype=np.int8).reshape(len(frame), len(labels))


def pool_prevalence(paths: RunPaths) -> dict[str, float]:
    table = pd.read_csv(paths.sampling / "pool_prevalence.csv")
    return dict(zip(table["label"], table["fraction"]))


# ---- 02 SFT ----------------------------------------------------------------------------------------------

def traces_for(cfg: Config, paths: RunPaths, manifest: pd.DataFrame, fmt: str) -> list[str]:
    """Teacher rationales for every image of a manifest in one format (cached, resumable)."""
    findings = load_findings(paths.world) if cfg.world.enabled else {}
    world = paths.world.resolve()
    requests = []
    for _, row in manifest.iterrows():
        rel = str(Path(row["image_path"]).resolve().relative_to(world)) if cfg.world.enabled else ""
        drawn = findings.get(rel, {}).get("findings", {})
        requests.append(TraceRequest(row["image_id"], row["image_path"], tuple(row["truth"]), fmt, tuple(drawn.items())))
    teacher = make_teacher(cfg.sft.teacher, **({} if cfg.sft.teacher == "template" else {
        "base_url": cfg.sft.teacher_base_url, "model": cfg.sft.teacher_model, "api_key_env": cfg.sft.teacher_api_key_env}))
    done = generate_traces(teacher, requests, paths.sft / "traces" / f"{fmt}.jsonl", cfg.sft.teacher_concurrency)
    return [done[r.key()] for r in requests]


def sft_datasets(cfg: Config, paths: RunPaths, fmt: str):
    """Train / held-out (val_fraction, for early stopping) datasets of one SFT format."""
    manifest = load_manifest(paths, "sft")
    rationales = traces_for(cfg, paths, manifest, fmt) if prompts.requires_think(fmt) else [""] * len(manifest)
    targets = [prompts.format_target(fmt, t, r) for t, r in zip(manifest["truth"], rationales)]
    data = sft.make_dataset([prompts.prompt_for(fmt)] * len(manifest), targets, list(manifest["image_path"]))
    n_eval = max(1, int(round(len(data) * cfg.sft.val_fraction)))
    split = data.train_test_split(test_size=n_eval, seed=cfg.seed)
    return split["train"], split["test"]


def training_seeds(cfg: Config) -> list[int]:
    """The profile's training seeds (checked: non-empty, no repeats)."""
    return check_seeds(cfg.seeds, where="profile")


def _sft_job(cfg: Config, paths: RunPaths, role: str, fmt: str, seed: int) -> sft.SFTResult:
    train, held_out = sft_datasets(cfg, paths, fmt)
    return sft.train_sft(base_model(cfg, paths, role), train, held_out, paths.sft_model(role, fmt, seed), cfg.sft,
                         full_finetune=not cfg.sft.use_lora, seed=seed, device=cfg.device,
                         image_pixels=image_pixels(cfg))


def train_formats(cfg: Config, paths: RunPaths, roles: list[str]) -> dict[str, dict[str, dict[int, sft.SFTResult]]]:
    """SFT of each base model in every configured format and training seed, ``{role: {format: {seed: result}}}``;
    one process per run (``jobs.run_jobs``), a run already trained with the same settings is reused."""
    for fmt in cfg.sft.formats:   # teacher traces first, here: one cache file per format, one writer
        sft_datasets(cfg, paths, fmt)
    keys = [(r, f, s) for r in roles for f in cfg.sft.formats for s in training_seeds(cfg)]
    done = run_jobs(_sft_job, [dict(cfg=cfg, paths=paths, role=r, fmt=f, seed=s) for r, f, s in keys], cfg.workers)
    results: dict = {}
    for (r, f, s), res in zip(keys, done):
        results.setdefault(r, {}).setdefault(f, {})[s] = res
    return results


def sft_curves(results: dict[str, dict[int, sft.SFTResult]]) -> pd.DataFrame:
    """Training rows (step, loss, mean token accuracy, entropy) of every format and seed, long form."""
    frames = []
    for fmt, by_seed in results.items():
        for seed, res in by_seed.items():
            rows = log_rows(res.log, "loss")
            keep = [c for c in ("step", "loss", "mean_token_accuracy", "entropy") if c in rows]
            frames.append(rows[keep].assign(format=fmt, seed=seed))
    return pd.concat(frames, ignore_index=True)


def _validity_job(cfg: Config, paths: RunPaths, seed: int) -> dict:
    fmt = cfg.grpo.start_format
    return {"seed": seed, **evaluate.sample_validity(
        paths.sft_model("medical", fmt, seed), load_manifest(paths, "val"), fmt, n=cfg.evaluation.sample_validity_n,
        temperature=cfg.grpo.temperature, top_p=cfg.grpo.top_p, max_new_tokens=cfg.evaluation.max_new_tokens,
        device=cfg.device, seed=seed)}


def sample_validity(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Per training seed: share of sampled completions (GRPO's sampling settings) of the medical SFT model in
    GRPO's start format that keep the output contract."""
    jobs = [dict(cfg=cfg, paths=paths, seed=s) for s in training_seeds(cfg)]
    return pd.DataFrame(run_jobs(_validity_job, jobs, cfg.workers))


# ---- 03 GRPO ---------------------------------------------------------------------------------------------

def run_grpo(cfg: Config, paths: RunPaths, reward: str, seed: int, out_dir: Path | None = None,
             grpo_cfg=None) -> grpo.GRPORun:
    """One GRPO run of one training seed from that seed's Free-Reasoning SFT (``grpo_cfg`` with ``seed=seed``)."""
    manifest = load_manifest(paths, "rl")
    fmt = cfg.grpo.start_format
    data = grpo.make_dataset(prompts.prompt_for(fmt), list(manifest["image_path"]), list(manifest["truth"]))
    return grpo.train_grpo(paths.sft_model("medical", fmt, seed), data, out_dir or paths.grpo_run(reward, seed),
                           resolve_length_threshold(cfg, paths, replace(grpo_cfg or cfg.grpo, seed=seed)), reward,
                           pool_prevalence(paths), cfg.device, fmt)


def ablation_name(cfg: Config) -> str:
    return f"ablation-{cfg.diagnostics.ablation_reward}"


def grpo_plan(cfg: Config) -> dict[str, tuple[str, object]]:
    """Every GRPO run of a seed: run name -> (reward, GRPO config): each reward, and the 06 ablation (a recipe
    of the kind the paper reports as unstable) when ``diagnostics.run_ablation``."""
    plan = {reward: (reward, cfg.grpo) for reward in cfg.grpo.rewards}
    D = cfg.diagnostics
    if D.run_ablation:
        plan[ablation_name(cfg)] = (D.ablation_reward, replace(
            cfg.grpo, beta=D.ablation_beta, epsilon=D.ablation_epsilon, epsilon_high=D.ablation_epsilon_high,
            loss_type=D.ablation_loss_type, num_iterations=D.ablation_num_iterations))
    return plan


def _grpo_job(cfg: Config, paths: RunPaths, name: str, seed: int) -> grpo.GRPORun:
    reward, grpo_cfg = grpo_plan(cfg)[name]
    return run_grpo(cfg, paths, reward, seed, out_dir=paths.grpo_run(name, seed), grpo_cfg=grpo_cfg)


def grpo_runs(cfg: Config, paths: RunPaths) -> dict[str, dict[int, grpo.GRPORun]]:
    """Every run of ``grpo_plan`` for every training seed, ``{name: {seed: GRPORun}}``, one process per run."""
    keys = [(name, s) for name in grpo_plan(cfg) for s in training_seeds(cfg)]
    done = run_jobs(_grpo_job, [dict(cfg=cfg, paths=paths, name=n, seed=s) for n, s in keys], cfg.workers)
    runs: dict = {}
    for (name, s), run in zip(keys, done):
        runs.setdefault(name, {})[s] = run
    return runs


def _predict_job(cfg: Config, paths: RunPaths, tag: str, model_dir: str, manifest_name: str, prompt: str) -> None:
    predictions(cfg, paths, model_dir, manifest_name, prompt, tag)


def _cached(paths: RunPaths, tag: str, manifest_name: str, prompt: str) -> bool:
    """A prediction file with a row per manifest image (whether the rows are this model's is checked again
    when they are read, so a stale file is only redone in this process rather than in a job)."""
    f = paths.prediction_file(tag, manifest_name, prompt)
    return f.exists() and sum(1 for _ in f.open()) >= len(load_manifest(paths, manifest_name))


def predict_many(cfg: Config, paths: RunPaths, requests: list[tuple[str, str | Path, str, str]]) -> list[pd.DataFrame]:
    """Predictions for (tag, model, manifest, prompt) requests, merged with the truth; each distinct request is
    one process (``jobs.run_jobs``) writing its own cache file, a cached one costs a read."""
    unique = [r for r in dict.fromkeys((t, str(m), man, p) for t, m, man, p in requests)
              if not _cached(paths, r[0], r[2], r[3])]
    run_jobs(_predict_job, [dict(cfg=cfg, paths=paths, tag=t, model_dir=m, manifest_name=man, prompt=p)
                            for t, m, man, p in unique], cfg.workers)
    return [predictions(cfg, paths, m, man, p, t) for t, m, man, p in requests]


def predictions(cfg: Config, paths: RunPaths, model_dir: str | Path, manifest_name: str, prompt: str,
                tag: str) -> pd.DataFrame:
    """Cached predictions of one model on one manifest with one prompt, merged with the truth."""
    manifest = load_manifest(paths, manifest_name)
    pred = evaluate.predict_sharded(model_dir, manifest[["image_id", "image_path"]], prompt,
                                    paths.prediction_file(tag, manifest_name, prompt),
                                    batch_size=cfg.evaluation.batch_size, max_new_tokens=cfg.evaluation.max_new_tokens,
                                    device=cfg.device, image_pixels=image_pixels(cfg))
    return manifest.merge(pred, on="image_id", how="left")


def scores(frame: pd.DataFrame, cfg: Config, labels=CHEXPERT_LABELS) -> dict:
    """Micro / macro P, R, F1 and fail rate of a predictions frame (with ``truth``)."""
    return metrics.summary(*matrices(frame, cfg, labels), labels, valid_mask(frame))


def valid_mask(frame: pd.DataFrame) -> pd.Series:
    """Which predictions satisfied the output contract (a missing prediction counts as invalid)."""
    return frame["valid"].fillna(False).astype(bool)


def sft_start(cfg: Config, paths: RunPaths, seed: int) -> tuple[str, Path]:
    """(cache tag, folder) of the medical SFT model GRPO starts from, for one seed."""
    fmt = cfg.grpo.start_format
    return model_tag(f"sft-medical-{fmt}", seed), paths.sft_model("medical", fmt, seed)


def grpo_models(cfg: Config, paths: RunPaths, reward: str, seed: int,
                evaluation_set: str | None = None) -> list[tuple[int, str, Path]]:
    """(step, cache tag, folder) of the SFT start (step 0) and of the checkpoints of one GRPO run: all of them, or
    those the profile's scoring plan (``scoring_plan``) scores on ``evaluation_set`` (val, chexpert_test, nih_test;
    the test sets' best-F1 checkpoint is read from the run's validation scores)."""
    tag, folder = sft_start(cfg, paths, seed)
    out = [(0, tag, folder)]
    found = grpo.checkpoints(paths.grpo_run(reward, seed))
    if evaluation_set is not None:
        best = None
        if evaluation_set != "val":
            table = read_checkpoint_scores(paths, reward, seed)
            best = int(table.loc[table["is_best_f1"], "step"].iloc[0]) if table["is_best_f1"].any() else None
        plan = plan_scoring(cfg.evaluation, [int(c.name.split("-")[1]) for c in found], best)
        found = checkpoints_to_score(found, plan, evaluation_set)
    for c in found:
        out.append((int(c.name.split("-")[1]), model_tag(f"grpo-{reward}-{c.name}", seed), c))
    return out


def score_checkpoints(cfg: Config, paths: RunPaths, reward: str, seed: int) -> pd.DataFrame:
    """Validation scores of the SFT start and of every checkpoint of one GRPO run (``reward`` is the run name)
    and seed, best-F1 and final marked; written to the run's ``checkpoint_scores.csv``."""
    rows = [{"step": step, "checkpoint": "sft" if step == 0 else f"checkpoint-{step}", **scores(frame, cfg)}
            for step, frame in checkpoint_predictions(cfg, paths, reward, seed).items()]
    table = pd.DataFrame(rows).assign(reward=reward, seed=seed)
    grpo_rows = table.loc[table["step"] > 0]
    table["is_best_f1"] = table.index == grpo_rows["macro_f1"].idxmax() if len(grpo_rows) else False
    table["is_final"] = table["step"] == table["step"].max()
    table.to_csv(paths.grpo_run(reward, seed) / "checkpoint_scores.csv", index=False)
    return table


def checkpoint_scores(cfg: Config, paths: RunPaths, names: list[str] | None = None) -> pd.DataFrame:
    """``score_checkpoints`` for every reward run (or ``names``) and training seed, one long table; the
    predictions of all of them run first as independent processes."""
    names = list(cfg.grpo.rewards) if names is None else names
    fmt = cfg.grpo.start_format
    predict_many(cfg, paths, [(tag, model, "val", fmt) for name in names for s in training_seeds(cfg)
                              for _, tag, model in grpo_models(cfg, paths, name, s, "val")])
    return pd.concat([score_checkpoints(cfg, paths, name, s) for name in names for s in training_seeds(cfg)],
                     ignore_index=True)


def read_checkpoint_scores(paths: RunPaths, reward: str, seed: int) -> pd.DataFrame:
    """The ``checkpoint_scores.csv`` 03 wrote for one GRPO run and seed (read, never rewritten, by later stages)."""
    path = paths.grpo_run(reward, seed) / "checkpoint_scores.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run 03_grpo first (it scores every checkpoint)")
    return pd.read_csv(path)


def grpo_checkpoint(paths: RunPaths, reward: str, which: str, seed: int) -> Path:
    """The best-F1 or final checkpoint of one GRPO run and seed, from its checkpoint_scores.csv."""
    table = read_checkpoint_scores(paths, reward, seed)
    row = table.loc[table["is_best_f1" if which == "best_f1" else "is_final"]].iloc[0]
    return paths.grpo_run(reward, seed) / row["checkpoint"]


def prevalence_tables(paths: RunPaths) -> pd.DataFrame:
    """Label prevalence of the pool and of each training subset (long form, for the 01 figure)."""
    pool = pd.read_csv(paths.sampling / "pool_prevalence.csv")
    subsets = [label_table(label_matrix(load_manifest(paths, n)), n) for n in ("sft", "rl", "val")]
    return pd.concat([pool, *subsets], ignore_index=True)


def example_targets(cfg: Config, paths: RunPaths, index: int = 0) -> pd.DataFrame:
    """The SFT target of one image in every format (what each format teaches)."""
    manifest = load_manifest(paths, "sft").iloc[[index]]
    rows = []
    for fmt in cfg.sft.formats:
        rationale = traces_for(cfg, paths, manifest, fmt)[0] if prompts.requires_think(fmt) else ""
        rows.append({"format": fmt, "target": prompts.format_target(fmt, manifest["truth"].iloc[0], rationale)})
    return pd.DataFrame(rows)


def sft_final_values(results: dict[str, dict[str, dict[int, sft.SFTResult]]]) -> pd.DataFrame:
    """Per role, format and seed: last logged training loss / token accuracy / entropy, best held-out loss."""
    rows = []
    for role, by_fmt in results.items():
        for fmt, by_seed in by_fmt.items():
            for seed, res in by_seed.items():
                train = log_rows(res.log, "loss")
                ev = res.log["eval_loss"].dropna() if "eval_loss" in res.log else pd.Series(dtype=float)
                last = train.iloc[-1] if len(train) else {}
                rows.append({"model": role, "format": fmt, "seed": seed, "steps": int(last.get("step", 0)),
                             "train_loss": last.get("loss", np.nan),
                             "token_accuracy": last.get("mean_token_accuracy", np.nan),
                             "entropy": last.get("entropy", np.nan),
                             "best_eval_loss": ev.min() if len(ev) else np.nan})
    return pd.DataFrame(rows)


def eval_labels(cfg: Config, dataset: str) -> tuple[str, ...]:
    return CHEXPERT_LABELS if dataset == "CheXpert" else NIH_LABEL_SETS[cfg.evaluation.nih_label_set]


def matrices(frame: pd.DataFrame, cfg: Config, labels) -> tuple[np.ndarray, np.ndarray]:
    return label_matrix(frame, labels), metrics.prediction_matrix(frame, labels, cfg.evaluation.invalid_policy)


def zero_shot_prompt(cfg: Config) -> str:
    return cfg.evaluation.prompt_variant or cfg.grpo.start_format


def test_models(cfg: Config, paths: RunPaths, seed: int) -> dict[str, tuple[str, Path | str, str]]:
    """The paper's test-table columns we can reproduce -> (cache tag, model, prompt), for one training seed
    (the base models are fixed: the same entry for every seed)."""
    fmt, zs = cfg.grpo.start_format, zero_shot_prompt(cfg)
    E = cfg.evaluation
    ckpt = grpo_checkpoint(paths, E.test_grpo_reward, E.test_grpo_checkpoint, seed)
    return {"MedGemma base": (model_tag("base-medical"), base_model(cfg, paths, "medical"), zs),
            "Qwen2.5-VL": (model_tag("base-general"), base_model(cfg, paths, "general"), zs),
            "MedGemma SFT": (*sft_start(cfg, paths, seed), fmt),
            "ChexReason": (model_tag(f"grpo-{E.test_grpo_reward}-{ckpt.name}", seed), ckpt, fmt)}


def test_predictions(cfg: Config, paths: RunPaths) -> dict[str, dict[str, dict[int, pd.DataFrame]]]:
    """``{dataset: {column: {seed: predictions}}}`` on both test sets (a base model's frame is the same for
    every seed)."""
    keys = [(ds, man, col, s, *spec) for ds, man in TEST_SETS for s in training_seeds(cfg)
            for col, spec in test_models(cfg, paths, s).items()]
    frames = predict_many(cfg, paths, [(tag, model, man, prompt) for _, man, _, _, tag, model, prompt in keys])
    out: dict = {}
    for (ds, _, col, s, *_), frame in zip(keys, frames):
        out.setdefault(ds, {}).setdefault(col, {})[s] = frame
    return out


def test_matrices(cfg: Config, preds: dict) -> dict[str, dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]]:
    """(y_true, y_pred) per dataset, column and seed, on each dataset's evaluation labels."""
    return {ds: {col: {s: matrices(f, cfg, eval_labels(cfg, ds)) for s, f in by_seed.items()}
                 for col, by_seed in by_col.items()} for ds, by_col in preds.items()}


def checkpoint_test_curve(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """CheXpert and NIH macro-F1 of the SFT start and the GRPO checkpoints the scoring plan scores on each test set,
    for every reward run and seed."""
    fmt = cfg.grpo.start_format
    keys = [(reward, s, step, tag, model, ds, man) for reward in cfg.grpo.rewards for s in training_seeds(cfg)
            for ds, man in TEST_SETS for step, tag, model in grpo_models(cfg, paths, reward, s, man)]
    frames = predict_many(cfg, paths, [(tag, model, man, fmt) for *_, tag, model, _, man in keys])
    return pd.DataFrame([{"reward": reward, "seed": s, "step": step, "dataset": ds,
                          **scores(frame, cfg, eval_labels(cfg, ds))}
                         for (reward, s, step, _, _, ds, _), frame in zip(keys, frames)])


def validation_models(cfg: Config, paths: RunPaths, role: str, names: list[str], kind: str) -> list[tuple]:
    """(name, seed, tag, model, prompt) of a model per prompt variant (kind='zero_shot': the fixed base model,
    seed None) or per SFT format and training seed (kind='sft')."""
    if kind == "zero_shot":
        return [(n, None, model_tag(f"base-{role}"), base_model(cfg, paths, role), n) for n in names]
    return [(n, s, model_tag(f"sft-{role}-{n}", s), paths.sft_model(role, n, s), n)
            for n in names for s in training_seeds(cfg)]


def validation_matrices(cfg: Config, paths: RunPaths, role: str, names: list[str], kind: str) -> dict:
    """``{name: {seed: (y_true, y_pred, valid)}}`` on the validation set (see ``validation_models``)."""
    specs = validation_models(cfg, paths, role, names, kind)
    frames = predict_many(cfg, paths, [(tag, model, "val", prompt) for _, _, tag, model, prompt in specs])
    out: dict = {}
    for (name, seed, *_), frame in zip(specs, frames):
        out.setdefault(name, {})[seed] = (*matrices(frame, cfg, CHEXPERT_LABELS), valid_mask(frame))
    return out


def validation_table(cfg: Config, paths: RunPaths, role: str, names: list[str], kind: str) -> pd.DataFrame:
    """Validation scores of a model per prompt variant (kind='zero_shot') or per SFT format and seed
    (kind='sft'), one row per name and seed (seed empty for the fixed base model)."""
    rows = []
    for name, by_seed in validation_matrices(cfg, paths, role, names, kind).items():
        for seed, (y_true, y_pred, valid) in by_seed.items():
            rows.append({"model": role, "variant" if kind == "zero_shot" else "format": name, "seed": seed,
                         **metrics.summary(y_true, y_pred, CHEXPERT_LABELS, valid)})
    return pd.DataFrame(rows)


def format_f1(cfg: Config, paths: RunPaths, roles: list[str]) -> pd.DataFrame:
    """Validation macro-F1 per model, SFT format and seed, and per model and format its mean over seeds
    (``seed`` = "mean") with a two-level (seeds, then images) bootstrap 95% CI."""
    E, rows = cfg.evaluation, []
    for role in roles:
        for fmt, by_seed in validation_matrices(cfg, paths, role, cfg.sft.formats, "sft").items():
            y_true = next(iter(by_seed.values()))[0]
            ci = metrics.bootstrap_macro_f1(y_true, [p for _, p, _ in by_seed.values()], E.n_bootstrap,
                                            E.bootstrap_seed)
            rows.append({"model": role, "format": fmt, "seed": "mean", "macro_f1": ci["effect"], "lo": ci["lo"],
                         "hi": ci["hi"]})
            rows += [{"model": role, "format": fmt, "seed": s, "macro_f1": v}
                     for s, v in zip(by_seed, ci["per_seed"])]
    return pd.DataFrame(rows)


# ---- claims (end of 04) ----------------------------------------------------------------------------------

def run_collapse_share(cfg: Config, paths: RunPaths, name: str, seed: int) -> float:
    """Share of a GRPO run's steps inside a collapse episode (06's detection rule and profile settings)."""
    folder = paths.grpo_run(name, seed)
    log = folder / "log_history.csv"
    if not log.exists():
        raise FileNotFoundError(f"GRPO run log {log} not found: run 03_grpo first")
    D = cfg.diagnostics
    per_step, episodes = run_diagnostics(pd.read_csv(log), grpo.completions_table(folder), cfg.grpo.num_generations,
                                         D.window, D.dominance_threshold, D.episode_min_steps)
    return claims.collapse_share(per_step, episodes)


FIXED_MODELS = ("MedGemma base", "Qwen2.5-VL")   # test-table columns that do not depend on the training seed


def test_pairs(cfg: Config, test_mats: dict) -> dict[str, tuple[np.ndarray, dict[str, list[np.ndarray]]]]:
    """Per test set: (y_true, {"base": [matrix], "sft": [one per seed], "grpo": [one per seed]}) of the medical
    model, seeds in profile order (the inputs of the paired comparisons and of claims C1-C3)."""
    seeds = training_seeds(cfg)
    cols = {"base": "MedGemma base", "sft": "MedGemma SFT", "grpo": "ChexReason"}
    out = {}
    for ds, by_col in test_mats.items():
        y_true = by_col[cols["sft"]][seeds[0]][0]
        out[ds] = (y_true, {k: [by_col[c][s][1] for s in (seeds[:1] if k == "base" else seeds)]
                            for k, c in cols.items()})
    return out


def paired_differences(cfg: Config, test_mats: dict) -> pd.DataFrame:
    """SFT -> GRPO macro-F1 on each test set and the change of the CheXpert - NIH gap: mean over training seeds,
    paired per seed and image, two-level bootstrap 95% CI (seeds, then images)."""
    E, pairs = cfg.evaluation, test_pairs(cfg, test_mats)
    triple = {ds: (y, p["sft"], p["grpo"]) for ds, (y, p) in pairs.items()}
    rows = [{"comparison": f"SFT -> GRPO on {ds}", **metrics.paired_bootstrap(*triple[ds], E.n_bootstrap, E.bootstrap_seed)}
            for ds in ("CheXpert", "NIH")]
    rows.append({"comparison": "change of the CheXpert - NIH gap, SFT -> GRPO",
                 **metrics.gap_change(triple["CheXpert"], triple["NIH"], E.n_bootstrap, E.bootstrap_seed)})
    table = pd.DataFrame(rows)
    table["per_seed"] = [", ".join(f"{v:+.3f}" for v in r) for r in table["per_seed"]]
    return table


def claim_evidence(cfg: Config, paths: RunPaths, test_mats: dict) -> dict:
    """What ``claims.claims_table`` measures, per training seed: test-set matrices of the base, SFT and GRPO
    medical model (``test_matrices``), validation matrices of every SFT format of both models, and the collapse
    share of the final recipe and of the unstable-recipe ablation (None where the profile does not make it)."""
    seeds = training_seeds(cfg)
    evidence: dict = dict(test_pairs(cfg, test_mats))
    if cfg.sft.general_model_too:
        by_role = {role: validation_matrices(cfg, paths, role, cfg.sft.formats, "sft") for role in ROLES}
        y_true = next(iter(by_role["medical"].values()))[seeds[0]][0]
        evidence["validation formats"] = (y_true, {role: {f: [m[s][1] for s in seeds] for f, m in by_fmt.items()}
                                                   for role, by_fmt in by_role.items()})
    if cfg.diagnostics.run_ablation:
        evidence["collapse"] = {
            "final": [run_collapse_share(cfg, paths, cfg.diagnostics.ablation_reward, s) for s in seeds],
            "unstable": [run_collapse_share(cfg, paths, ablation_name(cfg), s) for s in seeds]}
    return evidence


# ---- GRPO evidence (issue 15): length threshold, answer statistics ------------------------------------------

def sft_target_lengths(cfg: Config, paths: RunPaths, fmt: str) -> np.ndarray:
    """Token lengths (the start model's tokenizer) of the SFT targets of one format."""
    manifest = load_manifest(paths, "sft")
    rationales = traces_for(cfg, paths, manifest, fmt) if prompts.requires_think(fmt) else [""] * len(manifest)
    tokenizer = models.load_processor(base_model(cfg, paths, "medical")).tokenizer   # SFT keeps the base's tokenizer
    return np.array([len(tokenizer(prompts.format_target(fmt, t, r), add_special_tokens=False)["input_ids"])
                     for t, r in zip(manifest["truth"], rationales)])


def resolve_length_threshold(cfg: Config, paths: RunPaths, grpo_cfg):
    """``grpo_cfg`` with the hard reward's length threshold set from the SFT targets when
    ``hard.length_threshold_quantile`` > 0 (tiny profiles); unchanged otherwise (the paper's 250 tokens)."""
    q = grpo_cfg.hard.length_threshold_quantile
    if q <= 0:
        return grpo_cfg
    if not 0 < q < 1:
        raise ValueError(f"grpo.hard.length_threshold_quantile must be in (0, 1), got {q}")
    lengths = sft_target_lengths(cfg, paths, grpo_cfg.start_format)
    threshold = int(np.quantile(lengths, q))
    return replace(grpo_cfg, hard=replace(grpo_cfg.hard, length_threshold=threshold, length_threshold_quantile=0.0))


def checkpoint_predictions(cfg: Config, paths: RunPaths, name: str, seed: int) -> dict[int, pd.DataFrame]:
    """Validation predictions (cached) of the SFT start (step 0) and every checkpoint the scoring plan scores on
    validation, of one GRPO run and seed."""
    fmt, steps = cfg.grpo.start_format, grpo_models(cfg, paths, name, seed, "val")
    frames = predict_many(cfg, paths, [(tag, model, "val", fmt) for _, tag, model in steps])
    return {step: frame for (step, _, _), frame in zip(steps, frames)}


def reward_strategy_table(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """``reward_analysis.strategy_rewards`` on the validation truth sets; the constant strategy answers the most
    frequent label set of the SFT and RL selections (the training data GRPO sees)."""
    train_truths = [list(t) for name in ("sft", "rl") for t in load_manifest(paths, name)["truth"]]
    truths = [list(t) for t in load_manifest(paths, "val")["truth"]]
    hard = resolve_length_threshold(cfg, paths, cfg.grpo).hard
    return reward_analysis.strategy_rewards(truths, pool_prevalence(paths), reward_analysis.mode_label_set(train_truths),
                                            hard, cfg.grpo.nuanced)


def answer_statistics_table(cfg: Config, paths: RunPaths, runs_by_reward: dict[str, dict[int, grpo.GRPORun]]) -> pd.DataFrame:
    """``reward_analysis.answer_statistics`` for every run (reward -> seed -> run), long form."""
    prevalence = pool_prevalence(paths)
    frames = [reward_analysis.answer_statistics(checkpoint_predictions(cfg, paths, reward, seed), prevalence)
              .assign(reward=reward, seed=seed)
              for reward, runs in runs_by_reward.items() for seed, run in runs.items()]
    return pd.concat(frames, ignore_index=True)


def grpo_worked_example(cfg: Config, paths: RunPaths, run: grpo.GRPORun) -> tuple[pd.DataFrame, dict]:
    """The first group the frozen SFT policy sampled in a GRPO run's control (one image, ``num_generations``
    completions) scored by both rewards, and that image's path and truth."""
    path = run.out_dir / grpo.CONTROL / "completions.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the worked example needs the run's control (grpo.frozen_control)")
    comps = pd.read_parquet(path)
    group = comps.loc[comps["step"] == comps["step"].min()].iloc[:cfg.grpo.num_generations]
    manifest = load_manifest(paths, "rl").set_index("image_path")
    truth = list(manifest.loc[group["image_path"].iloc[0], "truth"])
    tokenizer = models.load_processor(base_model(cfg, paths, "medical")).tokenizer
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in group["completion"]]
    g = resolve_length_threshold(cfg, paths, cfg.grpo)
    table = reward_analysis.worked_example(list(group["completion"]), lengths, truth, pool_prevalence(paths),
                                           g.hard, g.nuanced, prompts.requires_think(g.start_format))
    return table, {"image_path": group["image_path"].iloc[0], "truth": truth,
                   "length_threshold": g.hard.length_threshold}
