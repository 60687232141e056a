import numpy as np, torch
from augment.data import load_prepared
from augment.filter import load_decisions
from augment.merge import load_rows_images
from augment.tuning import train_mixed
from augment.classifier import predict_proba
ds = load_prepared("data/prepared"); d = load_decisions("data/filtered")
tx, ty = ds.subset("train"); vx, vy = ds.subset("val"); sx, sy = ds.subset("test")
x = np.concatenate([tx, vx]); y = np.concatenate([ty, vy])
rows = np.flatnonzero(d["accepted"]); synx = load_rows_images("data/generated", d, rows); syny = d["labels"][rows]
cpu = torch.device("cpu")
acc = [float((predict_proba(train_mixed(x, y, synx, syny, 10, 0.25, 1000, s, cpu), sx, cpu).argmax(1) == sy).mean()) for s in (0, 1)]
print(f"(d) train+val 20/class + all-filters synthetic (791) share 0.25: {np.mean(acc):.4f} ± {np.std(acc, ddof=1):.4f}", flush=True)
