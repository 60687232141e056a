"""The pipeline end to end, per stage: wall time and CPU time of each ``augment <stage>``.

Runs in a scratch workspace (a copy of ``params.yaml``; ``--dataset default``: the bundled
default dataset written by ``augment default-dataset``; ``--dataset digits28``: scikit-learn's
digits upsampled to 28x28, 10 labelled per class, the rest as test -- the size of a user with
100 labelled 28x28 images), one stage at a time as ``dvc repro`` would, each as its own
process. CPU time (user + sys of the stage's process tree, from ``getrusage(RUSAGE_CHILDREN)``)
is reported next to wall time: on a machine shared with other jobs, wall time overstates what
the stage needs.

    python benchmarks/bench_pipeline.py --markdown docs/performance.md
    python benchmarks/bench_pipeline.py --dataset digits28 --stages prepare train generate filter crossfit merge \
        --markdown docs/performance.md
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, emit, machine, write_section  # noqa: E402

from augment.cli import STAGE_NAMES as STAGES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--stages", nargs="+", default=list(STAGES))
    p.add_argument("--workdir", default=None, help="scratch workspace (default: a temp dir, deleted)")
    p.add_argument("--dataset", choices=["default", "digits28"], default="default")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None, help="write/replace this run's section in a markdown results file")
    args = p.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_pipeline_"))
    work.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "augment.cli"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1"}
    rows = []
    at_start = machine()  # the load average before the stages add their own
    try:
        shutil.copy2(args.params, work / "params.yaml")
        if args.dataset == "default":
            subprocess.run(exe + ["default-dataset", "--raw-dir", "data/raw", "--test-dir", "data/test"], cwd=work,
                           env=env, check=True, capture_output=True)
        else:
            from benchmarks.utility import load_data, write_split

            x, y, names = load_data("digits", 28)
            write_split(work / "data", x, y, names, 10, 0)  # data/raw (10 per class) + data/test
        for stage in args.stages:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            out = subprocess.run(exe + [stage, "--quiet"], cwd=work, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            if out.returncode != 0:
                raise RuntimeError(f"augment {stage} failed:\n{out.stderr[-3000:]}")
            rows.append({"stage": stage, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                         "peak_rss_mb": round(after.ru_maxrss / 1024, 1)})
            print(f"{stage:<9} wall {wall:8.1f} s   cpu {cpu:8.1f} s", file=sys.stderr, flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = {"benchmark": f"pipeline per stage ({args.dataset})", "machine": at_start,
               "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
               "total_wall_s": round(sum(r["wall_s"] for r in rows), 1),
               "total_cpu_s": round(sum(r["cpu_s"] for r in rows), 1), "stages": rows}
    if args.markdown:
        table = ["| stage | wall s | CPU s | peak RSS MB |", "|---|---|---|---|"]
        table += [f"| {r['stage']} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']} |" for r in rows]
        table.append(f"| **total** | **{summary['total_wall_s']}** | **{summary['total_cpu_s']}** | |")
        write_section(args.markdown, f"pipeline-{args.dataset}", f"Pipeline per stage, dataset `{args.dataset}`",
                      summary, "\n".join(table))
    return emit(summary, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
