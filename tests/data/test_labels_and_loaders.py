"""Label ontologies and policies; loaders on small fixture folders in each official layout."""
import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexreason_utils.data import DataLayoutError, load_chexpert, load_mimic, load_nih
from chexreason_utils.labels import (CHEXPERT_LABELS, NIH_EVAL_LABELS_PAPER, NIH_EVAL_LABELS_WITH_EFFUSION, NIH_LABELS,
                                     apply_policy, canonical_label, format_label_list, nih_to_chexpert)


def test_ontologies_and_mapping():
    assert len(CHEXPERT_LABELS) == 14 and len(NIH_LABELS) == 14
    assert len(NIH_EVAL_LABELS_PAPER) == 9 and "Pleural Effusion" not in NIH_EVAL_LABELS_PAPER
    assert "Pleural Effusion" in NIH_EVAL_LABELS_WITH_EFFUSION
    assert nih_to_chexpert(["Mass", "Nodule", "Pleural_Thickening", "Infiltration"]) == ["Lung Lesion", "Pleural Other"]
    assert canonical_label("  pleural   EFFUSION ") == "Pleural Effusion" and canonical_label("Effusion") is None
    assert format_label_list(["Support Devices", "Atelectasis", "Atelectasis"]) == "Atelectasis, Support Devices"


def test_uncertainty_policies():
    values = np.array([[1, -1, np.nan, 0], [0, 0, np.nan, np.nan]])
    present, drop = apply_policy(values, "positive_only")
    assert present.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]] and not drop.any()
    present, _ = apply_policy(values, "uncertain_as_positive")
    assert present.tolist()[0] == [1, 1, 0, 0]
    _, drop = apply_policy(values, "ignore_uncertain")
    assert drop.tolist() == [True, False]
    with pytest.raises(ValueError, match="unknown uncertainty policy"):
        apply_policy(values, "optimistic")


def _jpg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)


def _csv_gz(frame, path):
    with gzip.open(path, "wt") as fh:
        frame.to_csv(fh, index=False)


LABEL_COLS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
              "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
              "Fracture", "Support Devices"]


