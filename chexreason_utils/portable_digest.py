"""The bytes every machine checks: a short smoke training under portable arithmetic, digested tensor by tensor.

``compute`` generates the smoke profile's phantom world and a few more radiographs (NumPy), builds a tiny Gemma3
(MedGemma's class), fine-tunes it for a few SFT steps with trl's trainer, takes GRPO steps with the hard reward (and
its frozen-policy control), and predicts a batch of images greedily, each through the companion's own functions.
Then it takes the steps whose convolutions run at batches of 16 or more, where torch would otherwise hand them to
NNPACK: vision pretraining of the tiny Gemma3 and of a tiny Qwen2.5-VL on the world's pools, and a short fit of the
image reference's CNN. It returns an ordered list of ``(name, sha256)``: the world's files, the images, every tensor
of the base, SFT and GRPO models, the GRPO log's numbers, every prediction, and the pretrained towers' and the CNN's
tensors and losses. ``DIGESTS`` holds the list made on the machine that committed it; ``compare`` names the first
entry that differs, so a CPU that computes otherwise points at the first tensor (and so the first kernel) that
diverged.

Run it with ``chexreason digest`` (``--write`` records a new list; ``--without VAR`` drops one cap to show what
it protects); the test suite runs it in a fresh process under portable arithmetic.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

DIGESTS = Path(__file__).with_name("portable_digests.json")
FINDINGS = [["Cardiomegaly"], ["Pleural Effusion"], ["No Finding"], ["Lung Lesion", "Edema"]]   # GRPO's truths
N_IMAGES, SFT_STEPS, GRPO_STEPS = 16, 3, 2
N_POOL = 32   # vision pretraining images per pool: two batches of 16 (NNPACK's threshold) per epoch
TARGET = ("<think>The cardiac silhouette is enlarged and the costophrenic angles are sharp.</think>"
          "<solution>Cardiomegaly</solution>")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensors(prefix: str, folder: Path) -> list[tuple[str, str]]:
    from safetensors.torch import load_file

    weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(file))
    return _state(prefix, weights)


def _state(prefix: str, state: dict) -> list[tuple[str, str]]:
    """One digest per tensor of a state dict, in name order."""
    return [(f"{prefix}/{name}", _sha(t.detach().contiguous().numpy().tobytes())) for name, t in sorted(state.items())]


def _numbers(name: str, values) -> tuple[str, str]:
    return name, _sha(json.dumps([float(v) for v in values]).encode())


def _pool(source: Path, folder: Path) -> Path:
    """The first ``N_POOL`` rows of a world pool (``captions.jsonl`` and their images) copied into ``folder``."""
    import shutil

    from .data.phantom import CAPTIONS

    rows = (source / CAPTIONS).read_text().splitlines()[:N_POOL]
    for row in rows:
        image = json.loads(row)["image"]
        (folder / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / image, folder / image)
    (folder / CAPTIONS).write_text("\n".join(rows) + "\n")
    return folder


def _log(prefix: str, log) -> list[tuple[str, str]]:
    """A training log's numbers, one digest per logged step; wall times left out."""
    numbers = log.select_dtypes("number")
    numbers = numbers.drop(columns=[c for c in numbers if "time" in c or "per_second" in c])
    return [(f"{prefix}/log/{i}", _sha(json.dumps(row, sort_keys=True).encode()))
            for i, row in enumerate(numbers.to_dict("records"))]


def _images(folder: Path) -> list[str]:
    import numpy as np
    from PIL import Image

    from .data.phantom import SITES
    from .data.phantom_render import DRAWERS, render

    folder.mkdir(parents=True, exist_ok=True)
    drawn, sites = list(DRAWERS), list(SITES.values())
    paths = []
    for i in range(N_IMAGES):   # every finding the world draws, at every site
        findings = sorted({drawn[(2 * i) % len(drawn)], drawn[(2 * i + 1) % len(drawn)]})
        pixels, _ = render(findings, sites[i % len(sites)], 128, np.random.default_rng(i))
        paths.append(str(folder / f"img{i:02d}.png"))
        Image.fromarray(pixels).save(paths[-1])
    return paths


