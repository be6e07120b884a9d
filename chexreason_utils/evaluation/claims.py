"""A verdict for every claim of the paper: effect (mean over training seeds), CI (seeds x images), verdict.

Each claim names the metric, the comparison, the paper's direction and value (from ``reference``), and the
artifact it is measured on. The CI is ``metrics.seed_image_ci`` (a t-interval over training seeds plus the image
noise the seeds share, Satterthwaite df; its coverage is tested in tests/evaluation/test_interval_coverage.py).
Five verdicts, ruled before any run (``verdict``, ``judge``) with each claim's smallest effect of interest (SESOI,
``ClaimsConfig``, justified in docs/paper.md):

- *supported*: the CI excludes 0 on the paper's side; *contradicted*: it excludes 0 on the other side;
- *no effect of the paper's size*: the CI holds 0 and lies inside +-SESOI;
- *inconclusive*: the CI holds 0 and is wider than that (the note says how many seeds would do);
- *not measurable*: a floor decides the sign (both arms at floor, or the arm at floor is the better one:
  ``verdict_statistics.directional_floor`` on ``scores.floor_reason``; an arm above floor that beats one at floor
  is the model's doing and is ruled as usual), the detector fired in no run of either arm, or there is one training
  seed (no seed-level CI).

C2 PadChest, C3 PadChest and C6 are ours, registered before any run scored PadChest (issue 40; the paper names
PadChest as its next check): C2 and C3 on the PadChest test set, and C6, "the NIH drop reproduces on PadChest",
supported only when the drop is supported at both sites (``combine`` of C2 and C2 PadChest; its CI column shows the
difference of the two drops, PadChest - NIH, as description). They are measured where the profile scores PadChest
(``active``).

C4 is the paper's two-part statement (the general model's scaffold gain > 0 *and* larger than the medical
model's): supported only when both parts are (``combine``). C5 is ruled by a count rule instead of a CI
(``collapse_count``): collapsed runs per arm on one step axis, an exact test per side; it has no SESOI.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import metrics, scores
from . import reference
from .diagnostics import NEIGHBOUR_EPISODE_STEPS, NEIGHBOUR_FACTORS
from .verdict_statistics import (COUNT_TEST, collapse_count_test, collapse_on_axis, directional_floor, p_from_ci,
                                 verdict)

SCAFFOLD = "reasoning_a"
FLOOR_CLAIM = {"CheXpert": "C1", "NIH": "C2", "PadChest": "C2 PadChest"}   # the claim whose arms E0 and E4 split the change of
REPRODUCES = ("C2", "C2 PadChest")   # the drops C6 asks for at both sites
C4_GAINS = ("C4 general gain", "C4 medical gain")   # the parts of C4 reported beside its difference
PARTS = {"C4": ("C4", C4_GAINS[0]), "C6": REPRODUCES}   # claims that hold only when every part holds


class MissingEvidence(LookupError):
    """A claim's input artifact is not there."""


def combine(parts: list[str]) -> str:
    """The verdict of a claim that holds only when all its parts hold."""
    for v in ("not measurable", "contradicted"):
        if v in parts:
            return v
    if all(v == "supported" for v in parts):
        return "supported"
    return "no effect of the paper's size" if "no effect of the paper's size" in parts else "inconclusive"


def judge(row, direction: int, sesoi: float, option: str) -> tuple[str, str]:
    """(verdict, note) of one measured contrast row (effect, lo, hi, seeds, var_seeds, var_images,
    not_measurable): not measurable first, then ``verdict``; an inconclusive note gives the seeds needed."""
    if not sesoi > 0:
        raise ValueError(f"{option} must be > 0 (the smallest effect of interest), got {sesoi!r}")
    reason = row["not_measurable"] if isinstance(row["not_measurable"], str) else ""
    if reason:
        return "not measurable", reason
    if int(row["seeds"]) < 2:
        return "not measurable", "one training seed: no seed-level CI (the image-only CI is shown)"
    v = verdict(row["lo"], row["hi"], direction, sesoi, option)
    if v != "inconclusive":
        return v, ""
    n, half = int(row["seeds"]), (row["hi"] - row["lo"]) / 2
    m = metrics.seeds_for_half_width(row["var_seeds"], n, row["var_images"], sesoi)
    if m is None:
        return v, (f"no number of seeds brings the half-width below SESOI {sesoi:g}: the images' shared noise "
                   f"(sd {np.sqrt(row['var_images']):.3f}) needs more images")
    if half < sesoi:
        return v, (f"half-width {half:.3f} is below SESOI {sesoi:g} already, but the CI crosses +-SESOI: the "
                   f"effect lies near the smallest effect of interest")
    return v, f"half-width {half:.3f} > SESOI {sesoi:g}: about {m} seeds would bring it below at the measured variance"


