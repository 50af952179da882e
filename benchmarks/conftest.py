"""pytest-benchmark suite (`pytest benchmarks/`), separate from tests/.

Builds its own small artifacts once per session: synthetic features -> a short training run of
the demo-size model -> pruned ONNX fp32/fp16 export (and, on GPU hosts with TensorRT, an FP16
engine). Every benchmark records the environment (CPU, GPU, driver, library versions) in
extra_info, beside its figures in the pytest-benchmark JSON (--benchmark-json OUT).

    EDGE_LADDER_BENCH_SIZE=small|tiny   model size to build (default: small, the demo default)
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent.parent


def _tests_conftest():
    """tests/conftest.py holds the one capability probe for the gpu/tensorrt markers; reuse it."""
    spec = importlib.util.spec_from_file_location("_edge_ladder_tests_conftest", _ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_PROBE = _tests_conftest()


def pytest_collection_modifyitems(config, items):
    _PROBE.pytest_collection_modifyitems(config, items)


def pytest_report_header(config):
    return _PROBE.pytest_report_header(config)


@pytest.fixture(scope="session")
def bench_env():
    from edge_ladder.benchenv import capture_environment
    return capture_environment()


@pytest.fixture(autouse=True)
def _record_env(request, bench_env):
    """Every benchmark's extra_info carries the environment it ran in."""
    if "benchmark" in request.fixturenames:
        request.getfixturevalue("benchmark").extra_info["env"] = bench_env


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """{'features', 'checkpoint', 'onnx', 'onnx_fp16', 'onnx_int8', 'size'}: built once per session."""
    from edge_ladder.export import export_checkpoint, int8
    from edge_ladder.synthetic import make_features
    from edge_ladder.train import TrainConfig, train
    size = os.environ.get("EDGE_LADDER_BENCH_SIZE", "small")
    root = tmp_path_factory.mktemp("bench_artifacts")
    features = make_features(root / "features", actors=12, clips_per_actor=6, seed=0)
    # one epoch: the weights' quality does not change the latency being measured
    train(TrainConfig(features_dir=str(features), out_dir=str(root / "run"), epochs=1,
                      model_size=size, seed=0, progress=False))
    export = root / "export"
    export_checkpoint(root / "run" / "checkpoint.pt", export, features_dir=features, int8=False, log=lambda *a: None)
    # int8 without export's accuracy gate, which a one-epoch model's near-uniform outputs may fail
    int8.quantize_file(export / "model.onnx", export / "model.int8.onnx", int8.calibration_batches(features))
    return {"features": features, "checkpoint": root / "run" / "checkpoint.pt", "size": size,
            "onnx": export / "model.onnx", "onnx_fp16": export / "model.fp16.onnx", "onnx_int8": export / "model.int8.onnx"}


@pytest.fixture(scope="session")
def engine_fp16(artifacts):
    """FP16 TensorRT engine of the pruned model (GPU hosts with TensorRT only)."""
    from edge_ladder.export.engine import build_engine
    path = Path(artifacts["onnx_fp16"]).with_suffix(".engine")
    build_engine(artifacts["onnx_fp16"], path, fp16=True)
    return path
