"""Probe: checkpoint selection by the AV dev loss (dev-loss) vs the presence-mix dev loss (dev-loss-presence),
same training (deterministic, same seed): test macro-F1 with both modalities, face lost, microphone muted.
Needs a checkout with presence_mix_selection.patch applied (PYTHONPATH=that checkout):
    python presence_mix_selection_probe.py FEATURES OUT_DIR EPOCHS SEEDS [FOLDS]
Result (demo features, 12 epochs, seeds 0-2): both criteria pick the same epoch on every seed, so
they give the same model; in presence-mix-selection-demo.json."""
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from edge_ladder import train
from edge_ladder.evaluate import evaluate
feats, out, epochs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
seeds = [int(s) for s in sys.argv[4].split(",")]
folds = [int(s) for s in sys.argv[5].split(",")] if len(sys.argv) > 5 else [-1]
out.mkdir(parents=True, exist_ok=True)
results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
for fold in folds:
    for seed in seeds:
        for select in ("dev-loss", "dev-loss-presence"):
            key = f"{select}_s{seed}_k{fold}"
            if key in results:
                continue
            run = out / key
            train.train(train.TrainConfig(features_dir=feats, out_dir=str(run), epochs=epochs, seed=seed, fold=fold,
                                          select=select, progress=False, force=True))
            m = json.loads((run / "metrics.json").read_text())
            ck = run / "checkpoint.pt"
            r = {str(p): evaluate(ck, feats, "test", presence=p)["macro_f1"] for p in (None, "audio", "video")}
            r["best_epoch"] = m["best_epoch"]
            r["dev_losses"] = [h["dev_losses"] for h in m["history"]]
            results[key] = r
            print(key, {k: v for k, v in r.items() if k != "dev_losses"}, flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))