def judged(what: dict, result: dict, reg, group: str, floor: str, room: str = "") -> dict:
    """A registered readout's row: ``what`` with the contrast ``result`` (``scores.contrast_row``), its verdict and
    note (``judge``, with the registration ``reg``'s sign and SESOI for ``group``) and the SESOI; a non-empty
    ``floor`` (the claim's entries sit at a trivial baseline) or ``room`` (``verdict_statistics.room_for_effect``:
    less effect available than the SESOI asks) makes it not measurable."""
    row = {**scores.contrast_row(what, result), "not_measurable": f"floor: {floor}" if floor else room}
    v, note = judge(row, reg.direction_of(group), reg.sesoi_of(group), f"{reg.file.name}: sesoi")
    return {**row, "verdict": v, "note": note, "sesoi": reg.sesoi_of(group)}


def scaffold_gain(f1_by_format: dict) -> float | np.ndarray:
    """Reasoning A's macro-F1 minus the mean macro-F1 of the other SFT formats (values may be arrays)."""
    if SCAFFOLD not in f1_by_format or len(f1_by_format) < 2:
        raise ValueError(f"the scaffold gain needs {SCAFFOLD!r} and at least one other SFT format, "
                         f"got {sorted(f1_by_format)}")
    others = [v for k, v in f1_by_format.items() if k != SCAFFOLD]
    return f1_by_format[SCAFFOLD] - sum(others) / len(others)


def _paper_gain(table: pd.DataFrame) -> float:
    return float(scaffold_gain(dict(zip(table["format"], table["macro_f1"]))))


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    metric: str
    comparison: str
    direction: int             # the sign of the effect the paper reports
    paper_value: float | None  # None: the paper states it in words only (or not at all: ``in_paper``)
    evidence: str              # the artifact it is measured on (a key of the evidence mapping)
    in_paper: bool = True      # False: our claim, registered where the paper points (PadChest)


T5, T6 = reference.TABLE5_MACRO, reference.TABLE6_MACRO
PAPER_GAINS = {"C4 general gain": _paper_gain(reference.TABLE3), "C4 medical gain": _paper_gain(reference.TABLE2)}
CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "GRPO raises CheXpert macro-F1 over SFT", "CheXpert test macro-F1",
          "GRPO - SFT (medical model, paired per seed)", +1, T5["ChexReason"] - T5["MedGemma SFT"], "CheXpert"),
    Claim("C2", "GRPO lowers NIH macro-F1 from SFT", "NIH test macro-F1 (9 labels)",
          "GRPO - SFT (medical model, paired per seed)", -1, T6["ChexReason"] - T6["MedGemma SFT"], "NIH"),
    Claim("C3", "SFT raises NIH macro-F1 over the base model", "NIH test macro-F1 (9 labels)",
          "SFT - base (medical model, paired per seed: each seed's own base where bases are built)", +1,
          T6["MedGemma SFT"] - T6["MedGemma base"], "NIH"),
    Claim("C4", "The Reasoning-A scaffold helps the general model (gain > 0) and more than the medical one",
          "validation macro-F1 scaffold gain: Reasoning A - mean of the other SFT formats",
          "gain(general) > 0 and gain(general) - gain(medical) > 0, per seed", +1,
          PAPER_GAINS["C4 general gain"] - PAPER_GAINS["C4 medical gain"], "validation formats"),
    Claim("C5", "The final recipe avoids the entropy/mode collapse the unstable recipe shows",
          "share of GRPO steps inside a detected collapse episode (diagnostics.collapse_episodes)",
          "unstable-recipe ablation - final recipe (same reward, per seed)", +1, None, "collapse"),
)
PADCHEST_CLAIMS: tuple[Claim, ...] = (
    Claim("C2 PadChest", "GRPO lowers PadChest macro-F1 from SFT", "PadChest test macro-F1 (13 labels)",
          "GRPO - SFT (medical model, paired per seed)", -1, None, "PadChest", in_paper=False),
    Claim("C3 PadChest", "SFT raises PadChest macro-F1 over the base model", "PadChest test macro-F1 (13 labels)",
          "SFT - base (medical model, paired per seed: each seed's own base where bases are built)", +1, None,
          "PadChest", in_paper=False),
    Claim("C6", "The NIH drop reproduces on PadChest: GRPO lowers macro-F1 from SFT at both cross-dataset sites",
          "NIH and PadChest test macro-F1", "C2 and C2 PadChest both supported (CI: the PadChest drop minus the NIH "
          "drop, paired per seed, as description)", -1, None, "PadChest", in_paper=False),
)
SESOI_OPTIONS = {"C1": "claims.sesoi_c1", "C2": "claims.sesoi_c2", "C3": "claims.sesoi_c3", "C4": "claims.sesoi_c4",
                 "C4 general gain": "claims.sesoi_c4_general_gain", "C2 PadChest": "claims.sesoi_c2",
                 "C3 PadChest": "claims.sesoi_c3", "C6": "claims.sesoi_c2"}   # C5 is a count rule: no SESOI


