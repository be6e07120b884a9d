"""Stage steps the notebooks call: each reads earlier stages' artifacts from the run directory and writes
its own. Notebooks narrate and show; the work is here so it is tested and never copied between notebooks.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import evaluate, grpo, metrics, models, prompts, sft
from .diagnostics import log_rows
from .config import Config
from .data import DataLayoutError, load_chexpert, load_mimic, load_nih
from .data.phantom import generate_world, load_findings
from .labels import (CHEXPERT_LABELS, NIH_LABEL_SETS, format_label_list, names_to_vector, split_label_list,
                     vector_to_names)
from .paths import RunPaths
from .sampling import label_table, select_nih_test, split_train_pool
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
    """Build both tiny base models and give each its short domain pretraining (captioning its pool)."""
    corpus = world_corpus(paths.world)
    rows = []
    for role in ROLES:
        name = getattr(cfg.models, role)
        if name not in TINY_CLASSES:
            raise ValueError(f"models.{role} = {name!r} is not a tiny model ({', '.join(TINY_CLASSES)})")
        raw = paths.models / f"{name}-random"
        if not (raw / "config.json").exists():
            models.TINY_BUILDERS[TINY_CLASSES[name]](corpus, raw, hidden=cfg.models.tiny_hidden,
                                                      layers=cfg.models.tiny_layers,
                                                      image_size=cfg.models.tiny_image_size,
                                                      vocab=cfg.models.tiny_vocab, seed=cfg.seed)
        pool = paths.world / "pretrain" / role   # radiographs + reports (medical), scenes + captions (general)
        caps = [json.loads(line) for line in (pool / "captions.jsonl").read_text().splitlines()]
        data = sft.make_dataset(["Describe this image."] * len(caps), [c["text"] for c in caps],
                                [str(pool / c["image"]) for c in caps])
        pre_cfg = replace(cfg.sft, learning_rate=cfg.models.pretrain_lr, max_steps=cfg.models.pretrain_steps,
                          eval_steps=0, warmup_ratio=0.05)
        result = sft.train_sft(raw, data, None, paths.models / name, pre_cfg, full_finetune=True, seed=cfg.seed,
                               device=cfg.device)
        train_rows = log_rows(result.log, "loss")
        rows.append({"role": role, "model": name, "class": TINY_CLASSES[name],
                     "parameters": models.parameter_count(models.load_model(paths.models / name, device="cpu")),
                     "pretrain_pool": pool.name, "pretrain_examples": len(caps),
                     "pretrain_final_loss": float(train_rows["loss"].iloc[-1]) if len(train_rows) else np.nan,
                     "path": str(paths.models / name)})
    return pd.DataFrame(rows)


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
    nih_frame = select_nih_test(_manifest_frame(nih.dataset), nih.labels(), s.nih_test_size,
                                NIH_LABEL_SETS[cfg.evaluation.nih_label_set], s.nih_selection, s.seed)
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


def train_formats(cfg: Config, paths: RunPaths, role: str) -> dict[str, sft.SFTResult]:
    """SFT of one base model in every configured format (reused when already trained)."""
    results = {}
    for fmt in cfg.sft.formats:
        train, held_out = sft_datasets(cfg, paths, fmt)
        results[fmt] = sft.train_sft(base_model(cfg, paths, role), train, held_out, paths.sft_model(role, fmt),
                                     cfg.sft, full_finetune=not cfg.sft.use_lora, seed=cfg.seed, device=cfg.device)
    return results


def sft_curves(results: dict[str, sft.SFTResult]) -> pd.DataFrame:
    """Training rows (step, loss, mean token accuracy, entropy) of every format, long form."""
    frames = []
    for fmt, res in results.items():
        rows = log_rows(res.log, "loss")
        keep = [c for c in ("step", "loss", "mean_token_accuracy", "entropy") if c in rows]
        frames.append(rows[keep].assign(format=fmt))
    return pd.concat(frames, ignore_index=True)


# ---- 03 GRPO ---------------------------------------------------------------------------------------------

def run_grpo(cfg: Config, paths: RunPaths, reward: str, out_dir: Path | None = None, grpo_cfg=None) -> grpo.GRPORun:
    manifest = load_manifest(paths, "rl")
    fmt = cfg.grpo.start_format
    data = grpo.make_dataset(prompts.prompt_for(fmt), list(manifest["image_path"]), list(manifest["truth"]))
    return grpo.train_grpo(paths.sft_model("medical", fmt), data, out_dir or paths.grpo_run(reward),
                           grpo_cfg or cfg.grpo, reward, pool_prevalence(paths), cfg.device, fmt)


def predictions(cfg: Config, paths: RunPaths, model_dir: str | Path, manifest_name: str, prompt: str,
                tag: str) -> pd.DataFrame:
    """Cached predictions of one model on one manifest with one prompt, merged with the truth."""
    manifest = load_manifest(paths, manifest_name)
    out = paths.predictions / f"{tag}__{manifest_name}__{prompt}.jsonl"
    pred = evaluate.predict(model_dir, manifest[["image_id", "image_path"]], prompt, out, cfg.evaluation.batch_size,
                            cfg.evaluation.max_new_tokens, cfg.device)
    return manifest.merge(pred, on="image_id", how="left")


def scores(frame: pd.DataFrame, cfg: Config, labels=CHEXPERT_LABELS) -> dict:
    """Micro / macro P, R, F1 and fail rate of a predictions frame (with ``truth``)."""
    return metrics.summary(*matrices(frame, cfg, labels), labels, valid_mask(frame))


def valid_mask(frame: pd.DataFrame) -> pd.Series:
    """Which predictions satisfied the output contract (a missing prediction counts as invalid)."""
    return frame["valid"].fillna(False).astype(bool)


def score_checkpoints(cfg: Config, paths: RunPaths, run: grpo.GRPORun) -> pd.DataFrame:
    """Validation scores of the SFT start and of every GRPO checkpoint, with best-F1 and final marked."""
    fmt = cfg.grpo.start_format
    rows = [{"step": 0, "checkpoint": "sft", **scores(predictions(cfg, paths, paths.sft_model("medical", fmt), "val",
                                                                 fmt, f"sft-medical-{fmt}"), cfg)}]
    for ckpt in run.checkpoints:
        step = int(ckpt.name.split("-")[1])
        frame = predictions(cfg, paths, ckpt, "val", fmt, f"grpo-{run.name}-{ckpt.name}")
        rows.append({"step": step, "checkpoint": ckpt.name, **scores(frame, cfg)})
    table = pd.DataFrame(rows).assign(reward=run.name)
    grpo_rows = table.loc[table["step"] > 0]
    table["is_best_f1"] = table.index == grpo_rows["macro_f1"].idxmax() if len(grpo_rows) else False
    table["is_final"] = table["step"] == table["step"].max()
    table.to_csv(run.out_dir / "checkpoint_scores.csv", index=False)
    return table


def grpo_checkpoint(paths: RunPaths, reward: str, which: str) -> Path:
    """The best-F1 or final checkpoint of a GRPO run, from its checkpoint_scores.csv."""
    table = pd.read_csv(paths.grpo_run(reward) / "checkpoint_scores.csv")
    row = table.loc[table["is_best_f1" if which == "best_f1" else "is_final"]].iloc[0]
    return paths.grpo_run(reward) / row["checkpoint"]


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


def sft_final_values(results: dict[str, dict[str, sft.SFTResult]]) -> pd.DataFrame:
    """Last logged training loss / token accuracy / entropy and best held-out loss per role and format."""
    rows = []
    for role, by_fmt in results.items():
        for fmt, res in by_fmt.items():
            train = log_rows(res.log, "loss")
            ev = res.log["eval_loss"].dropna() if "eval_loss" in res.log else pd.Series(dtype=float)
            last = train.iloc[-1] if len(train) else {}
            rows.append({"model": role, "format": fmt, "steps": int(last.get("step", 0)),
                         "train_loss": last.get("loss", np.nan),
                         "token_accuracy": last.get("mean_token_accuracy", np.nan),
                         "entropy": last.get("entropy", np.nan), "best_eval_loss": ev.min() if len(ev) else np.nan})
    return pd.DataFrame(rows)


def reward_trend(log: pd.DataFrame) -> dict:
    """Mean reward over the first and last quarter of a GRPO run's steps."""
    r = log_rows(log, "reward").get("reward", pd.Series(dtype=float))
    q = max(1, len(r) // 4)
    first, last = float(r.iloc[:q].mean()), float(r.iloc[-q:].mean())
    return {"steps": len(r), "first_quarter_mean": first, "last_quarter_mean": last, "rose": last > first}


def eval_labels(cfg: Config, dataset: str) -> tuple[str, ...]:
    return CHEXPERT_LABELS if dataset == "CheXpert" else NIH_LABEL_SETS[cfg.evaluation.nih_label_set]


def matrices(frame: pd.DataFrame, cfg: Config, labels) -> tuple[np.ndarray, np.ndarray]:
    return label_matrix(frame, labels), metrics.prediction_matrix(frame, labels, cfg.evaluation.invalid_policy)


def zero_shot_prompt(cfg: Config) -> str:
    return cfg.evaluation.prompt_variant or cfg.grpo.start_format


def test_models(cfg: Config, paths: RunPaths) -> dict[str, tuple[str, Path | str, str]]:
    """The paper's test-table columns we can reproduce -> (cache tag, model, prompt)."""
    fmt, zs = cfg.grpo.start_format, zero_shot_prompt(cfg)
    ckpt = grpo_checkpoint(paths, cfg.evaluation.test_grpo_reward, cfg.evaluation.test_grpo_checkpoint)
    return {"MedGemma base": ("base-medical", base_model(cfg, paths, "medical"), zs),
            "Qwen2.5-VL": ("base-general", base_model(cfg, paths, "general"), zs),
            "MedGemma SFT": (f"sft-medical-{fmt}", paths.sft_model("medical", fmt), fmt),
            "ChexReason": (f"grpo-{cfg.evaluation.test_grpo_reward}-{ckpt.name}", ckpt, fmt)}


def test_predictions(cfg: Config, paths: RunPaths) -> dict[str, dict[str, pd.DataFrame]]:
    out = {}
    for dataset, manifest in TEST_SETS:
        out[dataset] = {col: predictions(cfg, paths, model, manifest, prompt, tag)
                        for col, (tag, model, prompt) in test_models(cfg, paths).items()}
    return out


def checkpoint_test_curve(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """CheXpert and NIH macro-F1 of the SFT start and every GRPO checkpoint of every reward run."""
    fmt, rows = cfg.grpo.start_format, []
    for reward in cfg.grpo.rewards:
        models_ = [(0, f"sft-medical-{fmt}", paths.sft_model("medical", fmt))]
        models_ += [(int(c.name.split("-")[1]), f"grpo-{reward}-{c.name}", c) for c in grpo.checkpoints(paths.grpo_run(reward))]
        for step, tag, model in models_:
            for dataset, manifest in TEST_SETS:
                frame = predictions(cfg, paths, model, manifest, fmt, tag)
                rows.append({"reward": reward, "step": step, "dataset": dataset,
                             **scores(frame, cfg, eval_labels(cfg, dataset))})
    return pd.DataFrame(rows)


def validation_table(cfg: Config, paths: RunPaths, role: str, names: list[str], kind: str) -> pd.DataFrame:
    """Validation scores of a model per prompt variant (kind='zero_shot') or per SFT format (kind='sft')."""
    rows = []
    for name in names:
        if kind == "zero_shot":
            frame = predictions(cfg, paths, base_model(cfg, paths, role), "val", name, f"base-{role}")
        else:
            frame = predictions(cfg, paths, paths.sft_model(role, name), "val", name, f"sft-{role}-{name}")
        y_true, y_pred = matrices(frame, cfg, CHEXPERT_LABELS)
        _, lo, hi = metrics.bootstrap_macro_f1(y_true, y_pred, cfg.evaluation.n_bootstrap, cfg.evaluation.bootstrap_seed)
        summary = metrics.summary(y_true, y_pred, CHEXPERT_LABELS, valid_mask(frame))
        rows.append({"model": role, "variant" if kind == "zero_shot" else "format": name, **summary, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)
