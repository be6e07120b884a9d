"""Instruction data for the tiny base models: the analogue of the "-it" / "-Instruct" checkpoints.

The paper's bases are instruction-tuned, so asked zero-shot they answer in the requested format most of the
time. The tiny bases are given the same skill on their own pretraining pool (``pretrain/<role>``):
radiographs and reports for the medical base, coloured-shape scenes and captions for the general base, which
never sees a finding name. Each example asks for an answer in a *stated* output format (two tagged blocks,
one tagged block, a list with a given separator, numbered steps, an analysis then an answer, a yes/no in a
tag) and gives that answer.

Held out: no sentence of the nine zero-shot prompts, the four SFT format instructions or the output contract
appears in the data (``check_held_out``), so zero-shot behaviour is generalisation, not recall of a prompt.
Our judgement call: ``<think>``/``<solution>`` is one of six tag pairs the instructions name, always in
sentences of our own, and the most frequent one (``TAG_WEIGHTS``), as the think/answer pair is in real
reasoning instruction sets. With the six pairs equally often, the 0.9 M-parameter base did not learn to copy
tag names from the instruction within the phase's budget (measured: no variant valid).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from .. import prompts
from ..data.phantom import CAPTIONS
from ..labels import CHEXPERT_LABELS, format_label_list

DOMAINS = {"medical": "phantom radiographs with short reports", "general": "coloured-shape scenes with captions"}
TAG_PAIRS = (("think", "solution"), ("analysis", "answer"), ("reasoning", "labels"), ("notes", "result"),
             ("scratchpad", "final"), ("observations", "conclusion"))
TAG_WEIGHTS = (0.6, 0.08, 0.08, 0.08, 0.08, 0.08)   # open: <think>/<solution> most often (see above)
SEPARATORS = {", ": "comma-separated", "; ": "separated by semicolons", " | ": "separated by vertical bars",
              "\n": "one per line"}
FORMATS = ("tagged_pair", "single_tag", "separated_list", "numbered_steps", "analysis_then_answer", "yes_no")
FORMAT_WEIGHTS = (0.60, 0.08, 0.08, 0.08, 0.08, 0.08)

PAIR_TEMPLATES = (
    "Write your {reason} inside <{a}></{a}>, then put {what} inside <{b}></{b}>, {sep}.",
    "Think it through in <{a}>...</{a}> and give {what} in <{b}>...</{b}> ({sep}).",
    "First explain what you see between <{a}> and </{a}>. Then give {what} between <{b}> and </{b}>, {sep}.",
    "Use two blocks: <{a}></{a}> for your {reason} and <{b}></{b}> for {what}, {sep}. Add nothing else.",
    "Reply in exactly this shape: <{a}>your {reason}</{a}><{b}>{what}, {sep}</{b}>.",
)
SINGLE_TEMPLATES = ("Give only {what} inside <{b}></{b}>, {sep}.",
                    "Reply with one block <{b}>...</{b}> that holds {what}, {sep}, and no other text.")
LIST_TEMPLATES = ("List {what}, {sep}, and write nothing else.", "Name {what} as a plain list, {sep}.")
STEP_TEMPLATES = ("Go through the image in numbered steps, one per line, then finish with a line that starts "
                  "with 'Answer:' giving {what}, {sep}.",
                  "Work in numbered steps and end with 'Answer:' followed by {what}, {sep}.")
ANALYSIS_TEMPLATES = ("Give a short analysis first, then write 'Final answer:' and {what}, {sep}.",
                      "Start with 'Analysis:' and a sentence about the image, then 'Final answer:' with {what}, {sep}.")
YES_NO_TEMPLATES = ("{question} Reply yes or no inside <{b}></{b}>.", "{question} Put yes or no in <{b}>...</{b}>.")
STEP_REASON = ("{reason} in numbered steps", "{reason}, one short numbered step per region")


class Domain:
    """What the instructions of one pool talk about: openings, hints, the items an answer lists."""

    def __init__(self, role: str):
        if role not in DOMAINS:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(DOMAINS)}")
        self.role = role
        if role == "medical":
            self.openings = ("This is a chest X-ray.", "Here is a frontal film of the chest.",
                             "The image is a chest radiograph of an adult.", "Look at this chest image.")
            self.hints = ("Check the lungs, heart, pleura and bones in turn.", "Be careful with subtle changes.",
                          "Consider what each abnormality could be before answering.",
                          "Work through the film region by region.", "Double-check your answer before giving it.",
                          "Compare the two sides of the chest.",
                          "Look at the trachea, the heart border, both hila, the lung fields, the costophrenic "
                          "angles and the ribs before you decide.",
                          "Explain the evidence for each abnormality you report and say how sure you are.",
                          "Think like a careful radiologist and do not report a finding you cannot see.",
                          "Look again at the apices, behind the heart and at the bases after your first read.",
                          "Weigh the likely causes of what you see and keep the best-supported one.")
            self.what = ("the findings", "the labels", "the abnormal findings")
            self.reason = ("reasoning", "analysis", "observations", "thoughts")
            self.choices = tuple(c.format(prompts.LABEL_LIST) for c in
                                 ("Use only these names: {}.", "Allowed labels: {}.", "Pick from: {}."))
            self.empty = ("Write No Finding when nothing is abnormal.", "For a normal film the answer is No Finding.")
        else:
            self.openings = ("Here is a picture.", "Look at this image.", "This is a synthetic scene.",
                             "The image shows some coloured shapes.")
            self.hints = ("Pay attention to every shape.", "Check the top, middle and bottom of the picture.",
                          "Count carefully.", "Look at colours before shapes.", "Double-check before you answer.",
                          "Go over the picture from the top edge to the bottom edge and from left to right "
                          "before you decide.", "Explain what you see for each object and say how sure you are.",
                          "Do not name an object you cannot see.",
                          "Look again at the corners after your first look.")
            self.what = ("the shapes", "the coloured shapes", "the objects")
            self.reason = ("reasoning", "description", "observations", "thoughts")
            self.choices = ("Colours that may appear: red, green, blue, yellow, purple, orange.",
                            "Shapes are circles, squares or stripes.")
            self.empty = ()

    def items(self, row: dict) -> list[str]:
        """What an answer lists: CheXpert labels (medical, No Finding when nothing else but devices) or shapes."""
        if self.role == "medical":
            drawn = list(row["findings"])
            return format_label_list(drawn + (["No Finding"] if set(drawn) <= {"Support Devices"} else [])).split(", ")
        return [f"{o['colour']} {o['shape']}" for o in row["objects"]]

    def clauses(self, row: dict) -> list[str]:
        """Sentences about what is in the image (the reasoning an answer starts from)."""
        if self.role == "medical":
            return list(row["findings"].values()) or ["clear lungs, normal heart size, no acute abnormality"]
        place = {"top": "at the top", "middle": "in the middle", "bottom": "at the bottom"}
        return [f"a {o['colour']} {o['shape']} {place[o['place']]}" for o in row["objects"]]

    def question(self, row: dict, rng: np.random.Generator) -> tuple[str, str]:
        """A yes/no question about the image, present half the time, and its answer."""
        present = self.items(row)
        if self.role == "medical":
            pool = [lbl for lbl in CHEXPERT_LABELS if lbl != "No Finding"]
            ask = str(rng.choice(present if rng.random() < 0.5 else pool))
            return f"Does this film show {ask}?", "yes" if ask in present else "no"
        colours = ("red", "green", "blue", "yellow", "purple", "orange")
        ask = str(rng.choice(present)) if rng.random() < 0.5 else \
            f"{rng.choice(colours)} {rng.choice(('circle', 'square', 'stripe'))}"
        return f"Is there a {ask} in the picture?", "yes" if ask in present else "no"


def build_examples(pool_dir: str | Path, role: str, n: int, seed: int) -> pd.DataFrame:
    """``n`` instruction examples (instruction, target, image, task format, tags, separator) from one pool."""
    pool_dir = Path(pool_dir)
    rows = [json.loads(line) for line in (pool_dir / CAPTIONS).read_text().splitlines()]
    key = "findings" if role == "medical" else "objects"
    if not rows or key not in rows[0]:
        raise ValueError(f"{pool_dir / CAPTIONS}: rows need a {key!r} field (regenerate the world)")
    domain = Domain(role)
    rng = np.random.default_rng([seed, list(DOMAINS).index(role)])
    out = []
    for i in range(n):
        row = rows[i % len(rows)]
        fmt = str(rng.choice(FORMATS, p=FORMAT_WEIGHTS))
        out.append({**_example(domain, row, fmt, rng), "image": str(pool_dir / row["image"]), "format": fmt})
    return pd.DataFrame(out)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _example(d: Domain, row: dict, fmt: str, rng: np.random.Generator) -> dict:
    sep = _pick(rng, list(SEPARATORS))
    a, b = TAG_PAIRS[int(rng.choice(len(TAG_PAIRS), p=TAG_WEIGHTS))]
    what, reason = _pick(rng, d.what), _pick(rng, d.reason)
    clauses = d.clauses(row)
    answer = sep.join(d.items(row))
    prose = _pick(rng, ("I see {}.", "The image shows {}.", "Looking at it: {}.")).format("; ".join(clauses))
    steps = "\n".join(f"{k}. {c}." for k, c in enumerate(clauses, start=1))
    fill = dict(a=a, b=b, what=what, reason=reason, sep=SEPARATORS[sep])
    tags = f"{a}/{b}"
    if fmt == "tagged_pair":
        numbered = rng.random() < 0.2
        if numbered:
            fill["reason"] = _pick(rng, STEP_REASON).format(reason=reason)
        task = _pick(rng, PAIR_TEMPLATES).format(**fill)
        target = f"<{a}>{steps if numbered else prose}</{a}><{b}>{answer}</{b}>"
    elif fmt == "single_tag":
        task, target, tags = _pick(rng, SINGLE_TEMPLATES).format(**fill), f"<{b}>{answer}</{b}>", b
    elif fmt == "separated_list":
        task, target, tags = _pick(rng, LIST_TEMPLATES).format(**fill), answer, ""
    elif fmt == "numbered_steps":
        task, target, tags = _pick(rng, STEP_TEMPLATES).format(**fill), f"{steps}\nAnswer: {answer}", ""
    elif fmt == "analysis_then_answer":
        task = _pick(rng, ANALYSIS_TEMPLATES).format(**fill)
        target, tags = f"Analysis: {prose}\nFinal answer: {answer}", ""
    else:
        question, reply = d.question(row, rng)
        task, target = _pick(rng, YES_NO_TEMPLATES).format(question=question, b=b), f"<{b}>{reply}</{b}>"
        tags, sep = b, ""
    parts = [_pick(rng, d.openings)]
    parts += [str(h) for h in rng.choice(d.hints, size=int(rng.integers(0, 4)), replace=False)]
    parts.append(task)
    if fmt != "yes_no" and rng.random() < 0.8:
        parts.append(_pick(rng, d.choices))
    if d.empty and fmt != "yes_no" and rng.random() < 0.5:
        parts.append(_pick(rng, d.empty))
    return {"instruction": " ".join(parts), "target": target, "tags": tags, "separator": sep}


def held_out_sentences() -> list[str]:
    """Every sentence of the nine zero-shot prompts, the SFT format instructions and the contract."""
    texts = [*prompts.PROMPT_VARIANTS.values(), *(f["prompt"] for f in prompts.SFT_FORMATS.values()),
             prompts.CONTRACT, prompts.LABEL_ONLY_CONTRACT]
    return sorted({s.strip() for t in texts for s in re.split(r"(?<=\.)\s+", t) if s.strip()})


def check_held_out(examples: pd.DataFrame) -> None:
    """Raise if any held-out sentence appears verbatim in an instruction or a target."""
    held = held_out_sentences()
    for col in ("instruction", "target"):
        for text in examples[col]:
            hit = next((s for s in held if s in text), None)
            if hit:
                raise ValueError(f"instruction data column {col!r} holds the held-out sentence {hit!r}")


def card(examples: pd.DataFrame, role: str) -> dict:
    """What the instruction data holds: domain, counts per format, tag pair and separator, images used."""
    count = lambda col: dict(sorted(Counter(examples[col]).items()))   # noqa: E731
    return {"domain": DOMAINS[role], "examples": len(examples), "images": int(examples["image"].nunique()),
            "formats": count("format"), "tag_pairs": count("tags"), "separators": count("separator"),
            "held_out": "no sentence of the nine zero-shot prompts, the SFT format instructions or the output "
                        "contract appears verbatim; <think>/<solution> is one of six tag pairs (TAG_WEIGHTS), "
                        "in our own sentences",
            "finding_names_in_targets": bool(examples["target"].str.contains(
                "|".join(re.escape(lbl) for lbl in CHEXPERT_LABELS)).any())}
