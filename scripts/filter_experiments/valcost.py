# What holding out the val split costs the downstream classifier: (b) on train (15/class) vs train+val (20/class).
import numpy as np, torch
from augment.data import load_prepared
from augment.tuning import train_mixed
from augment.classifier import predict_proba
ds = load_prepared("data/prepared")
tx, ty = ds.subset("train"); vx, vy = ds.subset("val"); sx, sy = ds.subset("test")
cpu = torch.device("cpu")
for name, (x, y) in {"train 15/class": (tx, ty), "train+val 20/class": (np.concatenate([tx, vx]), np.concatenate([ty, vy]))}.items():
    acc = [float((predict_proba(train_mixed(x, y, x[:0], y[:0], 10, 0.0, 1000, s, cpu), sx, cpu).argmax(1) == sy).mean()) for s in (0, 1)]
    print(f"(b) {name}: {np.mean(acc):.4f} ± {np.std(acc, ddof=1):.4f}", flush=True)
