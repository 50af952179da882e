"""Test configuration: one capability probe for the `gpu` and `tensorrt` markers, and the
session-scoped artifacts (synthetic features, a tiny trained run, its export) built once."""
from __future__ import annotations

import ctypes
import functools
import importlib.util

import pytest


@functools.lru_cache(maxsize=None)
def cuda_device_count() -> int:
    """Number of CUDA devices through the driver API (no torch, no pycuda needed)."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


@functools.lru_cache(maxsize=None)
def capabilities() -> dict:
    gpus = cuda_device_count()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    return {
        "gpu": (gpus > 0, f"no CUDA GPU visible (libcuda not found or 0 devices)"),
        "tensorrt": (gpus > 0 and has_trt,
                     "TensorRT needs a CUDA GPU and the tensorrt Python package "
                     f"(gpu: {gpus > 0}, tensorrt importable: {has_trt}); runs on Jetson/GPU hosts"),
    }


def pytest_collection_modifyitems(config, items):
    caps = capabilities()
    for item in items:
        for marker, (ok, reason) in caps.items():
            if marker in item.keywords and not ok:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_report_header(config):
    caps = capabilities()
    return "edge-ladder capabilities: " + ", ".join(f"{k}={'yes' if ok else 'no'}" for k, (ok, _) in caps.items())


# ---------------------------------------------------------------------------------------------
# Session artifacts. Each stage's output is a file; later stages' tests reuse these.


@pytest.fixture(scope="session")
def tiny_features(tmp_path_factory):
    """Synthetic prepared-features directory: 12 actors, variable lengths, both modalities."""
    from edge_ladder.synthetic import make_features
    out = tmp_path_factory.mktemp("features")
    make_features(out, actors=12, clips_per_actor=12, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_features, tmp_path_factory):
    """A small model trained for a few epochs on tiny_features: RUN_DIR with checkpoint.pt."""
    from edge_ladder.train import TrainConfig, train
    run_dir = tmp_path_factory.mktemp("run")
    train(TrainConfig(features_dir=str(tiny_features), out_dir=str(run_dir), epochs=3,
                      model_size="tiny", seed=0, progress=False))
    return run_dir


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tiny_features, tmp_path_factory):
    """The tiny run exported: EXPORT_DIR with model.onnx, model.fp16.onnx, export.json, and
    model.int8.onnx only where it passes its accuracy gate (on the reference CPU it does not: see
    test_export_pipeline's decisive_export); no test relies on it being there or not."""
    from edge_ladder.export import export_checkpoint
    out = tmp_path_factory.mktemp("export")
    export_checkpoint(tiny_run / "checkpoint.pt", out, features_dir=tiny_features)
    return out


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A generated corpus in CREMA-D layout (AudioWAV/*.wav, VideoFlash/*.flv, CSVs):
    6 actors x 12 clips of 1.5-3 s (about 7 s to make on 2 cores)."""
    from edge_ladder.corpus import make_corpus
    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out, actors=6, clips_per_actor=12, seed=0, workers=2)
    return out


@pytest.fixture(scope="session")
def tiny_prepared(tiny_corpus, tmp_path_factory):
    """tiny_corpus through `prepare`: a features directory from real WAV/FLV files (about 10 s)."""
    from edge_ladder.prepare import prepare
    out = tmp_path_factory.mktemp("prepared")
    prepare(tiny_corpus, out, workers=2)
    return out
