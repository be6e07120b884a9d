"""The embedded phantom world: its sites written in the official dataset layouts.

- ``mimic-cxr-jpg/2.0.0``: MIMIC-like training site (AP/PA and lateral views, CheXpert-labeller values with
  uncertain -1 and blanks), study-level labels, official csv.gz files and ``files/pNN/...`` tree.
- ``CheXpert-v1.0``: CheXpert-like test site (binary radiologist labels, ``test_labels.csv``).
- ``ChestX-ray14``: NIH-like site labelled in the NIH ontology (Mass vs Nodule by size, Infiltration,
  Emphysema, Fibrosis, Hernia), with NLP-labeller noise, sex and age, PNG images in ``images_NNN/images``.
- ``PadChest`` (when ``n_padchest_studies`` > 0): PadChest-like site labelled in PadChest's fine ontology (its
  real label strings, drawn through ``padchest_mapping``), a physician / RNN labeller split, frontal and lateral
  projections, the official table and ``<ImageDir>/<ImageID>`` folders; from its own stream (``[seed, 4]``).

Labels come from a Gaussian copula: a few clinical factors (cardiac, infection, ICU, lesion, chronic) load
on the findings, thresholds are set so each label's marginal matches the target prevalence (sources in
``PREVALENCE_SOURCES``), and "No Finding" is positive exactly when nothing but Support Devices is. The
findings are rendered by ``phantom_render``. ``world_card.json`` records every knob and the realised
prevalences; ``phantom_findings.jsonl`` records what was drawn in each image. Same seed, same bytes.
``write_nih_variant`` (E4) and ``write_planted_site`` (E2) regenerate one site from the world's seed into a folder
of their own, never touching the main world.
"""
from __future__ import annotations

import copy

import gzip
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.stats import norm
from tqdm.auto import tqdm

from ..config import WorldConfig
from ..labels import CHEXPERT_CSV_ORDER, CHEXPERT_LABELS, NIH_LABELS, NIH_NO_FINDING, NIH_TO_CHEXPERT
from ..paths import RunPaths
from . import chexpert, nih, padchest_mapping
from .padchest_table import TABLE_NAME as PADCHEST_TABLE
from .phantom_render import SiteStyle, add_shortcut_marker, render

CAPTIONS = "captions.jsonl"   # a pretraining pool's image captions, one JSON row per image

FINDINGS = tuple(label for label in CHEXPERT_LABELS if label != "No Finding")

PREVALENCE_SOURCES = {
    "mimic": "MIMIC-CXR-JPG v2.0.0 paper (Johnson et al. 2019), positive CheXpert-labeller mentions per study, rounded",
    "chexpert_test": "CheXpert test set (Irvin et al. 2019; Saporta et al. 2022), radiologist consensus; approximate, rounded",
    "nih": "ChestX-ray14 (Wang et al. 2017), image-level label counts over 112,120 images, rounded",
}
PADCHEST_PREVALENCE_SOURCE = ("PadChest's real label table (torchxrayvision 1.5.7 wheel): share of its 26,432 "
                              "physician-labelled frontal rows carrying each label")
