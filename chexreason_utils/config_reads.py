"""Which configuration values a stage reads, recorded while it runs; the runner fingerprints exactly those.

``track(cfg, report)`` gives every config dataclass in the tree a subclass that reports reads as dotted keys:
a leaf when one is read (``sft.batch_size``), a whole section when the object is handed on whole — pickled
for a worker process, copied, or read field by field by ``dataclasses.asdict`` / ``replace`` (those read
every field they cover, so they count as reading it all: over-approximation is safe, a missed read is the
bug). A key whose value changes which keys are read was itself read, so the record cannot go stale.
``values`` turns recorded keys into the digests the runner compares.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Callable

# Top-level keys that cannot change any output and so never make a stage rerun:
#   workers: how many processes run independent jobs (jobs.run_jobs gives the same bytes for any count).
NOT_RESULTS = ("workers",)
WHOLE = frozenset({"__dict__", "__reduce_ex__", "__reduce__", "__getstate__", "__copy__", "__deepcopy__"})

_OWNERS: dict[int, tuple[Any, str, Callable[[str], None]]] = {}   # id -> (object kept alive, prefix, report)
_SUBCLASSES: dict[type, type] = {}


def _rebuild(cls: type, values: dict) -> Any:
    return cls(**values)


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
                elif name in WHOLE:
                    owner[2](owner[1].rstrip("."))
            return value

        def __reduce_ex__(self, protocol):
            return _rebuild, (cls, {f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

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
    target = cfg
    for part in filter(None, key.split(".")):
        target = getattr(target, part)
    plain = dataclasses.asdict(target) if dataclasses.is_dataclass(target) else target
    return {k: v for k, v in plain.items() if k not in NOT_RESULTS} if key == "" else plain


def values(cfg: Any, keys) -> dict[str, str]:
    """A short digest of the current value of each recorded key (keys in ``NOT_RESULTS`` are left out)."""
    out = {}
    for key in minimal(keys):
        if key.split(".")[0] in NOT_RESULTS:
            continue
        try:
            plain = value(cfg, key)
        except AttributeError:
            plain = "<no longer in the config>"
        out[key] = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out
