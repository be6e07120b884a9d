"""The NIH test on a second truth (``second_truth``), end of 04: the SFT model and ChexReason scored on the NIH labels,
on the phantom's drawn findings (embedded world) and on the expert relabels (``evaluation.relabel_csv``)."""
from __future__ import annotations

import pandas as pd

from ..config import Config
from ..data.nih_relabels import RELABEL_EVAL_LABELS
from ..evaluation.metrics import eval_labels, scores
from ..paths import RunPaths
from ..data.second_truth import RELABEL_MANIFEST, drawn_truth, write_relabel_manifest
from ..queries.entries import nih_entries
from ..queries.predictions import predictions


def second_truth_scores(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """Macro-F1 etc. of the SFT model and ChexReason, per training seed, on the NIH labels and on the second
    truth available (the drawn findings in the embedded world; the expert relabels when configured)."""
    nih_labels = eval_labels(cfg, "NIH")
    rows = []
    for name, entry in nih_entries(cfg, paths).items():
        prompt = entry.keys.prompt
        for seed, (tag, model) in entry.models.items():
            frame = predictions(cfg, paths, model, "nih_test", prompt, tag)
            rows.append({"model": name, "seed": seed, "truth": "NIH labels", "n": len(frame),
                         **scores(frame, cfg, nih_labels)})
            if cfg.world.enabled:
                drawn = frame.drop(columns="truth").merge(drawn_truth(paths.world), on="image_id", how="left")
                rows.append({"model": name, "seed": seed, "truth": "drawn findings", "n": len(drawn),
                             **scores(drawn, cfg, nih_labels)})
            if cfg.evaluation.relabel_csv:
                if not paths.manifest_file(RELABEL_MANIFEST).is_file():
                    write_relabel_manifest(cfg, paths)
                relabel = predictions(cfg, paths, model, RELABEL_MANIFEST, prompt, tag)
                rows.append({"model": name, "seed": seed, "truth": "expert relabels (4 labels)", "n": len(relabel),
                             **scores(relabel, cfg, RELABEL_EVAL_LABELS)})
    return pd.DataFrame(rows)