MIMIC_PREVALENCE = {
    "Atelectasis": 0.20, "Cardiomegaly": 0.20, "Consolidation": 0.047, "Edema": 0.12,
    "Enlarged Cardiomediastinum": 0.031, "Fracture": 0.019, "Lung Lesion": 0.028, "Lung Opacity": 0.226,
    "Pleural Effusion": 0.238, "Pleural Other": 0.009, "Pneumonia": 0.073, "Pneumothorax": 0.045,
    "Support Devices": 0.292,
}
CHEXPERT_TEST_PREVALENCE = {
    "Atelectasis": 0.30, "Cardiomegaly": 0.30, "Consolidation": 0.06, "Edema": 0.16,
    "Enlarged Cardiomediastinum": 0.40, "Fracture": 0.01, "Lung Lesion": 0.03, "Lung Opacity": 0.50,
    "Pleural Effusion": 0.25, "Pleural Other": 0.01, "Pneumonia": 0.03, "Pneumothorax": 0.02,
    "Support Devices": 0.50,
}
NIH_PREVALENCE = {
    "Atelectasis": 0.103, "Cardiomegaly": 0.025, "Effusion": 0.119, "Infiltration": 0.177, "Mass": 0.052,
    "Nodule": 0.056, "Pneumonia": 0.013, "Pneumothorax": 0.047, "Consolidation": 0.042, "Edema": 0.021,
    "Emphysema": 0.022, "Fibrosis": 0.015, "Pleural_Thickening": 0.030, "Hernia": 0.002,
}
CHEXPERT_LOADINGS = {
    "cardiac": {"Cardiomegaly": 0.6, "Edema": 0.5, "Pleural Effusion": 0.45, "Enlarged Cardiomediastinum": 0.45},
    "infection": {"Pneumonia": 0.6, "Consolidation": 0.6, "Lung Opacity": 0.5, "Atelectasis": 0.3},
    "icu": {"Support Devices": 0.55, "Atelectasis": 0.4, "Pleural Effusion": 0.35, "Pneumothorax": 0.3, "Edema": 0.3},
    "lesion": {"Lung Lesion": 0.5, "Lung Opacity": 0.3},
}
NIH_LOADINGS = {
    "cardiac": {"Cardiomegaly": 0.6, "Effusion": 0.45, "Edema": 0.5},
    "infection": {"Pneumonia": 0.6, "Consolidation": 0.55, "Infiltration": 0.5, "Atelectasis": 0.3},
    "icu": {"Atelectasis": 0.4, "Effusion": 0.35, "Pneumothorax": 0.3},
    "lesion": {"Mass": 0.5, "Nodule": 0.5},
    "chronic": {"Emphysema": 0.5, "Fibrosis": 0.45, "Pleural_Thickening": 0.45, "Pneumothorax": 0.2},
}
# The PadChest-like site's fine labels (real PadChest strings; every one is in padchest_mapping.csv) and their
# prevalence per frontal image (PADCHEST_PREVALENCE_SOURCE). The commonest labels of each mapped CheXpert label,
# and the commonest labels with no CheXpert counterpart, which are never scored.
PADCHEST_PREVALENCE = {
    "cardiomegaly": 0.0925, "pleural effusion": 0.0446, "costophrenic angle blunting": 0.0404, "pneumonia": 0.0403,
    "interstitial pattern": 0.0479, "infiltrates": 0.0343, "fibrotic band": 0.033, "increased density": 0.0217,
    "alveolar pattern": 0.0354, "consolidation": 0.0089, "apical pleural thickening": 0.0396,
    "laminar atelectasis": 0.0335, "atelectasis": 0.0173, "pacemaker": 0.0217, "nsg tube": 0.0162,
    "endotracheal tube": 0.0107, "central venous catheter via jugular vein": 0.0095, "callus rib fracture": 0.0197,
    "vertebral anterior compression": 0.0139, "nodule": 0.0173, "pulmonary mass": 0.0053, "hilar congestion": 0.0169,
    "heart insufficiency": 0.0152, "superior mediastinal enlargement": 0.0042, "mediastinal enlargement": 0.0027,
    "pneumothorax": 0.0025, "copd signs": 0.1126, "unchanged": 0.1006, "chronic changes": 0.0968,
    "aortic elongation": 0.0801, "scoliosis": 0.0684, "air trapping": 0.0426, "calcified granuloma": 0.018,
    "hiatal hernia": 0.0158, "emphysema": 0.0087,
}
# How a fine label is drawn where the world has a drawer more specific than its CheXpert label's; every other mapped
# label is drawn as its CheXpert label, and an unmapped label without a drawer here ("unchanged", "aortic
# elongation", "scoliosis", "chronic changes", "calcified granuloma") is a label of nothing the phantom renders.
PADCHEST_DRAWN_AS = {"nodule": "Nodule", "pulmonary mass": "Mass", "infiltrates": "Infiltration",
                     "copd signs": "Emphysema", "air trapping": "Emphysema", "emphysema": "Emphysema",
                     "hiatal hernia": "Hernia"}
# The chronic factor's loadings at the PadChest-like site (an older outpatient population); the other factors load
# on each fine label as on its CheXpert label (``padchest_loadings``).
PADCHEST_CHRONIC = {"copd signs": 0.5, "air trapping": 0.4, "emphysema": 0.5, "chronic changes": 0.45,
                    "aortic elongation": 0.35, "scoliosis": 0.3, "calcified granuloma": 0.2, "hiatal hernia": 0.2,
                    "fibrotic band": 0.3, "apical pleural thickening": 0.3, "interstitial pattern": 0.25}
# Per study: who labelled it (real table: 39,053 of 160,861 rows by a physician) and each labeller's noise.
PADCHEST_PHYSICIAN_SHARE = 0.243
PADCHEST_LABELLER = {"Physician": {"miss_true_finding": 0.05, "spurious_finding_per_label": 0.001},
                     "RNN_model": {"miss_true_finding": 0.12, "spurious_finding_per_label": 0.004}}
# A study's frontal projection (real physician-labelled frontal rows) and how often it has a lateral / costal view.
PADCHEST_FRONTAL = {"PA": 0.906, "AP_horizontal": 0.072, "AP": 0.022}
PADCHEST_EXTRA_VIEWS = {"L": 0.48, "COSTAL": 0.006}
PADCHEST_AGE = (58, 19)   # mean and sd of age in years (older than the NIH-like site's)
SITES = {
    "mimic": SiteStyle("mimic", gamma=1.0, contrast=1.0, brightness=0.0, noise=0.03, magnification=1.0,
                       blur=0, border=0, marker="top-right"),
    "chexpert": SiteStyle("chexpert", gamma=0.9, contrast=1.1, brightness=0.0, noise=0.02, magnification=0.97,
                          blur=1, border=4, marker="top-left"),
    "nih": SiteStyle("nih", gamma=1.15, contrast=0.85, brightness=0.05, noise=0.045, magnification=0.93,
                     blur=0, border=0, marker="bottom-left"),
    "padchest": SiteStyle("padchest", gamma=0.85, contrast=1.2, brightness=-0.04, noise=0.035, magnification=1.04,
                          blur=0, border=6, marker="none"),
}
# CheXpert-labeller value model (MIMIC-like site): P(value | truth).
MIMIC_LABELLER = {"positive": {"1": 0.85, "-1": 0.15}, "absent": {"blank": 0.85, "0": 0.12, "-1": 0.03}}
NIH_LABELLER = {"miss_true_finding": 0.10, "spurious_finding_per_label": 0.004}
AGE_EFFECT_ON_CARDIAC = 0.4   # cardiac factor mean shift per SD of age (NIH site)