def active(cfg) -> tuple[Claim, ...]:
    """The claims a profile measures: C1-C5, and the PadChest claims where it scores PadChest."""
    return CLAIMS + (PADCHEST_CLAIMS if "PadChest" in metrics.test_datasets(cfg) else ())


def sesoi(cfg) -> dict[str, float]:
    """Each claim's (and C4's first part's) SESOI from the profile, by contrast id."""
    return {key: getattr(cfg.claims, option.split(".")[1]) for key, option in SESOI_OPTIONS.items()}


def collapse_share(per_step: pd.DataFrame, episodes: pd.DataFrame) -> float:
    """Share of a run's logged steps that lie inside a detected collapse episode."""
    if not len(per_step):
        raise ValueError("a run without logged steps has no collapse share")
    steps = per_step["step"]
    inside = np.zeros(len(steps), dtype=bool)
    for _, e in episodes.iterrows():
        inside |= ((steps >= e["start"]) & (steps <= e["end"])).to_numpy()
    return float(inside.mean())


def by_id(claim_id: str) -> Claim:
    return next(c for c in CLAIMS + PADCHEST_CLAIMS if c.id == claim_id)


def _require(evidence: dict, claim: Claim):
    if evidence.get(claim.evidence) is None:
        raise MissingEvidence(f"claim {claim.id} ({claim.statement}) needs the {claim.evidence!r} artifact, "
                              f"which is missing; have: {sorted(k for k, v in evidence.items() if v is not None)}")
    return evidence[claim.evidence]


def _effects(claim: Claim, evidence: dict, n_boot: int, seed: int) -> dict[str, dict]:
    """The claim's contrast(s), by id: C4 gives its difference and both gains."""
    data = _require(evidence, claim)
    if claim.id == "C6":
        nih, pad = (_require(evidence, by_id(c)) for c in REPRODUCES)
        arms = [(y, p["sft"], p["grpo"]) for y, p in (pad, nih)]
        return {"C6": metrics.gap_change(*arms, n_boot, seed)}
    if claim.id in ("C1", "C2", "C3", "C2 PadChest", "C3 PadChest"):
        y_true, preds = data          # preds: {"base": [matrix], "sft": [per seed], "grpo": [per seed]}
        a, b = ("base", "sft") if claim.id.startswith("C3") else ("sft", "grpo")
        return {claim.id: metrics.paired_bootstrap(y_true, preds[a], preds[b], n_boot, seed)}
    if claim.id == "C4":
        y_true, preds = data          # preds: {role: {format: [per seed]}}
        n = len(next(iter(preds["general"].values())))

        def gain(role):
            return lambda s, w: scaffold_gain({f: metrics.weighted_macro_f1(y_true, p[s], w[0])
                                               for f, p in preds[role].items()})
        general, medical = gain("general"), gain("medical")
        ci = lambda f: metrics.seed_image_ci(f, n, [len(y_true)], n_boot, seed)  # noqa: E731
        return {"C4": ci(lambda s, w: general(s, w) - medical(s, w)),
                "C4 general gain": ci(general), "C4 medical gain": ci(medical)}
    return {"C5": collapse_count(data)}


