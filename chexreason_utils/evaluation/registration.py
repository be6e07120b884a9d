"""Pre-registered experiments beyond the paper: one committed YAML file per experiment (``registrations/``).

Each file states, before the experiment's first run, its question, grid, rules, readouts, smallest effect of
interest (SESOI), the sign a readout is judged against and the verdict rule ("shared": ``claims.judge``, the rule
of the claims table), and optionally the numbers of its positive controls (``controls``). ``load`` validates a
file and names the file and key of any fault; the report prints the registration beside the experiment's result
(``markdown``).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .verdict_statistics import VERDICTS
from ..paths import PACKAGE_DIR

REGISTRATION_DIR = PACKAGE_DIR / "registrations"
STATUSES = ("built", "registered")   # built: runs in this version; registered: fixed in advance, not built yet
VERDICT_RULES = {"shared": "the claims table's rule (claims.judge): " + ", ".join(VERDICTS)}
REQUIRED = ("id", "title", "status", "question", "grid", "readouts", "sesoi", "direction", "verdict_rule",
            "interpretation")
OPTIONAL = ("rules", "controls")


class RegistrationError(ValueError):
    """A registration file that does not follow the schema (the message names the file and key)."""


@dataclass(frozen=True)
class Registration:
    id: str
    title: str
    status: str
    question: str
    grid: dict[str, list]
    readouts: list[str]
    sesoi: dict[str, float]        # readout group ("" when one SESOI serves all) -> SESOI
    direction: dict[str, int]      # same keys: the sign a readout is judged against
    verdict_rule: str
    interpretation: str
    rules: dict[str, str]
    file: Path
    controls: dict = None   # name -> number or list of numbers: a positive control's registered parameters

    def control(self, name: str):
        """A registered positive-control parameter; a RegistrationError names the file and key when absent."""
        if not self.controls or name not in self.controls:
            raise _fail(self.file, f"controls.{name}", "is not registered")
        return self.controls[name]

    def sesoi_of(self, key: str = "") -> float:
        return self.sesoi[key if key in self.sesoi else ""]

    def direction_of(self, key: str = "") -> int:
        return self.direction[key if key in self.direction else ""]


def _fail(path: Path, key: str, why: str) -> RegistrationError:
    return RegistrationError(f"{path}: key {key!r}: {why}")


def _text(raw: dict, key: str, path: Path) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, key, f"must be a non-empty string, got {value!r}")
    return value.strip()


def _by_group(raw: dict, key: str, path: Path, check) -> dict:
    """A number for every readout group, or one number (group "") for all."""
    value = raw[key]
    items = value.items() if isinstance(value, dict) else [("", value)]
    out = {}
    for group, v in items:
        if not check(v):
            raise _fail(path, f"{key}.{group}" if group else key, f"got {v!r}")
        out[str(group)] = v
    if not out:
        raise _fail(path, key, "is empty")
    return out


def load(path: str | Path) -> Registration:
    """One registration file, validated."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RegistrationError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise RegistrationError(f"{path}: a registration is a mapping of keys {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED if k not in raw]
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise _fail(path, (missing or unknown)[0], f"missing keys {missing}, unknown keys {unknown}; a registration "
                    f"has {', '.join(REQUIRED)} (and optionally {', '.join(OPTIONAL)})")
    reg_id = _text(raw, "id", path)
    if not path.stem.startswith(reg_id + "_"):
        raise _fail(path, "id", f"{reg_id!r} does not match the file name (expected {reg_id}_<name>.yaml)")
    status = _text(raw, "status", path)
    if status not in STATUSES:
        raise _fail(path, "status", f"{status!r}; allowed: {' | '.join(STATUSES)}")
    grid = raw["grid"]
    if not isinstance(grid, dict) or not grid:
        raise _fail(path, "grid", "must be a mapping of factor -> list of values")
    for factor, values in grid.items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"grid.{factor}", f"must be a non-empty list of values, got {values!r}")
    readouts = raw["readouts"]
    if not isinstance(readouts, list) or not readouts or not all(isinstance(r, str) and r for r in readouts):
        raise _fail(path, "readouts", "must be a non-empty list of strings")
    rules = raw.get("rules", {})
    if not isinstance(rules, dict) or not all(isinstance(v, str) for v in rules.values()):
        raise _fail(path, "rules", "must be a mapping of name -> text")
    controls = raw.get("controls", {})
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if not isinstance(controls, dict) or not all(number(v) or (isinstance(v, list) and v and all(map(number, v)))
                                                 for v in controls.values()):
        raise _fail(path, "controls", "must be a mapping of name -> number or non-empty list of numbers")
    sesoi = _by_group(raw, "sesoi", path, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)
    direction = _by_group(raw, "direction", path, lambda v: v in (1, -1) and not isinstance(v, bool))
    if set(direction) != set(sesoi):
        raise _fail(path, "direction", f"needs the same readout groups as sesoi: {sorted(sesoi)}, got {sorted(direction)}")
    rule = _text(raw, "verdict_rule", path)
    if rule not in VERDICT_RULES:
        raise _fail(path, "verdict_rule", f"{rule!r}; allowed: {' | '.join(VERDICT_RULES)}")
    return Registration(reg_id, _text(raw, "title", path), status, _text(raw, "question", path),
                        {str(k): v for k, v in grid.items()}, readouts, {k: float(v) for k, v in sesoi.items()},
                        direction, rule, _text(raw, "interpretation", path),
                        {str(k): v.strip() for k, v in rules.items()}, path, {str(k): v for k, v in controls.items()})


