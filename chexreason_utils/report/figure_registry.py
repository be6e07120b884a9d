"""Every figure and table the companion makes, one record each: id -> notebook -> the functions that make it ->
output files.

The figure table of docs/figures.md is rendered from this list (``chexreason readme-table``) and a
test checks that the page matches it, so a figure cannot exist without being documented.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    id: str
    kind: str          # figure | table
    notebook: str
    paper_ref: str     # what it corresponds to in the paper ("new" if the paper has no such figure)
    title: str
    # the package function(s) whose output it shows, as ``module.function`` called in its notebook (the report
    # links each to its module by name; a test checks that the notebook calls them)
    made_by: tuple[str, ...]

    def files(self) -> list[str]:
        if self.kind == "figure":
            return [f"{self.id}.png", f"{self.id}.pdf", f"{self.id}.csv"]
        return [f"{self.id}.csv", f"{self.id}.md", f"{self.id}.tex"]


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("world_examples", "figure", "00_setup", "new", "Phantom radiographs, one per finding and site",
             made_by=("steps.setup.setup_world", "report.figures.world_examples")),
    Artifact("label_prevalence", "figure", "01_sampling", "Sec. data", "Label prevalence: pool vs SFT vs RL vs validation",
             made_by=("steps.sampling.prevalence_tables", "report.figures.label_prevalence")),
    Artifact("label_cooccurrence", "figure", "01_sampling", "new", "Label co-occurrence in the SFT selection",
             made_by=("report.figures.label_cooccurrence",)),
    Artifact("fig1_sft_dynamics", "figure", "02_sft", "Fig. 1", "SFT token accuracy and training loss by format",
             made_by=("steps.sft.sft_curves", "report.figures.sft_dynamics")),
    Artifact("sft_final_values", "table", "02_sft", "Fig. 1", "Final SFT loss, token accuracy and validity by format",
             made_by=("steps.sft.sft_final_values",)),
    Artifact("fig2_grpo_nuanced", "figure", "03_grpo", "Fig. 2", "GRPO with the nuanced reward: reward, components, length",
             made_by=("report.figures.grpo_training",)),
    Artifact("fig3_grpo_hard", "figure", "03_grpo", "Fig. 3", "GRPO with the hard reward: reward, components, length",
             made_by=("report.figures.grpo_training",)),
    Artifact("grpo_val_f1", "figure", "03_grpo", "new", "Validation F1 at every GRPO checkpoint",
             made_by=("report.figures.f1_by_step",)),
    Artifact("table1_prompts", "table", "04_evaluation", "Table 1", "Zero-shot prompt variants, medical model, validation",
             made_by=("steps.evaluation.evaluate_run", "report.reporting.table1")),
    Artifact("table2_sft_medical", "table", "04_evaluation", "Table 2", "SFT formats, medical model, validation",
             made_by=("steps.evaluation.evaluate_run", "report.reporting.sft_table")),
    Artifact("table3_sft_general", "table", "04_evaluation", "Table 3", "SFT formats, general model, validation",
             made_by=("steps.evaluation.evaluate_run", "report.reporting.sft_table")),
    Artifact("table4_grpo", "table", "04_evaluation", "Table 4", "GRPO best-F1 and final checkpoints, validation",
             made_by=("steps.evaluation.evaluate_run", "report.reporting.table4")),
    Artifact("table5_chexpert", "table", "04_evaluation", "Table 5", "CheXpert test, per-label F1",
             made_by=("report.reporting.test_columns", "report.reporting.test_table")),
    Artifact("table6_nih", "table", "04_evaluation", "Table 6", "NIH ChestX-ray14, per-label F1 (9 labels)",
             made_by=("report.reporting.test_columns", "report.reporting.test_table")),
    Artifact("table_padchest", "table", "04_evaluation", "new", "PadChest test (physician-labelled), per-label F1 (13 labels): the paper's next check",
             made_by=("report.reporting.test_columns", "report.reporting.test_table")),
    Artifact("headline", "figure", "04_evaluation", "Tables 5-6", "Benchmark success, clinical failure: macro-F1 with 95% CIs (t over seeds + shared image noise); image-only CNN reference bars, trivial baselines dashed",
             made_by=("report.reporting.headline_summary", "report.figures.headline")),
    Artifact("per_label_heatmap", "figure", "04_evaluation", "Tables 5-6", "Per-label F1 heatmaps, every test set",
             made_by=("report.reporting.per_label_columns", "report.figures.per_label_heatmaps")),
    Artifact("generalisation_gap", "figure", "04_evaluation", "new", "Test macro-F1 (CheXpert, NIH, PadChest where scored) at every GRPO checkpoint",
             made_by=("report.reporting.checkpoint_curve", "report.figures.f1_by_step")),
    Artifact("nih_subgroups", "figure", "04_evaluation", "new", "NIH macro-F1 by sex and age band (bars: mean of seeds; dots: seeds)",
             made_by=("steps.evaluation.subgroup_table", "report.figures.subgroups")),
    Artifact("paired_differences", "table", "04_evaluation", "Sec. results", "Paired differences: SFT->GRPO on each test set and the change of the gap from CheXpert to each other test set, CIs and probability of improvement",
             made_by=("steps.evaluation.evaluate_run", "report.reporting.paired_differences")),
    Artifact("competence_gate", "table", "04_evaluation", "new", "The competence gate on validation (registered before the run): SFT vs the image-only reference, off the floor, zero-shot",
             made_by=("steps.evaluation.judge_gate", "evaluation.competence_gate.summary")),
    Artifact("claims", "table", "04_evaluation", "all claims", "A verdict for every claim (C1-C5; C2 and C3 on PadChest and C6 where PadChest is scored): effect, CI over seeds x images",
             made_by=("steps.evaluation.evaluate_run", "evaluation.claims.claims_table")),
    Artifact("scaffold_reversal", "figure", "05_cross_model_scaffold", "Tables 2-3", "Macro-F1 by SFT format, medical vs general model, 95% CIs (t over seeds + shared image noise)",
             made_by=("queries.stage_outputs.read_evaluation", "report.reporting.format_f1", "report.figures.scaffold_reversal")),
    Artifact("prompt_variants", "figure", "05_cross_model_scaffold", "Table 1", "Zero-shot validation micro-F1 and fail rate by prompt variant, both models (bars: mean of seeds; dots: seeds)",
             made_by=("queries.stage_outputs.read_evaluation", "report.reporting.seed_rows", "report.figures.prompt_variants")),
    Artifact("entropy_collapse", "figure", "06_entropy_mode_collapse", "new", "Entropy, KL, clip ratio, zero-std groups, length vs step",
             made_by=("steps.diagnostics.grpo_diagnostics", "report.figures.collapse_curves")),
    Artifact("label_dominance", "figure", "06_entropy_mode_collapse", "new", "Distinct completions / label sets and label dominance vs step",
             made_by=("report.figures.dominance_curves",)),
    Artifact("collapse_episodes", "table", "06_entropy_mode_collapse", "new", "Detected collapse episodes per run",
             made_by=("steps.diagnostics.grpo_diagnostics",)),
    Artifact("grpo_paired_gain", "figure", "03_grpo", "new", "GRPO reward minus a frozen-policy control on the same batches, over seeds",
             made_by=("report.figures.paired_gain",)),
    Artifact("grpo_gain_by_quarter", "table", "03_grpo", "new", "Paired GRPO gain per quarter of the run, mean and range over seeds",
             made_by=("evaluation.reward_analysis.gain_by_quarter",)),
    Artifact("reward_strategies", "table", "03_grpo", "new", "What the rewards pay for: hard and nuanced reward of named answer strategies",
             made_by=("steps.grpo.reward_strategy_table",)),
    Artifact("grpo_answer_statistics", "figure", "03_grpo", "new", "Labels per answer, distinct labels, rare vs common recall along GRPO",
             made_by=("steps.grpo.answer_statistics_table", "report.figures.answer_statistics")),
    Artifact("e0_label_count", "figure", "07_open_questions", "new (E0)", "E0: the SFT->GRPO macro-F1 change split into a label-count part and a residual, 95% CIs",
             made_by=("steps.open_questions.label_count_decomposition", "report.figures.effect_intervals")),
    Artifact("e0_decomposition", "table", "07_open_questions", "new (E0)", "E0: label-count decomposition per test set, with verdicts",
             made_by=("steps.open_questions.label_count_decomposition",)),
    Artifact("e0_oracles", "table", "07_open_questions", "new (E0)", "E0: no-model oracle strategies on each test set's truths",
             made_by=("steps.open_questions.label_count_decomposition",)),
    Artifact("family_view", "table", "07_open_questions", "new", "The family-wise view: every verdict of the report beside its Holm-adjusted verdict",
             made_by=("steps.open_questions.family_table", "evaluation.verdict_statistics.family_caption")),
    Artifact("e4_shift_attribution", "figure", "07_open_questions", "new (E4)", "E4: which NIH-site factor carries the SFT->GRPO change, 95% CIs",
             made_by=("steps.open_questions.shift_attribution", "report.figures.effect_intervals")),
    Artifact("e4_attribution", "table", "07_open_questions", "new (E4)", "E4: SFT->GRPO change on each re-rendered NIH test and its attribution, with verdicts",
             made_by=("steps.open_questions.shift_attribution",)),
    Artifact("e1_dose_response", "figure", "08_experiments", "new (E1)", "E1: CheXpert / NIH macro-F1 and validation labels per answer at each GRPO step count, per learning-rate schedule and RL set",
             made_by=("steps.experiment_readouts.dose_readout", "report.figures.dose_response")),
    Artifact("e1_slopes", "table", "08_experiments", "new (E1)", "E1: slope per tripling of GRPO steps of each readout per arm, 95% CIs over seeds x images, with verdicts",
             made_by=("steps.experiments.run_cells", "steps.experiment_readouts.dose_readout")),
    Artifact("e2_planted_shortcut", "figure", "08_experiments", "new (E2)", "E2: shortcut sensitivity of the base, SFT and GRPO models and GRPO - SFT per rho and arm, 95% CIs",
             made_by=("steps.experiment_readouts.shortcut_readout", "report.figures.effect_intervals")),
    Artifact("e2_shortcut", "table", "08_experiments", "new (E2)", "E2: shortcut sensitivity per rho, arm and model on the counterfactual test images, GRPO - SFT with verdicts; the marker-only positive control",
             made_by=("steps.experiments.run_cells", "steps.experiment_readouts.shortcut_readout")),
    Artifact("e2_decodability", "table", "08_experiments", "new (E2)", "E2's first positive control: the probe's held-out accuracy reading the marker from each seed's image tokens, per registered size",
             made_by=("steps.experiments.run_cells", "steps.experiment_readouts.decodability_table")),
    Artifact("e3_multisite_rl", "figure", "08_experiments", "new (E3)", "E3: change at each NIH-like RL share minus the change at share 0, per test set, 95% CIs",
             made_by=("steps.experiment_readouts.multisite_readout", "report.figures.effect_intervals")),
    Artifact("e3_multisite", "table", "08_experiments", "new (E3)", "E3: macro-F1 change from SFT per NIH-like RL share and its difference from share 0, with verdicts",
             made_by=("steps.experiments.run_cells", "steps.experiment_readouts.multisite_readout")),
    Artifact("q1_reward_unit", "figure", "08_experiments", "new (Q1)", "Q1: macro-F1 change under the per-label reward minus the change under the hard reward, per test set, 95% CIs",
             made_by=("steps.experiment_readouts.reward_unit_readout", "report.figures.effect_intervals")),
    Artifact("q1_per_label", "table", "08_experiments", "new (Q1)", "Q1: macro-F1 change from SFT under each reward and their difference, with verdicts; labels per answer",
             made_by=("steps.experiments.run_cells", "steps.experiment_readouts.reward_unit_readout")),
    Artifact("e5_collapse_grid", "figure", "08_experiments", "new (E5)", "E5: share of runs collapsed, each recipe cell minus its matched final recipe (same learning rate and steps), Newcombe 95% intervals",
             made_by=("steps.experiment_readouts.collapse_readout", "report.figures.effect_intervals")),
    Artifact("e5_collapse", "table", "08_experiments", "new (E5)", "E5: collapsed runs per recipe cell and its matched final recipe, count verdicts, and the 06 detector's collapse shares",
             made_by=("steps.experiments.run_cells", "steps.experiment_readouts.collapse_readout")),
    Artifact("policy_drift", "figure", "08_experiments", "new", "What RL does: each GRPO model's KL from its SFT start against its NIH change, Spearman's rho (descriptive)",
             made_by=("steps.policy_readouts.drift_readout", "report.figures.drift_scatter")),
    Artifact("policy_drift_models", "table", "08_experiments", "new", "What RL does: KL(SFT || GRPO) on NIH-like test prompts and the NIH macro-F1 change of every trained GRPO model",
             made_by=("steps.policy_readouts.trained_models", "steps.policy_readouts.drift_readout")),
    Artifact("policy_reliance", "table", "08_experiments", "new", "What RL does: SFT and ChexReason macro-F1 with the image as it is, blanked and another patient's, GRPO - SFT with 95% CIs",
             made_by=("steps.policy_readouts.reliance_readout",)),
    Artifact("policy_coverage", "table", "08_experiments", "new", "What RL does: pass@1 and pass@8 of SFT and ChexReason on each test set, GRPO - SFT with 95% CIs",
             made_by=("steps.policy_readouts.coverage_readout",)),
    Artifact("family_view_experiments", "table", "08_experiments", "new", "The family-wise view of EXPERIMENTS.md: every verdict of the report and of the experiments beside its Holm-adjusted verdict",
             made_by=("steps.experiment_readouts.experiment_family", "evaluation.verdict_statistics.family_caption")),
)

BY_ID = {a.id: a for a in ARTIFACTS}


def get(artifact_id: str) -> Artifact:
    try:
        return BY_ID[artifact_id]
    except KeyError:
        raise KeyError(f"{artifact_id!r} is not in chexreason_utils.report.figure_registry.ARTIFACTS; register it first") from None


def markdown_table(profile: str = "tiny") -> str:
    """The figure table of docs/figures.md."""
    lines = ["| id | what | paper | notebook | files (under `figures/<profile>/`) |",
             "|---|---|---|---|---|"]
    for a in ARTIFACTS:
        lines.append(f"| `{a.id}` | {a.title} | {a.paper_ref} | `{a.notebook}` | {', '.join(a.files())} |")
    return "\n".join(lines)