@dataclass(frozen=True)
class NihSite:
    """What makes the NIH-like site differ from the MIMIC-like one; the defaults are the main world's values
    (``nih_variant`` changes one factor at a time, for the shift-attribution experiment E4)."""

    style: SiteStyle = SITES["nih"]
    prevalence: dict = field(default_factory=lambda: dict(NIH_PREVALENCE))
    labeller: dict = field(default_factory=lambda: dict(NIH_LABELLER))
    age_effect: float = AGE_EFFECT_ON_CARDIAC
    drawn_as: dict = field(default_factory=dict)   # NIH finding -> the drawer it is rendered with instead


NIH_ONLY_FINDINGS = tuple(k for k, v in NIH_TO_CHEXPERT.items() if v is None)
NIH_VARIANT_FACTORS = ("acquisition", "prevalence", "lesions_unscored", "labeller_noise", "age_effect")


def _mimic_like(factor: str) -> dict:
    """The NihSite fields of one factor at its MIMIC-like value (registrations/E4_shift_attribution.yaml)."""
    if factor == "acquisition":
        return {"style": replace(SITES["mimic"], name="nih")}
    if factor == "prevalence":
        lesion = MIMIC_PREVALENCE["Lung Lesion"] / 2
        return {"prevalence": {k: (lesion if NIH_TO_CHEXPERT[k] == "Lung Lesion" else
                                   MIMIC_PREVALENCE.get(NIH_TO_CHEXPERT[k], v)) for k, v in NIH_PREVALENCE.items()}}
    if factor == "lesions_unscored":
        return {"prevalence": {k: 0.0 if k in NIH_ONLY_FINDINGS else v for k, v in NIH_PREVALENCE.items()},
                "drawn_as": {"Mass": "Lung Lesion", "Nodule": "Lung Lesion"}}
    if factor == "labeller_noise":   # MIMIC_LABELLER read positive_only: only a "1" is a positive
        return {"labeller": {"miss_true_finding": round(1 - MIMIC_LABELLER["positive"]["1"], 6),
                             "spurious_finding_per_label": 0.0}}
    if factor == "age_effect":
        return {"age_effect": 0.0}
    raise ValueError(f"unknown NIH site factor {factor!r}; choose one of {', '.join(NIH_VARIANT_FACTORS)} or all")


def nih_variant(factor: str) -> NihSite:
    """The NIH-like site with ``factor`` (or ``all`` of them) set to the MIMIC-like value."""
    fields: dict = {}
    for f in (NIH_VARIANT_FACTORS if factor == "all" else (factor,)):
        fields.update(_mimic_like(f))
    if factor == "all":   # both prevalence factors: the MIMIC-like prevalences, the unscored findings absent
        fields["prevalence"] = {k: 0.0 if k in NIH_ONLY_FINDINGS else v
                                for k, v in _mimic_like("prevalence")["prevalence"].items()}
    return NihSite(**fields)