def load_all(folder: str | Path = REGISTRATION_DIR) -> dict[str, Registration]:
    """Every registration in ``folder`` by id (E0, E1, ...), in id order; ids must be unique."""
    out: dict[str, Registration] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        reg = load(path)
        if reg.id in out:
            raise _fail(path, "id", f"{reg.id!r} is also the id of {out[reg.id].file}")
        out[reg.id] = reg
    return out


def get(reg_id: str) -> Registration:
    found = load_all()
    if reg_id not in found:
        raise KeyError(f"no registration {reg_id!r} in {REGISTRATION_DIR}; have {', '.join(found)}")
    return found[reg_id]


MULTIPLE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x\s*([\w.]+)\s*$")   # "5 x grpo.learning_rate"


def grid_cells(reg: Registration, skip: tuple[str, ...] = ("seeds",)) -> list[dict]:
    """The registration's grid as cells, {factor: registered value}, every combination in the file's order (the
    last factor varies fastest); ``skip``: factors that are not cells (the seeds)."""
    factors = [k for k in reg.grid if k not in skip]
    return [dict(zip(factors, values)) for values in itertools.product(*(reg.grid[k] for k in factors))]


def multiple_of(value, base: float, where: str) -> float:
    """A registered value written as ``"k x <option>"`` -> k * ``base`` (``base``: that option's value); a plain
    number stays itself."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    found = MULTIPLE.match(str(value))
    if not found:
        raise RegistrationError(f"{where}: {value!r} is neither a number nor 'k x <option>'")
    return float(found.group(1)) * base


def cell_name(cell: dict) -> str:
    """A cell's folder name: ``factor-value`` joined by ``_``, a ``k x <option>`` value written ``kx``, spaces in a
    value as ``-``."""
    def token(v) -> str:
        found = MULTIPLE.match(str(v))
        return f"{found.group(1)}x" if found else f"{v:g}" if isinstance(v, float) else "-".join(str(v).split())
    return "_".join(f"{k}-{token(v)}" for k, v in cell.items())


def _groups(values: dict) -> str:
    return ", ".join(f"{k}: {v:g}" if k else f"{v:g}" for k, v in values.items())


def markdown(reg: Registration) -> str:
    """The registration as the report prints it beside the result."""
    lines = [f"**Pre-registered ({reg.file.name}, status {reg.status}).** {reg.question}", "",
             "| grid | values |", "|---|---|",
             *[f"| {k} | {', '.join(map(str, v))} |" for k, v in reg.grid.items()], ""]
    lines += [f"- rule *{k}*: {v}" for k, v in reg.rules.items()]
    lines += [f"- positive control *{k}*: {', '.join(map(str, v)) if isinstance(v, list) else v}"
              for k, v in (reg.controls or {}).items()]
    lines += [f"- readout: {r}" for r in reg.readouts]
    lines += [f"- SESOI {_groups(reg.sesoi)}; judged against the sign {_groups(reg.direction)}; verdict rule: "
              f"{VERDICT_RULES[reg.verdict_rule]}", f"- reading: {reg.interpretation}", ""]
    return "\n".join(lines)