def _collapsed_runs(runs: dict, flag: str, min_steps: int) -> tuple[dict, list[pd.DataFrame]]:
    """Which runs of each arm collapsed (1 / 0 per seed) with the detector's ``flag`` column and episodes of
    ``min_steps`` on the registered axis, and each seed's ``collapse_on_axis`` table."""
    pick = lambda r: r[["step", flag]].rename(columns={flag: "collapsed"})   # noqa: E731
    tables = [collapse_on_axis({"unstable": pick(u), "final": pick(f)}, runs["axis"], min_steps).set_index("run")
              for u, f in zip(runs["unstable"], runs["final"])]
    return {arm: [int(t.loc[arm, "collapsed"]) for t in tables] for arm in ("unstable", "final")}, tables


def detector_neighbourhood(runs: dict, verdict: str) -> str:
    """How C5's count verdict fares over the detector's registered neighbourhood (``diagnostics.neighbour_rules``:
    the flag columns ``collapsed_<i>`` of ``runs``, each with the episode lengths ``NEIGHBOUR_EPISODE_STEPS``
    around ``min_steps``): in how many settings the verdict is ``verdict``, and the range of collapsed runs per arm
    ("" when the runs carry no neighbourhood)."""
    flags = [c for c in runs["final"][0].columns if c.startswith("collapsed_")]
    if not flags:
        return ""
    n, verdicts, counts = len(runs["final"]), [], {"unstable": [], "final": []}
    for flag in flags:
        for extra in NEIGHBOUR_EPISODE_STEPS:
            hit, _ = _collapsed_runs(runs, flag, max(1, runs["min_steps"] + extra))
            verdicts.append(collapse_count_test(sum(hit["unstable"]), n, sum(hit["final"]), n, +1)["verdict"])
            for arm in counts:
                counts[arm].append(sum(hit[arm]))
    spread = "; ".join(f"{arm} {min(c)}-{max(c)} of {n} runs collapsed" for arm, c in counts.items())
    return (f"detector neighbourhood (each threshold x {'/'.join(f'{f:g}' for f in NEIGHBOUR_FACTORS)}, episode "
            f"length {'/'.join(f'{e:+d}' for e in NEIGHBOUR_EPISODE_STEPS)}): the same verdict in "
            f"{verdicts.count(verdict)} of {len(verdicts)} settings; {spread}")


def collapse_count(runs: dict) -> dict:
    """C5's count rule: on the registered step axis (``verdict_statistics.collapse_on_axis``), which runs of the
    unstable recipe and of the final recipe collapsed (an episode on that axis), compared by
    ``verdict_statistics.collapse_count_test``, with the verdict's stability over the detector's neighbourhood
    (``detector_neighbourhood``). ``runs``: {"unstable": [per seed], "final": [per seed]} frames of generation steps
    (``step``, ``collapsed`` and any ``collapsed_<i>`` neighbour flags), "axis" and "min_steps". The effect is the
    difference of the shares of collapsed runs (Newcombe's interval); each seed's value is its runs' difference
    (collapsed = 1)."""
    hit, tables = _collapsed_runs(runs, "collapsed", runs["min_steps"])
    n = len(tables)
    test = collapse_count_test(sum(hit["unstable"]), n, sum(hit["final"]), n, +1)
    share = lambda arm: ", ".join(f"{t.loc[arm, 'share']:.3f}" for t in tables)   # noqa: E731
    note = "; ".join([f"runs collapsed on the {runs['axis']} axis: unstable {sum(hit['unstable'])} of {n}, final "
                      f"{sum(hit['final'])} of {n} ({COUNT_TEST}; smallest p of the design {test['smallest_p']:.4f})",
                      *([test["note"]] if test["note"] else []),
                      f"share of each run's points inside an episode: unstable {share('unstable')}; final {share('final')}",
                      *filter(None, [detector_neighbourhood(runs, test["verdict"])])])
    return {"effect": test["share_difference"], "lo": test["lo"], "hi": test["hi"],
            "per_seed": [a - b for a, b in zip(hit["unstable"], hit["final"])], "n_seeds": n, "var_seeds": np.nan,
            "var_images": np.nan, "df": np.nan, "rule": "count", "rule_verdict": test["verdict"], "rule_note": note,
            "rule_p": min(1.0, 2 * min(test["p_claim"], test["p_other"]))}


