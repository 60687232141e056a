import json, time, dataclasses
from augment.config import load_params
from augment.data import load_prepared
from augment.merge import load_augmented
from augment.evaluate import evaluate_variants, format_table
from augment.ablation import run_ablation, format_ablation
from augment.filter import load_decisions
cfg = load_params("params.yaml").evaluate
ds = load_prepared("data/prepared")
images, labels, syn, _ = load_augmented("data/augmented")
summ = json.load(open("data/augmented/summary.json"))
cfg = dataclasses.replace(cfg, synthetic_share=summ["synthetic_share"])
t = time.time(); ab = run_ablation(ds, "data/generated", load_decisions("data/filtered"), summ, cfg, progress=True)
print(format_ablation(ab)); print(f"ablation time {time.time()-t:.0f}s", flush=True)
t = time.time(); m = evaluate_variants(ds, images[syn], labels[syn], cfg, progress=False)
print(format_table(m)); print(f"main table time {time.time()-t:.0f}s", flush=True)
json.dump({"ablation": ab, "main": m}, open("exp/evaluate_timed.json", "w"))
