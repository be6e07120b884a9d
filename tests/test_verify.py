"""``chexreason verify`` on a small figures folder written the way 04 writes one (``steps.evaluation.score``, the
prediction export, the claims and competence-gate tables): every number recomputes; one changed prediction is named."""
import gzip

import numpy as np
import pandas as pd
import pytest

from chexreason_utils import __main__ as cli
from chexreason_utils.config import load_profile
from chexreason_utils.evaluation import claims, competence_gate, prediction_export
from chexreason_utils.evaluation.prediction_export import Scored
from chexreason_utils.evaluation.scores import EntryKeys
from chexreason_utils.labels import CHEXPERT_LABELS
from chexreason_utils.queries.entries import zero_shot_prompt
from chexreason_utils.report import plotting
from chexreason_utils.steps import evaluation
from chexreason_utils.training_runs import image_reference
from chexreason_utils.verify import verify

COMMONEST = ("No Finding",)


def _frame(rng, truths, hit: float) -> pd.DataFrame:
    """Answers that repeat the truth with probability ``hit``, else a random label; every 10th is invalid."""
    labels = [list(t) if rng.random() < hit else [str(rng.choice(CHEXPERT_LABELS))] for t in truths]
    return pd.DataFrame({"image_id": [f"img{i:03d}" for i in range(len(truths))], "labels": labels,
                         "valid": [i % 10 != 3 for i in range(len(truths))], "truth": truths})


def _inputs(cfg):
    """(model entries, references, collapse evidence) of a two-seed run: validation, CheXpert, NIH and PadChest."""
    rng = np.random.default_rng(7)
    seeds, fmt, nan = cfg.seeds, cfg.grpo.start_format, float("nan")
    truths = {ds: [sorted(set(rng.choice(CHEXPERT_LABELS, size=rng.integers(1, 3)).tolist())) for _ in range(60)]
              for ds in prediction_export.DATASETS}
    by_seed = lambda ds, hit: {s: _frame(rng, truths[ds], hit + 0.05 * s) for s in seeds}   # noqa: E731
    scored = [Scored(EntryKeys("validation", "medical", "base", fmt, "base", nan, fmt), {},
                     {None: _frame(rng, truths["validation"], 0.2)})]
    scored += [Scored(EntryKeys("validation", role, "sft", f, "sft", 0, f), {}, by_seed("validation", hit))
               for role, hit in (("medical", 0.6), ("general", 0.4)) for f in cfg.sft.formats]
    for ds in prediction_export.DATASETS[1:]:   # the smoke profile scores PadChest too
        scored += [Scored(EntryKeys(ds, "medical", "base", fmt, "base", nan, fmt), {},
                          {None: _frame(rng, truths[ds], 0.2)}),
                   Scored(EntryKeys(ds, "medical", "sft", fmt, "sft", 0, fmt), {}, by_seed(ds, 0.5)),
                   Scored(EntryKeys(ds, "medical", "grpo", cfg.evaluation.test_grpo_reward,
                                    cfg.evaluation.test_grpo_checkpoint, nan, fmt), {0: 8, 1: 12}, by_seed(ds, 0.55))]
    references = [Scored(image_reference.entry_keys(ds, "SFT images"), {}, by_seed(ds, 0.5))
                  for ds in prediction_export.DATASETS]
    run = lambda flags: pd.DataFrame({"step": np.arange(1, 11), "collapsed": flags})   # noqa: E731
    collapse = {"final": [run([False] * 10)] * 2, "unstable": [run([False] * 4 + [True] * 3 + [False] * 3)] * 2,
                "axis": "generation", "min_steps": 2}
    return scored, references, collapse


def write_folder(folder, cfg):
    """What 04 writes for ``verify``: the export, then the claims and the competence gate as its notebook saves them."""
    scored, references, collapse = _inputs(cfg)
    result = evaluation.score(cfg, scored, references, COMMONEST, collapse)
    gate = competence_gate.load()
    prediction_export.write(folder, cfg, scored + references, result.scores, COMMONEST, gate.digest, collapse)
    plotting.save_table(claims.claims_table(result.contrasts, claims.sesoi(cfg), claims.active(cfg)), "claims", folder)
    plotting.save_table(competence_gate.summary(competence_gate.judge(result.scores, gate, zero_shot_prompt(cfg))),
                        "competence_gate", folder)
    return result


