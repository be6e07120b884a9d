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
    assert "seed" in values and "grpo.hard.lambda_len" in values   # '' covers all, one digest per leaf ...
    assert "workers" not in values                                 # ... but workers never counts
    assert values == config_reads.values(load_profile("smoke", {"workers": 7}), [""])
    edited = config_reads.values(load_profile("smoke", {"seed": 7}), [""])
    assert [k for k in values if values[k] != edited[k]] == ["seed"]   # the changed leaf is named


def test_a_config_pickled_to_a_worker_counts_as_the_keys_the_worker_reads(tmp_path, monkeypatch):
    import pickle

    from chexreason_utils import config_reads

    reads = []
    cfg = config_reads.track(load_profile("smoke"), reads.append)
    monkeypatch.setenv(config_reads.READS_ENV, str(tmp_path / "worker_reads.txt"))
    sent = pickle.dumps(cfg)                              # what run_jobs sends to a worker process
    assert reads == []                                    # sending reads nothing ...
    worker = pickle.loads(sent)                           # ... the worker's copy reports its own reads
    assert worker.evaluation.n_bootstrap == 1000 and worker.grpo.hard.lambda_len == 0.1 and worker.seed == 0
    worker.evaluation.n_bootstrap                         # noqa: B018  (a repeated read is recorded once)
    assert config_reads.read_keys(tmp_path / "worker_reads.txt") == ["evaluation.n_bootstrap",
                                                                     "grpo.hard.lambda_len", "seed"]
    again = pickle.loads(pickle.dumps(worker))            # a worker handing it on keeps the prefixes
    assert again.sft.batch_size == 8 and "sft.batch_size" in config_reads.read_keys(tmp_path / "worker_reads.txt")


@pytest.mark.parametrize("key, value, message", [
    ("evaluation.n_bootstrap", -5, "evaluation.n_bootstrap = -5 is not allowed: >= 1"),
    ("evaluation.nih_label_set", "nosuch", "evaluation.nih_label_set = 'nosuch' is not allowed: one of paper9 | "
                                           "with_effusion"),
    ("sft.teacher", "bogus", "sft.teacher = 'bogus' is not allowed: one of http | template"),
    ("device", "gpu", "device = 'gpu' is not allowed: one of auto | cpu | cuda"),
    ("grpo.max_steps", 0, "grpo.max_steps = 0 is not allowed: >= 1"),
    ("sft.max_steps", 0, "sft.max_steps = 0 is not allowed: -1 or >= 1"),
    ("grpo.top_p", 1.5, r"grpo.top_p = 1.5 is not allowed: > 0 and <= 1"),
    ("sft.formats", ["only_label", "haiku"], r"sft.formats = 'haiku' in \['only_label', 'haiku'\] is not allowed"),
    ("data.mimic_root", "", "data.mimic_root = '' is not allowed: a non-empty string"),
])
def test_values_out_of_range_or_not_a_choice_fail_at_load_naming_key_value_and_what_is_allowed(key, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_profile("smoke", {key: value})
    assert "\n" not in str(caught.value)


def test_every_shipped_profile_passes_the_checks_and_the_edges_of_a_range_are_allowed():
    for name in ("smoke", "tiny", "paper"):
        load_profile(name)
    cfg = load_profile("smoke", {"sft.max_steps": -1, "grpo.top_p": 1.0, "evaluation.prompt_variant": "only_label",
                                 "sampling.min_fraction": 0.0})
    assert cfg.sft.max_steps == -1 and cfg.grpo.top_p == 1.0


def test_a_bad_value_in_a_profile_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo: {num_generations: 1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: grpo\.num_generations = 1 is not allowed: >= 2"):
        load_profile(bad)


def test_one_lr_scheduler_list_serves_both_trainers_and_every_value_in_use_is_accepted():
    import inspect
    import transformers

    from chexreason_utils import config
    assert inspect.getsource(config).count("\nLR_SCHEDULERS =") == 1
    assert set(config.LR_SCHEDULERS) <= {s.value for s in transformers.SchedulerType}
    for name in available_profiles():
        cfg = load_profile(name)
        assert cfg.sft.lr_scheduler in config.LR_SCHEDULERS and cfg.grpo.lr_scheduler in config.LR_SCHEDULERS
    for schedule in ("linear", "constant", "cosine"):          # E1's and Q1's arms, the SFT recipe's cosine
        assert load_profile("smoke", {"grpo.lr_scheduler": schedule, "sft.lr_scheduler": schedule})
    with pytest.raises(ConfigError, match="grpo.lr_scheduler = 'warmup_stable_decay' is not allowed"):
        load_profile("smoke", {"grpo.lr_scheduler": "warmup_stable_decay"})   # needs num_decay_steps: no kwargs given
