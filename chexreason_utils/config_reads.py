"""Which configuration values a stage reads, recorded while it runs; the runner fingerprints exactly those.

``track(cfg, report)`` gives every config dataclass in the tree a subclass that reports reads as dotted keys:
a leaf when one is read (``sft.batch_size``), a whole section when the object is handed on whole — copied, or
read field by field by ``dataclasses.asdict`` / ``replace`` (those read every field they cover, so they count
as reading it all: over-approximation is safe, a missed read is the bug). A config pickled for a worker process
counts as the keys the worker reads: while ``READS_ENV`` names a file (``stage.start_stage`` sets it; workers
inherit it, ``jobs.INHERITED_ENV``), an unpickled config keeps its dotted prefix and appends each key it is
asked for to that file, once per process; without it, pickling counts as reading the whole section. A key whose
value changes which keys are read was itself read, so the record cannot go stale. ``values`` turns recorded
keys into the digests the runner compares, one per leaf, so a changed value is named.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

from .config import ConfigError, get_value

# Top-level keys that cannot change any output and so never make a stage rerun:
#   workers: how many processes run independent jobs (jobs.run_jobs gives the same bytes for any count);
#   report_to: which experiment tracker receives the trainers' logs (tracking; its files are no stage's outputs).
NOT_RESULTS = ("workers", "report_to")
WHOLE = frozenset({"__dict__", "__reduce_ex__", "__reduce__", "__getstate__", "__copy__", "__deepcopy__"})
PICKLING = frozenset({"__reduce_ex__", "__reduce__", "__getstate__"})
READS_ENV = "CHEXREASON_CONFIG_READS"   # the file an unpickled config appends its reads to, one key a line

_OWNERS: dict[int, tuple[Any, str, Callable[[str], None]]] = {}   # id -> (object kept alive, prefix, report)
_SUBCLASSES: dict[type, type] = {}


class _Appender:
    """Appends each new key to a file, one short line each (safe from several processes)."""

    def __init__(self, path: str):
        self.path, self.seen = path, set()

    def __call__(self, key: str) -> None:
        if key not in self.seen:
            self.seen.add(key)
            with open(self.path, "a") as f:
                f.write(key + "\n")


_APPENDERS: dict[str, _Appender] = {}


def _rebuild(cls: type, values: dict, prefix: str | None = None) -> Any:
    """An unpickled config: plain, or (with a prefix and ``READS_ENV`` set) reporting its reads to that file."""
    obj = cls(**values)
    target = os.environ.get(READS_ENV)
    if prefix is None or not target:
        return obj
    object.__setattr__(obj, "__class__", _subclass(cls))
    _OWNERS[id(obj)] = (obj, prefix, _APPENDERS.setdefault(target, _Appender(target)))
    return obj


def read_keys(path) -> list[str]:
    """The keys appended to a ``READS_ENV`` file (none when it does not exist)."""
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _subclass(cls: type) -> type:
    """``cls`` with reads reported (same name; pickles and copies as a plain ``cls``)."""
    if cls not in _SUBCLASSES:
        names = frozenset(f.name for f in dataclasses.fields(cls))

        def __getattribute__(self, name):
            value = object.__getattribute__(self, name)
            owner = _OWNERS.get(id(self))
            if owner is not None and owner[0] is self:
                if name in names and not dataclasses.is_dataclass(value):
                    owner[2](owner[1] + name)
                elif name in WHOLE and not (name in PICKLING and os.environ.get(READS_ENV)):
                    owner[2](owner[1].rstrip("."))
            return value

        def __reduce_ex__(self, protocol):
            owner = _OWNERS.get(id(self))
            prefix = owner[1] if owner is not None and owner[0] is self else None
            return _rebuild, (cls, {f.name: object.__getattribute__(self, f.name) for f in dataclasses.fields(cls)},
                              prefix)

        _SUBCLASSES[cls] = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__,
                                                     "__reduce_ex__": __reduce_ex__,
                                                     "__qualname__": cls.__qualname__,
                                                     "__module__": cls.__module__})
    return _SUBCLASSES[cls]


def track(cfg: Any, report: Callable[[str], None], prefix: str = "") -> Any:
    """Report every read of ``cfg``'s values to ``report`` (in place; returns ``cfg``)."""
    for f in dataclasses.fields(cfg):
        value = object.__getattribute__(cfg, f.name)
        if dataclasses.is_dataclass(value):
            track(value, report, f"{prefix}{f.name}.")
    cls = type(cfg)
    object.__setattr__(cfg, "__class__", _subclass(cls) if cls not in _SUBCLASSES.values() else cls)
    _OWNERS[id(cfg)] = (cfg, prefix, report)
    return cfg


def minimal(keys) -> list[str]:
    """Sorted keys without those already covered by a recorded section ('' covers everything)."""
    out: list[str] = []
    for key in sorted(set(keys), key=lambda k: (k.count("."), k)):
        if not any(k == "" or key == k or key.startswith(k + ".") for k in out):
            out.append(key)
    return sorted(out)


def value(cfg: Any, key: str) -> Any:
    """The plain value of a dotted key ('' is the whole config) without the keys in ``NOT_RESULTS``."""
    target = get_value(cfg, key)
    plain = dataclasses.asdict(target) if dataclasses.is_dataclass(target) else target
    return {k: v for k, v in plain.items() if k not in NOT_RESULTS} if key == "" else plain


def leaves(cfg: Any, key: str) -> list[str]:
    """The leaf keys under a dotted key ('' is the whole config; a leaf is its own; an unknown key is kept)."""
    try:
        target = get_value(cfg, key)
    except ConfigError:
        return [key]
    if not dataclasses.is_dataclass(target):
        return [key]
    prefix = key + "." if key else ""
    return [leaf for f in dataclasses.fields(target) for leaf in leaves(cfg, prefix + f.name)]


def values(cfg: Any, keys) -> dict[str, str]:
    """A short digest of the current value of each leaf under the recorded keys (those in ``NOT_RESULTS`` are
    left out)."""
    out = {}
    for key in sorted({leaf for k in minimal(keys) for leaf in leaves(cfg, k)}):
        if key.split(".")[0] in NOT_RESULTS:
            continue
        try:
            plain = value(cfg, key)
        except ConfigError:
            plain = "<no longer in the config>"
        out[key] = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out