@pytest.fixture(scope="module")
def cfg():
    return load_profile("smoke", {"evaluation.n_bootstrap": 50, "arithmetic": "native"})


@pytest.fixture
def folder(tmp_path, cfg):
    write_folder(tmp_path, cfg)
    return tmp_path


def _change_answer(path, entry_keys: dict, image_id: str, labels: str) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    row = (frame["image_id"] == image_id)
    for k, v in entry_keys.items():
        row &= frame[k] == v
    assert row.sum() == 1
    frame.loc[row, "labels"] = labels
    path.write_bytes(gzip.compress(frame.to_csv(index=False).encode(), mtime=0))


def test_every_number_recomputes_from_the_folder_alone(folder):
    outcome = verify(folder)
    assert outcome.differences == [] and outcome.close == 0
    scores = prediction_export.read_scores(folder)
    numbers = scores.drop(columns=["seed"]).select_dtypes("number")
    n_scores = int(numbers.notna().sum().sum() + scores["seed"].notna().sum())
    assert outcome.numbers > n_scores > 1000   # the scores frame's numbers and the claims' and the gate's
    assert "all equal" in outcome.summary(folder)


def test_the_export_round_trips_and_two_writes_are_the_same_bytes(folder, tmp_path_factory, cfg):
    scored, references, _ = _inputs(cfg)
    back = prediction_export.read(folder)
    assert [e.keys for e in back][1:4] == [e.keys for e in scored][1:4] and len(back) == len(scored + references)
    assert back[0].keys._replace(step=0) == scored[0].keys._replace(step=0) and np.isnan(back[0].keys.step)
    grpo = next(e for e in back if e.keys.stage == "grpo")
    assert grpo.steps == {0: 8, 1: 12} and sorted(grpo.by_seed) == [0, 1]
    assert back[0].by_seed[None]["truth"].tolist() == scored[0].by_seed[None]["truth"].tolist()
    again = tmp_path_factory.mktemp("again")
    write_folder(again, cfg)
    for name in [*(f"predictions_{d}.csv.gz" for d in prediction_export.DATASETS), prediction_export.SCORES,
                 prediction_export.INPUTS, "claims.csv", "competence_gate.csv"]:
        assert (folder / name).read_bytes() == (again / name).read_bytes(), name


def test_a_changed_prediction_is_named_by_file_row_and_column(folder):
    _change_answer(folder / "predictions_NIH.csv.gz", {"stage": "sft", "seed": "0"}, "img005", "Pneumothorax|Edema")
    outcome = verify(folder)
    assert outcome.differences
    scores_rows = [d for d in outcome.differences if d.startswith("scores.csv.gz: line ")]
    assert scores_rows and all("dataset=NIH" in d for d in scores_rows)
    assert any("stage=sft" in d and "seed=0" in d and "label=macro" in d and "column 'f1'" in d for d in scores_rows)
    assert any(d.startswith("claims.csv: line ") and "claim=C2" in d for d in outcome.differences)


def test_the_command_exits_0_then_1_naming_the_difference(folder, capsys):
    assert cli.main(["verify", str(folder)]) == 0
    assert "numbers recomputed from the committed predictions" in capsys.readouterr().out
    _change_answer(folder / "predictions_validation.csv.gz", {"stage": "sft", "model": "general", "seed": "1",
                                                               "name": "only_label"}, "img010", "")
    assert cli.main(["verify", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "differ" in out and "dataset=validation, model=general, stage=sft, name=only_label" in out


def test_a_folder_without_the_export_says_what_is_missing(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path)]) == 2
    assert f"{tmp_path / prediction_export.INPUTS} not found" in capsys.readouterr().err


@pytest.mark.pipeline
def test_the_smoke_run_figures_verify(smoke_run):
    paths, _, _ = smoke_run
    outcome = verify(paths.figures)
    assert outcome.differences == [], outcome.summary(paths.figures)
    assert outcome.numbers > 1000

