"""Latency of the pruned model on every available backend and of the full training model in torch
eager (the reference). Run: `pytest benchmarks/` (or `make bench`). The front-ends (numpy, kernels
host and CUDA paths) are timed in bench_kernels.py.

Each model benchmark uses pedantic rounds: one call per round, a fresh pre-generated random input
set per round (setup is not timed), warm-up rounds first. The 2 s window is the serving shape:
audio (B, 198, 80), face (B, 20, 1, 48, 48).
"""
from __future__ import annotations

import numpy as np
import pytest

from edge_ladder import bench

BATCHES = (1, 8)
ROUNDS, WARMUP_ROUNDS = 40, 5


class InputCycle:
    """pytest-benchmark `setup` callable: each round gets the next pre-generated random input set
    (never zero, valid masks) from edge_ladder.bench.input_pool, outside the timed region."""

    def __init__(self, shapes, size=8, seed=0):
        self.pool = bench.input_pool(shapes, seed=seed, size=size)
        self.step = 0

    def __call__(self):
        inputs = self.pool[self.step % len(self.pool)]
        self.step += 1
        return (inputs,), {}


def _info(benchmark, backend, model, batch, **extra):
    shapes = bench.input_shapes(bench.window_shapes(batch))
    benchmark.extra_info.update({"backend": backend, "model": str(model), "batch": batch,
                                 "shapes": {k: list(v) for k, v in shapes.items()}, **extra})
    benchmark.group = f"model batch {batch}"


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_pruned_onnxruntime(benchmark, artifacts, precision, batch):
    from edge_ladder import runtime
    path = artifacts["onnx" if precision == "fp32" else f"onnx_{precision}"]
    model = runtime.load(path, backend="onnxruntime")
    _info(benchmark, "onnxruntime", path, batch, precision=precision, size=artifacts["size"],
          providers=getattr(model, "providers", None), intra_op_threads=getattr(model, "intra_op_threads", None))
    result = benchmark.pedantic(model.predict, setup=InputCycle(bench.window_shapes(batch)),
                                rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    assert result.probs.shape == (batch, 6) and np.isfinite(result.probs).all()


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("batch", BATCHES)
def test_pruned_tensorrt_fp16(benchmark, artifacts, engine_fp16, batch):
    from edge_ladder import runtime
    model = runtime.load(engine_fp16, backend="tensorrt")
    _info(benchmark, "tensorrt", engine_fp16, batch, precision="fp16", size=artifacts["size"])
    stages = {}

    def predict(inputs):
        result = model.predict(inputs)
        for key, value in result.timings.items():
            stages.setdefault(key, []).append(value)
        return result

    result = benchmark.pedantic(predict, setup=InputCycle(bench.window_shapes(batch)),
                                rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    benchmark.extra_info["stages_ms"] = {k: bench.summarize(v) for k, v in stages.items()}
    assert result.probs.shape == (batch, 6) and np.isfinite(result.probs).all()


@pytest.mark.parametrize("batch", BATCHES)
def test_full_model_torch_eager(benchmark, artifacts, batch):
    """The reference: the checkpoint's full training model, eval, no_grad, eager forward."""
    runner = bench.open_runner(bench.ModelSpec(str(artifacts["checkpoint"]), "torch", "torch"))
    _info(benchmark, "torch", artifacts["checkpoint"], batch, size=artifacts["size"], **runner.info)
    benchmark.pedantic(runner, setup=InputCycle(bench.window_shapes(batch)),
                       rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
