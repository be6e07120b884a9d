"""The ``chexreason`` command (also ``python -m chexreason_utils``): run the notebooks, print the configuration or the
plan, write the report, verify a figures folder from its committed predictions, and the accelerate-launchable
training and evaluation commands. ``chexreason <sub-command> --help`` lists each one's options."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import REWARDS, ConfigError, parse_override
from .paths import FIGURE_ROOT, NOTEBOOK_DIR
from .runner import RunnerError, RunOptions, StageFailed, run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chexreason", description=__doc__.replace("``", ""))
    sub = p.add_subparsers(dest="command", required=True, metavar="<sub-command>")
    add = lambda name, text: sub.add_parser(name, help=text, description=text)  # noqa: E731
    r = add("run", "execute the numbered notebooks with papermill, skipping stages whose inputs are unchanged")
    r.add_argument("--profile", default="tiny", help="smoke | tiny | paper, or a YAML path (default: tiny)")
    r.add_argument("--only", default="", help="comma-separated stages to run, e.g. 00,01")
    r.add_argument("--from", dest="start", default=None, help="start at this stage, e.g. 03")
    r.add_argument("--force", action="store_true", help="recompute even when nothing changed")
    r.add_argument("--run-dir", default=None, help="run directory (default: runs/<profile>)")
    r.add_argument("--figure-dir", default=None, help="figure directory (default: figures/<profile>)")
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile value, e.g. -p sft.max_steps=20 (repeatable)")
    r.add_argument("--notebooks", default=str(NOTEBOOK_DIR), help="notebook directory")
    r.add_argument("-k", "--kernel", default="python3", help="Jupyter kernel (default: python3 of this env)")
    r.add_argument("--log-output", action="store_true", help="stream notebook output to the terminal")
    r.add_argument("--experiments", action="store_true",
                   help="also run stage 08_experiments (the pre-registered training grids; make experiments)")
    add("readme-table", "print the figure table of docs/figures.md from the registry")
    c = add("config", "print every option: its value, paper tag (stated | open | embedded | run) and help")
    c.add_argument("--profile", default="tiny", help="smoke | tiny | paper, or a YAML path (default: tiny)")
    c.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile value, e.g. -p report_to=tensorboard (repeatable)")
    c.add_argument("--tag", default="", help="only the options with this tag, e.g. open")
    c.add_argument("--update-readme", action="store_true",
                   help="rewrite docs/configuration.md's 'Where the paper is open' table from the open options' help")
    rep = add("report", "write figures/<profile>/REPORT.md and .html from a run's files")
    rep.add_argument("--profile", default="tiny", help="smoke | tiny | paper, or a YAML path (default: tiny)")
    rep.add_argument("--run-dir", default=None, help="run directory (default: runs/<profile>)")
    rep.add_argument("--figure-dir", default=None, help="figure directory (default: figures/<profile>)")
    for name, helptext in (("sft", "SFT of every configured format (accelerate-launchable)"),
                           ("grpo", "GRPO of each reward (accelerate-launchable)"),
                           ("evaluate", "predictions of one model on one manifest, sharded (accelerate-launchable)")):
        w = add(name, helptext)
        w.add_argument("--profile", default="tiny", help="smoke | tiny | paper, or a YAML path (default: tiny)")
        w.add_argument("--run-dir", default=None, help="run directory (default: runs/<profile>)")
        w.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                       help="override a profile value (repeatable)")
        if name == "sft":
            w.add_argument("--role", action="append", choices=["medical", "general"],
                           help="base model to fine-tune (repeatable; default: medical, and general when "
                                "sft.general_model_too)")
        if name == "grpo":
            w.add_argument("--reward", action="append", choices=list(REWARDS),
                           help="reward to train with (repeatable; default: grpo.rewards)")
        if name == "evaluate":
            w.add_argument("--model", required=True, help="model folder or hub id")
            w.add_argument("--manifest", required=True, help="sft | rl | val | chexpert_test | nih_test")
            w.add_argument("--prompt", required=True, help="prompt name, e.g. free_reasoning")
            w.add_argument("--tag", required=True, help="cache tag of the prediction file, e.g. seed-0-sft-medical-free_reasoning")
    dg = add("digest", "a short smoke training (SFT, GRPO, a prediction batch) under portable arithmetic, its tensors "
                       "digested and compared with the committed digests: the same bytes on any x86-64 CPU with AVX2")
    dg.add_argument("--write", action="store_true", help="record this machine's digests as the committed ones")
    dg.add_argument("--without", action="append", default=[], metavar="VAR",
                    help="leave this portable cap out, e.g. MKL_CBWR (repeatable): shows what the cap protects")
    vf = add("verify", "recompute a figures folder's scores frame, claims and competence gate from the per-image "
                       "predictions committed in it, and compare them with its files (exit 1 naming each difference)")
    vf.add_argument("folder", nargs="?", default=str(FIGURE_ROOT / "tiny"),
                    help="the figures folder (default: figures/tiny)")
    pl = add("plan", "print trainings, generations, GPU memory and the checkpoint-scoring plan")
    pl.add_argument("--profile", default="paper", help="smoke | tiny | paper, or a YAML path (default: paper)")
    pl.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="override a profile value (repeatable)")
    rh = sub.add_parser("rehearse", help="the paper profile's code path on a CPU: real tokenizers, processors and "
                                         "image sizes, reduced random models; SFT -> GRPO -> evaluation, a few steps")
    rh.add_argument("--profile", default="rehearsal", help="a profile or YAML path (default: rehearsal)")
    rh.add_argument("--out-dir", default="/tmp/chexreason-rehearsal", help="where models and predictions go")
    rh.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="override a profile value (repeatable)")
    gc = sub.add_parser("gpu-check", help="on a CUDA machine: the rehearsal with the real models at real size, s/step "
                                          "and peak GPU memory beside plan's estimate")
    gc.add_argument("--profile", default="rehearsal", help="a profile or YAML path (default: rehearsal)")
    gc.add_argument("--out-dir", default="/tmp/chexreason-gpu-check", help="where models and predictions go")
    gc.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="override a profile value (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "readme-table":
        from .report.figure_registry import markdown_table

        print(markdown_table())
        return 0
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _profile(args):
    """The sub-command's profile with its ``-p`` overrides (a ``ConfigError`` is reported by ``main``)."""
    from .config import load_profile

    return load_profile(args.profile, dict(parse_override(p) for p in args.param))


