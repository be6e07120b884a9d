"""Stage 01 (sampling): load the datasets, sample SFT / RL / validation, select the test sets (PadChest's where
``data.padchest_root`` is set), write the manifests; the pool's label prevalence (the nuanced reward's false-positive weights read it)."""
from __future__ import annotations

import pandas as pd

from ..config import Config
from ..data import load_chexpert
from ..data.mimic import load_pool
from ..data.nih import nih_test_selection
from ..data.padchest import padchest_test_selection
from ..data.pool_check import check_pools, pool_folders
from ..jsonl_store import write_if_changed
from ..data.manifests import load_manifest, manifest_frame, write_manifest
from ..evaluation.metrics import label_matrix
from ..paths import RunPaths
from ..data.sampling import REFERENCE_POOL, label_table, reference_pool, split_train_pool
from ..run_records import count


def build_manifests(cfg: Config, paths: RunPaths) -> dict:
    """Load the datasets, sample SFT / RL / validation, select the test sets, write the manifests."""
    d, s = cfg.data, cfg.sampling
    pool = load_pool(cfg, paths)
    chex = load_chexpert(paths.resolve(d.chexpert_root), "test", d.uncertainty_policy, d.chexpert_test_csv,
                         check_images=d.check_images)
    pool_frame, pool_labels = manifest_frame(pool.dataset), pool.labels()
    train, selections = split_train_pool(pool_frame, pool_labels, s.n_sft, s.n_rl, s.n_val, s.min_fraction,
                                         s.max_fraction, s.overrep_penalty, s.seed, s.patient_disjoint)
    nih, nih_frame, selections["nih_test"] = nih_test_selection(cfg, paths.resolve(d.nih_root))
    frames = {name: train.loc[train["subset"] == name].reset_index(drop=True) for name in ("sft", "rl", "val")}
    frames["chexpert_test"] = manifest_frame(chex.dataset, "test")
    frames["nih_test"] = nih_frame.reset_index(drop=True)
    loads = [pool, chex, nih]
    if d.padchest_root:
        pad, pad_frame, selections["padchest_test"] = padchest_test_selection(cfg, paths.resolve(d.padchest_root))
        frames["padchest_test"] = pad_frame.reset_index(drop=True)
        loads.append(pad)
    frames[REFERENCE_POOL] = reference_pool(pool_frame, frames["val"], cfg.reference.pool_size, s.seed)
    if (paths.world / "pretrain").is_dir():   # the tiny bases' pools: no test image, no test patient
        check_pools(pool_folders(paths.world / "pretrain"), {n: f for n, f in frames.items() if n.endswith("_test")})
    for name, frame in frames.items():
        write_manifest(paths, name, frame)
    prevalence = label_table(pool_labels, "pool")
    write_if_changed(paths.pool_prevalence_file, prevalence.to_csv(index=False))
    drops = pd.concat([r.report() for r in loads], ignore_index=True)
    write_if_changed(paths.load_report_file, drops.to_csv(index=False))
    for row in drops.loc[drops["reason"] != "kept"].itertuples():
        count(f"{row.source} dropped ({row.reason}{': ' + row.files if row.files else ''})", row.rows)
    return {"frames": frames, "selections": selections, "pool_labels": pool_labels, "loads": tuple(loads),
            "drops": drops}


def prevalence_tables(paths: RunPaths) -> pd.DataFrame:
    """Label prevalence of the pool and of each training subset (long form, for the 01 figure)."""
    pool = pd.read_csv(paths.pool_prevalence_file)
    subsets = [label_table(label_matrix(load_manifest(paths, n)), n) for n in ("sft", "rl", "val")]
    return pd.concat([pool, *subsets], ignore_index=True)
