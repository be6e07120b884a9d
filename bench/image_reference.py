"""What the pixels allow (issue 36): the supervised image reference (``train.image_reference``) fitted per training
seed (a) on the SFT images and (b) on the training site's whole frontal pool without the validation patients
(01's ``reference_pool`` manifest), thresholds on validation, scored on every evaluation set beside the trivial baselines and, where 04 has
run, the medical model's SFT (Free-Reasoning) macro-F1. Validation is scored twice: with the thresholds it chose
(in-sample, optimistic) and cross-fitted (each half answered with thresholds chosen on the other half).

    python bench/image_reference.py --run-dir runs/smoke                     # a run that has done 01_sampling
    python bench/image_reference.py --run-dir runs/tiny --seeds 0 --epochs 20

Nothing is written into the run directory: fitted references go to ``--out`` (a temporary folder by default),
where a rerun with the same images and settings loads them instead of refitting.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from chexreason_utils.config import load_profile  # noqa: E402
from chexreason_utils.data.manifests import load_manifest  # noqa: E402
from chexreason_utils.data.sampling import REFERENCE_POOL  # noqa: E402
from chexreason_utils.evaluation import metrics, scores  # noqa: E402
from chexreason_utils.labels import CHEXPERT_LABELS  # noqa: E402
from chexreason_utils.paths import RunPaths  # noqa: E402
from chexreason_utils.queries.entries import SETS  # noqa: E402
from chexreason_utils.train import image_reference  # noqa: E402


def vlm_sft_macro(paths: RunPaths) -> dict:
    """dataset -> the medical model's SFT Free-Reasoning macro-F1 (mean over seeds) from 04, where it ran."""
    if not paths.scores_file.exists():
        return {}
    frame = scores.read_scores(paths.scores_file)
    rows = frame.loc[(frame["model"] == "medical") & (frame["stage"] == "sft") & (frame["name"] == "free_reasoning")
                     & (frame["aggregate"] == scores.MEAN) & (frame["label"] == "macro")]
    return dict(zip(rows["dataset"], rows["f1"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a run directory (runs/<profile>) that has done 01_sampling")
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="training seeds (default: the run's)")
    p.add_argument("--epochs", type=int, default=image_reference.ReferenceSettings.epochs)
    p.add_argument("--image-size", type=int, default=image_reference.ReferenceSettings.image_size)
    p.add_argument("--threads", type=int, default=1, help="torch threads (small convolutions: 1 is fastest)")
    p.add_argument("--out", default=None, help="where fitted references are kept (default: a temporary folder)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = json.loads((Path(args.run_dir) / "manifest.json").read_text())
    cfg = load_profile(run["profile"], run.get("overrides") or {})
    paths = RunPaths.for_profile(cfg.profile, args.run_dir)
    sets = {dataset: load_manifest(paths, name) for dataset, name in SETS.items()}
    train = {"SFT images": load_manifest(paths, "sft"), "site pool": load_manifest(paths, REFERENCE_POOL)}
    print(f"{cfg.profile} run {paths.root}: training sets " + ", ".join(f"{k} {len(v)}" for k, v in train.items())
          + "; evaluation sets " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    labels = {ds: metrics.eval_labels(cfg, ds) if ds != "validation" else CHEXPERT_LABELS for ds in sets}
    sft_truths = train["SFT images"]["truth"]
    floors = {}
    for ds, frame in sets.items():
        base = scores.baseline_scores(ds, metrics.label_matrix(frame, labels[ds]), labels[ds], sft_truths, 200, 0)
        macro = base.loc[base["label"] == "macro"].set_index("name")["f1"]
        floors[ds] = (macro["prevalence-matched random"], macro.max())
    vlm = vlm_sft_macro(paths)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for seed in args.seeds if args.seeds is not None else cfg.seeds:
            settings = image_reference.ReferenceSettings(seed=seed, epochs=args.epochs, image_size=args.image_size)
            for what, frame in train.items():
                t0 = time.process_time()
                ref = image_reference.fit_cached(frame, sets["validation"], settings,
                                                 out / f"{what.replace(' ', '_')}-seed{seed}")
                fit_s = time.process_time() - t0
                predicted = {ds: ref.predict(evaluation) for ds, evaluation in sets.items()}
                predicted["validation, cross-fitted"] = ref.predict_cross_fitted(sets["validation"])
                for ds, frame in predicted.items():
                    rows.append({"trained on": what, "seed": seed, "dataset": ds, "fit_cpu_s": round(fit_s, 1),
                                 "macro_f1": metrics.scores(frame, cfg, labels[ds.split(",")[0]])["macro_f1"]})
    table = pd.DataFrame(rows)
    order = [*sets, "validation, cross-fitted"]
    wide = table.pivot_table(index="trained on", columns="dataset", values="macro_f1", aggfunc="mean")[order]
    per_seed = table.pivot_table(index=["trained on", "seed"], columns="dataset", values="macro_f1")[order]
    pd.set_option("display.width", 160)
    print("\nmacro-F1 of the image reference, each seed:\n" + per_seed.round(3).to_string())
    print("\nmean over seeds, beside the trivial baselines and the medical model's SFT (Free Reasoning):")
    wide.loc["prevalence-matched random"] = [floors[ds.split(",")[0]][0] for ds in wide.columns]
    wide.loc["best trivial baseline"] = [floors[ds.split(",")[0]][1] for ds in wide.columns]
    if vlm:
        wide.loc["medical SFT free_reasoning (04)"] = [vlm.get(ds, float("nan")) for ds in wide.columns]
    print(wide.round(3).to_string())
    fits = table.drop_duplicates(["trained on", "seed"])
    print(f"\nfit CPU seconds ({args.threads} torch thread(s); a reference found in --out is loaded, not fitted): "
          + ", ".join(f"{r['trained on']} seed {r['seed']} {r['fit_cpu_s']:.1f}" for _, r in fits.iterrows()))


if __name__ == "__main__":
    main()
