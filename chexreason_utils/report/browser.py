"""A completions browser: one static HTML page per GRPO run (every training seed), to see what GRPO rewarded.

For every generation step of every seed, each prompt's image (a greyscale thumbnail embedded once as a PNG data URI),
its truth, its group of ``num_generations`` completions from trl's completion log (``completions/*.parquet``) with
every reward component, their sum (trl's reward: all weights are 1) and trl's advantage, and beside it the frozen
SFT policy's group for the same prompt in the same batch (``control/completions.parquet``). Steps that reuse an
earlier generation (``num_iterations`` > 1), which trl logs again with the old completions, are shown once, at
their generation step. Filters by seed and step (also set from the address: ``page.html#seed=1&step=3``) are a few
lines of inline JavaScript; the page needs no network and its bytes depend only on the run's files (no time, no
absolute path).
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from ..train.grpo import completions_table
from ..paths import RunPaths
from ..prompts import completion_text

THUMBNAIL = 112   # pixels, longest side (greyscale PNG: radiographs are grey)
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; line-height: 1.35; }
.group { border-top: 1px solid #bbb; padding: 0.6rem 0; display: grid; grid-template-columns: 130px 1fr; gap: 0.8rem; }
.group[hidden] { display: none; }
.thumb { width: 112px; height: 112px; background-size: contain; background-repeat: no-repeat; }
table { border-collapse: collapse; font-size: 0.8rem; margin-bottom: 0.4rem; width: 100%; }
th, td { border: 1px solid #ddd; padding: 0.15rem 0.35rem; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 0.78rem; }
caption { text-align: left; font-weight: 600; padding: 0.2rem 0; }
.filters { position: sticky; top: 0; background: #fff; padding: 0.4rem 0; border-bottom: 2px solid #888; }
"""
_SCRIPT = """
function applyFilters() {
  const seed = document.getElementById('seed').value, step = document.getElementById('step').value;
  let shown = 0;
  for (const g of document.querySelectorAll('section.group')) {
    g.hidden = (seed !== 'all' && g.dataset.seed !== seed) || (step !== 'all' && g.dataset.step !== step);
    if (!g.hidden) shown++;
  }
  document.getElementById('shown').textContent = shown;
}
const wanted = new URLSearchParams(location.hash.slice(1));   // e.g. page.html#seed=1&step=3
for (const key of ['seed', 'step']) if (wanted.has(key)) document.getElementById(key).value = wanted.get(key);
document.getElementById('seed').addEventListener('change', applyFilters);
document.getElementById('step').addEventListener('change', applyFilters);
applyFilters();
"""


@dataclass
class Group:
    """One prompt of one generation step: the policy's completions and the control's for the same prompt."""

    seed: int
    step: int
    image_path: str
    policy: pd.DataFrame
    control: pd.DataFrame | None


def reward_names(log: pd.DataFrame) -> list[str]:
    """The reward components of a trl log, in its order (``rewards/<name>/mean`` columns)."""
    return [c.split("/")[1] for c in log.columns if c.startswith("rewards/") and c.endswith("/mean")]


def generation_steps(log: pd.DataFrame) -> list[int]:
    """The logged steps that generated completions (the others reuse a generation and log no reward)."""
    return sorted(int(s) for s in log.loc[log["reward"].notna(), "step"]) if "reward" in log else []


def run_groups(run_dir: Path, seed: int, group_size: int) -> tuple[list[Group], list[str], int]:
    """Every generation step's groups of one run folder, its reward components and how many logged steps reused
    a generation. A step whose rows do not split into groups of one image each is an error naming the file."""
    run_dir = Path(run_dir)
    log = pd.read_csv(run_dir / RunPaths.LOG_HISTORY)
    names, steps = reward_names(log), generation_steps(log)
    policy = completions_table(run_dir)
    missing = [c for c in ["step", "completion", "image_path", "advantage", *names] if c not in policy]
    if missing:
        raise KeyError(f"{run_dir}/completions/*.parquet: no column(s) {missing}; rerun the GRPO run")
    control_file = run_dir / RunPaths.CONTROL / RunPaths.CONTROL_COMPLETIONS
    control = pd.read_parquet(control_file) if control_file.exists() else None
    groups = []
    for step in steps:
        mine = _split(policy.loc[policy["step"] == step], group_size, f"{run_dir}/completions, step {step}")
        theirs = (_split(control.loc[control["step"] == step], group_size, f"{control_file}, step {step}")
                  if control is not None and (control["step"] == step).any() else [None] * len(mine))
        if len(theirs) != len(mine):
            raise ValueError(f"{control_file}: step {step} has {len(theirs)} groups, the policy {len(mine)}")
        for p, c in zip(mine, theirs):
            if c is not None and c["image_path"].iloc[0] != p["image_path"].iloc[0]:
                raise ValueError(f"{control_file}: step {step} scored {c['image_path'].iloc[0]} where the policy had "
                                 f"{p['image_path'].iloc[0]}")
            groups.append(Group(seed, step, p["image_path"].iloc[0], p, c))
    reused = int(log.loc[log["reward"].isna() & log["loss"].notna(), "step"].nunique()) if "loss" in log else 0
    return groups, names, reused


def _split(rows: pd.DataFrame, size: int, where: str) -> list[pd.DataFrame]:
    if len(rows) % size:
        raise ValueError(f"{where}: {len(rows)} completions do not split into groups of {size}")
    parts = [rows.iloc[i:i + size].reset_index(drop=True) for i in range(0, len(rows), size)]
    for part in parts:
        if part["image_path"].nunique() != 1:
            raise ValueError(f"{where}: a group of {size} completions spans several images")
    return parts


