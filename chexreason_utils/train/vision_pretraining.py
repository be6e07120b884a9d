"""Vision pretraining of a tiny base (issue 36): the analogue of a medically pretrained vision encoder (MedSigLIP).

Before a tiny base is caption- and instruction-tuned, its vision tower and multimodal projector are trained alone on
a large pretraining pool (``pretrain/vision/<role>`` of the phantom world), through the model's public
``model.model.get_image_features`` (Gemma3: ``pixel_values``; Qwen2.5-VL: ``pixel_values`` + ``image_grid_thw``),
the image tokens mean-pooled into one vector per image. A head, discarded afterwards, carries the objective:

- ``multilabel``: binary cross-entropy on what the image holds (medical: the 14 CheXpert labels from the row's
  ``findings`` keys, No Finding when nothing but Support Devices; general: colour and shape presence from ``objects``);
- ``contrastive``: CLIP-style symmetric InfoNCE between the image vector and a small text encoder of our own (an
  ``EmbeddingBag`` over the model's tokenizer ids of the row's ``text``);
- ``both``: the sum of the two; ``none``: no vision pretraining (the model folder is left as it is).

Images are processed once per run; the language model is not touched; the folder is saved back (safetensors,
processor kept).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ..labels import CHEXPERT_LABELS
from ..progress import Bar
from ..run_records import record_time
from ..seeding import seed_everything
from .models import load_model, load_processor

OBJECTIVES = ("none", "multilabel", "contrastive", "both")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "stripe")
SETTINGS_FILE = "vision_pretraining.json"   # what a pretrained folder went through, beside its weights


class PoolError(ValueError):
    """A pretraining pool row without the field an objective needs (names the file, the row and the field)."""


@dataclass(frozen=True)
class VisionSettings:
    """How the vision tower is pretrained."""

    objective: str = "both"
    epochs: int = 4
    learning_rate: float = 1e-3
    batch_size: int = 32
    temperature: float = 0.07
    text_dim: int = 64
    seed: int = 0


def read_pool(pool: Path, captions: str = "captions.jsonl") -> tuple[list[Path], list[dict], Path]:
    """A pool folder's image paths and rows (one JSON object per line of ``captions``), and that file."""
    source = Path(pool) / captions
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    return [Path(pool) / r["image"] for r in rows], rows, source


def _field(row: dict, name: str, kind: type, source: Path, i: int):
    value = row.get(name)
    if not isinstance(value, kind):
        raise PoolError(f"{source}, row {i + 1}: field {name!r} must be a {kind.__name__}, got {value!r}")
    return value


def target_names(role: str) -> tuple[str, ...]:
    """The multi-label head's outputs: CheXpert labels (medical) or colours then shapes (general)."""
    return CHEXPERT_LABELS if role == "medical" else COLOURS + SHAPES


def targets(role: str, rows: list[dict], source: Path) -> np.ndarray:
    """Multi-hot targets of each row (``target_names(role)``); ``PoolError`` for a missing or unknown field."""
    names = target_names(role)
    out = np.zeros((len(rows), len(names)), dtype=np.float32)
    for i, row in enumerate(rows):
        if role == "medical":
            present = list(_field(row, "findings", dict, source, i))
            present += ["No Finding"] if set(present) <= {"Support Devices"} else []
        else:
            present = []
            for obj in _field(row, "objects", list, source, i):
                if not isinstance(obj, dict) or obj.get("colour") not in COLOURS or obj.get("shape") not in SHAPES:
                    raise PoolError(f"{source}, row {i + 1}: field 'objects' holds {obj!r}: each needs a colour "
                                    f"({', '.join(COLOURS)}) and a shape ({', '.join(SHAPES)})")
                present += [obj["colour"], obj["shape"]]
        unknown = [p for p in present if p not in names]
        if unknown:
            raise PoolError(f"{source}, row {i + 1}: field 'findings' names unknown labels {unknown}")
        out[i, [names.index(p) for p in present]] = 1.0
    return out