def copula_labels(rng: np.random.Generator, n: int, prevalence: dict[str, float],
                  loadings: dict[str, dict[str, float]], factor_shift: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Binary findings with the target marginals and factor-induced co-occurrence."""
    names = list(prevalence)
    factors = {f: rng.standard_normal(n) + (factor_shift or {}).get(f, 0.0) for f in loadings}
    out = {}
    for name in names:
        load = {f: loadings[f][name] for f in loadings if name in loadings[f]}
        z = sum(a * factors[f] for f, a in load.items()) if load else np.zeros(n)
        z = z + np.sqrt(1 - sum(a * a for a in load.values())) * rng.standard_normal(n)
        out[name] = (z > norm.ppf(1 - prevalence[name])).astype(np.int8)
    return pd.DataFrame(out)


def _hexid(rng: np.random.Generator) -> str:
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2 ** 32, 5))


def _save(pixels: np.ndarray, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(pixels, mode="L")
    if fmt == "JPEG":
        im.save(path, format="JPEG", quality=95)
    else:
        im.save(path, format="PNG", optimize=False)


def _write_csv_gz(frame: pd.DataFrame, path: Path) -> None:
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue().encode())


def _findings_of(row: pd.Series) -> list[str]:
    return [k for k, v in row.items() if v]


def write_mimic(root: Path, cfg: WorldConfig, rng: np.random.Generator, records: list) -> dict:
    base = root / "mimic-cxr-jpg" / "2.0.0"
    n = cfg.n_mimic_studies
    truth = copula_labels(rng, n, MIMIC_PREVALENCE, CHEXPERT_LOADINGS)
    subjects = 10000000 + rng.choice(9_000_000, size=max(1, int(n / 1.6)), replace=False)
    subject_of = np.sort(rng.choice(subjects, size=n))
    study_ids = 50000000 + rng.choice(9_000_000, size=n, replace=False)
    split_of = {s: ("test" if u < 0.02 else "validate" if u < 0.04 else "train")
                for s, u in zip(subjects, rng.random(len(subjects)))}
    label_rows, meta_rows, split_rows = [], [], []
    marker_rng = np.random.default_rng([cfg.seed, 2])   # its own stream: planting a marker changes nothing else
    for i in tqdm(range(n), desc="MIMIC-like site", leave=False):
        t = truth.iloc[i]
        findings = _findings_of(t)
        values = {}
        for name in FINDINGS:
            table = MIMIC_LABELLER["positive" if t[name] else "absent"]
            values[name] = rng.choice(list(table), p=list(table.values()))
        values = {k: (np.nan if v == "blank" else float(v)) for k, v in values.items()}
        values["No Finding"] = 1.0 if not [f for f in findings if f != "Support Devices"] else np.nan
        label_rows.append({"subject_id": int(subject_of[i]), "study_id": int(study_ids[i]),
                           **{k: values[k] for k in CHEXPERT_CSV_ORDER}})
        icu = bool(t["Support Devices"])
        views = [("AP" if rng.random() < (0.85 if icu else 0.4) else "PA")]
        if rng.random() < 0.25:
            views.append(views[0])
        if rng.random() < 0.5:
            views.append("LATERAL")
        for view in views:
            dicom = _hexid(rng)
            hidden = cfg.shortcut_rho > 0 and cfg.shortcut_only and cfg.shortcut_finding in findings
            state = copy.deepcopy(rng) if hidden else None
            pixels, drawn = render(findings, SITES["mimic"], cfg.image_size, rng, view=view)
            if hidden:   # E2's marker-only control: the same random state without the finding; rng moves on as ever
                shown = [f for f in findings if f != cfg.shortcut_finding]
                pixels, drawn = render(shown, SITES["mimic"], cfg.image_size, state, view=view)
            marker = cfg.shortcut_rho > 0 and cfg.shortcut_finding in findings and marker_rng.random() < cfg.shortcut_rho
            if marker:
                pixels = add_shortcut_marker(pixels, cfg.shortcut_radius)
            s = str(subject_of[i])
            rel = Path("files") / f"p{s[:2]}" / f"p{s}" / f"s{study_ids[i]}" / f"{dicom}.jpg"
            _save(pixels, base / rel, "JPEG")
            meta_rows.append({"dicom_id": dicom, "subject_id": int(subject_of[i]), "study_id": int(study_ids[i]),
                              "PerformedProcedureStepDescription": "CHEST (PORTABLE AP)" if view == "AP" else "CHEST (PA AND LAT)",
                              "ViewPosition": view, "Rows": cfg.image_size, "Columns": cfg.image_size,
                              "StudyDate": 21000101 + int(rng.integers(0, 28)), "StudyTime": 120000.0,
                              "ProcedureCodeSequence_CodeMeaning": "CHEST (PORTABLE AP)" if view == "AP" else "CHEST (PA AND LAT)",
                              "ViewCodeSequence_CodeMeaning": {"AP": "antero-posterior", "PA": "postero-anterior"}.get(view, "lateral"),
                              "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
            split_rows.append({"dicom_id": dicom, "study_id": int(study_ids[i]), "subject_id": int(subject_of[i]),
                               "split": split_of[subject_of[i]]})
            records.append({"site": "mimic", "image_id": dicom, "path": str((base / rel).relative_to(root)),
                            "view": view, "truth": findings, "findings": drawn,
                            **({"shortcut_marker": bool(marker)} if cfg.shortcut_rho > 0 else {})})
    _write_csv_gz(pd.DataFrame(label_rows), base / "mimic-cxr-2.0.0-chexpert.csv.gz")
    _write_csv_gz(pd.DataFrame(meta_rows), base / "mimic-cxr-2.0.0-metadata.csv.gz")
    _write_csv_gz(pd.DataFrame(split_rows), base / "mimic-cxr-2.0.0-split.csv.gz")
    return {"studies": n, "images": len(meta_rows), "truth": truth}


def write_chexpert(root: Path, cfg: WorldConfig, rng: np.random.Generator, records: list) -> dict:
    base = root / "CheXpert-v1.0"
    n = cfg.n_chexpert_test_studies
    truth = copula_labels(rng, n, CHEXPERT_TEST_PREVALENCE, CHEXPERT_LOADINGS)
    rows = []
    for i in tqdm(range(n), desc="CheXpert-like site", leave=False):
        t = truth.iloc[i]
        findings = _findings_of(t)
        values = {k: float(t[k]) for k in FINDINGS}
        values["No Finding"] = 0.0 if [f for f in findings if f != "Support Devices"] else 1.0
        views = ["frontal"] + (["lateral"] if rng.random() < 0.3 else [])
        for j, view in enumerate(views, start=1):
            rel = f"test/patient{64541 + i}/study1/view{j}_{view}.jpg"
            pixels, drawn = render(findings, SITES["chexpert"], cfg.image_size, rng,
                                   view="LATERAL" if view == "lateral" else ("AP" if t["Support Devices"] else "PA"))
            _save(pixels, base / rel, "JPEG")
            rows.append({"Path": rel, **{k: values[k] for k in CHEXPERT_CSV_ORDER}})
            records.append({"site": "chexpert", "image_id": rel, "path": str((base / rel).relative_to(root)),
                            "view": view, "truth": findings, "findings": drawn})
    pd.DataFrame(rows).to_csv(base / chexpert.TEST_LABELS, index=False)
    return {"studies": n, "images": len(rows), "truth": truth}


def write_nih(root: Path, cfg: WorldConfig, rng: np.random.Generator, records: list,
              site: NihSite | None = None) -> dict:
    site = site or NihSite()
    base = root / "ChestX-ray14"
    n = cfg.n_nih_images
    age = np.clip(rng.normal(47, 17, n), 1, 95).round()
    sex = np.where(rng.random(n) < 0.565, "M", "F")
    truth = copula_labels(rng, n, site.prevalence, NIH_LOADINGS,
                          factor_shift={"cardiac": site.age_effect * (age - 47) / 17})
    patient = np.sort(rng.integers(1, max(2, n // 2), n))
    followup = np.zeros(n, dtype=int)
    for i in range(1, n):
        followup[i] = followup[i - 1] + 1 if patient[i] == patient[i - 1] else 0
    test_patients = set(np.unique(patient)[rng.random(len(np.unique(patient))) < 0.25].tolist())
    rows, train_val, test = [], [], []
    for i in tqdm(range(n), desc="NIH-like site", leave=False):
        observed = truth.iloc[i].copy()
        for name in NIH_LABELS:
            if observed[name] and rng.random() < site.labeller["miss_true_finding"]:
                observed[name] = 0
            elif not observed[name] and rng.random() < site.labeller["spurious_finding_per_label"]:
                observed[name] = 1
        names = _findings_of(observed) or [NIH_NO_FINDING]
        image = f"{patient[i]:08d}_{followup[i]:03d}.png"
        view = "AP" if rng.random() < 0.4 else "PA"
        drawn_findings = sorted({site.drawn_as.get(f, f) for f in _findings_of(truth.iloc[i])})
        pixels, drawn = render(drawn_findings, site.style, cfg.image_size, rng, view=view)
        rel = Path(f"images_{i // 500 + 1:03d}") / "images" / image
        _save(pixels, base / rel, "PNG")
        rows.append({"Image Index": image, "Finding Labels": "|".join(names), "Follow-up #": int(followup[i]),
                     "Patient ID": int(patient[i]), "Patient Age": int(age[i]), "Patient Gender": sex[i],
                     "View Position": view, "OriginalImage[Width": cfg.image_size, "Height]": cfg.image_size,
                     "OriginalImagePixelSpacing[x": 0.143, "y]": 0.143})
        (test if patient[i] in test_patients else train_val).append(image)
        records.append({"site": "nih", "image_id": image, "path": str((base / rel).relative_to(root)),
                        "view": view, "truth": _findings_of(truth.iloc[i]), "findings": drawn})
    frame = pd.DataFrame(rows)
    text = frame.to_csv(index=False).replace("OriginalImage[Width,Height]", "OriginalImage[Width,Height]")
    (base / nih.ENTRY_FILES[0]).write_text(text)
    (base / nih.SPLIT_LISTS["train_val"]).write_text("\n".join(train_val) + "\n")
    (base / nih.SPLIT_LISTS["test"]).write_text("\n".join(test) + "\n")
    return {"images": n, "truth": truth}


def padchest_loadings() -> dict[str, dict[str, float]]:
    """The PadChest-like site's factor loadings: each mapped fine label loads like its CheXpert label (scaled by
    0.9), plus the chronic factor of ``PADCHEST_CHRONIC``; "unchanged" loads on nothing."""
    mapping = padchest_mapping.mapping_dict()
    out: dict[str, dict[str, float]] = {}
    for factor, loads in CHEXPERT_LOADINGS.items():
        out[factor] = {f: round(0.9 * loads[mapping[f]], 4) for f in PADCHEST_PREVALENCE if mapping[f] in loads}
    out["chronic"] = dict(PADCHEST_CHRONIC)
    return out


def padchest_drawers() -> dict[str, str | None]:
    """What each PadChest-like fine label is rendered as: ``PADCHEST_DRAWN_AS``, else its CheXpert label; None for a
    label of nothing the phantom draws."""
    mapping = padchest_mapping.mapping_dict()
    return {f: PADCHEST_DRAWN_AS.get(f) or mapping[f] for f in PADCHEST_PREVALENCE}


def _padchest_observed(truth: list[str], labeller: dict, rng: np.random.Generator) -> list[str]:
    """A labeller's reading of one study: each true label missed with ``miss_true_finding``, each other label
    added with ``spurious_finding_per_label``; "normal" when nothing is left."""
    out = []
    for label in PADCHEST_PREVALENCE:
        if label in truth:
            if rng.random() >= labeller["miss_true_finding"]:
                out.append(label)
        elif rng.random() < labeller["spurious_finding_per_label"]:
            out.append(label)
    return out or [padchest_mapping.NORMAL]


def write_padchest(root: Path, cfg: WorldConfig, rng: np.random.Generator, records: list) -> dict:
    """The PadChest-like site in PadChest's official layout: ``PadChest/<table>`` (its 36 columns, as the real
    release writes them) and ``PadChest/<ImageDir>/<ImageID>`` PNGs, about 1.6 studies per patient, a frontal view per
    study and sometimes a lateral or costal one; the study's labels come from its labeller (``MethodLabel``)."""
    base = root / "PadChest"
    n = cfg.n_padchest_studies
    age = np.clip(rng.normal(*PADCHEST_AGE, n), 18, 100).round()
    truth = copula_labels(rng, n, PADCHEST_PREVALENCE, padchest_loadings(),
                          factor_shift={f: AGE_EFFECT_ON_CARDIAC * (age - PADCHEST_AGE[0]) / PADCHEST_AGE[1]
                                        for f in ("cardiac", "chronic")})
    patients = np.sort(rng.integers(1, n + 1, n))   # about 1.6 studies per patient present, as the real table
    birth = {p: int(2015 - a) for p, a in zip(patients, age)}
    sex = {p: str(rng.choice(["M", "F"])) for p in np.unique(patients)}
    physician = rng.random(n) < PADCHEST_PHYSICIAN_SHARE
    drawer = padchest_drawers()
    rows = []
    for i in tqdm(range(n), desc="PadChest-like site", leave=False):
        findings = _findings_of(truth.iloc[i])
        method = "Physician" if physician[i] else "RNN_model"
        labels = _padchest_observed(findings, PADCHEST_LABELLER[method], rng)
        drawn_findings = sorted({drawer[f] for f in findings if drawer[f]})
        frontal = str(rng.choice(list(PADCHEST_FRONTAL), p=list(PADCHEST_FRONTAL.values())))
        views = [frontal] + [v for v, share in PADCHEST_EXTRA_VIEWS.items() if rng.random() < share]
        study = f"{int(rng.integers(10 ** 17, 10 ** 18))}{i:06d}"
        date = 20090101 + 10000 * int(rng.integers(0, 8)) + int(rng.integers(0, 28))
        for view in views:
            image = f"{study}_{_hexid(rng)[:6]}.png"
            folder = str(len(rows) // 500)
            render_view = {"L": "LATERAL", "AP_horizontal": "AP", "AP": "AP"}.get(view, "PA")
            pixels, drawn = render(drawn_findings, SITES["padchest"], cfg.image_size, rng, view=render_view)
            _save(pixels, base / folder / image, "PNG")
            rows.append({"ImageID": image, "ImageDir": folder, "StudyDate_DICOM": date, "StudyID": study,
                         "PatientID": f"{int(patients[i]):012d}", "PatientBirth": float(birth[patients[i]]),
                         "PatientSex_DICOM": sex[patients[i]],
                         "ViewPosition_DICOM": {"L": "LATERAL", "PA": "POSTEROANTERIOR"}.get(view, "ANTEROPOSTERIOR"),
                         "Projection": view, "MethodProjection": "Manual review of DICOM fields", "Pediatric": "No",
                         "Modality_DICOM": "CR", "Manufacturer_DICOM": "PhantomCo", "PhotometricInterpretation_DICOM":
                         "MONOCHROME2", "PixelRepresentation_DICOM": 0, "PixelAspectRatio_DICOM": "None",
                         "SpatialResolution_DICOM": "None", "BitsStored_DICOM": 8, "WindowCenter_DICOM": 128,
                         "WindowWidth_DICOM": 256, "Rows_DICOM": cfg.image_size, "Columns_DICOM": cfg.image_size,
                         "XRayTubeCurrent_DICOM": 250, "Exposure_DICOM": 2, "ExposureInuAs_DICOM": 2500,
                         "ExposureTime": 10, "RelativeXRayExposure_DICOM": "None", "ReportID": 4000000 + i,
                         "Report": " ".join(f"{label} ." for label in labels), "MethodLabel": method,
                         "Labels": str(labels), "Localizations": "[]",
                         "LabelsLocalizationsBySentence": str([[label] for label in labels]), "labelCUIS": "[]",
                         "LocalizationsCUIS": "[]"})
            records.append({"site": "padchest", "image_id": image, "path": f"PadChest/{folder}/{image}", "view": view,
                            "truth": findings, "findings": drawn, "labels": labels, "method": method})
    frame = pd.DataFrame(rows)
    frame.insert(0, "", range(len(frame)))   # the real table's unnamed first column
    _write_csv_gz(frame, base / PADCHEST_TABLE)
    return {"studies": n, "images": len(rows), "truth": truth, "physician_studies": int(physician.sum())}


def write_pretraining(root: Path, cfg: WorldConfig, rng: np.random.Generator) -> dict:
    """Two disjoint pools: phantom radiographs with short reports, and non-radiograph scenes with captions.
    Each row also holds what was drawn (``findings`` or ``objects``), for the instruction data (``instruct``)."""
    _medical_pool(root / "pretrain" / "medical", cfg.n_pretrain, cfg.image_size, rng)
    _general_pool(root / "pretrain" / "general", cfg.n_pretrain, cfg.image_size, rng)
    return {"medical": cfg.n_pretrain, "general": cfg.n_pretrain}


def write_vision_pretraining(root: Path, cfg: WorldConfig) -> dict:
    """The larger pools the tiny bases' vision towers are pretrained on (``train.vision_pretraining``), written like
    ``write_pretraining``'s under ``pretrain/vision/{medical,general}``: radiographs in the MIMIC-like style with
    reports, scenes with captions. Generated from their own stream (``[seed, 3]``), never sampled from a site, so no
    test image or patient is in them and no other site's bytes change."""
    if cfg.n_vision_pretrain == 0:
        return {"medical": 0, "general": 0}
    rng = np.random.default_rng([cfg.seed, 3])
    _medical_pool(root / "pretrain" / "vision" / "medical", cfg.n_vision_pretrain, cfg.image_size, rng)
    _general_pool(root / "pretrain" / "vision" / "general", cfg.n_vision_pretrain, cfg.image_size, rng)
    return {"medical": cfg.n_vision_pretrain, "general": cfg.n_vision_pretrain, "style": "mimic", "stream": [cfg.seed, 3]}


def _medical_pool(med: Path, n: int, size: int, rng: np.random.Generator) -> None:
    truth = copula_labels(rng, n, MIMIC_PREVALENCE, CHEXPERT_LOADINGS)
    rows = []
    for i in range(n):
        findings = _findings_of(truth.iloc[i])
        pixels, drawn = render(findings, SITES["mimic"], size, rng, view="PA")
        _save(pixels, med / "images" / f"med_{i:05d}.png", "PNG")
        report = "; ".join(drawn.values()) if drawn else "clear lungs, normal heart size, no acute abnormality"
        rows.append({"image": f"images/med_{i:05d}.png", "text": f"Chest radiograph. Findings: {report}.",
                     "findings": drawn})
    med.mkdir(parents=True, exist_ok=True)
    (med / CAPTIONS).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _general_pool(gen: Path, n: int, size: int, rng: np.random.Generator) -> None:
    colours = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
               "purple": (150, 60, 190), "orange": (240, 140, 30)}
    shapes = ("circle", "square", "stripe")
    rows = []
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        bg = np.array(colours[rng.choice(list(colours))]) * 0.35
        img = np.ones((size, size, 3)) * bg
        parts, objects = [], []
        for _ in range(int(rng.integers(1, 4))):
            cname, shape = rng.choice(list(colours)), rng.choice(shapes)
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.2)
            mask = {"circle": (x - cx) ** 2 + (y - cy) ** 2 < r * r,
                    "square": (np.abs(x - cx) < r) & (np.abs(y - cy) < r),
                    "stripe": np.abs(y - cy) < r / 3}[shape]
            img[mask] = colours[cname]
            place = "top" if cy < 0.4 else "bottom" if cy > 0.6 else "middle"
            objects.append({"colour": str(cname), "shape": str(shape), "place": place})
            parts.append(f"a {cname} {shape} {'in the middle' if place == 'middle' else 'at the ' + place}")
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        path = gen / "images" / f"gen_{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="RGB").save(path, format="PNG")
        rows.append({"image": f"images/gen_{i:05d}.png", "text": "A picture of " + ", ".join(parts) + ".",
                     "objects": objects})
    gen.mkdir(parents=True, exist_ok=True)
    (gen / CAPTIONS).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _config_knobs(cfg: WorldConfig) -> dict:
    """The world config as the card records it: without E2's shortcut fields while no shortcut is planted and
    without the PadChest-like site's size while it has none, so a world without them keeps its fingerprint."""
    config = asdict(cfg)
    dropped = ("shortcut_",) if cfg.shortcut_rho <= 0 else ()
    dropped += ("n_padchest_studies",) if not cfg.n_padchest_studies else ()
    return {k: v for k, v in config.items() if not k.startswith(dropped)} if dropped else config


