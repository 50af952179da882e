"""Export: checkpoint -> pruned module -> ONNX fp32/fp16 -> TensorRT engine (installed as
edge_ladder.export).

A chain of small stages, each a plain function taking a file or object and returning the next:

    prune.load_inference(checkpoint)        -> (training model, inference module, checkpoint dict)
    prune.fold_batchnorm(module)            -> (folded module, what was folded)
    onnx_export.export_onnx(module, inputs, path, opset=17)   -> model.onnx
    fp16.convert_file(model.onnx, model.fp16.onnx)           -> strongly-typed FP16 graph
    int8.quantize_file(model.onnx, model.int8.onnx, batches) -> INT8 convolutions (CPU runtime)
    opcheck.check_trt85(path)               -> op histogram, or OpsetError
    parity.evaluate_onnx(path, features_dir, split)          -> metrics dict
    engine.build_engine(onnx, engine, fp16=True, ...)        -> MODEL.engine + MODEL.engine.json

`export_checkpoint` runs the ONNX part of the chain and writes export.json. Importing this package
imports neither torch nor TensorRT.
"""
from __future__ import annotations


def export_checkpoint(checkpoint, out_dir, features_dir=None, split: str = "test", opset: int = 17,
                      fold: bool = True, int8: bool = True, log=print) -> dict:
    """checkpoint.pt -> out_dir/{model.onnx, model.fp16.onnx, model.int8.onnx (with features_dir and
    int8), export.json}; returns export.json's dict."""
    from .pipeline import export_checkpoint as run
    return run(checkpoint, out_dir, features_dir=features_dir, split=split, opset=opset, fold=fold, int8=int8,
               log=log)


def evaluate_onnx(onnx_path, features_dir, split: str = "test", batch_size: int = 16) -> dict:
    """Metrics of an ONNX file on a split through ONNX Runtime CPU (see parity.evaluate_onnx)."""
    from .parity import evaluate_onnx as run
    return run(onnx_path, features_dir, split, batch_size)


__all__ = ["export_checkpoint", "evaluate_onnx"]
