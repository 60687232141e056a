"""``augment`` command line: one subcommand per declared stage; flags only translate into arguments.

    augment default-dataset            # materialise the bundled default dataset (no network)
    augment prepare|train|generate|filter|crossfit|merge|evaluate [--params params.yaml] [paths...]
    augment run                        # every stage in order, in this process (no DVC)
    augment scheduled-run              # dvc pull -> dvc repro -> dvc push -> commit dvc.lock

Only the standard library is imported up front, so ``augment --help`` answers at once; the
subcommands import what they run.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from dataclasses import fields

from augment import __version__
from augment.pipeline.paths import Paths

# The stage names, kept here without importing the stage adapters (which import torch); a test
# checks this tuple equals augment.pipeline.stages.STAGE_NAMES.
STAGE_NAMES = ("prepare", "train", "generate", "filter", "crossfit", "merge", "evaluate")
# Exit codes: 0 ok; 2 bad input/params/checkpoint or an OS error (message names the file or key);
# 75 (EX_TEMPFAIL) another run holds the workspace lock -- retry later; 130 interrupted (Ctrl-C).
# A traceback is a bug.
EXIT_USAGE = 2
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130


def _path_fields() -> list:
    return [f for f in fields(Paths) if f.name != "workspace"]  # the CLI's workspace is the current folder


PATH_HELP = {  # what each stage folder holds (every stage gets every flag: outputs are checked against all)
    "prepared": "prepare's output: the validated, split dataset",
    "model_dir": "train's output: the generator checkpoint and sample grids",
    "generated": "generate's output: the synthetic samples (npz shards)",
    "filtered": "filter's output: the acceptance decisions and report",
    "augmented": "merge's output: the augmented dataset (class folders + manifest.csv)",
    "crossfit": "crossfit's output: the chosen synthetic share and its table",
    "metrics_dir": "metrics files (train log, live metrics, evaluate report)",
    "resume": "train's resume state (removed when training finishes)",
}


def _add_paths(p: argparse.ArgumentParser) -> None:
    for f in _path_fields():
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=f.default,
                       help=f"{PATH_HELP.get(f.name, f.name)} (default: {f.default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("default-dataset", help="write the default scarce digits dataset")
    d.add_argument("--raw-dir", default="data/raw", help="where the labelled images go (default: data/raw)")
    d.add_argument("--test-dir", default="data/test", help="where the rest go, as the test set (default: data/test)")
    d.add_argument("--per-class", type=int, default=20, help="labelled images per class (default: 20)")
    d.add_argument("--seed", type=int, default=0, help="which images are drawn as labelled (default: 0)")
    d.add_argument("--force", action="store_true", help="replace existing non-empty folders")
    for name in STAGE_NAMES + ("run",):
        p = sub.add_parser(name, help=f"run the {name} stage" if name != "run" else "run every stage in order")
        p.add_argument("--params", default="params.yaml")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        _add_paths(p)
    s = sub.add_parser("scheduled-run", help="dvc pull -> dvc repro -> dvc push -> commit dvc.lock (for cron/Prefect)")
    s.add_argument("--repo", default=".", help="the git + DVC repository (default: .)")
    s.add_argument("--no-pull", action="store_true")
    s.add_argument("--no-push", action="store_true")
    s.add_argument("--no-commit", action="store_true")
    s.add_argument("--allow-dirty", action="store_true", help="run even with uncommitted changes to tracked files")
    return parser


def _one_line(text: str) -> str:
    """Messages stay one line: a newline inside a file name cannot split them."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def run_stages(names: tuple[str, ...], cfg, paths: Paths, progress: bool,
               protect: dict[str, str] | None = None) -> None:
    """Run the named stages in order, printing each declared summary line; ``protect``: files
    no output may touch (the params file)."""
    from augment.pipeline.stages import check_crossfit_folds, check_stage_paths, get_stage

    for name in names:  # every stage's outputs checked before the first one writes anything
        check_stage_paths(get_stage(name), cfg, paths, protect)
    for name in names:
        if name == "train" and "prepare" not in names:  # `augment train` alone, as dvc repro runs it
            check_crossfit_folds(cfg, paths)  # crossfit.folds fits the data: fail before training, not after
        stage = get_stage(name)
        out = stage(cfg, paths, progress=progress, protect=protect)
        print(stage.summary(out))
        for line in stage.warnings(out):
            print(_one_line(line), file=sys.stderr)
        if name == "prepare" and "crossfit" in names:
            check_crossfit_folds(cfg, paths)  # before the generator trains, not after


def _default_dataset(args: argparse.Namespace) -> int:
    from augment.core.locking import workspace_lock
    from augment.data.default import write_default_dataset

    with workspace_lock(".", what="augment default-dataset"):
        counts = write_default_dataset(args.raw_dir, args.test_dir or None, args.per_class, args.seed,
                                       force=args.force)
    print(f"wrote {counts['raw']} images to {args.raw_dir} and {counts['test']} to {args.test_dir}")
    return 0


def _scheduled_run(args: argparse.Namespace) -> int:
    from augment.ops.scheduling import scheduled_run

    # flush: under cron/systemd stdout is a file or pipe; show each dvc line as it happens
    res = scheduled_run(args.repo, pull=not args.no_pull, push=not args.no_push,
                        commit=not args.no_commit, allow_dirty=args.allow_dirty,
                        echo=lambda line: print(line, flush=True))
    return 0 if res.ok else 1


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args = build_parser().parse_args(argv)
    from augment.errors import AugmentError, LockBusyError

    try:
        if args.command == "default-dataset":
            return _default_dataset(args)
        if args.command == "scheduled-run":
            return _scheduled_run(args)
        from augment.config import load_params
        from augment.core.locking import workspace_lock

        cfg = load_params(args.params)
        paths = Paths(**{f.name: getattr(args, f.name) for f in _path_fields()})
        # One run per workspace at a time (the current directory, where the paths resolve).
        with workspace_lock(".", what=f"augment {args.command}"):
            run_stages(STAGE_NAMES if args.command == "run" else (args.command,), cfg, paths, not args.quiet,
                       protect={"--params": args.params})
            if args.command == "run":  # what this run used, whatever params.yaml says tomorrow
                from pathlib import Path

                from augment.config import effective_params_yaml
                from augment.core.files import atomic_write_text

                atomic_write_text(Path(paths.metrics_dir) / "run_params.yaml",
                                  effective_params_yaml(cfg, f"augment run --params {args.params}"))
        return 0
    except LockBusyError as exc:
        print(_one_line(f"augment {args.command}: error: {exc}"), file=sys.stderr)
        return EXIT_LOCKED
    except AugmentError as exc:
        print(_one_line(f"augment {args.command}: error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        live = (" except the live training metrics (metrics/train_live/), which show the run up to where it "
                "stopped;" if args.command in ("train", "run") else "")
        print(f"augment {args.command}: interrupted; outputs are left as they were{live} (train resumes from its "
              "last resume state)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        # Disk full, read-only file system, permission denied...: name the file, not a traceback.
        # Outputs are swapped in only when complete, so the previous ones are still intact.
        where = f" ({exc.filename})" if exc.filename else ""
        hint = "; free some space and re-run" if exc.errno == errno.ENOSPC else ""
        print(_one_line(f"augment {args.command}: error: {exc.strerror or exc}{where}{hint}; "
                        "previous outputs are left as they were"), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
