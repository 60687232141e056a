import json, sys, time
import numpy as np
from augment.data import load_prepared
from augment.filter import load_decisions
from augment.merge import load_rows_images
from augment.tuning import train_mixed, select_per_class
from augment.classifier import predict_proba
import torch
ds = load_prepared("data/prepared"); d = load_decisions("data/filtered")
tx, ty = ds.subset("train"); vx, vy = ds.subset("val"); sx, sy = ds.subset("test")
lab = d["labels"]; n = len(lab)
pools = {
 "none": np.ones(n, bool),
 "disc50": d["accept_discriminator"],
 "label": d["accept_label"],
 "mem": d["accept_memorisation"],
 "all": d["accepted"],
 "label+mem": d["accept_label"] & d["accept_memorisation"],
}
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
seeds = [0, 1]
cpu = torch.device("cpu")
def score(m, x, y):
    p = predict_proba(m, x, cpu); return float((p.argmax(1) == y).mean()), float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)).mean())
res = {}
def run(name, syn_x, syn_y, share):
    r = []
    for s in seeds:
        t = time.time(); m = train_mixed(tx, ty, syn_x, syn_y, 10, share, steps, s, cpu)
        r.append(score(m, vx, vy) + score(m, sx, sy) + (time.time() - t,))
    r = np.array(r); res[name] = r.tolist()
    print(f"{name:<22} val {r[:,0].mean():.3f} nll {r[:,1].mean():.3f} | test {r[:,2].mean():.4f}±{r[:,2].std(ddof=1):.4f} nll {r[:,3].mean():.3f} | {r[:,4].mean():.0f}s/model", flush=True)
run("classical (b)", tx[:0], ty[:0], 0.0)
for pname in sys.argv[2].split(","):
    pool = pools[pname]
    rows = np.flatnonzero(pool)
    x = load_rows_images("data/generated", d, rows); y = lab[rows]
    for share in [float(v) for v in sys.argv[3].split(",")]:
        run(f"{pname} s={share} n={len(rows)}", x, y, share)
json.dump(res, open(f"exp/pools_{int(time.time())}.json", "w"))
