"""What the pixels allow: a supervised image-only classifier, the reference the VLMs are read against.

The companion's analogue of the CNN classifiers chest X-ray papers compare against (issue 36, "What the pixels
allow"): a small convolutional network in plain torch, trained from scratch on a manifest frame (columns
``image_id``, ``image_path``, ``truth``), one sigmoid output per CheXpert label, with per-label decision
thresholds chosen on a validation frame. Its predictions come back in the schema the VLM evaluation writes
(``evaluate.predict``: ``image_id``, ``raw``, ``labels``, ``valid``, ``reason``, ``key``, ``prompt``), so
``metrics.scores`` and ``metrics.matrices`` read them unchanged.

- **Input.** Each image is read as grayscale, resized to ``image_size`` square (aspect not kept) and
  standardised per image (zero mean, unit variance), which removes a site's brightness and contrast.
- **Network** (``SmallCNN``): ``len(widths)`` blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling,
  then the global average and global max of the last map, dropout and one linear layer (one logit per label).
  Weights and images are kept channels-last: a fit takes about 1.6x less CPU that way (oneDNN's convolutions;
  ``bench/image_reference.py`` times fits).
- **Training.** BCE-with-logits over ``labels`` (all 14, No Finding included: it is a label the metrics score
  like any other), AdamW with a cosine-decayed learning rate, a fixed number of epochs (no early stopping: the
  validation frame chooses thresholds and nothing else), random shifts of up to ``shift`` pixels as the only
  augmentation (no flips: laterality is part of the anatomy). ``seeding.seed_everything(seed)`` and a generator
  of the same seed make a fit repeat bit for bit on the same machine and thread count.
- **Thresholds** (``choose_thresholds``): per label, the one that maximises F1 on the validation frame (ties:
  the fewest positives), placed halfway between the chosen probability and the next lower one; a label without a
  positive in validation gets ``FALLBACK_THRESHOLD`` (0.5), and ``ImageReference.threshold_source`` says so.
  Scored on validation itself, the thresholds are in-sample (optimistic); ``predict_cross_fitted`` answers each
  validation image with thresholds chosen on the other half.
- **Answers.** The labels above their thresholds, written as an Only-Label answer (``prompts.format_target``) and
  read back by the same parser as the VLMs' answers: an image with no label above threshold answers
  "No Finding", as an SFT target with no label does. Every answer is valid (fail rate 0).

``fit_cached`` refits only when ``reference_key`` changes: the settings, each training and validation image's
bytes, id and truth, and ``FORMAT`` (this module's training recipe).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from ..cache_keys import digest, file_digest
from ..labels import CHEXPERT_LABELS, label_matrix
from ..progress import Bar
from ..prompts import format_target, parse_output
from ..run_records import timed
from ..seeding import seed_everything

FORMAT = 2                   # bump when the recipe or its arithmetic changes in a way the settings do not show:
#                              refits every cache (2: channels-last convolutions, other rounding)
FALLBACK_THRESHOLD = 0.5     # a label without a positive in validation
SETTINGS_FILE, WEIGHTS_FILE = "reference.json", "weights.safetensors"
ANSWER_FORMAT = "only_label"  # the answer's text: an Only-Label solution block


@dataclass(frozen=True)
class ReferenceSettings:
    """Everything a fit depends on besides its images (part of ``reference_key``)."""

    seed: int = 0
    """Training seed: weights, batch order, dropout and shifts (the companion's training seeds)."""
    image_size: int = 64
    """Images are resized to this many pixels square (grayscale)."""
    widths: tuple[int, ...] = (16, 32, 64, 128)
    """Channels of each convolution block (each halves the map)."""
    epochs: int = 30
    """Passes over the training frame (fixed: no early stopping)."""
    batch_size: int = 32
    learning_rate: float = 3e-3
    """AdamW's peak learning rate, decayed to zero on a cosine over all steps."""
    weight_decay: float = 1e-2
    dropout: float = 0.2
    """Dropout before the linear head."""
    shift: int = 4
    """Random translation of up to this many pixels each way during training (edge pixels repeated)."""
    labels: tuple[str, ...] = CHEXPERT_LABELS
    """The outputs, one per label (the answer vocabulary)."""

    @classmethod
    def from_dict(cls, raw: dict) -> "ReferenceSettings":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


class SmallCNN(nn.Module):
    """Convolution blocks (conv 3x3, batch norm, ReLU, max pool 2x2), global average and max pooling, dropout and a
    linear head: one logit per label."""

    def __init__(self, n_labels: int, widths: Sequence[int] = (16, 32, 64, 128), dropout: float = 0.2):
        super().__init__()
        blocks, channels = [], 1
        for width in widths:
            blocks += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels, n_labels)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.features(x.contiguous(memory_format=torch.channels_last))
        pooled = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)
        return self.head(self.dropout(pooled))