def compute(work: Path) -> list[tuple[str, str]]:
    """The ordered digests of one smoke training in ``work`` (an empty folder) under this process's arithmetic."""
    import pandas as pd

    from . import prompts
    from .config import SFTConfig, load_profile
    from .data.phantom import generate_world
    from .evaluation import evaluate
    from .seeding import seed_everything
    from .train import grpo, image_reference, models, sft, vision_pretraining

    work = Path(work)
    cfg = load_profile("smoke")
    generate_world(work / "world", cfg.world, force=True)   # NumPy's loops: a few images differ under AVX-512
    out = [(f"world/{p.relative_to(work / 'world')}", _sha(p.read_bytes()))
           for p in sorted((work / "world").rglob("*")) if p.is_file()]
    seed_everything(0)
    paths = _images(work / "images")
    out += [(f"image/{Path(p).name}", _sha(Path(p).read_bytes())) for p in paths]
    fmt = cfg.grpo.start_format
    # the tokenizer's corpus: every SFT format of the default profile, not the smoke profile's selection
    corpus = [prompts.prompt_for(f) for f in SFTConfig().formats] * 5 + [TARGET] * 20
    m = cfg.models
    base = models.build_tiny_gemma3(corpus, work / "base", hidden=m.tiny_hidden, layers=m.tiny_layers,
                                    image_size=m.tiny_image_size, vocab=m.tiny_vocab)
    out += _tensors("base", base)
    data = sft.make_dataset([prompts.prompt_for(fmt)] * N_IMAGES, [TARGET] * N_IMAGES, paths)
    sft_cfg = replace(cfg.sft, max_steps=SFT_STEPS, eval_steps=SFT_STEPS, logging_steps=1)
    tuned = sft.train_sft(base, data, None, work / "sft", sft_cfg, full_finetune=True, seed=0, device="cpu")
    out += _tensors("sft", tuned.out_dir)
    out += _log("sft", tuned.log)
    g = replace(cfg.grpo, max_steps=GRPO_STEPS, save_steps=GRPO_STEPS)
    truths = [FINDINGS[i % len(FINDINGS)] for i in range(N_IMAGES)]
    train = grpo.make_dataset(prompts.prompt_for(fmt), paths, truths, [Path(p).name for p in paths])
    run = grpo.train_grpo(grpo.GRPOInputs(tuned.out_dir, train, g, "hard", {}), work / "grpo", device="cpu")
    out += _tensors("grpo", run.checkpoints[-1])
    out += _log("grpo", run.log) + _log("control", run.control)
    images = pd.DataFrame({"image_id": [Path(p).stem for p in paths], "image_path": paths})
    predicted = evaluate.predict(run.checkpoints[-1], images, fmt, work / "predictions.jsonl", batch_size=N_IMAGES,
                                 max_new_tokens=cfg.evaluation.max_new_tokens, device="cpu", progress=False)
    out += [(f"predict/{r['image_id']}", _sha(json.dumps([r["raw"], r["labels"]]).encode()))
            for r in predicted.to_dict("records")]
    vision = vision_pretraining.VisionSettings(epochs=2, batch_size=N_IMAGES)
    qwen = models.build_tiny_qwen25vl(corpus, work / "qwen", hidden=m.tiny_hidden, layers=m.tiny_layers,
                                      image_size=m.tiny_image_size, vocab=m.tiny_vocab)
    for role, model in (("medical", base), ("general", qwen)):
        pool = _pool(work / "world" / "pretrain" / "vision" / role, work / "pools" / role)
        record = vision_pretraining.pretrain(model, pool, role, work / f"vision-{role}", vision)
        out += _tensors(f"vision/{role}", work / f"vision-{role}")
        out.append(_numbers(f"vision/{role}/losses", record["epoch_losses"]))
    labels = image_reference.ReferenceSettings().labels
    truth = [[float(label in FINDINGS[i % len(FINDINGS)]) for label in labels] for i in range(N_IMAGES)]
    reference = image_reference.ReferenceSettings(epochs=2, batch_size=N_IMAGES)
    images = image_reference.load_images(paths, reference.image_size)
    cnn, losses = image_reference.train_network(images, truth, reference)
    return out + _state("reference", cnn.state_dict()) + [_numbers("reference/losses", losses)]


def read(path: Path = DIGESTS) -> tuple[dict, list[tuple[str, str]]]:
    """The committed record: where it was made, and its digests."""
    data = json.loads(Path(path).read_text())
    return data["made_on"], [tuple(x) for x in data["digests"]]


def write(digests: list[tuple[str, str]], made_on: dict, path: Path = DIGESTS) -> None:
    rows = ",\n".join(f"  {json.dumps(list(d))}" for d in digests)   # one line per entry: readable diffs
    Path(path).write_text(f'{{"made_on": {json.dumps(made_on)},\n "digests": [\n{rows}\n]}}\n')


def compare(expected: list[tuple[str, str]], got: list[tuple[str, str]]) -> str | None:
    """None when equal; else which entry differs first (its name on both sides) and how many differ."""
    if [n for n, _ in expected] != [n for n, _ in got]:
        names_e, names_g = [n for n, _ in expected], [n for n, _ in got]
        first = next((i for i, (a, b) in enumerate(zip(names_e, names_g)) if a != b), min(len(names_e), len(names_g)))
        return (f"the digest lists name different entries from entry {first} on "
                f"({names_e[first] if first < len(names_e) else 'end'} vs {names_g[first] if first < len(names_g) else 'end'}): "
                "the smoke training itself changed; record a new list with chexreason digest --write")
    differ = [n for (n, a), (_, b) in zip(expected, got) if a != b]
    if not differ:
        return None
    return f"{len(differ)} of {len(expected)} digests differ; the first is {differ[0]}"


def measure(mode: str = "portable", without: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``compute`` in a fresh Python process started under ``mode`` with the caps in ``without`` left out (the
    caps must be in place before NumPy and torch load, so this process's own settings cannot be reused)."""
    import os
    import subprocess
    import sys
    import tempfile

    from . import arithmetic

    unknown = [v for v in without if v not in arithmetic.PORTABLE_ENV]
    if unknown:
        raise ValueError(f"not a portable cap: {', '.join(unknown)} (caps: {', '.join(arithmetic.PORTABLE_ENV)})")
    env = {k: v for k, v in os.environ.items() if k not in arithmetic.PORTABLE_ENV}
    env.update({k: v for k, v in arithmetic.environment(mode).items() if k not in without})
    env[arithmetic.MODE_ENV] = mode
    with tempfile.TemporaryDirectory(prefix="chexreason-digest-") as tmp:
        result = Path(tmp) / "digests.json"
        done = subprocess.run([sys.executable, "-m", __name__, tmp, str(result)], env=env, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the digest run failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        return [tuple(x) for x in json.loads(result.read_text())]


if __name__ == "__main__":
    import sys
    import warnings

    warnings.filterwarnings("ignore")
    work, result = Path(sys.argv[1]), Path(sys.argv[2])
    Path(result).write_text(json.dumps(compute(work / "run")))