def thumbnail_uri(path: Path) -> str:
    """A greyscale PNG data URI of the image, at most ``THUMBNAIL`` pixels a side (same file, same bytes)."""
    with Image.open(path) as im:
        im = im.convert("L")
        im.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _num(x) -> str:
    """A value cell: the exact float in ``data-v`` (what the tests compare), rounded text for the eye."""
    x = float(x)
    text = "nan" if np.isnan(x) else f"{x:.3f}".replace("-0.000", "0.000")
    return f'<td class="num" data-v="{x!r}">{text}</td>'


def _table(rows: pd.DataFrame, names: list[str], kind: str, caption: str) -> str:
    extra = ["advantage"] if "advantage" in rows else []
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["#", "completion", *names, "reward", *extra])
    body = []
    for i, row in rows.iterrows():
        parts = [row[n] for n in names]
        total = float(np.nansum(parts)) if not all(np.isnan(parts)) else float("nan")
        text = row["completion"] if isinstance(row["completion"], str) else completion_text(row["completion"])
        body.append(f'<tr class="{kind}"><td class="num">{i + 1}</td><td><pre>{html.escape(text)}</pre></td>'
                    + "".join(_num(v) for v in parts) + _num(total) + "".join(_num(row[e]) for e in extra) + "</tr>")
    return f'<table class="{kind}"><caption>{caption}</caption><tr>{head}</tr>{"".join(body)}</table>'


def render(title: str, groups: list[Group], names: list[str], images: dict[str, str], truths: dict[str, list[str]],
           note: str = "") -> str:
    """The page: filters, then one ``section.group`` per (seed, step, prompt); ``images``: image path -> data URI."""
    classes = {p: f"im{i}" for i, p in enumerate(sorted(images))}
    css = "".join(f".{classes[p]} {{ background-image: url({uri}); }}\n" for p, uri in sorted(images.items()))
    seeds, steps = sorted({g.seed for g in groups}), sorted({g.step for g in groups})
    options = lambda values: '<option value="all">all</option>' + "".join(  # noqa: E731
        f'<option value="{v}">{v}</option>' for v in values)
    sections = []
    for g in groups:
        truth = ", ".join(truths.get(g.image_path, [])) or "(not in the manifest)"
        control = (_table(g.control, names, "control", "frozen SFT policy (control), same prompt")
                   if g.control is not None else "<p>No control for this step.</p>")
        sections.append(
            f'<section class="group" data-seed="{g.seed}" data-step="{g.step}" data-image="{html.escape(g.image_path)}">'
            f'<div><div class="thumb {classes[g.image_path]}" role="img" aria-label="{html.escape(g.image_path)}"></div>'
            f"<p>seed {g.seed} · step {g.step}<br>truth: {html.escape(truth)}</p></div>"
            f'<div>{_table(g.policy, names, "policy", "GRPO policy")}{control}</div></section>')
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{_STYLE}{css}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n<p>{html.escape(note)}</p>\n"
            f'<div class="filters">seed <select id="seed">{options(seeds)}</select> step '
            f'<select id="step">{options(steps)}</select> · <span id="shown">{len(groups)}</span> of {len(groups)} '
            f"groups shown · reward = sum of {', '.join(names)}</div>\n"
            + "\n".join(sections) + f"\n<script>{_SCRIPT}</script>\n</body>\n</html>\n")


def write_page(out: Path, title: str, runs: dict[int, Path], group_size: int, image_file: Callable[[str], Path],
               truths: dict[str, list[str]]) -> Path:
    """The browser page of one GRPO run over its seeds (``runs``: seed -> run folder); ``image_file`` maps a logged
    image path to its file."""
    groups, names, notes = [], None, []
    for seed, folder in sorted(runs.items()):
        found, seed_names, reused = run_groups(folder, seed, group_size)
        if names is not None and seed_names != names:
            raise ValueError(f"{folder}: reward components {seed_names}, other seeds {names}")
        names = seed_names
        groups += found
        if reused:
            notes.append(f"seed {seed}: {reused} logged steps reused an earlier generation and are shown at it")
    images = {p: thumbnail_uri(image_file(p)) for p in sorted({g.image_path for g in groups})}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(title, groups, names or [], images, truths, "; ".join(notes)), encoding="utf-8")
    return out


def page_groups(page: Path) -> pd.DataFrame:
    """What a written page shows, one row per completion: group (its index on the page), seed, step, image_path, kind
    (policy | control) and every value cell (``data-v``: components, reward, advantage) by its column heading."""
    from html.parser import HTMLParser

    rows: list[dict] = []

    class Reader(HTMLParser):
        def __init__(self):
            super().__init__()
            self.group, self.heads, self.row = {}, [], None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "section":
                self.group = {"group": self.group.get("group", -1) + 1, "seed": int(a["data-seed"]),
                              "step": int(a["data-step"]), "image_path": a["data-image"]}
            elif tag == "table":
                self.heads = []
            elif tag == "th":
                self.heads.append(None)
            elif tag == "tr" and a.get("class") in ("policy", "control"):
                self.row, self.col = {**self.group, "kind": a["class"]}, 0
                rows.append(self.row)
            elif tag == "td" and self.row is not None:
                if "data-v" in a:
                    self.row[self.heads[self.col]] = float(a["data-v"])
                self.col += 1

        def handle_data(self, data):
            if self.heads and self.heads[-1] is None and self.lasttag == "th":
                self.heads[-1] = data

    Reader().feed(Path(page).read_text(encoding="utf-8"))
    return pd.DataFrame(rows)

