"""The second truth: Google's NIH expert relabels (in their file's layout) and the phantom's drawn findings."""
import json

import pytest
from PIL import Image

from chexreason_utils.data import DataLayoutError
from chexreason_utils.data.nih_relabels import RELABEL_EVAL_LABELS, load_nih_relabels
from chexreason_utils.labels import CHEXPERT_LABELS, vector_to_names
from chexreason_utils.data.second_truth import drawn_truth

RELABEL_HEADER = ("Image Index,Patient ID,Follow-up #,Patient Age,Patient Gender,View Position,Fracture,Pneumothorax,"
                  "Airspace opacity,Nodule or mass\n")


def test_relabel_loader_maps_the_four_findings_explicitly(tmp_path):
    nih = tmp_path / "ChestX-ray14"
    for name in ("00000001_000.png", "00000002_000.png"):
        (nih / "images_001" / "images").mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(nih / "images_001" / "images" / name)
    csv = tmp_path / "test_labels.csv"
    csv.write_text(RELABEL_HEADER + "00000001_000.png,1,0,58,M,PA,NO,YES,YES,NO\n"
                   "00000002_000.png,2,0,40,F,AP,YES,NO,NO,YES\n00000003_000.png,3,0,33,F,PA,NO,NO,NO,NO\n")
    res = load_nih_relabels(csv, nih)
    assert RELABEL_EVAL_LABELS == ("Fracture", "Lung Lesion", "Lung Opacity", "Pneumothorax")
    assert res.dropped == {"missing image": 1} and len(res.dataset) == 2
    first, second = res.dataset[0], res.dataset[1]
    assert vector_to_names(first["labels"], CHEXPERT_LABELS) == ["Lung Opacity", "Pneumothorax"]
    assert vector_to_names(second["labels"], CHEXPERT_LABELS) == ["Fracture", "Lung Lesion"]
    assert first["age"] == 58 and second["view"] == "AP" and json.loads(second["source_labels"])["Nodule or mass"] == "YES"
    csv.write_text(RELABEL_HEADER.replace("Airspace opacity", "Opacity") + "00000001_000.png,1,0,58,M,PA,NO,YES,YES,NO\n")
    with pytest.raises(DataLayoutError, match="missing column.*'Airspace opacity'"):
        load_nih_relabels(csv, nih)
    csv.write_text(RELABEL_HEADER + "00000001_000.png,1,0,58,M,PA,NO,maybe,YES,NO\n")
    with pytest.raises(DataLayoutError, match="'Pneumothorax' must hold YES or NO"):
        load_nih_relabels(csv, nih)


def test_drawn_truth_is_the_phantom_finding_before_labeller_noise(tmp_path):
    records = [{"site": "nih", "image_id": "a.png", "truth": ["Mass", "Effusion"], "findings": {}, "path": "a", "view": "PA"},
               {"site": "nih", "image_id": "b.png", "truth": [], "findings": {}, "path": "b", "view": "PA"},
               {"site": "mimic", "image_id": "c.jpg", "truth": ["Edema"], "findings": {}, "path": "c", "view": "PA"}]
    (tmp_path / "phantom_findings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    truth = drawn_truth(tmp_path)
    assert truth.to_dict("list") == {"image_id": ["a.png", "b.png"],
                                     "truth": [["Lung Lesion", "Pleural Effusion"], ["No Finding"]]}
