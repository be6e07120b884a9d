"""What stage 08's runs and its readouts share: the cells of a registration this profile runs, the training seeds
and step counts, where each cell's runs live, E2's arms and planted site, and the prediction-cache tag of a run's
checkpoints."""
from __future__ import annotations

from pathlib import Path

from ..config import Config, training_seeds
from ..evaluation import registration
from ..paths import RunPaths, model_tag

STAGE = "08_experiments"
BUILT = ("E1", "E2", "E3", "E5", "Q1")
RL_MANIFEST = "rl_manifest.csv"   # E3, E1: a cell's RL set, written beside its runs
N_RL = "sampling.n_rl"   # E1's registered RL set of 01's size (the RL manifest itself)
E2_BOTH, E2_RL = "marker in SFT and RL data", "marker in RL data only"   # E2's registered arms
E2_ONLY = "marker only"   # E2's positive control: the finding not drawn (registration rules.marker_only)
E5_FINAL = "final recipe"   # E5's matched controls (registration rules.matched_control): the recipe they run


def experiment_seeds(cfg: Config) -> list[int]:
    """The training seeds every cell runs: the first ``experiments.max_seeds`` of ``seeds`` (0: all)."""
    seeds = training_seeds(cfg)
    return seeds[:cfg.experiments.max_seeds] if cfg.experiments.max_seeds else seeds


def scaled_steps(cfg: Config, registered) -> int:
    """A registered GRPO step count (the tiny profile's) in this profile's steps (``experiments.steps_scale``)."""
    return max(1, int(round(float(registered) * cfg.experiments.steps_scale)))


def cells(cfg: Config, reg_id: str) -> list[dict]:
    """The cells of ``reg_id`` this profile runs: the whole grid, or (``one_point``) the first cell that trains
    beside its reference (E1: step 0 and the smallest dose, linear, 01's RL set; E3: share 0 and the first share
    above it; E2: rho 0 and the largest rho, marker in RL data only (no SFT of its own); Q1: both rewards; E5: the
    first cell)."""
    grid = registration.grid_cells(registration.get(reg_id))
    if cfg.experiments.cells == "all":
        return grid
    if reg_id == "E2":
        top = max(c["rho"] for c in grid)
        return [c for c in grid if c["arm"] == E2_RL and c["rho"] in (0, top)]
    if reg_id == "E3":
        return [next(c for c in grid if c["nih_share"] == 0), next(c for c in grid if c["nih_share"] > 0)]
    if reg_id == "Q1":   # one step count: both rewards
        return grid
    if reg_id == "E1":   # step 0 and the smallest dose of one arm (linear, the RL manifest)
        first = min(c["grpo_steps"] for c in grid if c["grpo_steps"] > 0)
        return [c for c in grid if c["grpo_steps"] <= first and c["lr_schedule"] == "linear" and c["rl_set"] == N_RL]
    return grid[:1]


def e5_control(cell: dict) -> dict:
    """E5 ``cell``'s matched control: the final recipe with the cell's learning rate and step count."""
    return {"recipe": E5_FINAL, "learning_rate": cell["learning_rate"], "grpo_steps": cell["grpo_steps"]}


def e5_controls(cells_: list[dict]) -> list[dict]:
    """The matched controls of E5 ``cells_``, each once, in the cells' order."""
    return list({registration.cell_name(c): c for c in map(e5_control, cells_)}.values())


def cell_dir(paths: RunPaths, reg_id: str, cell: dict) -> Path:
    return paths.stage(STAGE) / reg_id / registration.cell_name(cell)


def e2_run_cell(cell: dict) -> dict:
    """The cell whose run holds E2 ``cell``'s models: at rho 0 both arms are the main world's (one run)."""
    return {**cell, "arm": E2_RL} if float(cell["rho"]) == 0 else cell


def e2_marker_only() -> dict:
    """E2's marker-only control cell (registration rules.marker_only): the grid's largest rho and its finding."""
    grid = registration.grid_cells(registration.get("E2"))
    return {"rho": max(float(c["rho"]) for c in grid), "arm": E2_ONLY, "finding": grid[0]["finding"]}


def e2_decodability_file(paths: RunPaths) -> Path:
    """E2's decodability check (``marker_probe``): the probe's accuracy per size and seed, and its cache key."""
    return paths.stage(STAGE) / "E2" / "decodability.csv"


def e2_planted_root(paths: RunPaths, cell: dict) -> Path:
    """The planted MIMIC-like site of E2 ``cell``'s rho, finding and marker size (``radius``, set by the
    decodability check; shared by both registered arms; the marker-only control has its own)."""
    only = "_marker-only" if cell["arm"] == E2_ONLY else ""
    return paths.stage(STAGE) / "E2" / \
        f"world_rho-{float(cell['rho']):g}_finding-{cell['finding']}_radius-{float(cell['radius']):g}{only}"


def e2_own_sft(cell: dict) -> bool:
    """Whether E2 ``cell`` trains an SFT model of its own (marker in SFT and RL data at rho > 0, or the
    marker-only control), not 02's."""
    if cell["arm"] not in (E2_BOTH, E2_RL, E2_ONLY):
        raise ValueError(f"E2 registration: grid.arm {cell['arm']!r}; the arms are {E2_BOTH!r} and {E2_RL!r} "
                         f"(and the control {E2_ONLY!r})")
    return float(cell["rho"]) > 0 and cell["arm"] in (E2_BOTH, E2_ONLY)


def e2_sft_dir(paths: RunPaths, cell: dict, seed: int) -> Path | None:
    """The SFT model E2 ``cell`` trains (``e2_own_sft``) for ``seed``; None: the seed's 02 model."""
    return cell_dir(paths, "E2", cell) / f"sft-seed-{seed}" if e2_own_sft(cell) else None


def checkpoint_tag(paths: RunPaths, reg_id: str, cell: str, out_dir, ckpt: Path, seed: int) -> str:
    """The prediction-cache tag of a checkpoint of one run: 03's own tag for 03's run (cached by 03 and 04), else
    the experiment's and cell's."""
    if Path(out_dir).parent.parent == paths.grpo:
        return model_tag(f"grpo-{Path(out_dir).name}-{ckpt.name}", seed)
    return model_tag(f"{reg_id.lower()}-{cell}-{ckpt.name}", seed)


def final_tag(paths: RunPaths, row) -> str:
    """The prediction-cache tag of a run's final checkpoint (``checkpoint_tag``)."""
    return checkpoint_tag(paths, row.experiment, row.cell, row.out_dir, Path(row.final_checkpoint), row.seed)
