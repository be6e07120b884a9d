"""The paper's reported numbers (arXiv 2512.23090, Tables 1-6) as data, each tagged with its table.

These are *reported* values. A run of this companion produces *reproduced* values under a named profile;
a tiny-profile number is never a reproduction of these.
"""
from __future__ import annotations

import pandas as pd

from ..labels import CHEXPERT_LABELS, NIH_EVAL_LABELS_PAPER

# Table 1: zero-shot prompt variants, MedGemma-4B, validation set.
TABLE1 = pd.DataFrame([
    ("reasoning_narrative", .524, .270, .002), ("self_check", .514, .253, .010), ("hypothesis", .357, .188, .022),
    ("reasoning_a", .498, .245, .000), ("reasoning_b", .427, .170, .000), ("reasoning_c", .260, .132, .482),
    ("reasoning_d", .329, .170, .000), ("reasoning_e", .404, .218, .000), ("reasoning_f", .269, .108, .180),
], columns=["variant", "micro_f1", "macro_f1", "fail_rate"]).assign(table="Table 1")

_SFT_COLUMNS = ["format", "micro_p", "micro_r", "micro_f1", "macro_p", "macro_r", "macro_f1", "fail_rate"]
# Table 2: SFT formats, MedGemma-4B.
TABLE2 = pd.DataFrame([
    ("only_label", .596, .375, .461, .332, .214, .241, .000),
    ("free_reasoning", .480, .365, .415, .358, .227, .253, .032),
    ("reasoning_narrative", .565, .281, .376, .345, .141, .180, .210),
    ("reasoning_a", .405, .230, .293, .381, .143, .139, .004),
], columns=_SFT_COLUMNS).assign(table="Table 2")
# Table 3: SFT formats, Qwen2.5-VL-3B-Instruct.
TABLE3 = pd.DataFrame([
    ("only_label", .333, .199, .249, .153, .122, .080, .000),
    ("free_reasoning", .200, .200, .200, .150, .142, .131, .056),
    ("reasoning_narrative", .396, .198, .264, .122, .076, .075, .170),
    ("reasoning_a", .322, .436, .371, .194, .265, .208, .002),
], columns=_SFT_COLUMNS).assign(table="Table 3")
# Table 4: GRPO from the Free-Reasoning SFT checkpoint.
TABLE4 = pd.DataFrame([
    ("nuanced", "best_f1", .342, .445, .387, .248, .311, .257, .020),
    ("nuanced", "final", .335, .424, .374, .228, .271, .232, .030),
    ("hard", "best_f1", .343, .455, .391, .250, .328, .258, .028),
    ("hard", "final", .340, .418, .375, .243, .279, .242, .018),
], columns=["reward", "checkpoint", *_SFT_COLUMNS[1:]]).assign(table="Table 4")

TEST_MODELS = ("NV-Reason-CXR-3B", "MedGemma base", "Qwen2.5-VL", "MedGemma SFT", "ChexReason")
_T5 = {
    "Atelectasis": (.758, .288, .354, .229, .240), "Cardiomegaly": (.853, .627, .385, .442, .664),
    "Consolidation": (.188, .000, .097, .205, .000), "Edema": (.807, .174, .128, .385, .132),
    "Enlarged Cardiomediastinum": (.879, .016, .407, .075, .000), "Fracture": (.750, .143, .009, .150, .200),
    "Lung Lesion": (.875, .300, .042, .211, .133), "Lung Opacity": (.961, .748, .464, .161, .743),
    "No Finding": (.775, .625, .318, .579, .607), "Pleural Effusion": (.822, .634, .264, .464, .625),
    "Pleural Other": (.667, .000, .026, .000, .000), "Pneumonia": (.429, .400, .031, .143, .400),
    "Pneumothorax": (.842, .308, .033, .179, .286), "Support Devices": (.970, .808, .637, .728, .818),
}
TABLE5_MACRO = dict(zip(TEST_MODELS, (.755, .362, .228, .282, .346)))
_T6 = {
    "Atelectasis": (.422, .300, .000, .264, .260), "Cardiomegaly": (.543, .482, .000, .440, .312),
    "Consolidation": (.056, .029, .109, .200, .178), "Edema": (.273, .522, .000, .526, .429),
    "Lung Lesion": (.397, .195, .115, .113, .179), "No Finding": (.283, .275, .215, .343, .250),
    "Pleural Other": (.152, .180, .000, .248, .082), "Pneumonia": (.000, .202, .117, .138, .182),
    "Pneumothorax": (.552, .000, .000, .416, .317),
}
TABLE6_MACRO = dict(zip(TEST_MODELS, (.297, .243, .062, .299, .243)))


def per_label_table(which: int) -> pd.DataFrame:
    """Table 5 (CheXpert, 14 labels) or Table 6 (NIH, 9 labels): rows = labels, columns = models."""
    data, labels = (_T5, CHEXPERT_LABELS) if which == 5 else (_T6, NIH_EVAL_LABELS_PAPER)
    return pd.DataFrame([data[lbl] for lbl in labels], index=list(labels), columns=list(TEST_MODELS))


def reported_macro(which: int) -> dict[str, float]:
    return TABLE5_MACRO if which == 5 else TABLE6_MACRO


HEADLINE = {"chexpert": {"sft": .282, "grpo": .346}, "nih": {"sft": .299, "grpo": .243}}


def headline_sentence() -> str:
    """The paper's headline in words, from ``HEADLINE``."""
    parts = [f"{name} {v['sft']:.3f} -> {v['grpo']:.3f} ({(v['grpo'] - v['sft']) / v['sft']:+.1%})"
             for name, v in (("CheXpert", HEADLINE["chexpert"]), ("NIH", HEADLINE["nih"]))]
    return "The paper, medical model macro-F1 SFT -> GRPO: " + "; ".join(parts) + "."
