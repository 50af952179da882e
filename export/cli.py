"""`edge-ladder export CHECKPOINT --out EXPORT_DIR [--features DIR --split test] [--opset 17] [--no-int8]`"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..argtypes import Range
from ..paths import checkpoint_argument

OPSET = Range(int, minimum=13, maximum=17, why="13 for this exporter's ops, 17 for TensorRT 8.5's parser")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=checkpoint_argument("export"),
                        help="RUN_DIR/checkpoint.pt written by `edge-ladder train` (or RUN_DIR)")
    parser.add_argument("--out", type=Path, required=True, help="export directory (model.onnx, model.fp16.onnx, model.int8.onnx, export.json)")
    parser.add_argument("--features", type=Path, default=None,
                        help="features directory: held-out clips for the parity checks and macro-F1 (recommended)")
    parser.add_argument("--split", default="test", choices=("train", "dev", "test", "all"),
                        help="split of --features to check on (default: test)")
    parser.add_argument("--opset", type=OPSET, default=17, help="ONNX opset 13-17, <= 17 for TensorRT 8.5 (default: 17)")
    parser.add_argument("--no-fold", action="store_true", help="keep batch norms as separate ops (debugging)")
    parser.add_argument("--no-int8", action="store_true",
                        help="do not write model.int8.onnx (INT8 convolutions for the CPU runtime, calibrated "
                             "on the train split of --features)")


def run(args: argparse.Namespace) -> int:
    from ..errors import EdgeLadderError
    from . import export_checkpoint
    if args.split != "test" and args.features is None:
        raise EdgeLadderError(f"--split {args.split} needs --features FEATURES_DIR (the clips to check on)")
    report = export_checkpoint(args.checkpoint, args.out, features_dir=args.features, split=args.split,
                               opset=args.opset, fold=not args.no_fold, int8=not args.no_int8)
    params, flops = report["params"], report["flops"]
    print(f"parameters  training {params['training']:>12,}  inference {params['inference']:>12,}  "
          f"({100 * (1 - params['inference'] / params['training']):.1f} % fewer)")
    print(f"MACs (2 s)  training {flops['training_macs']:>12,}  inference {flops['inference_macs']:>12,}  "
          f"({100 * (1 - flops['inference_macs'] / flops['training_macs']):.1f} % fewer)")
    print(json.dumps({"out": str(args.out), "fp32_max_abs_error": report["parity"]["fp32"]["max_abs_error"],
                      "fp16_argmax_agreement": report["parity"]["fp16"]["argmax_agreement"],
                      "fp16_max_prob_error": report["parity"]["fp16"]["max_prob_error"],
                      "int8": int8_summary(report)}))
    return 0


def int8_summary(report: dict):
    """export.json's int8 outcome in one value: the check's figures, or why there is no file."""
    file, checked = report["files"]["int8"], report["parity"]["int8"]
    if "path" in file:
        return {key: checked[key] for key in ("argmax_agreement", "decisive_agreement", "max_prob_error")}
    return file.get("skipped") or f"rejected: {file['rejected']}"