def knobs(cfg: WorldConfig) -> dict:
    return {"config": _config_knobs(cfg),
            "sites": {k: asdict(v) for k, v in SITES.items() if k != "padchest" or cfg.n_padchest_studies},
            "prevalence_targets": {"mimic": MIMIC_PREVALENCE, "chexpert_test": CHEXPERT_TEST_PREVALENCE,
                                   "nih": NIH_PREVALENCE},
            "prevalence_sources": PREVALENCE_SOURCES,
            "factor_loadings": {"chexpert_ontology": CHEXPERT_LOADINGS, "nih_ontology": NIH_LOADINGS},
            "mimic_labeller": MIMIC_LABELLER, "nih_labeller": NIH_LABELLER,
            "nih_age_effect_on_cardiac_factor": AGE_EFFECT_ON_CARDIAC,
            "no_finding_rule": "positive exactly when no finding other than Support Devices is present",
            **({"padchest": padchest_knobs()} if cfg.n_padchest_studies else {})}


def padchest_knobs() -> dict:
    """The PadChest-like site's knobs as the world card records them."""
    return {"prevalence_targets": PADCHEST_PREVALENCE, "prevalence_source": PADCHEST_PREVALENCE_SOURCE,
            "drawn_as": padchest_drawers(),
            "factor_loadings": padchest_loadings(), "physician_share": PADCHEST_PHYSICIAN_SHARE,
            "labeller": PADCHEST_LABELLER, "frontal_projection": PADCHEST_FRONTAL, "extra_views": PADCHEST_EXTRA_VIEWS,
            "age_mean_sd": PADCHEST_AGE, "age_effect_on_cardiac_and_chronic_factors": AGE_EFFECT_ON_CARDIAC,
            "mapping": "data/padchest_mapping.csv (labels scored through it; normal alone is No Finding)",
            "stream": "[seed, 4]"}


