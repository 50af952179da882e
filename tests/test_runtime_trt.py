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


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_load_failure_releases_the_primary_context(tmp_path, monkeypatch):
    """A file TensorRT cannot deserialise: ModelLoadError, and the retained context is released."""
    from edge_ladder.runtime import trt_backend
    released = []

    class Recording(trt_backend.PrimaryContext):
        def release(self):
            released.append(True)
            super().release()
    monkeypatch.setattr(trt_backend, "PrimaryContext", Recording)
    bad = tmp_path / "garbage.engine"
    bad.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(rt.ModelLoadError, match="could not deserialise"):
        rt.load(bad, verify_sidecar=False)
    with pytest.raises(rt.ModelLoadError):                  # no sidecar beside it
        rt.load(bad)
    assert released == [True, True]


def test_per_thread_frees_objects_of_ended_threads_only():
    """PerThread (TensorRT states, GPU front-end scratch): one object per thread; a new thread's
    object frees those of ended threads, exactly once; free_all frees the rest."""
    from edge_ladder.runtime.cuda import PerThread
    freed = []

    class Item:
        def __init__(self, name):
            self.name = name

        def free(self):
            freed.append(self.name)

    names = iter(range(100))
    per_thread = PerThread(lambda: Item(next(names)))
    main = per_thread.get()
    assert per_thread.get() is main
    got = []
    for _ in range(3):                                      # a thread per request
        worker = threading.Thread(target=lambda: got.append(per_thread.get().name))
        worker.start()
        worker.join()
    assert got == [1, 2, 3] and freed == [1, 2]              # each new thread freed the ended one
    assert per_thread.owners() == [threading.main_thread(), worker]
    per_thread.free_all()
    assert sorted(freed) == [0, 1, 2, 3] and per_thread.owners() == []


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_states_of_ended_threads_are_freed(engine_path):
    model = rt.load(engine_path)
    rng = np.random.default_rng(2)
    feeds = random_inputs(rng, batch=1, t_audio=97, t_video=11)
    want = model.predict(feeds).probs
    for _ in range(5):                                       # a thread per request
        worker = threading.Thread(target=lambda: model.predict(feeds))
        worker.start()
        worker.join()
    owners = model._states.owners()
    assert len(owners) <= 2                                  # main + at most the last ended one
    assert sum(not thread.is_alive() for thread in owners) <= 1
    np.testing.assert_allclose(model.predict(feeds).probs, want, atol=1e-6)
    model.close()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_execute_prefilled_equals_predict(engine_path):
    """Inputs written to device_inputs' pointers (fp32 or fp16, the engine's dtype) + host masks."""
    model = rt.load(engine_path)
    rng = np.random.default_rng(3)
    for t_audio, t_video in ((97, 11), (198, 20), (61, 7)):
        feeds = random_inputs(rng, batch=2, t_audio=t_audio, t_video=t_video)
        shapes = {name: array.shape for name, array in feeds.items()}
        with model.active():
            slots = model.device_inputs(shapes)
            for name in ("audio", "face"):
                slot = slots[name]
                assert slot.shape == feeds[name].shape and slot.dtype in (np.float32, np.float16)
                model.cuda.memcpy_htod(slot.ptr, np.ascontiguousarray(feeds[name].astype(slot.dtype)))
        masks = {k: feeds[k] for k in ("audio_mask", "face_mask", "presence")}
        with pytest.raises(rt.RuntimeInputError, match="missing face_mask"):
            model.execute_prefilled(shapes, host_inputs={k: v for k, v in masks.items() if k != "face_mask"})
        result = model.execute_prefilled(shapes, host_inputs=masks)
        np.testing.assert_allclose(result.probs, model.predict(feeds).probs, atol=1e-5)
    with pytest.raises(rt.RuntimeInputError, match="device_inputs"):
        model.execute_prefilled(shapes, host_inputs=masks)  # predict() ran since device_inputs()
    model.close()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_stream_with_cuda_kernels_matches_the_numpy_frontend(engine_path):
    """Stream(frontend='kernels') on a TensorRT model: log-mel and crops by the CUDA kernels in
    the engine's buffers give the numpy front-end's inputs and labels."""
    from _gpu_standin import assert_stream_kernels_match_numpy
    from edge_ladder import kernels
    if not kernels.has_cuda():
        pytest.skip(f"kernels library not built with CUDA ({kernels.BUILD_COMMAND})")
    model = rt.load(engine_path)
    assert_stream_kernels_match_numpy(model, requested="kernels", input_dtype=model.inputs["audio"].dtype)
    model.close()
