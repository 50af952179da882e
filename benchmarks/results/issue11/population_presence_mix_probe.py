"""Probe: population statistics over the training presence mix (60 % both, 20 % audio-absent, 20 %
face-absent, as modality_dropout p=0.2) instead of full presence only; re-score test AV/audio/video.
    python population_presence_mix_probe.py OUT.json FEATURES RUN_DIR ...   (NOT adopted: see the README)"""
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
from edge_ladder.model import load_checkpoint
from edge_ladder.train import population_batches, predict
from edge_ladder.metrics import classification_report
from edge_ladder.train import load_splits, TrainConfig
from pathlib import Path
out_path, feats, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
def score(model, test):
    y = [c.label for c in test]
    out = {}
    for name, pres in (("av", None), ("audio", (1, 0)), ("video", (0, 1))):
        p = None if pres is None else np.broadcast_to(np.array(pres, np.float32), (len(test), 2))
        out[name] = round(classification_report(y, predict(model, test, "cpu", 64, presence=p).argmax(1))["macro_f1"], 3)
    return out
def mixed(batches):
    for b in batches:
        pres = [b["presence"]] * 3 + [b["presence"] * torch.tensor([0.0, 1.0]), b["presence"] * torch.tensor([1.0, 0.0])]
        yield {k: (torch.cat([v] * 5) if k != "presence" else torch.cat(pres)) for k, v in b.items()}
res = {}
for run in runs:
    model, saved = load_checkpoint(run + "/checkpoint.pt")
    fold = saved["train_config"].get("fold", -1)
    train_clips, _, test, _ = load_splits(TrainConfig(features_dir=feats, out_dir="/tmp/x", fold=fold), Path(feats))
    before = score(model, test)
    model.set_population_statistics(population_batches(train_clips, "cpu", 64, "av"))
    full = score(model, test)
    model.set_population_statistics(mixed(population_batches(train_clips, "cpu", 64, "av")))
    mix = score(model, test)
    res[run] = {"saved": before, "full_presence_recomputed": full, "training_mix": mix}
    print(run, res[run], flush=True)
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)
