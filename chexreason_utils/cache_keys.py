"""Every cache key and run id of the project, built by one function (``digest``) from what shapes the content.

A key holds content, never a location or a time: files enter by their bytes (``file_digest``), models by their
config, processor and weight files (``model_fingerprint``), so a run folder copied elsewhere keys the same, and a
file regenerated with other content keys differently. What each cache keys on:
- SFT and GRPO runs (``sft._run_id``, ``grpo._run_id``): the start model, the data (prompts, targets, image
  bytes), the settings and the seed;
- predictions (``evaluate.prediction_key``): the model, the instruction and the generation settings;
- teacher traces (``teacher.TraceRequest.key``): the image, the format, the teacher prompt and the teacher
  (kind, model, endpoint, sampling; the template teacher by its code).
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from .paths import ADAPTER_CONFIG

WHOLE_FILE_LIMIT = 64 << 20   # bytes: smaller files are hashed whole; larger ones (real weights) by samples
SAMPLES, SAMPLE_BYTES = 64, 1 << 16
MODEL_FILES = ("config.json", "generation_config.json", ADAPTER_CONFIG, "processor_config.json",
               "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
               "chat_template.json", "special_tokens_map.json")


def digest(payload: Any, length: int = 16) -> str:
    """A short sha256 of a JSON-able payload (keys sorted): the one way a key is made."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (files over 64 MiB: its size and 64 evenly spaced 64 KiB samples, the first
    and last included); remembered per (path, size, mtime) within a process."""
    st = os.stat(path)
    return _file_digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=None)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_LIMIT:
            h.update(f.read())
        else:
            for i in range(SAMPLES):
                f.seek((size - SAMPLE_BYTES) * i // (SAMPLES - 1))
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()[:24]


def files_digest(paths: Iterable[str | Path]) -> str:
    """One key for the bytes of many files, in order."""
    return digest([file_digest(p) for p in paths])


def model_fingerprint(path: str | Path) -> str:
    """A model folder's key: its config, processor and tokenizer files and the bytes of its weights (an adapter's
    base by the base's own fingerprint); a hub id by its name."""
    path = Path(path)
    if not path.is_dir():
        return digest({"hub id": str(path)})
    parts: dict[str, Any] = {}
    for f in sorted(path.iterdir()):
        if f.name == ADAPTER_CONFIG:
            config = json.loads(f.read_text())
            config["base_model_name_or_path"] = model_fingerprint(config.get("base_model_name_or_path", ""))
            parts[f.name] = config
        elif f.name in MODEL_FILES or f.suffix == ".safetensors" or f.name.endswith(".safetensors.index.json"):
            parts[f.name] = file_digest(f)
    if not parts:
        raise FileNotFoundError(f"{path} holds no model files ({', '.join(MODEL_FILES[:3])}, *.safetensors)")
    return digest(parts)