def knobs_hash(cfg: WorldConfig) -> str:
    return hashlib.sha256(json.dumps(knobs(cfg), sort_keys=True).encode()).hexdigest()[:16]


def site_seeds(cfg: WorldConfig) -> dict[str, int]:
    """The seed of each site's random stream, drawn in this order from the world seed."""
    rng = np.random.default_rng(cfg.seed)
    return {site: rng.integers(2 ** 63) for site in ("mimic", "chexpert", "nih", "pretrain")}


def _variant_card(cfg: WorldConfig, factor: str) -> str:
    code = hashlib.sha256(Path(__file__).read_bytes() + (Path(__file__).parent / "phantom_render.py").read_bytes())
    card = {"factor": factor, "world": asdict(cfg), "site": asdict(nih_variant(factor)), "code": code.hexdigest()[:16]}
    return json.dumps(card, indent=2, sort_keys=True)


def nih_variant_current(root: str | Path, cfg: WorldConfig, factor: str) -> bool:
    """Whether ``root`` holds this variant, written by this code (its ``variant_card.json``)."""
    card = Path(root) / "variant_card.json"
    return card.is_file() and card.read_text() == _variant_card(cfg, factor)


def write_nih_variant(root: str | Path, cfg: WorldConfig, factor: str) -> None:
    """The NIH-like site regenerated from the main world's NIH seed with ``factor`` at its MIMIC-like value
    (``nih_variant``), into ``root`` (``ChestX-ray14/``, ``phantom_findings.jsonl``, ``variant_card.json``); the
    main world is not read or touched. Skipped when ``nih_variant_current``."""
    root = Path(root)
    if nih_variant_current(root, cfg, factor):
        return
    site, text = nih_variant(factor), _variant_card(cfg, factor)
    records: list[dict] = []
    write_nih(root, cfg, np.random.default_rng(site_seeds(cfg)["nih"]), records, site)
    (root / RunPaths.FINDINGS).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    (root / "variant_card.json").write_text(text)