def mimic_fixture(root):
    labels = pd.DataFrame([{"subject_id": 10000032, "study_id": 50414267, "Cardiomegaly": 1, "Edema": -1},
                           {"subject_id": 10000032, "study_id": 53189527, "Edema": -1},
                           {"subject_id": 10000764, "study_id": 57375967, "No Finding": 1}]).reindex(
        columns=["subject_id", "study_id", *LABEL_COLS])
    meta = pd.DataFrame({"dicom_id": ["a1", "a2", "b1", "c1", "c2"],
                         "subject_id": [10000032, 10000032, 10000032, 10000764, 10000764],
                         "study_id": [50414267, 50414267, 53189527, 57375967, 57375967],
                         "ViewPosition": ["PA", "LATERAL", "AP", "AP", "PA"]})
    split = meta[["dicom_id", "study_id", "subject_id"]].assign(split="train")
    root.mkdir(parents=True)
    _csv_gz(labels, root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    _csv_gz(meta, root / "mimic-cxr-2.0.0-metadata.csv.gz")
    _csv_gz(split, root / "mimic-cxr-2.0.0-split.csv.gz")
    for _, r in meta.iterrows():
        if r["dicom_id"] != "c2":          # c2 is missing on disk
            s = str(r["subject_id"])
            _jpg(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{r['study_id']}" / f"{r['dicom_id']}.jpg")
    return root


def test_mimic_records_frontal_filter_policies_and_drops(tmp_path):
    root = mimic_fixture(tmp_path / "mimic-cxr-jpg" / "2.0.0")
    res = load_mimic(root)
    assert res.dropped == {"lateral or other view": 1, "no usable label": 1, "missing image": 1}
    assert sorted(res.dataset["image_id"]) == ["a1", "c1"]
    row = res.dataset.filter(lambda r: r["image_id"] == "a1")[0]
    assert row["view"] == "PA" and row["patient_id"] == "10000032" and row["image"].size == (8, 8)
    assert row["labels"][CHEXPERT_LABELS.index("Cardiomegaly")] == 1 and row["labels"][CHEXPERT_LABELS.index("Edema")] == 0
    assert '"Edema": -1.0' in row["source_labels"]
    lenient = load_mimic(root, policy="uncertain_as_positive")
    assert sorted(lenient.dataset["image_id"]) == ["a1", "b1", "c1"]
    strict = load_mimic(root, policy="ignore_uncertain")
    assert strict.dropped["uncertain label (ignore_uncertain)"] == 2
    assert "5 rows read, 2 kept" in str(res)


def test_truncated_and_unreadable_images_are_counted_and_named(tmp_path):
    root = mimic_fixture(tmp_path / "mimic-cxr-jpg" / "2.0.0")
    a1, c1 = (next(root.rglob(f"{name}.jpg")) for name in ("a1", "c1"))
    Image.fromarray((np.random.default_rng(0).random((256, 256)) * 255).astype(np.uint8)).save(a1, quality=95)
    data = a1.read_bytes()
    a1.write_bytes(data[: len(data) // 2])       # cut in half: the header still opens
    with Image.open(a1) as im:
        assert im.size == (256, 256)
    c1.write_bytes(b"not an image at all")
    res = load_mimic(root)
    assert res.dropped == {"lateral or other view": 1, "no usable label": 1, "missing image": 1,
                           "truncated image": 1, "unreadable image": 1}
    assert len(res.dataset) == 0
    report = res.report().set_index("reason")
    assert report.loc["truncated image", "files"] == str(a1)
    assert report.loc["unreadable image", "files"] == str(c1)
    assert report.loc["missing image", "files"].endswith("c2.jpg")


def test_mimic_errors_name_what_was_expected(tmp_path):
    with pytest.raises(DataLayoutError, match="MIMIC-CXR-JPG root not found"):
        load_mimic(tmp_path / "absent")
    root = mimic_fixture(tmp_path / "m")
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(DataLayoutError, match=r"split file: expected .*mimic-cxr-2.0.0-split.csv.gz"):
        load_mimic(root)
    root2 = mimic_fixture(tmp_path / "m2")
    _csv_gz(pd.DataFrame({"dicom_id": ["a1"], "subject_id": [1], "study_id": [2]}), root2 / "mimic-cxr-2.0.0-metadata.csv.gz")
    with pytest.raises(DataLayoutError, match=r"metadata.csv.gz: missing column\(s\) 'ViewPosition'"):
        load_mimic(root2)


def test_chexpert_train_and_test_layouts(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    train = pd.DataFrame({"Path": ["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
                                   "CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg"],
                          "Sex": ["Female", "Female"], "Age": [68, 68], "Frontal/Lateral": ["Frontal", "Lateral"],
                          "AP/PA": ["AP", None], "Pleural Effusion": [1.0, 1.0]}).reindex(
        columns=["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABEL_COLS])
    root.mkdir()
    train.to_csv(root / "train.csv", index=False)
    for p in train["Path"]:
        _jpg(tmp_path / p)
    res = load_chexpert(root, "train")
    assert res.dropped == {"lateral view": 1}
    row = res.dataset[0]
    assert row["view"] == "AP" and row["sex"] == "Female" and row["age"] == 68 and row["patient_id"] == "patient00001"
    test = pd.DataFrame({"Study": ["test/patient64541/study1/view1_frontal.jpg", "test/patient64541/study1/view2_lateral.jpg",
                                   "test/patient64542/study1/view1_frontal.jpg"],
                         "No Finding": [0, 0, 1], "Cardiomegaly": [1, 1, 0]}).reindex(columns=["Study", *LABEL_COLS]).fillna(0)
    test.to_csv(root / "test_labels.csv", index=False)
    for p in test["Study"]:
        _jpg(root / p)
    res = load_chexpert(root, "test")
    assert len(res.dataset) == 2 and res.dropped == {"lateral view": 1}
    assert res.dataset[0]["view"] == "Frontal"
    with pytest.raises(DataLayoutError, match="CheXpert valid labels: expected"):
        load_chexpert(root, "valid")


NIH_HEADER_2017 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                   "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n")


def test_nih_real_header_ages_splits_mapping_and_drops(tmp_path):
    root = tmp_path / "ChestX-ray14"
    root.mkdir()
    rows = ["00000001_000.png,Cardiomegaly|Emphysema,0,1,058Y,M,PA,2682,2749,0.143,0.143,",
            "00000001_001.png,Infiltration,1,1,58,M,PA,2894,2729,0.143,0.143,",
            "00000002_000.png,Mass|Nodule|Effusion,0,2,81,F,AP,2500,2048,0.168,0.168,",
            "00000003_000.png,No Finding,0,3,40,F,PA,2048,2500,0.168,0.168,",
            "00000004_000.png,Pneumothorax,0,4,30,M,PA,2048,2500,0.168,0.168,"]
    (root / "Data_Entry_2017.csv").write_text(NIH_HEADER_2017 + "\n".join(rows) + "\n")
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n")
    (root / "test_list.txt").write_text("00000002_000.png\n00000003_000.png\n00000004_000.png\n")
    for i, name in enumerate(["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"]):
        folder = root / (f"images_00{i % 2 + 1}" if i else "images") / ("images" if i else "")
        _jpg(folder / name)
    res = load_nih(root)
    assert res.dropped == {"no label mappable to CheXpert": 1, "missing image": 1}
    by_id = {r["image_id"]: r for r in res.dataset}
    assert by_id["00000001_000.png"]["age"] == 58 and by_id["00000001_000.png"]["split"] == "train_val"
    mass = by_id["00000002_000.png"]
    assert [CHEXPERT_LABELS[i] for i, v in enumerate(mass["labels"]) if v] == ["Lung Lesion", "Pleural Effusion"]
    assert mass["sex"] == "F" and "Mass|Nodule|Effusion" in mass["source_labels"]
    assert sorted(load_nih(root, splits=["test"]).dataset["image_id"]) == ["00000002_000.png", "00000003_000.png"]
    (root / "Data_Entry_2017.csv").write_text("Image Index,Labels\nx.png,Mass\n")
    with pytest.raises(DataLayoutError, match="missing column.*'Finding Labels'"):
        load_nih(root)


def test_label_lists_are_the_same_in_every_process():
    """Names outside the table (the phantom world's NIH names) once came out in set order, which differs from
    process to process, and so did the tiny tokenizers trained on those lists."""
    import os
    import subprocess
    import sys

    code = "from chexreason_utils.labels import format_label_list as f; print(f(['Nodule', 'Effusion', 'Mass', 'Edema']))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(4)}
    assert outs == {"Edema, Effusion, Mass, Nodule\n"}


def test_manifest_labels_round_trip_as_json_lists_and_bad_cells_name_file_and_column(tmp_path):
    from chexreason_utils.data.manifests import load_manifest, write_manifest
    from chexreason_utils.evaluation.metrics import label_matrix
    from chexreason_utils.paths import RunPaths

    paths = RunPaths.for_profile("smoke", tmp_path, tmp_path / "fig")
    frame = pd.DataFrame({"image_id": ["007", "008"], "image_path": ["a.png", "b.png"], "patient_id": ["01", "02"],
                          "labels": [["Edema", "Pleural Effusion"], []]})
    write_manifest(paths, "val", frame)
    assert '"[""Edema"", ""Pleural Effusion""]"' in paths.manifest_file("val").read_text()
    loaded = load_manifest(paths, "val")
    assert loaded["truth"].tolist() == [["Edema", "Pleural Effusion"], []] and "labels" not in loaded
    assert loaded["image_id"].tolist() == ["007", "008"]
    assert label_matrix(loaded).sum(axis=1).tolist() == [2, 0]
    paths.manifest_file("val").write_text("image_id,image_path,labels\n1,a.png,Edema|Pleural Effusion\n")
    with pytest.raises(ValueError, match=r"val\.csv: column 'labels', row 0: 'Edema\|Pleural Effusion'"):
        load_manifest(paths, "val")
