"""Zero-shot prompt variants, SFT target formats, and the output contract with its one parser.

The paper (arXiv 2512.23090) released no prompt texts: every template here is written by us from the
paper's one-line descriptions (docs/paper.md, "Prompts and outputs"), and named after the paper's variants.

The contract: exactly one ``<think>...</think>`` followed by exactly one ``<solution>...</solution>`` holding
comma-separated CheXpert labels, and nothing else (the Only Label format has the solution block alone).
``parse_output`` is used by the SFT checks, the rewards and the evaluation alike.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .labels import CHEXPERT_LABELS, canonical_label, format_label_list, split_label_list

LABEL_LIST = ", ".join(CHEXPERT_LABELS)
CONTRACT = ("Answer with your reasoning inside <think></think> and then the final labels inside "
            "<solution></solution>, comma-separated, chosen only from: " + LABEL_LIST +
            ". Write nothing outside these two blocks. If there is no abnormality, answer No Finding.")
LABEL_ONLY_CONTRACT = ("Answer only with <solution></solution> holding the comma-separated labels, chosen only "
                       "from: " + LABEL_LIST + ". If there is no abnormality, answer No Finding.")
_BASE = "You are reading a frontal chest radiograph. "

# The nine zero-shot variants of Table 1 (texts ours).
PROMPT_VARIANTS: dict[str, str] = {
    "reasoning_narrative": _BASE + "Reason as an expert radiologist would, in a free-form narrative of what you see, "
                                   "then give the findings. " + CONTRACT,
    "self_check": _BASE + "Scan each region (airways, lungs, pleura, heart, mediastinum, bones, devices), then do a "
                          "verification pass that re-checks every finding before you commit to it. " + CONTRACT,
    "hypothesis": _BASE + "Form hypotheses about possible findings and compare the evidence for and against each "
                          "before deciding. " + CONTRACT,
    "reasoning_a": _BASE + "Follow this mandatory 12-step checklist, writing one line per step: 1 image quality, "
                           "2 devices, 3 airway, 4 mediastinum, 5 heart size, 6 hila, 7 right lung, 8 left lung, "
                           "9 pleura, 10 diaphragm, 11 bones, 12 summary. " + CONTRACT,
    "reasoning_b": _BASE + "Review the lungs zone by zone (upper, middle, lower on each side), then the pleura, heart "
                           "and mediastinum. " + CONTRACT,
    "reasoning_c": _BASE + "Write an evidence-heavy report and a label-confidence matrix giving a confidence for "
                           "each of the 14 labels, then list the labels you are confident in. " + CONTRACT,
    "reasoning_d": _BASE + "Apply strict definitions: call a label only if its defining radiographic criteria are "
                           "met (for example cardiothoracic ratio above 0.5 for Cardiomegaly). " + CONTRACT,
    "reasoning_e": _BASE + "After a first read, take a second look at the anatomic blind spots (apices, "
                           "retrocardiac region, costophrenic angles, below the diaphragm). " + CONTRACT,
    "reasoning_f": _BASE + "For every abnormality you see, give a short differential diagnosis and settle on the "
                           "best-supported label. " + CONTRACT,
}

# The four SFT target formats of Tables 2-3: the instruction given with each, and whether it has a think block.
SFT_FORMATS: dict[str, dict] = {
    "reasoning_narrative": {"prompt": PROMPT_VARIANTS["reasoning_narrative"], "think": True},
    "reasoning_a": {"prompt": PROMPT_VARIANTS["reasoning_a"], "think": True},
    "free_reasoning": {"prompt": _BASE + "Give a concise analysis, then the findings. " + CONTRACT, "think": True},
    "only_label": {"prompt": _BASE + "List the findings. " + LABEL_ONLY_CONTRACT, "think": False},
}

_TAG = re.compile(r"</?(think|solution)>")


@dataclass(frozen=True)
class Parsed:
    """What the parser found: labels (valid ones, in table order), validity and the reasons if invalid."""

    labels: tuple[str, ...]
    valid: bool
    reasons: tuple[str, ...] = ()
    think: str = ""
    invalid_labels: tuple[str, ...] = ()
    duplicate_labels: tuple[str, ...] = ()
    extra_text: str = ""
    tags_ok: bool = True
    details: dict = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def requires_think(fmt: str) -> bool:
    """Whether outputs of an SFT format / prompt variant must hold a think block."""
    return SFT_FORMATS.get(fmt, {"think": True})["think"]


def parse_output(text: str, think: bool = True) -> Parsed:
    """Parse a model output against the contract (``think=False`` for Only Label)."""
    reasons: list[str] = []
    counts = {t: len(re.findall(f"<{t}>", text)) for t in ("think", "solution")}
    closes = {t: len(re.findall(f"</{t}>", text)) for t in ("think", "solution")}
    for tag in ("think", "solution") if think else ("solution",):
        if counts[tag] == 0 or closes[tag] == 0:
            reasons.append(f"missing <{tag}> block")
        elif counts[tag] > 1 or closes[tag] > 1:
            reasons.append(f"duplicated <{tag}> block")
    if not think and (counts["think"] or closes["think"]):
        reasons.append("unexpected <think> block")
    tags_ok = not reasons
    think_text, body, extra = "", "", ""
    if tags_ok:
        pattern = r"\s*<think>(.*?)</think>\s*<solution>(.*?)</solution>\s*" if think else r"\s*<solution>(.*?)</solution>\s*"
        match = re.fullmatch(pattern, text, flags=re.S)
        if match:
            think_text, body = (match.group(1), match.group(2)) if think else ("", match.group(1))
        else:
            inner = re.search(r"<solution>(.*?)</solution>", text, flags=re.S)
            body = inner.group(1) if inner else ""
            if think and text.find("<solution>") < text.find("</think>"):
                reasons.append("blocks out of order")
            extra = _TAG.sub(" ", re.sub(r"<(think|solution)>.*?</\1>", " ", text, flags=re.S)).strip()
            if extra:
                reasons.append("text outside blocks")
    else:
        inner = re.search(r"<solution>(.*?)</solution>", text, flags=re.S)
        body = inner.group(1) if inner else ""
    labels, invalid, dupes = [], [], []
    for item in split_label_list(body):
        name = canonical_label(item)
        if name is None:
            invalid.append(item)
        elif name in labels:
            dupes.append(name)
        else:
            labels.append(name)
    if invalid:
        reasons.append("unknown label: " + ", ".join(invalid))
    if dupes:
        reasons.append("duplicate label: " + ", ".join(dupes))
    order = {n: i for i, n in enumerate(CHEXPERT_LABELS)}
    return Parsed(labels=tuple(sorted(labels, key=order.get)), valid=not reasons, reasons=tuple(reasons),
                  think=think_text.strip(), invalid_labels=tuple(invalid), duplicate_labels=tuple(dupes),
                  extra_text=extra, tags_ok=tags_ok)


def format_target(fmt: str, labels: list[str], rationale: str) -> str:
    """An SFT target in one of the four formats."""
    solution = f"<solution>{format_label_list(labels) or 'No Finding'}</solution>"
    return solution if not requires_think(fmt) else f"<think>{rationale.strip()}</think>{solution}"


def completion_text(completion) -> str:
    """trl passes plain strings or conversational ``[{'role': 'assistant', 'content': ...}]``."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"] if completion else ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content


def user_message(instruction: str) -> list[dict]:
    """One user turn with the image first, as every chat template here expects."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]


def prompt_for(name: str) -> str:
    """Instruction text of a prompt variant or SFT format by name."""
    if name in SFT_FORMATS:
        return SFT_FORMATS[name]["prompt"]
    if name in PROMPT_VARIANTS:
        return PROMPT_VARIANTS[name]
    raise KeyError(f"unknown prompt {name!r}; variants: {', '.join(PROMPT_VARIANTS)}; formats: {', '.join(SFT_FORMATS)}")
