"""Instruction data of the tiny bases: held-out prompts, determinism, domains, the card."""
import json

import pytest

from chexreason_utils.train import instruct
from chexreason_utils import prompts
from chexreason_utils.labels import CHEXPERT_LABELS


@pytest.fixture(scope="module")
def examples(small_world):
    root, _ = small_world
    return {role: instruct.build_examples(root / "pretrain" / role, role, 600, seed=0) for role in instruct.DOMAINS}


def test_no_held_out_sentence_appears_in_the_instruction_data(examples):
    held = instruct.held_out_sentences()
    assert "Write nothing outside these two blocks." in held and len(held) == 16
    for frame in examples.values():
        instruct.check_held_out(frame)
        text = "\n".join(frame["instruction"]) + "\n".join(frame["target"])
        assert not [s for s in held if s in text]
        assert "You are reading a frontal chest radiograph." not in text


def test_check_held_out_names_the_sentence(examples):
    bad = examples["medical"].head(2).copy()
    bad.loc[bad.index[1], "instruction"] = "Look. " + prompts.PROMPT_VARIANTS["hypothesis"]
    with pytest.raises(ValueError, match="column 'instruction' holds the held-out sentence"):
        instruct.check_held_out(bad)


def test_same_seed_same_data_other_seed_other_data(small_world, examples):
    root, _ = small_world
    again = instruct.build_examples(root / "pretrain" / "medical", "medical", 600, seed=0)
    assert again.equals(examples["medical"])
    other = instruct.build_examples(root / "pretrain" / "medical", "medical", 600, seed=1)
    assert not other["instruction"].equals(examples["medical"]["instruction"])


def test_every_format_appears_and_the_general_data_never_names_a_finding(examples):
    for role, frame in examples.items():
        assert set(frame["format"]) == set(instruct.FORMATS)
        assert {f"{a}/{b}" for a, b in instruct.TAG_PAIRS} <= set(frame["tags"])
    general = "\n".join(examples["general"]["instruction"]) + "\n".join(examples["general"]["target"])
    assert not [lbl for lbl in CHEXPERT_LABELS if lbl in general]
    medical_answers = examples["medical"].loc[examples["medical"]["format"] == "single_tag"]
    assert medical_answers["target"].str.contains("|".join(CHEXPERT_LABELS)).all()


def test_a_tagged_pair_target_follows_its_instruction(examples):
    frame = examples["medical"]
    row = frame.loc[(frame["tags"] == "think/solution") & (frame["separator"] == ", ")].iloc[0]
    parsed = prompts.parse_output(row["target"])
    assert parsed.valid and parsed.labels and "<think>" in row["instruction"]


def test_card_counts_and_is_deterministic(examples):
    card = instruct.card(examples["general"], "general")
    assert card["examples"] == 600 and sum(card["formats"].values()) == 600
    assert card["finding_names_in_targets"] is False and card["domain"] == instruct.DOMAINS["general"]
    assert json.dumps(card, sort_keys=True) == json.dumps(instruct.card(examples["general"], "general"), sort_keys=True)


def test_a_pool_without_drawn_contents_is_a_clear_error(tmp_path):
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": "a.png", "text": "A picture."}) + "\n")
    with pytest.raises(ValueError, match="captions.jsonl: rows need a 'objects' field"):
        instruct.build_examples(tmp_path, "general", 4, seed=0)
    with pytest.raises(ValueError, match="unknown role"):
        instruct.Domain("radiology")
