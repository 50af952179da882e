"""`edge-ladder build-engine MODEL.onnx --out MODEL.engine [--fp16] [--min-shapes/--opt-shapes/
--max-shapes audio:1x300x80,...] [--workspace MiB] [--opt-level N] [--timing-cache PATH] [--tf32]
[--contexts N]`

Flags follow trtexec. Runs where TensorRT and a CUDA GPU exist (build on the target device).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import POSITIVE_INT, Range

CONTEXTS = Range(int, minimum=1, why="threads that may run the engine at once")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", type=Path, help="model.onnx (fp32) or model.fp16.onnx from `edge-ladder export`")
    parser.add_argument("--out", type=Path, required=True, help="engine file to write (sidecar: OUT.json)")
    parser.add_argument("--fp16", action="store_true",
                        help="FP16 engine (TensorRT 11: give model.fp16.onnx, it has no builder FP16 flag)")
    for key in ("min", "opt", "max"):
        parser.add_argument(f"--{key}-shapes", default=None, metavar="NAME:DxD,...",
                            help=f"{key} shapes of the optimization profile, e.g. audio:1x198x80,face:1x20x1x48x48 "
                                 f"(default: export.json beside the ONNX)")
    parser.add_argument("--workspace", type=POSITIVE_INT, default=None, metavar="MiB", help="builder workspace limit")
    parser.add_argument("--opt-level", type=int, default=None, choices=range(6), metavar="N",
                        help="builder optimization level 0-5 (TensorRT >= 8.6)")
    parser.add_argument("--timing-cache", type=Path, default=None, metavar="PATH",
                        help="read and update this timing cache (faster rebuilds on the same device; one "
                             "from another device is replaced, with a warning)")
    parser.add_argument("--tf32", action="store_true",
                        help="allow TF32 for FP32 layers (TensorRT's default; off here, so FP32 layers run FP32)")
    parser.add_argument("--contexts", type=CONTEXTS, default=None, metavar="N",
                        help="TensorRT 8.5: threads that may run the engine at once (builds N identical "
                             "optimisation profiles; default 4). 8.6+ shares one profile among any number")


def run(args: argparse.Namespace) -> int:
    from .engine import build_engine
    build_engine(args.onnx, args.out, fp16=args.fp16, min_shapes=args.min_shapes, opt_shapes=args.opt_shapes,
                 max_shapes=args.max_shapes, workspace_mib=args.workspace, opt_level=args.opt_level,
                 timing_cache=args.timing_cache, tf32=args.tf32, contexts=args.contexts)
    return 0