def load_images(image_paths: Sequence[str | Path], size: int) -> torch.Tensor:
    """(n, 1, size, size) float32: each image grayscale, resized (bilinear) and standardised per image. A JPEG is
    decoded at a reduced scale first where that still leaves at least 4x ``size`` (``PIL.Image.draft``)."""
    out = np.empty((len(image_paths), 1, size, size), dtype=np.float32)
    for i, path in enumerate(image_paths):
        with Image.open(path) as im:
            im.draft("L", (4 * size, 4 * size))
            pixels = np.asarray(im.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
        out[i, 0] = (pixels - pixels.mean()) / max(float(pixels.std()), 1e-3)
    return torch.from_numpy(out)


def reference_key(train: pd.DataFrame, val: pd.DataFrame, settings: ReferenceSettings) -> str:
    """What a fitted reference depends on: the settings, ``FORMAT``, and each training and validation image's id,
    truth and bytes (validation chooses the thresholds). Locations do not enter: a copied run keys the same."""
    def images(frame: pd.DataFrame) -> list:
        return [(str(i), sorted(t), file_digest(p)) for i, t, p in zip(frame["image_id"], frame["truth"],
                                                                        frame["image_path"])]
    return digest({"format": FORMAT, "settings": asdict(settings), "train": images(train), "val": images(val)})


def choose_thresholds(y_true: np.ndarray, probs: np.ndarray,
                      fallback: float = FALLBACK_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the threshold (predict positive when prob >= threshold) with the highest F1 on ``y_true``;
    ties go to the fewest positives; the threshold lies halfway between the chosen probability and the next lower
    one (half the lowest when every image is called positive). Returns (thresholds, chosen_on_validation): a
    column without a positive gets ``fallback`` and False."""
    y_true, probs = np.asarray(y_true, float), np.asarray(probs, float)
    thresholds = np.full(y_true.shape[1], float(fallback))
    chosen = y_true.sum(axis=0) > 0
    for j in np.flatnonzero(chosen):
        order = np.argsort(-probs[:, j], kind="stable")
        p, t = probs[order, j], y_true[order, j]
        tp = np.cumsum(t)
        n_pred = np.arange(1, len(p) + 1)
        last_of_tie = np.append(p[1:] < p[:-1], True)   # a cut can only fall after the last of equal probabilities
        f1 = np.where(last_of_tie, 2 * tp / (n_pred + t.sum()), -1.0)
        k = int(np.argmax(f1))                            # first maximum: the fewest positives
        thresholds[j] = (p[k] + p[k + 1]) / 2 if k + 1 < len(p) else p[k] / 2
    return thresholds, chosen


@dataclass
class ImageReference:
    """A fitted reference: the network, its settings, per-label thresholds and where each came from, and its
    content key (``reference_key``)."""

    model: SmallCNN
    settings: ReferenceSettings
    thresholds: np.ndarray
    threshold_source: dict[str, str]
    key: str
    info: dict = field(default_factory=dict)

    def probabilities(self, frame: pd.DataFrame, batch_size: int = 256) -> np.ndarray:
        """(n, len(labels)) sigmoid outputs on the images of ``frame`` (column ``image_path``)."""
        return predict_probabilities(self.model, load_images(list(frame["image_path"]), self.settings.image_size),
                                     batch_size)

    def answers(self, probs: np.ndarray, thresholds: np.ndarray | None = None) -> list[list[str]]:
        """The label names at or above threshold per image (``thresholds``: the fitted ones, or one row per image),
        as the answer parser reads them: none above threshold answers No Finding."""
        labels = self.settings.labels
        probs = np.asarray(probs)
        cuts = np.broadcast_to(self.thresholds if thresholds is None else thresholds, probs.shape)
        return [list(parse_output(answer_text([labels[j] for j in np.flatnonzero(p >= t)]), think=False).labels)
                for p, t in zip(probs, cuts)]

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with the VLM evaluation's prediction columns added (``raw``, ``labels``, ``valid``,
        ``reason``, ``key``, ``prompt`` "") and ``probabilities`` (one per label of the settings, in order):
        with a ``truth`` column, ``metrics.scores`` reads it as it reads a VLM's predictions."""
        probs = self.probabilities(frame)
        return self._answered(frame, probs, self.answers(probs))

    def predict_cross_fitted(self, val: pd.DataFrame, folds: int = 2) -> pd.DataFrame:
        """``predict`` on the validation frame the thresholds were chosen on, each image answered with thresholds
        chosen on the other folds (``choose_thresholds``; images dealt to ``folds`` folds by a permutation of the
        settings' seed): an out-of-sample validation score, where ``predict(val)`` scores the thresholds on the
        images that chose them (optimistic, most for rare labels)."""
        probs, y = self.probabilities(val), label_matrix(val, self.settings.labels)
        fold = np.random.default_rng(self.settings.seed).permutation(len(val)) % folds
        cuts = np.empty_like(probs, dtype=float)
        for f in range(folds):
            cuts[fold == f] = choose_thresholds(y[fold != f], probs[fold != f])[0]
        return self._answered(val, probs, self.answers(probs, cuts))

    def _answered(self, frame: pd.DataFrame, probs: np.ndarray, answers: list[list[str]]) -> pd.DataFrame:
        return frame.assign(raw=[answer_text(a) for a in answers], labels=answers, valid=True, reason="",
                            key=self.key, prompt="", probabilities=[[float(v) for v in row] for row in probs])

    def save(self, folder: str | Path) -> Path:
        """Weights (safetensors) and ``reference.json`` (settings, thresholds, their sources, key, info)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(folder / WEIGHTS_FILE))
        record = {"key": self.key, "format": FORMAT, "settings": asdict(self.settings),
                  "thresholds": dict(zip(self.settings.labels, map(float, self.thresholds))),
                  "threshold_source": self.threshold_source, "info": self.info}
        (folder / SETTINGS_FILE).write_text(json.dumps(record, indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "ImageReference":
        """A reference saved by ``save``."""
        from safetensors.torch import load_file

        folder = Path(folder)
        record = json.loads((folder / SETTINGS_FILE).read_text())
        settings = ReferenceSettings.from_dict(record["settings"])
        model = SmallCNN(len(settings.labels), settings.widths, settings.dropout)
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        return cls(model.eval(), settings, np.array([record["thresholds"][lbl] for lbl in settings.labels]),
                   record["threshold_source"], record["key"], record.get("info", {}))


def answer_text(labels: Sequence[str]) -> str:
    """An answer's raw text: the Only-Label solution block (``prompts.format_target``; none: No Finding)."""
    return format_target(ANSWER_FORMAT, list(labels), "")


def predict_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        parts = [torch.sigmoid(model(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.head.out_features), np.float32)


def _shifted(batch: torch.Tensor, most: int, generator: torch.Generator) -> torch.Tensor:
    """Each image translated by up to ``most`` pixels each way, edge pixels repeated."""
    if most <= 0:
        return batch
    size = batch.shape[-1]
    padded = nn.functional.pad(batch, (most,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * most + 1, (len(batch), 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(offsets.tolist())])


def train_network(images: torch.Tensor, targets: np.ndarray, settings: ReferenceSettings,
                  task: str = "image reference") -> tuple[SmallCNN, list]:
    """A ``SmallCNN`` trained on (images, targets) with the settings' recipe; (model in eval mode, mean loss per
    epoch). Progress goes to a bar named ``task``, one unit per epoch."""
    s = settings
    seed_everything(s.seed)
    generator = torch.Generator().manual_seed(s.seed)
    model = SmallCNN(len(s.labels), s.widths, s.dropout)
    y = torch.from_numpy(np.asarray(targets, np.float32))
    steps_per_epoch = math.ceil(len(images) / s.batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(1, s.epochs * steps_per_epoch))))
    loss_fn, losses = nn.BCEWithLogitsLoss(), []
    bar = Bar(task, s.epochs, unit="epoch")
    for _ in range(s.epochs):
        model.train()
        order, total = torch.randperm(len(images), generator=generator), 0.0
        for start in range(0, len(images), s.batch_size):
            idx = order[start:start + s.batch_size]
            if len(idx) < 2:          # batch norm needs two images
                continue
            loss = loss_fn(model(_shifted(images[idx], s.shift, generator)), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        losses.append(total / len(images))
        bar.update()
    bar.close()
    return model.eval(), losses


def fit(train: pd.DataFrame, val: pd.DataFrame, settings: ReferenceSettings = ReferenceSettings(),
        task: str = "image reference") -> ImageReference:
    """Train on ``train``, choose each label's threshold on ``val`` (manifest frames with ``image_path`` and
    ``truth``); ``task`` names its progress bar and timing records."""
    if not len(train) or not len(val):
        raise ValueError(f"fit needs training and validation images, got {len(train)} and {len(val)}")
    targets = label_matrix(train, settings.labels)
    absent = [lbl for lbl, n in zip(settings.labels, targets.sum(axis=0)) if n == 0]
    if absent:
        raise ValueError(f"the image reference cannot be trained: label(s) {', '.join(absent)} have no positive "
                         f"image among its {len(train)} training images (it would learn never to say them); "
                         "train it on a set that holds every label of ReferenceSettings.labels")
    with timed(task, "load"):
        images = load_images(list(train["image_path"]), settings.image_size)
    with timed(task, "training"):
        model, losses = train_network(images, targets, settings, task)
    probs = predict_probabilities(model, load_images(list(val["image_path"]), settings.image_size))
    thresholds, chosen = choose_thresholds(label_matrix(val, settings.labels), probs)
    source = {lbl: "validation" if c else "fallback (no positive in validation)"
              for lbl, c in zip(settings.labels, chosen)}
    info = {"n_train": len(train), "n_val": len(val), "epoch_loss": [round(v, 6) for v in losses]}
    return ImageReference(model, settings, thresholds, source, reference_key(train, val, settings), info)


def fit_cached(train: pd.DataFrame, val: pd.DataFrame, settings: ReferenceSettings,
               folder: str | Path, task: str = "image reference") -> ImageReference:
    """The reference saved in ``folder`` when its key is ``reference_key(train, val, settings)``; else ``fit`` it
    (progress and timings as ``task``) and save it there."""
    folder, key = Path(folder), reference_key(train, val, settings)
    record = folder / SETTINGS_FILE
    if record.exists() and (folder / WEIGHTS_FILE).exists() and json.loads(record.read_text()).get("key") == key:
        return ImageReference.load(folder)
    reference = fit(train, val, settings, task)
    reference.save(folder)
    return reference