class TextEncoder(nn.Module):
    """Mean of token embeddings (an ``EmbeddingBag`` over tokenizer ids), projected: the report/caption side."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, dim, mode="mean")
        self.proj = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.proj(self.bag(ids, offsets))


def vision_parameters(model) -> list[nn.Parameter]:
    """The vision tower's and multimodal projector's parameters (Qwen2.5-VL's ``visual`` holds its merger)."""
    inner = model.model
    parts = [inner.visual] if hasattr(inner, "visual") else [inner.vision_tower, inner.multi_modal_projector]
    return [p for part in parts for p in part.parameters()]


class Images:
    """A pool's images (files or PIL images) processed once by the model's image processor, indexable by batch."""

    def __init__(self, processor, images: list):
        pil = [im.convert("RGB") if isinstance(im, Image.Image) else Image.open(im).convert("RGB") for im in images]
        batch = processor.image_processor(images=pil, return_tensors="pt")
        self.pixels = batch["pixel_values"]
        self.grid = batch.get("image_grid_thw")
        if self.grid is not None:   # Qwen2.5-VL: patches of all images concatenated; equal sizes in a pool
            self.pixels = self.pixels.reshape(len(images), -1, self.pixels.shape[-1])

    def tokens(self, model, index: torch.Tensor) -> list[torch.Tensor]:
        """Per image, the image tokens ``get_image_features`` hands the language model (tokens x hidden)."""
        if self.grid is None:
            return list(model.model.get_image_features(pixel_values=self.pixels[index]).pooler_output)
        px = self.pixels[index].reshape(-1, self.pixels.shape[-1])
        return list(model.model.get_image_features(pixel_values=px, image_grid_thw=self.grid[index]).pooler_output)

    def features(self, model, index: torch.Tensor) -> torch.Tensor:
        """One vector per image: ``get_image_features``' image tokens, mean-pooled."""
        if self.grid is None:
            return model.model.get_image_features(pixel_values=self.pixels[index]).pooler_output.mean(dim=1)
        return torch.stack([t.mean(dim=0) for t in self.tokens(model, index)])


def _token_bags(tokenizer, texts: list[str]) -> list[torch.Tensor]:
    return [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"] or [0]) for t in texts]


def pretrain(model_dir: str | Path, pool: str | Path, role: str, out_dir: str | Path,
             settings: VisionSettings) -> dict:
    """Pretrain ``model_dir``'s vision tower + projector on ``pool`` (a folder with ``captions.jsonl``), save the
    whole model with its processor into ``out_dir``; returns its record (settings, pool, per-epoch mean losses; no
    wall time, so that two identical runs write the same bytes: the time goes to the stage's run records)."""
    if settings.objective not in OBJECTIVES:
        raise ValueError(f"objective {settings.objective!r}: choose one of {', '.join(OBJECTIVES)}")
    if role not in ("medical", "general"):
        raise ValueError(f"unknown role {role!r}; expected medical or general")
    t0 = time.time()
    seed_everything(settings.seed)
    model, processor = load_model(model_dir, "cpu"), load_processor(model_dir)
    paths, rows, source = read_pool(Path(pool))
    use_labels = settings.objective in ("multilabel", "both")
    use_text = settings.objective in ("contrastive", "both")
    y = torch.from_numpy(targets(role, rows, source)) if use_labels else None
    bags = _token_bags(processor.tokenizer, [_field(r, "text", str, source, i) for i, r in enumerate(rows)]) \
        if use_text else None
    losses: list[float] = []
    if settings.objective != "none":
        images = Images(processor, paths)
        for p in model.parameters():
            p.requires_grad_(False)
        tower = vision_parameters(model)
        for p in tower:
            p.requires_grad_(True)
        width = images.features(model, torch.arange(1)).shape[-1]
        heads = nn.ModuleDict()
        if use_labels:
            heads["labels"] = nn.Linear(width, y.shape[1])
        if use_text:
            heads["image"] = nn.Linear(width, settings.text_dim)
            heads["text"] = TextEncoder(len(processor.tokenizer), settings.text_dim)
        optimiser = torch.optim.AdamW(tower + list(heads.parameters()), lr=settings.learning_rate)
        order = torch.Generator().manual_seed(settings.seed)
        model.train()
        bar = Bar(f"vision pretraining {Path(out_dir).name}", settings.epochs, unit="epoch")
        for _ in range(settings.epochs):
            total, batches = 0.0, 0
            for index in torch.randperm(len(paths), generator=order).split(settings.batch_size):
                feats = images.features(model, index)
                loss = torch.zeros(())
                if use_labels:
                    loss = loss + F.binary_cross_entropy_with_logits(heads["labels"](feats), y[index])
                if use_text and len(index) > 1:
                    ids = [bags[i] for i in index.tolist()]
                    offsets = torch.tensor([0] + [len(t) for t in ids[:-1]]).cumsum(0)
                    img = F.normalize(heads["image"](feats), dim=-1)
                    txt = F.normalize(heads["text"](torch.cat(ids), offsets), dim=-1)
                    logits = img @ txt.T / settings.temperature
                    target = torch.arange(len(index))
                    loss = loss + (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total, batches = total + loss.item(), batches + 1
            losses.append(total / batches)
            bar.update()
        bar.close()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    record = {"settings": asdict(settings), "role": role, "pool": "/".join(Path(pool).parts[-3:]), "images": len(paths),
              "base_weights": weights_digest(model_dir),
              "epoch_losses": [round(v, 5) for v in losses]}
    record_time(f"vision pretraining {out_dir.name}", "total", time.time() - t0)
    (out_dir / SETTINGS_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
    return record


def weights_digest(model_dir: str | Path) -> str:
    """SHA-256 of a model folder's safetensors files (which built base a pretrained folder started from)."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def token_features(model_dir: str | Path, images: list, batch_size: int = 64) -> np.ndarray:
    """Every image token ``get_image_features`` hands the language model, flattened into one row per image (files
    or PIL images; for probes of what the language model can read)."""
    model, processor = load_model(model_dir, "cpu").eval(), load_processor(model_dir)
    rows = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = Images(processor, images[start:start + batch_size])
            rows += [t.reshape(-1).float().numpy() for t in chunk.tokens(model, torch.arange(len(chunk.pixels)))]
    return np.stack(rows)


def pooled_features(model_dir: str | Path, image_paths: list[Path]) -> np.ndarray:
    """One mean-pooled ``get_image_features`` vector per image (for linear probes)."""
    model, processor = load_model(model_dir, "cpu"), load_processor(model_dir)
    images = Images(processor, list(image_paths))
    with torch.no_grad():
        return images.features(model.eval(), torch.arange(len(image_paths))).numpy()
