"""Do the claims' verdicts survive a change of float path (issue 36)? Compares the claims tables of two runs of the
same commit on one machine, e.g. the default and ``ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2``:

    python bench/float_paths.py /work/runA/figures/tiny /work/runB/figures/tiny --names default AVX2

Prints one Markdown row per claim: each run's effect [95% CI] and verdict, whether the verdicts agree and, where
they do not, whether each run's CI covers the other's estimate (the issue's criterion); then the competence gate's
verdict per part.
"""
import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("figures", nargs=2, type=Path, help="two figures folders (figures/<profile> of each run)")
    p.add_argument("--names", nargs=2, default=["run 1", "run 2"])
    args = p.parse_args()
    a, b = (pd.read_csv(f / "claims.csv").set_index("claim") for f in args.figures)
    n1, n2 = args.names
    print(f"| claim | {n1} | {n2} | same verdict | {n1} CI covers {n2}'s estimate | {n2} CI covers {n1}'s estimate |")
    print("|---|---|---|---|---|---|")
    holds = True
    for claim in a.index:
        x, y = a.loc[claim], b.loc[claim]
        covers = lambda r, e: "—" if pd.isna(r["lo"]) or pd.isna(e) else ("yes" if r["lo"] <= e <= r["hi"] else "no")  # noqa: E731
        same = x["verdict"] == y["verdict"]
        c1, c2 = covers(x, y["effect"]), covers(y, x["effect"])
        holds &= same or (c1 == "yes" and c2 == "yes")
        print(f"| {claim} | {x['effect [95% CI]']} {x['verdict']} | {y['effect [95% CI]']} {y['verdict']} | "
              f"{'yes' if same else 'no'} | {c1} | {c2} |")
    print(f"\ncriterion (same verdict, or each CI covers the other's estimate) holds for every claim: {holds}")
    gates = [pd.read_csv(f / "competence_gate.csv") for f in args.figures]
    for name, g in zip(args.names, gates):
        print(f"competence gate, {name}: " + "; ".join(f"{r.part} {r.model} {r.entry}: {r.verdict} ({r.passing})"
                                                     for r in g.rename(columns={"seeds passing": "passing"}).itertuples()))


if __name__ == "__main__":
    main()
