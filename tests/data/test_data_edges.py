"""Real-file edge cases: missing NIH split lists, impossible ages, the NIH selection report, pool shrinkage."""
import numpy as np
import pandas as pd
import pytest

from chexreason_utils.data import DataLayoutError, load_chexpert, load_nih
from chexreason_utils.labels import CHEXPERT_LABELS
from chexreason_utils.data.sampling import select_test_set, split_train_pool

HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"


def _nih(root, rows, lists=True):
    root.mkdir(parents=True)
    (root / "Data_Entry_2017_v2020.csv").write_text(HEADER + "\n".join(rows) + "\n")
    if lists:
        (root / "test_list.txt").write_text("\n".join(r.split(",")[0] for r in rows) + "\n")
    return root


def test_missing_split_list_is_an_error_naming_the_file_and_layout(tmp_path):
    root = _nih(tmp_path / "ChestX-ray14", ["00000001_000.png,Edema,0,1,50,M,PA"], lists=False)
    with pytest.raises(DataLayoutError, match=r"test_list.txt \(not found\), one image name per line"):
        load_nih(root, splits=["test"], check_images=False)
    assert len(load_nih(root, check_images=False).dataset) == 1      # no split asked: nothing to assign


def test_impossible_and_unreadable_ages_are_counted_drops(tmp_path):
    rows = ["00000001_000.png,Edema,0,1,412Y,M,PA", "00000002_000.png,Edema,0,2,058Y,F,PA",
            "00000003_000.png,Edema,0,3,old,F,PA", "00000004_000.png,Edema,0,4,011M,F,AP"]
    res = load_nih(_nih(tmp_path / "ChestX-ray14", rows), splits=["test"], check_images=False)
    assert res.dropped == {"age over 120 years": 1, "unreadable age": 1}
    assert sorted(res.dataset["age"]) == pytest.approx([11 / 12, 58])


def _nih_like(n_edema=5, n_effusion_only=10, n_normal=35):
    labels = np.zeros((n_edema + n_effusion_only + n_normal, 14), dtype=np.int8)
    labels[:n_edema, CHEXPERT_LABELS.index("Edema")] = 1
    labels[n_edema:n_edema + n_effusion_only, CHEXPERT_LABELS.index("Pleural Effusion")] = 1
    labels[n_edema + n_effusion_only:, CHEXPERT_LABELS.index("No Finding")] = 1
    return pd.DataFrame({"patient_id": [str(i) for i in range(len(labels))]}), labels


def test_nih_selection_states_the_empty_truth_rule_and_reports_counts():
    frame, labels = _nih_like()
    scored = ("Edema", "No Finding")
    picked, report = select_test_set(frame, labels, 30, scored, "random", seed=0)
    assert labels[picked.index][:, CHEXPERT_LABELS.index("Pleural Effusion")].sum() == 0
    assert report.counts.sum() == 30 and "10 images with no positive among the scored labels excluded" in report.describe()
    assert "No Finding" in report.over                             # above max_fraction 0.30, reported
    kept, report = select_test_set(frame, labels, 50, scored, "random", seed=0, without_scored_positive="keep")
    assert len(kept) == 50 and "10 selected images have no scored positive" in report.describe()
    assert report.shortfalls == {} and report.fractions["Edema"] == pytest.approx(0.10)


