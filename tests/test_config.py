import pytest

from chexreason_utils.config import ConfigError, available_profiles, load_profile, parse_override


def test_three_profiles_load_with_the_paper_recipe_in_paper():
    assert {"smoke", "tiny", "paper"} <= set(available_profiles())
    paper = load_profile("paper")
    g = paper.grpo
    assert (g.num_generations, g.temperature, g.top_p, g.beta, g.loss_type, g.epsilon, g.epsilon_high) == (
        4, 0.8, 0.95, 0.15, "dr_grpo", 0.15, 0.22)
    s = paper.sft
    assert (s.lora_r, s.lora_alpha, s.lora_dropout, s.learning_rate, s.weight_decay, s.max_grad_norm) == (
        16, 32, 0.1, 5e-5, 0.01, 5.0)
    assert s.batch_size * s.grad_accum == 8 and s.early_stopping_patience == 2 and s.use_lora
    assert (paper.sampling.n_sft, paper.sampling.n_rl, paper.sampling.n_val) == (2000, 1000, 500)
    assert paper.models.medical == "google/medgemma-4b-it"


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft: {learning_rat: 0.1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'sft\.learning_rat'"):
        load_profile(bad)


def test_wrong_type_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo: {max_steps: many}\n")
    with pytest.raises(ConfigError, match=r"grpo\.max_steps must be int, got 'many'"):
        load_profile(bad)


def test_unknown_profile_and_missing_file():
    with pytest.raises(ConfigError, match="unknown profile 'tinyy'.*smoke"):
        load_profile("tinyy")
    with pytest.raises(ConfigError, match="profile file not found"):
        load_profile("/nonexistent/x.yaml")


def test_overrides_are_typed_and_checked():
    cfg = load_profile("smoke", dict([parse_override("sft.max_steps=7"), parse_override("grpo.hard.lambda_len=0.5")]))
    assert cfg.sft.max_steps == 7 and cfg.grpo.hard.lambda_len == 0.5
    with pytest.raises(ConfigError, match="unknown key 'sft.nope'"):
        load_profile("smoke", {"sft.nope": 1})
    with pytest.raises(ConfigError, match="must be float"):
        load_profile("smoke", {"sft.learning_rate": "fast"})
    with pytest.raises(ConfigError, match="not of the form"):
        parse_override("novalue")


def test_config_reads_record_leaves_and_whole_sections_handed_on():
    import copy
    import pickle
    from dataclasses import asdict, replace

    from chexreason_utils import config_reads
    from chexreason_utils.config import load_profile

    reads = []
    cfg = config_reads.track(load_profile("smoke"), reads.append)
    assert cfg.sft.batch_size == 8 and reads == ["sft.batch_size"]
    replace(cfg.models, tiny_vocab=5)                      # every field but the replaced one is read
    assert "models.tiny_hidden" in reads and "models.tiny_vocab" not in reads
    asdict(cfg.sampling)
    assert "sampling.n_sft" in reads
    restored = pickle.loads(pickle.dumps(cfg.grpo))        # handed to a worker process: the whole section
    assert "grpo" in reads and type(restored).__name__ == "GRPOConfig" and restored.hard.lambda_len == 0.1
    assert type(restored) is type(load_profile("smoke").grpo)     # a plain config on the other side
    copy.deepcopy(cfg.diagnostics)
    assert "diagnostics" in reads
    assert config_reads.minimal(["grpo.beta", "grpo", "seed", "sft.lr", "sft.lr"]) == ["grpo", "seed", "sft.lr"]
    values = config_reads.values(load_profile("smoke"), ["workers", "seed", ""])
    assert set(values) == {""}                             # '' covers all; workers never counts
    assert values == config_reads.values(load_profile("smoke", {"workers": 7}), [""])
    assert values != config_reads.values(load_profile("smoke", {"seed": 7}), [""])