def _planted_card(cfg: WorldConfig) -> str:
    code = hashlib.sha256(Path(__file__).read_bytes() + (Path(__file__).parent / "phantom_render.py").read_bytes())
    return json.dumps({"world": asdict(cfg), "code": code.hexdigest()[:16]}, indent=2, sort_keys=True)


def planted_site_current(root: str | Path, cfg: WorldConfig) -> bool:
    """Whether ``root`` holds the MIMIC-like site of ``cfg`` (its shortcut planted), written by this code
    (its ``planted_card.json``)."""
    card = Path(root) / "planted_card.json"
    return card.is_file() and card.read_text() == _planted_card(cfg)


def write_planted_site(root: str | Path, cfg: WorldConfig) -> None:
    """E2: the MIMIC-like site regenerated from the world's MIMIC seed with ``cfg``'s shortcut (``shortcut_rho``,
    ``shortcut_finding``, ``shortcut_radius``; with ``shortcut_only`` the finding is not drawn, each such image
    rendered from the same random state without it) into ``root`` (``mimic-cxr-jpg/``, ``phantom_findings.jsonl``,
    ``planted_card.json``).
    The marker draws from its own stream, so only the marked images differ from the main world's; the main world
    is not read or touched. Skipped when ``planted_site_current``."""
    root = Path(root)
    if not cfg.shortcut_rho > 0:
        raise ValueError(f"write_planted_site plants E2's marker: world.shortcut_rho must be > 0, "
                         f"got {cfg.shortcut_rho}")
    if planted_site_current(root, cfg):
        return
    records: list[dict] = []
    write_mimic(root, cfg, np.random.default_rng(site_seeds(cfg)["mimic"]), records)
    (root / RunPaths.FINDINGS).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    (root / "planted_card.json").write_text(_planted_card(cfg))


