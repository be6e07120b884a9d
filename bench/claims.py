"""The claims table (C1-C5: verdict, effect over seeds with its seed x image CI) of the tiny profile's run (needs `make
figures` to have run 00-03; 04's evaluation is redone from the prediction cache, missing predictions are made)."""
import pandas as pd

from chexreason_utils.evaluation import claims
from chexreason_utils.config import load_profile
from chexreason_utils.paths import RunPaths
from chexreason_utils.steps import evaluation as evaluation_steps


def main(profile: str = "tiny") -> None:
    cfg = load_profile(profile)
    paths = RunPaths.for_profile(profile)
    table = claims.claims_table(evaluation_steps.evaluate_run(cfg, paths).contrasts, claims.sesoi(cfg))
    print(claims.caption(profile, cfg.world.enabled, len(cfg.seeds)))
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table[["claim", "verdict", "effect [95% CI]", "note", "per_seed", "paper_value"]].to_string(index=False))


if __name__ == "__main__":
    main()