def test_small_pool_error_says_sft_patients_were_removed_first():
    labels = np.zeros((40, 14), dtype=np.int8)
    labels[:, 0] = 1
    frame = pd.DataFrame({"patient_id": [str(i // 4) for i in range(40)]})   # 10 patients, 4 images each
    with pytest.raises(ValueError, match=r"only 12 are available.*already selected for sft; 15 more removed because "
                                         r"their patients"):
        split_train_pool(frame, labels, 13, 13, 1, 0.05, 0.3, 4.0, seed=0)


def test_an_empty_split_list_or_one_naming_no_known_image_is_an_error_naming_the_file(tmp_path):
    root = _nih(tmp_path / "ChestX-ray14", ["00000001_000.png,Edema,0,1,50,M,PA"], lists=False)
    (root / "test_list.txt").write_text("\n")
    with pytest.raises(DataLayoutError, match=r"test_list.txt is empty: expected one image name per line"):
        load_nih(root, splits=["test"], check_images=False)
    (root / "test_list.txt").write_text("99999999_000.png\n")
    with pytest.raises(DataLayoutError, match=r"test_list.txt: none of its image names is in Data_Entry_2017_v2020"):
        load_nih(root, splits=["test"], check_images=False)


def _chexpert(root, value):
    root.mkdir(parents=True)
    rows = [["test/patient00001/study1/view1_frontal.jpg", *["0"] * len(CHEXPERT_LABELS)] for _ in range(3)]
    rows[1][1 + CHEXPERT_LABELS.index("Edema")] = value
    header = ",".join(["Path", *CHEXPERT_LABELS])
    (root / "test_labels.csv").write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return root


@pytest.mark.parametrize("value", ["1", "-1.0", ""])
def test_chexpert_label_values_1_0_minus_1_and_blank_are_read(tmp_path, value):
    res = load_chexpert(_chexpert(tmp_path / "CheXpert-v1.0", value), "test", check_images=False)
    assert res.total_rows == 3


def test_a_non_binary_chexpert_label_names_file_column_row_and_the_allowed_values(tmp_path):
    with pytest.raises(DataLayoutError, match=r"test_labels.csv: column 'Edema', row 2 \(line 3\): 'yes' is not a "
                                              r"label value; allowed: 1, 0, -1 or blank"):
        load_chexpert(_chexpert(tmp_path / "CheXpert-v1.0", "yes"), "test", check_images=False)


def test_a_non_binary_mimic_label_names_the_label_file(tmp_path):
    from chexreason_utils.data import load_mimic
    from chexreason_utils.data.mimic import CHEXPERT_CSV, METADATA_CSV, SPLIT_CSV
    from chexreason_utils.labels import CHEXPERT_CSV_ORDER

    root = tmp_path / "mimic"
    root.mkdir()
    labels = pd.DataFrame({"subject_id": [10000001], "study_id": [50000001],
                           **{c: [2.0 if c == "Edema" else None] for c in CHEXPERT_CSV_ORDER}})
    labels.to_csv(root / CHEXPERT_CSV, index=False)
    pd.DataFrame({"dicom_id": ["d1"], "subject_id": [10000001], "study_id": [50000001],
                  "ViewPosition": ["PA"]}).to_csv(root / METADATA_CSV, index=False)
    pd.DataFrame({"dicom_id": ["d1"], "split": ["train"]}).to_csv(root / SPLIT_CSV, index=False)
    with pytest.raises(DataLayoutError, match=r"chexpert.csv.gz: column 'Edema', row 1 \(line 2\): '2.0' is not"):
        load_mimic(root, check_images=False)


def test_manifest_paths_inside_the_run_are_stored_relative_and_read_back_absolute(tmp_path):
    from chexreason_utils.data.manifests import load_manifest, write_manifest
    from chexreason_utils.paths import RunPaths

    paths = RunPaths.for_profile("smoke", tmp_path / "run", tmp_path / "fig")
    inside = str(paths.root / "world" / "nih" / "a.png")
    frame = pd.DataFrame({"image_id": ["a", "b"], "image_path": [inside, "/data/ChestX-ray14/images/b.png"],
                          "labels": [["Edema"], []]})
    write_manifest(paths, "nih_test", frame)
    written = pd.read_csv(paths.manifest_file("nih_test"))
    assert list(written["image_path"]) == ["world/nih/a.png", "/data/ChestX-ray14/images/b.png"]
    moved = RunPaths.for_profile("smoke", tmp_path / "moved", tmp_path / "fig")
    paths.root.rename(moved.root)
    assert list(load_manifest(moved, "nih_test")["image_path"]) == [str(moved.root / "world" / "nih" / "a.png"),
                                                                      "/data/ChestX-ray14/images/b.png"]
    mtime = moved.manifest_file("nih_test").stat().st_mtime_ns
    write_manifest(moved, "nih_test", load_manifest(moved, "nih_test").rename(columns={"truth": "labels"}))
    assert moved.manifest_file("nih_test").stat().st_mtime_ns == mtime     # the same bytes: not rewritten


def test_setup_of_the_paper_profile_is_the_inventory_or_an_error_naming_the_missing_files(tmp_path):
    from chexreason_utils.config import load_profile
    from chexreason_utils.paths import RunPaths
    from chexreason_utils.steps.setup import inventory

    roots = {"mimic": tmp_path / "mimic", "chexpert": tmp_path / "chexpert", "nih": tmp_path / "nih"}
    cfg = load_profile("paper", {f"data.{k}_root": str(v) for k, v in roots.items()})
    assert not cfg.world.enabled and not cfg.models.build_tiny     # 00 takes the inventory branch, builds no model
    paths = RunPaths(tmp_path / "run", tmp_path / "figures")
    with pytest.raises(DataLayoutError, match="6 data file.*mimic-cxr-2.0.0-chexpert.csv.gz.*test_list.txt"):
        inventory(cfg, paths)
    for folder, names in ((roots["mimic"], [f"mimic-cxr-2.0.0-{s}.csv.gz" for s in ("chexpert", "metadata", "split")]),
                          (roots["chexpert"], ["test_labels.csv"]),
                          (roots["nih"], ["Data_Entry_2017_v2020.csv", "test_list.txt"])):
        folder.mkdir()
        for name in names:
            (folder / name).write_text("")
    table = inventory(cfg, paths)
    assert table["present"].iloc[:6].all() and table["item"].iloc[-3:].tolist() == ["medical model", "general model",
                                                                                     "PadChest"]
    assert table["where"].iloc[-1] == "not scored (data.padchest_root is empty)"
    assert not (paths.root / "world").exists()
    pad = tmp_path / "padchest"
    with pytest.raises(DataLayoutError, match="1 data file.*PadChest labels.*PADCHEST_chest_x_ray"):
        inventory(load_profile("paper", {**{f"data.{k}_root": str(v) for k, v in roots.items()},
                                         "data.padchest_root": str(pad)}), paths)


def test_the_tiny_bases_are_built_only_from_tiny_models(tmp_path):
    from chexreason_utils.config import load_profile
    from chexreason_utils.paths import RunPaths
    from chexreason_utils.steps.setup import instruction_examples

    with pytest.raises(ValueError, match="models.medical = 'google/medgemma-4b-it' is not a tiny model"):
        instruction_examples(load_profile("paper"), RunPaths(tmp_path / "run", tmp_path / "figures"))


def test_the_instruction_preview_reads_the_same_wherever_the_run_folder_lies(tmp_path):
    import pandas as pd

    from chexreason_utils.paths import RunPaths
    from chexreason_utils.steps.setup import instruction_preview

    shown = []
    for root in (tmp_path / "a", tmp_path / "a-much-longer-folder-name"):
        paths = RunPaths(root / "runs" / "tiny", root / "figures")
        images = [str(paths.world / "pretrain" / "medical" / "images" / f"img-{i:05d}.png") for i in range(5)]
        examples = pd.DataFrame({"instruction": ["Name the findings."] * 5, "image": images})
        shown.append(instruction_preview(examples, paths))
    assert len(shown[0]) == 3 and shown[0].equals(shown[1])
    assert shown[0]["image"].iloc[0] == "world/pretrain/medical/images/img-00000.png"
