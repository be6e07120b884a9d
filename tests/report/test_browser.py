"""The completions browser on a hand-made GRPO run folder: groups, control beside them, stable bytes, clear errors."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexreason_utils.report import browser
from chexreason_utils.paths import RunPaths


def make_run(folder, images, seed=0):
    """A run of 2 prompts x 2 completions per step: step 1 and 3 generate, step 2 reuses step 1 (num_iterations 2)."""
    (folder / "completions").mkdir(parents=True)
    (folder / RunPaths.CONTROL).mkdir()
    rng = np.random.default_rng(seed)
    log, control = [], []
    for step in (1, 2, 3):
        gen = 1 if step == 2 else step
        r = np.random.default_rng(seed * 10 + gen)
        rows = pd.DataFrame({"step": step, "prompt": "p", "image_path": [images[0]] * 2 + [images[1]] * 2,
                             "completion": [[{"role": "assistant", "content": f"<solution>A{gen}{i}</solution>"}]
                                            for i in range(4)],
                             "f1": r.random(4), "length": -r.random(4), "advantage": r.normal(size=4)})
        rows.to_parquet(folder / "completions" / f"completions_{step:05d}.parquet")
        loss = {"step": step, "loss": rng.random()}
        log.append(loss if step == 2 else {**loss, "reward": (rows["f1"] + rows["length"]).mean(),
                                           "rewards/f1/mean": rows["f1"].mean(),
                                           "rewards/length/mean": rows["length"].mean()})
        if step != 2:
            control.append(rows.drop(columns=["prompt", "advantage"]).assign(completion="<solution>B</solution>"))
    pd.DataFrame(log).to_csv(folder / RunPaths.LOG_HISTORY, index=False)
    pd.concat(control).to_parquet(folder / RunPaths.CONTROL / RunPaths.CONTROL_COMPLETIONS)
    return folder


@pytest.fixture
def runs(tmp_path):
    images = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((np.random.default_rng(i).random((200, 160)) * 255).astype("uint8")).save(path)
        images.append(path.name)
    return {s: make_run(tmp_path / f"seed-{s}", images, s) for s in (0, 1)}, tmp_path


def test_page_shows_each_generation_step_once_with_the_control_and_stable_bytes(runs):
    folders, root = runs
    page = browser.write_page(root / "out" / "run.html", "demo", folders, 2, lambda p: root / p, {"img0.png": ["A"]})
    shown = browser.page_groups(page)
    assert shown.groupby(["seed", "kind"])["step"].unique().map(list).tolist() == [[1, 3]] * 4
    assert shown["group"].nunique() == 2 * 2 * 2 and (shown.groupby(["group", "kind"]).size() == 2).all()
    policy = shown.loc[shown["kind"] == "policy"]
    assert np.allclose(policy["reward"], policy["f1"] + policy["length"])
    for seed, folder in folders.items():
        log = pd.read_csv(folder / RunPaths.LOG_HISTORY).dropna(subset=["reward"]).set_index("step")
        means = policy.loc[policy["seed"] == seed].groupby("step")[["reward", "f1"]].mean()
        assert np.allclose(means["reward"], log["reward"]) and np.allclose(means["f1"], log["rewards/f1/mean"])
    assert shown.loc[shown["kind"] == "control", "advantage"].isna().all()
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2 and "1 logged steps reused an earlier generation" in text
    assert "http" not in text and "truth: A<" in text and "(not in the manifest)" in text
    before = page.read_bytes()
    browser.write_page(page, "demo", folders, 2, lambda p: root / p, {"img0.png": ["A"]})
    assert page.read_bytes() == before


def test_a_control_on_other_prompts_or_a_ragged_step_is_an_error_naming_the_file(runs):
    folders, root = runs
    control = folders[0] / RunPaths.CONTROL / RunPaths.CONTROL_COMPLETIONS
    frame = pd.read_parquet(control)
    frame.assign(image_path=frame["image_path"].iloc[::-1].to_numpy()).to_parquet(control)
    with pytest.raises(ValueError, match="completions.parquet: step 1 scored img1.png where the policy had img0.png"):
        browser.run_groups(folders[0], 0, 2)
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        browser.run_groups(folders[1], 1, 3)
