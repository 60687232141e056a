"""How the VAE's code sampler (``generate.sampler``) changes what the filters accept.

Per generator seed: the default pipeline's prepare and train stages on one utility setting (every
labelled image trains, as in crossfit mode), then generate + filter once per sampler from the same
checkpoint. Writes each filter's acceptance, the accepted total, and a sample grid per sampler
(10 samples of each class, before filtering), so a lever can be judged at the filter before a
utility run is spent on it.

    python benchmarks/bench_sampler.py --setting digits28_10 --gen-seeds 0 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, machine  # noqa: E402
from benchmarks.utility import SETTINGS, _commit, configure, load_data, parse_set, write_split  # noqa: E402

SAMPLERS = ("prior", "interpolate")


def grid(images: np.ndarray, labels: np.ndarray, per_class: int = 10) -> np.ndarray:
    """One row per class: its first ``per_class`` samples (uint8 H, W, C)."""
    rows = [np.concatenate(list(images[np.flatnonzero(labels == c)[:per_class]]), axis=1) for c in np.unique(labels)]
    return np.concatenate(rows, axis=0)


def run_seed(setting: str, gen_seed: int, overrides: dict[str, dict[str, Any]], grids_dir: Path | None) -> list[dict]:
    from augment.config import load_params
    from augment.core.plots import save_png
    from augment.generation.shards import iter_shards
    from augment.pipeline.paths import Paths
    from augment.pipeline.stages import STAGES

    spec = SETTINGS[setting]
    x, y, names = load_data(spec["data"], spec["size"])
    stages = {s.name: s for s in STAGES}
    out = []
    with tempfile.TemporaryDirectory(prefix=f"sampler-{setting}-") as tmp:
        ws = Path(tmp)
        write_split(ws, x, y, names, spec["per_class"], 0)
        paths = Paths().rooted(ws)
        for sampler in SAMPLERS:
            ov = {"prepare": {"raw_dir": str(ws / "raw"), "test_dir": str(ws / "test"), "val_fraction": 0.0},
                  "train": {"seed": gen_seed}, "generate": {"seed": 1000 + gen_seed, "sampler": sampler}}
            for g, v in overrides.items():
                ov.setdefault(g, {}).update(v)
            cfg = configure(load_params(ROOT / "params.yaml"), ov)
            seconds = {}
            for name in (["prepare", "train"] if sampler == SAMPLERS[0] else []) + ["generate", "filter"]:
                t0 = time.perf_counter()
                res = stages[name](cfg, paths, progress=False)
                seconds[name] = round(time.perf_counter() - t0, 1)
            per_filter = {k: v["accepted"] for k, v in res.get("per_filter", {}).items()}
            out.append({"setting": setting, "gen_seed": gen_seed, "sampler": sampler, "generated": res["generated"],
                        "accepted": res["accepted"], "accepted_by_filter": per_filter, "seconds": seconds})
            print(json.dumps(out[-1]), flush=True)
            if grids_dir is not None and gen_seed == 0:
                shard = next(iter_shards(ws / "data/generated", keys=("images", "labels")))
                grids_dir.mkdir(parents=True, exist_ok=True)
                save_png(grid(shard["images"], shard["labels"]), grids_dir / f"{setting}_sampler_{sampler}.png")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", default="digits28_10", choices=list(SETTINGS))
    ap.add_argument("--gen-seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--set", nargs="*", default=[], metavar="GROUP.KEY=JSON", help="params overrides, as utility.py")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "sampler.json"))
    ap.add_argument("--markdown", default=str(ROOT / "benchmarks" / "results" / "sampler.md"))
    ap.add_argument("--grids-dir", default=str(ROOT / "docs" / "images"))
    a = ap.parse_args(argv)
    overrides = parse_set(a.set)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": _commit(),
            "machine": machine(),
            "command": "python benchmarks/bench_sampler.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    rows = []
    for g in a.gen_seeds:
        rows += run_seed(a.setting, g, overrides, Path(a.grids_dir) if a.grids_dir else None)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    filters = sorted({f for r in rows for f in r["accepted_by_filter"]})
    lines = [f"# VAE code sampler vs the filters ({a.setting})", "",
             f"Written by `benchmarks/bench_sampler.py` on {meta['date']} (commit {meta['commit']}); "
             f"{meta['machine']['nproc']} CPU(s), {meta['machine']['cpu']}, torch {meta['machine']['torch']}.", "",
             f"Command: `{meta['command']}`", "",
             "Samples each filter accepts on its own, and all of them together (AND), of those generated.", "",
             "| gen seed | sampler | generated | " + " | ".join(filters) + " | accepted (all filters) |",
             "|---|---|---|" + "---|" * len(filters) + "---|"]
    for r in rows:
        lines.append(f"| {r['gen_seed']} | {r['sampler']} | {r['generated']} | "
                     + " | ".join(str(r["accepted_by_filter"].get(f, "—")) for f in filters) + f" | {r['accepted']} |")
    Path(a.markdown).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
