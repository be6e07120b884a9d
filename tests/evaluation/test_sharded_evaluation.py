"""Merging evaluation shards: one row per image, model and prompt; cut-off lines redone; shards removed."""
import json

from chexreason_utils.evaluation.evaluate import merge_shards, shard_files


def _row(image_id, fp="m1", raw="x"):
    return {"image_id": image_id, "key": fp, "raw": raw}


def test_merge_shards_keeps_one_row_per_image_and_model(tmp_path):
    out = tmp_path / "sft__val__free_reasoning.jsonl"
    out.write_text(json.dumps(_row("a")) + "\n")
    (tmp_path / "sft__val__free_reasoning.shard-0-of-2.jsonl").write_text(
        json.dumps(_row("a", raw="again")) + "\n" + json.dumps(_row("b")) + "\n")
    (tmp_path / "sft__val__free_reasoning.shard-1-of-2.jsonl").write_text(
        json.dumps(_row("c")) + "\n" + json.dumps(_row("a", fp="m2")) + "\n" + '{"image_id": "d", "mod')
    (tmp_path / "other__val__free_reasoning.shard-0-of-2.jsonl").write_text(json.dumps(_row("z")) + "\n")
    assert merge_shards(out) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["image_id"], r["key"]) for r in rows] == [("a", "m1"), ("b", "m1"), ("c", "m1"), ("a", "m2")]
    assert rows[0]["raw"] == "x" and not shard_files(out)          # "d" was cut off: left to be redone
    assert (tmp_path / "other__val__free_reasoning.shard-0-of-2.jsonl").exists()