def _dispatch(args) -> int:
    if args.command == "config":
        return _config(args)
    if args.command == "report":
        return _report(args)
    if args.command in ("sft", "grpo", "evaluate"):
        return _launchable(args)
    if args.command in ("rehearse", "gpu-check"):
        return _rehearse(args)
    if args.command == "digest":
        return _digest(args)
    if args.command == "verify":
        return _verify(args)
    if args.command == "plan":
        from .plan import render

        print(render(_profile(args)))
        return 0
    from . import arithmetic

    arithmetic.enter(_profile(args).arithmetic, restart=True)   # before any stage: kernels inherit the mode
    try:
        opts = RunOptions(profile=args.profile, run_dir=args.run_dir, figure_dir=args.figure_dir,
                          only=[s for s in args.only.split(",") if s], start=args.start, force=args.force,
                          overrides=dict(parse_override(p) for p in args.param),
                          notebook_dir=Path(args.notebooks), kernel=args.kernel, log_output=args.log_output,
                          experiments=args.experiments)
        run(opts)
    except (RunnerError, StageFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, StageFailed) else 2
    return 0


def _digest(args) -> int:
    from . import arithmetic, portable_digest

    missing = arithmetic.missing_flags()
    if missing:
        print(f"error: portable arithmetic needs {', '.join(missing)}, which this CPU ({arithmetic.cpu()['model']}) "
              "lacks", file=sys.stderr)
        return 2
    got = portable_digest.measure("portable", tuple(args.without))
    if args.write:
        made_on = {k: v for k, v in arithmetic.record().items() if k != "variables"} | {"mode": "portable"}
        portable_digest.write(got, made_on)
        print(f"{portable_digest.DIGESTS}: {len(got)} digests written")
        return 0
    made_on, expected = portable_digest.read()
    difference = portable_digest.compare(expected, got)
    left_out = f" without {', '.join(args.without)}" if args.without else ""
    print(f"portable digests{left_out} on {arithmetic.cpu()['model']} against those made on {made_on['cpu']}: "
          + (difference or f"all {len(got)} equal"))
    return 1 if difference else 0


def _verify(args) -> int:
    from . import arithmetic
    from .evaluation.prediction_export import read_config
    from .verify import verify

    try:
        arithmetic.enter(read_config(args.folder).arithmetic, restart=True)   # the run's float path, where it can
        outcome = verify(args.folder)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(outcome.summary(Path(args.folder)))
    return 1 if outcome.differences else 0


def _config(args) -> int:
    from . import config_docs
    from .config import PAPER_TAGS

    if args.update_readme:
        print(f"{config_docs.PAGE}: {'updated' if config_docs.update_readme() else 'already in sync'}")
        return 0
    if args.tag and args.tag not in PAPER_TAGS:
        raise ConfigError(f"unknown tag {args.tag!r}: choose one of {', '.join(PAPER_TAGS)}")
    print(config_docs.describe(_profile(args), args.tag))
    return 0


def _rehearse(args) -> int:
    from . import arithmetic
    from .rehearsal import rehearse, render

    cfg = _profile(args)
    arithmetic.enter(cfg.arithmetic, restart=True)
    if args.command == "gpu-check":
        from .gpu_check import gpu_check

        try:
            print(render(gpu_check(cfg, Path(args.out_dir))))
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    print(render(rehearse(cfg, Path(args.out_dir)).table))
    return 0


def _report(args) -> int:
    from .config import load_profile
    from .paths import RunPaths
    from .report.page import write_report

    profile = load_profile(args.profile).profile
    paths = RunPaths.for_profile(profile, args.run_dir, args.figure_dir)
    for written in write_report(paths, profile):
        print(written)
    return 0


def _launchable(args) -> int:
    from . import arithmetic, launch
    from .paths import RunPaths

    cfg = _profile(args)
    arithmetic.enter(cfg.arithmetic, restart=True)
    paths = RunPaths.for_profile(cfg.profile, args.run_dir)
    if args.command == "sft":
        launch.run_sft(cfg, paths, args.role or (["medical", "general"] if cfg.sft.general_model_too else ["medical"]))
    elif args.command == "grpo":
        launch.run_grpo(cfg, paths, args.reward or list(cfg.grpo.rewards))
    else:
        launch.run_evaluation(cfg, paths, args.model, args.manifest, args.prompt, args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