def measure(evidence: dict, floors: dict | None = None, n_boot: int = 1000, seed: int = 0,
            claims: tuple[Claim, ...] = CLAIMS) -> dict[str, dict]:
    """Each claim's contrast(s) (effect = mean over seeds, each seed's value, 95% seed x image CI, variance parts)
    by id, with ``not_measurable`` (a reason, or ""). ``floors`` maps a contrast id (C1-C3, C4's two gains) to the
    entries at floor of its (reference arm, treatment arm) (``queries.stage_outputs.claim_arm_floors``): a floor
    makes a contrast not measurable only where it decides the sign (``verdict_statistics.directional_floor``), and
    C4's difference is not measurable where either gain is. ``evidence`` maps each claim's artifact name to its
    data (see ``steps.evaluation.measure_contrasts``); a missing one is a ``MissingEvidence``. ``claims``: which to
    measure (``active``); C6 is not measurable where C2 or C2 PadChest is."""
    floors = floors or {}
    out = {}
    for claim in claims:
        for key, result in _effects(claim, evidence, n_boot, seed).items():
            reason = result.get("not_measurable", "")
            if key in floors and not reason:
                why = directional_floor(result["lo"], result["hi"], *floors[key])
                reason = f"floor: {why}" if why else ""
            out[key] = {**result, "not_measurable": reason}
    for whole, parts in (("C4", C4_GAINS), ("C6", REPRODUCES)):
        if whole in out and not out[whole]["not_measurable"]:
            down = [key for key in parts if out[key]["not_measurable"]]
            out[whole]["not_measurable"] = f"as {' and '.join(down)}" if down else ""
    return out


def contrast_rows(measured: dict[str, dict]) -> list[dict]:
    """``measure``'s result as rows of the contrasts frame: kind "claim" (C1-C5) or "claim part" (C4's gains),
    with ``not_measurable``."""
    return [{**scores.contrast_row({"kind": "claim part" if key in C4_GAINS else "claim", "contrast": key}, r),
             "not_measurable": r["not_measurable"], "rule": r.get("rule", "ci"), "rule_verdict": r.get("rule_verdict", ""),
             "rule_note": r.get("rule_note", ""), "rule_p": r.get("rule_p", np.nan)} for key, r in measured.items()]


def _ci(r) -> str:
    return f"{r['effect']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"