def generate_world(root: str | Path, cfg: WorldConfig, force: bool = False) -> dict:
    """Write the whole world under ``root`` (skipped when the world card shows the same knobs)."""
    root = Path(root)
    card_path = root / "world_card.json"
    if card_path.exists() and not force:
        card = json.loads(card_path.read_text())
        if card.get("knobs_hash") == knobs_hash(cfg):
            return card
    seeds = site_seeds(cfg)
    records: list[dict] = []
    mimic = write_mimic(root, cfg, np.random.default_rng(seeds["mimic"]), records)
    chex = write_chexpert(root, cfg, np.random.default_rng(seeds["chexpert"]), records)
    nih = write_nih(root, cfg, np.random.default_rng(seeds["nih"]), records)
    pre = write_pretraining(root, cfg, np.random.default_rng(seeds["pretrain"]))
    vision = write_vision_pretraining(root, cfg)
    pad = (write_padchest(root, cfg, np.random.default_rng([cfg.seed, 4]), records) if cfg.n_padchest_studies
           else None)
    (root / RunPaths.FINDINGS).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    card = {"knobs_hash": knobs_hash(cfg), **knobs(cfg),
            "realised_prevalence": {"mimic_studies": mimic["truth"].mean().round(4).to_dict(),
                                    "chexpert_test_studies": chex["truth"].mean().round(4).to_dict(),
                                    "nih_images": nih["truth"].mean().round(4).to_dict()},
            "counts": {"mimic_studies": mimic["studies"], "mimic_images": mimic["images"],
                       "chexpert_test_studies": chex["studies"], "chexpert_test_images": chex["images"],
                       "nih_images": nih["images"], "pretrain": pre,
                       "vision_pretrain": vision},
            "layouts": {"mimic": "mimic-cxr-jpg/2.0.0", "chexpert": "CheXpert-v1.0", "nih": "ChestX-ray14",
                        "pretrain": f"pretrain/{{medical,general}}/{CAPTIONS}",
                        "vision_pretrain": f"pretrain/vision/{{medical,general}}/{CAPTIONS}"}}
    if pad is not None:
        card["realised_prevalence"]["padchest_studies"] = pad["truth"].mean().round(4).to_dict()
        card["counts"].update(padchest_studies=pad["studies"], padchest_images=pad["images"],
                              padchest_physician_studies=pad["physician_studies"])
        card["layouts"]["padchest"] = f"PadChest/{PADCHEST_TABLE} + PadChest/<ImageDir>/<ImageID>"
    card_path.write_text(json.dumps(card, indent=2, sort_keys=True))
    return json.loads(card_path.read_text())   # the card as a later run reads it back: same keys, same order


def read_findings(root: str | Path) -> list[dict]:
    """What was drawn in each phantom image of a world folder, one record per image (in writing order)."""
    path = Path(root) / RunPaths.FINDINGS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the phantom world is written by 00_setup (world.enabled)")
    return [json.loads(line) for line in path.read_text().splitlines()]


def load_findings(root: str | Path) -> dict[str, dict]:
    """Relative image path -> what was rendered in it (for the template teacher); empty without a phantom world."""
    path = Path(root) / RunPaths.FINDINGS
    return {r["path"]: r for r in read_findings(root)} if path.exists() else {}
