"""Probe (not a test): the demo features (make demo's demo_out/features), 12 epochs as the demo trains, seeds
0-2, face_grid 2 (today) vs 1 (spatial mean): test macro-F1 with both modalities, face lost ("audio") and
microphone muted ("video"). Paths are the probe machine's; results in demo-seed-probe.json."""
import json
from pathlib import Path
import torch
torch.set_num_threads(1)
from edge_ladder import model, train
from edge_ladder.evaluate import evaluate
out = Path("/work/probe_out/demo-grid")
feats = "/work/main/demo_out/features"
results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
for seed in (0, 1, 2):
    for grid in (2, 1):
        key = f"grid{grid}_s{seed}"
        if key in results:
            continue
        model.PRESETS["small"]["face_grid"] = grid
        run = out / key
        train.train(train.TrainConfig(features_dir=feats, out_dir=str(run), epochs=12, seed=seed, progress=False, force=True))
        ck = run / "checkpoint.pt"
        results[key] = {str(p): evaluate(ck, feats, "test", presence=p)["macro_f1"] for p in (None, "audio", "video")}
        print(key, results[key], flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
