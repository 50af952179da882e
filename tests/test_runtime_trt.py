"""TensorRT backend on a real GPU (skipped here: needs TensorRT + CUDA). Builds an engine from
the tiny export with the export engineer's build-engine, then checks parity with ONNX Runtime,
buffer reuse across shapes, CUDA graphs and per-thread contexts."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from _runtime_standin import random_inputs
from edge_ladder import runtime as rt
from edge_ladder.features import batch_clips, load_split


@pytest.fixture(scope="module")
def engine_path(tiny_export, tmp_path_factory):
    from edge_ladder.export.engine import build_engine
    out = tmp_path_factory.mktemp("engine") / "model.engine"
    build_engine(tiny_export / "model.onnx", out, fp16=False)
    return out


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_equals_onnxruntime_on_the_test_split(engine_path, tiny_export, tiny_features):
    trt_model = rt.load(engine_path)
    ort_model = rt.load(tiny_export / "model.onnx")
    clips = load_split(tiny_features, "test")
    for start in range(0, len(clips), 3):
        feeds = batch_clips(clips[start:start + 3])
        got, want = trt_model.predict(feeds), ort_model.predict(feeds)
        np.testing.assert_allclose(got.probs, want.probs, atol=1e-4)
        assert {"h2d", "compute", "d2h", "total"} <= set(got.timings)
    trt_model.close()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_buffers_grow_and_graphs_replay(engine_path, tiny_export):
    ort_model = rt.load(tiny_export / "model.onnx")
    rng = np.random.default_rng(0)
    for use_graph in (False, True):
        model = rt.load(engine_path, use_cuda_graph=use_graph)
        for t_audio, t_video in ((97, 11), (198, 20), (61, 7), (198, 20)):
            feeds = random_inputs(rng, batch=2, t_audio=t_audio, t_video=t_video)
            np.testing.assert_allclose(model.predict(feeds).probs, ort_model.predict(feeds).probs, atol=1e-4)
        model.close()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_threads_get_the_serial_results(engine_path):
    model = rt.load(engine_path)
    rng = np.random.default_rng(1)
    pool = [random_inputs(rng, batch=1, t_audio=int(rng.integers(50, 200)), t_video=9) for _ in range(6)]
    serial = [model.predict(f).probs for f in pool]
    bad = []

    def worker():
        for i in range(len(pool) * 3):
            if not np.allclose(model.predict(pool[i % len(pool)]).probs, serial[i % len(pool)], atol=1e-6):
                bad.append(i)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not bad
    model.close()


@pytest.mark.gpu
def test_primary_context_push_pop_from_threads():
    from edge_ladder.runtime.cuda import PrimaryContext
    ctx = PrimaryContext(0)
    seen = []

    def worker():
        with ctx.active():                      # allocating needs a current context
            seen.append(ctx.cuda.mem_alloc(64) is not None)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert seen == [True] * 3
    ctx.release()