def claims_table(contrasts: pd.DataFrame, sesoi_by_id: dict[str, float],
                 claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """One row per claim, leading with claim, verdict and effect [95% CI], then the note (floor, seeds needed,
    C4's two gains), SESOI, the paper's value and whether the CI holds it, each seed's value, and the long
    statement / metric / comparison; from the claim rows (``kind`` "claim" and "claim part") of the evaluation's
    contrasts frame. ``sesoi_by_id``: ``sesoi(cfg)``; ``claims``: ``active(cfg)``. C6 is ruled after C2 and C2
    PadChest, from their verdicts."""
    measured = contrasts.loc[contrasts["kind"].isin(["claim", "claim part"])].set_index("contrast")
    rows, ruled = [], {}
    for claim in claims:
        needed = [claim.id, *(C4_GAINS if claim.id == "C4" else ())]
        missing = [k for k in needed if k not in measured.index]
        if missing:
            raise MissingEvidence(f"claim {claim.id} ({claim.statement}) was not measured: the contrasts frame has "
                                  f"{sorted(measured.index)}, not {missing}")
        for key in [k for k in needed if k in SESOI_OPTIONS]:
            if key not in sesoi_by_id:
                raise KeyError(f"no SESOI for {key}: set {SESOI_OPTIONS[key]}")
        r = measured.loc[claim.id]
        if r.get("rule") == "count":
            v, note = r["rule_verdict"], r["rule_note"]
        elif claim.id == "C6":
            parts = {c: ruled[c] for c in REPRODUCES}
            down = r["not_measurable"] if isinstance(r["not_measurable"], str) else ""
            v = "not measurable" if down else combine(list(parts.values()))
            note = "; ".join([f"{c}: {parts[c]}" for c in REPRODUCES]
                             + [f"(GRPO - SFT on PadChest) - (GRPO - SFT on NIH) {_ci(r)} (negative: PadChest drops more)"]
                             + ([f"not measurable: {down}"] if down else []))
        else:
            v, note = judge(r, claim.direction, sesoi_by_id[claim.id], SESOI_OPTIONS[claim.id])
        if claim.id == "C4":
            g, m = measured.loc["C4 general gain"], measured.loc["C4 medical gain"]
            v_gain, note_gain = judge(g, +1, sesoi_by_id["C4 general gain"], SESOI_OPTIONS["C4 general gain"])
            shared = note if note and note == note_gain else ""   # one floor for both parts: said once
            note = "; ".join([f"gain(general) {_ci(g)}, SESOI {sesoi_by_id['C4 general gain']:g}: {v_gain}"
                              + (f" ({note_gain})" if note_gain and not shared else ""),
                              f"gain(medical) {_ci(m)}" + (f" (not measurable: {m['not_measurable']})"
                                                           if isinstance(m["not_measurable"], str)
                                                           and m["not_measurable"] else ""),
                              f"difference: {v}" + (f" ({note})" if note and not shared else ""),
                              *([f"both parts: {shared}"] if shared else [])])
            v = combine([v_gain, v])
        ruled[claim.id] = v
        paper = np.nan if claim.paper_value is None else round(float(claim.paper_value), 4)
        rows.append({"claim": claim.id, "verdict": v, "effect [95% CI]": _ci(r), "note": note,
                     "sesoi": sesoi_by_id.get(claim.id, np.nan), "paper_value": paper,
                     "paper_in_ci": "not in the paper" if not claim.in_paper else "stated in words"
                     if claim.paper_value is None else ("yes" if r["lo"] <= claim.paper_value <= r["hi"] else "no"),
                     "per_seed": r["per_seed"], "seeds": int(r["seeds"]), "effect": r["effect"], "lo": r["lo"],
                     "hi": r["hi"], "statement": claim.statement, "metric": claim.metric,
                     "comparison": claim.comparison})
    return pd.DataFrame(rows)


def family_rows(table: pd.DataFrame, contrasts: pd.DataFrame, sesoi_by_id: dict[str, float]) -> pd.DataFrame:
    """The claims as members of the family-wise view (``verdict_statistics.family_view``): one row per claim with
    its verdict, CI, df, sign, SESOI and p. A CI-ruled claim's p agrees with its CI (``p_from_ci``). A measurable
    claim made of parts (``PARTS``: C4's difference and general gain, C6's two drops) is carried by a part whose
    own verdict (its CI, its SESOI from ``sesoi_by_id``) is the claim's, the one with the larger p: supported needs
    every part, contradicted one, no effect one; C6 as a third member built from two others makes Holm's m larger,
    the conservative side. C5's is the count rule's two-sided exact p. A not measurable claim leaves the family."""
    measured = contrasts.loc[contrasts["kind"].isin(["claim", "claim part"])].set_index("contrast")
    direction = {c.id: c.direction for c in CLAIMS + PADCHEST_CLAIMS}
    rows = []
    for r in table.itertuples():
        m, sesoi = measured.loc[r.claim], r.sesoi
        count = m.get("rule") == "count"
        p = m["rule_p"] if count else p_from_ci(m["lo"], m["hi"], m["df"])
        if r.claim in PARTS and r.verdict != "not measurable":
            def own(c):
                return verdict(*measured.loc[c, ["lo", "hi"]], direction[r.claim], sesoi_by_id[c])
            parts = [c for c in PARTS[r.claim] if own(c) == r.verdict]   # never empty: the claim's verdict combines theirs
            part = max(parts, key=lambda c: p_from_ci(*measured.loc[c, ["lo", "hi", "df"]]))
            m, sesoi = measured.loc[part], sesoi_by_id[part]
            r = r._replace(effect=m["effect"], lo=m["lo"], hi=m["hi"])
            p = p_from_ci(m["lo"], m["hi"], m["df"])
        rows.append({"readout": r.claim, "verdict": r.verdict, "effect": r.effect, "lo": r.lo, "hi": r.hi,
                     "df": np.inf if count else m["df"], "direction": direction[r.claim], "sesoi": sesoi, "p": p,
                     "rule": "count" if count else "ci",
                     "not_measurable": r.note if r.verdict == "not measurable" else ""})
    return pd.DataFrame(rows)


def caption(profile: str, phantom: bool, n_seeds: int) -> str:
    """The claims table's caption: where it was measured, how the CI was made, how the verdict is ruled."""
    where = f"in the phantom world (profile {profile}, tiny models)" if phantom else f"on profile {profile}"
    return (f"the claims tested together, {where}, each at 95% (the family-wise view, Holm-adjusted over every "
            f"verdict of the report, is in 07's family_view); effect = mean "
            f"over {n_seeds} training seed(s); 95% CI: {metrics.CI_METHOD}; verdicts ruled before the run: "
            "supported / contradicted (CI excludes 0 on the paper's / the other side), no effect of the paper's size "
            "(CI inside +-SESOI), inconclusive (wider), not measurable (a floor that decides the sign, a detector "
            "that never fired, or one seed); C5: a count of collapsed runs, one-sided exact tests")
