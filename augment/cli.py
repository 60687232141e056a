"""``augment`` command line: one subcommand per stage; flags only translate into arguments.

    augment default-dataset            # materialise the bundled default dataset (no network)
    augment prepare|train|generate|filter|merge|evaluate [--params params.yaml] [paths...]
    augment run                        # every stage in order, in this process (no DVC)
    augment scheduled-run              # dvc pull -> dvc repro -> dvc push -> commit dvc.lock
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from dataclasses import fields
from pathlib import Path

from augment.checkpoint import CheckpointError
from augment.config import ConfigError, load_params
from augment.io import DataError
from augment.locking import LockBusyError, workspace_lock
from augment.stages import Paths

STAGES = ("prepare", "train", "generate", "filter", "merge", "evaluate")
# Exit codes: 0 ok; 2 bad input/params/checkpoint or an OS error (message names the file or key);
# 75 (EX_TEMPFAIL) another run holds the workspace lock -- retry later. A traceback is a bug.
EXIT_LOCKED = 75


def _add_paths(p: argparse.ArgumentParser) -> None:
    for f in fields(Paths):
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=f.default,
                       help=f"(default: {f.default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("default-dataset", help="write the default scarce digits dataset")
    d.add_argument("--raw-dir", default="data/raw")
    d.add_argument("--test-dir", default="data/test")
    d.add_argument("--per-class", type=int, default=20)
    d.add_argument("--seed", type=int, default=0)
    for name in STAGES + ("run",):
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


def _run_stage(name: str, cfg, paths: Paths, progress: bool) -> None:
    from augment import stages

    if name == "prepare":
        report = stages.run_prepare(cfg.prepare, paths)
        dup = report["duplicates"]
        print(f"prepared {report['num_classes']} classes, shape {report['image_shape']}; "
              f"skipped {len(report['skipped'])} file(s); cross-split duplicates: "
              f"{dup['exact_cross_split']} exact, {dup['near_cross_split']} near")
        if dup.get("dropped"):
            print(f"dropped {len(dup['dropped'])} image(s) identical to an image in another split "
                  f"(prepare.on_cross_split_duplicate: drop); listed in {paths.prepared}/report.json", file=sys.stderr)
        if dup["exact_cross_split"] or dup["near_cross_split"]:
            print(f"WARNING: duplicates across splits leak between train and val/test; see {paths.prepared}/report.json",
                  file=sys.stderr)
    elif name == "train":
        out = stages.run_train(cfg.train, paths, progress=progress)
        resumed = f" (resumed from iteration {out['resumed_from']})" if out.get("resumed_from") else ""
        print(f"trained {cfg.train.family} for {out['iterations']} iterations{resumed} -> {out['checkpoint']}")
    elif name == "generate":
        out = stages.run_generate(cfg.generate, paths, progress=progress)
        print(f"generated {out['n_per_class']} per class in {out['num_shards']} shard(s) on {out['device']}")
    elif name == "filter":
        out = stages.run_filter(cfg.filter, paths)
        print(f"filter ({out['mode']}): accepted {out['accepted']} of {out['generated']}")
    elif name == "merge":
        out = stages.run_merge(cfg.merge, paths)
        print(f"merged {out['real']} real + {out['synthetic']} synthetic images -> {paths.augmented}")
        if out.get("tuning"):
            t = out["tuning"]
            print(f"tuned on val ({t['val_images']} images): synthetic share {t['synthetic_share']}, "
                  f"fraction {t['fraction']}, val accuracy {t['val_accuracy']:.4f}; curve in {paths.metrics_dir}/tuning.csv")
    elif name == "evaluate":
        stages.run_evaluate(cfg.evaluate, paths, progress=progress)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "default-dataset":
            from augment.data import write_default_dataset

            counts = write_default_dataset(args.raw_dir, args.test_dir or None, args.per_class, args.seed)
            print(f"wrote {counts['raw']} images to {args.raw_dir} and {counts['test']} to {args.test_dir}")
            return 0
        if args.command == "scheduled-run":
            from augment.scheduling import ScheduledRunError, scheduled_run

            try:
                res = scheduled_run(args.repo, pull=not args.no_pull, push=not args.no_push,
                                    commit=not args.no_commit, allow_dirty=args.allow_dirty)
            except ScheduledRunError as exc:
                print(f"augment scheduled-run: error: {exc}", file=sys.stderr)
                return 2
            return 0 if res.status_clean else 1
        cfg = load_params(args.params)
        paths = Paths(**{f.name: getattr(args, f.name) for f in fields(Paths)})
        # One run per workspace at a time (the current directory, where the paths resolve).
        with workspace_lock(".", what=f"augment {args.command}"):
            for name in STAGES if args.command == "run" else (args.command,):
                _run_stage(name, cfg, paths, progress=not args.quiet)
        return 0
    except (ConfigError, DataError, CheckpointError) as exc:
        print(f"augment {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except LockBusyError as exc:
        print(f"augment {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except OSError as exc:
        # Disk full, read-only file system, permission denied...: name the file, not a traceback.
        # Outputs are swapped in only when complete, so the previous ones are still intact.
        where = f" ({exc.filename})" if exc.filename else ""
        hint = "; free some space and re-run" if exc.errno == errno.ENOSPC else ""
        print(f"augment {args.command}: error: {exc.strerror or exc}{where}{hint}; "
              "previous outputs are left as they were", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
