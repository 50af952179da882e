"""TensorRT backend.

Marked tensorrt/gpu (skipped without them): on a real GPU, an engine from the tiny export built by
build-engine, checked for parity with ONNX Runtime, buffer reuse across shapes, CUDA graphs and
per-thread contexts.

Unmarked (run on a CPU): the same backend on the TensorRT / pycuda / CUDA-driver stand-ins of
tests/_trt_standin.py, each modelling a documented behaviour (named there with its trt_docs.py
entry, header or pycuda source): a profile per live context before 10.0, pycuda's primary
context release, the legacy stream during a blocking stream's capture, ..."""
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
            for _ in range(3):             # with graphs: plain, then captured + launched, then replayed
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
                # on the engine's stream: it is non-blocking, so a legacy-stream copy would not be ordered
                host = model.cuda.pagelocked_empty(slot.shape, slot.dtype)
                host[...] = feeds[name]
                model.cuda.memcpy_htod_async(slot.ptr, host, slot.stream)
                slot.stream.synchronize()
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


# =============================================================================================
# On the stand-ins (CPU). Each test names the fix of issue 13 it covers.

def _standin_model(monkeypatch, tmp_path, version="10.3.0.30", trt_options=None, build_options=None, **load):
    from _trt_standin import build, install
    standin = install(monkeypatch, version, **(trt_options or {}))
    onnx_path, engine_path, sidecar, _ = build(tmp_path, **(build_options or {}))
    reference = rt.load(onnx_path)
    return standin, rt.load(engine_path, **load), reference, engine_path


def _run_threads(model, n, feeds):
    """n threads predict, then all wait together (each holds its execution context) while the
    caller's `during()` runs; -> (results by thread, errors by thread)."""
    results, errors = {}, {}
    ready, release = threading.Barrier(n + 1), threading.Event()

    def worker(index):
        try:
            results[index] = model.predict(feeds[index]).probs
        except Exception as error:                  # reported to the test below
            errors[index] = error
        ready.wait()
        release.wait()

    threads = [threading.Thread(target=worker, args=(i,), name=f"worker-{i}") for i in range(n)]
    [t.start() for t in threads]
    ready.wait()
    return results, errors, threads, release


@pytest.mark.parametrize("version, contexts, threads", [("8.5.2.2", 3, 3), ("8.6.2.3", None, 5), ("10.3.0.30", None, 5)])
def test_threads_run_concurrently_on_their_own_or_shared_profiles(monkeypatch, tmp_path, version, contexts, threads):
    """(1) The stand-in engine refuses a second live context on a profile another live context
    holds before 10.0 unless built with PROFILE_SHARING_0806 (NvInferRuntime.h 8.5; trt_docs.py
    PreviewFeature). Threads pass through the fix: on 8.5 each takes one of --contexts identical
    profiles, on 8.6 / 10.x they share profile 0; all get the ONNX Runtime results."""
    _, model, reference, _ = _standin_model(monkeypatch, tmp_path, version, build_options={"contexts": contexts})
    rng = np.random.default_rng(4)
    feeds = [random_inputs(rng, batch=1, t_audio=int(rng.integers(50, 200)), t_video=9) for _ in range(threads)]
    results, errors, workers, release = _run_threads(model, threads, feeds)
    release.set()
    [t.join() for t in workers]
    assert errors == {}
    for index, feed in enumerate(feeds):
        np.testing.assert_allclose(results[index], reference.predict(feed).probs, atol=1e-6)
    assert model.max_threads == contexts
    model.close()


def test_one_thread_too_many_on_8_5_is_a_clear_error_and_ended_threads_free_their_profile(monkeypatch, tmp_path):
    """(1) More live threads than profiles: ContextLimitError naming the limit and the rebuild flag,
    never "TensorRT rejected shape"; once a thread ends, its profile serves a new thread."""
    from edge_ladder.runtime.trt_backend import ContextLimitError
    _, model, reference, engine_path = _standin_model(monkeypatch, tmp_path, "8.5.2.2", build_options={"contexts": 2})
    feeds = [random_inputs(np.random.default_rng(i), batch=1) for i in range(3)]
    results, errors, workers, release = _run_threads(model, 2, feeds)
    extra = {}
    late = threading.Thread(target=lambda: extra.setdefault("error", pytest.raises(ContextLimitError, model.predict,
                                                                                    feeds[2])))
    late.start()
    late.join()
    message = str(extra["error"].value)
    assert "2 threads already hold an execution context" in message and "at most 2 threads" in message
    assert f"edge-ladder build-engine {tmp_path / 'model.onnx'} --out {engine_path}" in message
    assert message.rstrip(".").count("--contexts 4") == 1 and "rejected shape" not in message
    release.set()
    [t.join() for t in workers]
    assert errors == {}
    after = {}
    again = threading.Thread(target=lambda: after.setdefault("probs", model.predict(feeds[2]).probs))
    again.start()
    again.join()
    np.testing.assert_allclose(after["probs"], reference.predict(feeds[2]).probs, atol=1e-6)
    model.close()


def test_an_8_6_engine_built_without_profile_sharing_serves_one_thread_and_says_so(monkeypatch, tmp_path):
    """(1) An engine built elsewhere (trtexec's default: PROFILE_SHARING_0806 off) and loaded without
    a sidecar: the runtime cannot assume sharing; the second live thread gets the clear error."""
    from _runtime_standin import make_standin_onnx
    from _trt_standin import install
    from edge_ladder.export.shapes import DEFAULT_PROFILE, resolve_profile
    from edge_ladder.runtime.trt_backend import ContextLimitError
    standin = install(monkeypatch, "8.6.2.3")
    trt = standin.trt
    onnx_path = make_standin_onnx(tmp_path / "model.onnx")
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(1)
    trt.OnnxParser(network, None).parse(onnx_path.read_bytes())
    config, profile = builder.create_builder_config(), builder.create_optimization_profile()
    shapes = resolve_profile(None, None, None, DEFAULT_PROFILE)
    for name in shapes["min"]:
        profile.set_shape(name, shapes["min"][name], shapes["opt"][name], shapes["max"][name])
    config.add_optimization_profile(profile)
    (tmp_path / "trtexec.engine").write_bytes(builder.build_serialized_network(network, config))
    model = rt.load(tmp_path / "trtexec.engine", verify_sidecar=False)
    feeds = [random_inputs(np.random.default_rng(i), batch=1) for i in range(2)]
    results, errors, workers, release = _run_threads(model, 2, feeds)
    release.set()
    [t.join() for t in workers]
    assert len(results) == 1 and len(errors) == 1
    assert isinstance(next(iter(errors.values())), ContextLimitError)
    model.close()


def test_the_primary_context_is_released_once_from_any_thread(monkeypatch, tmp_path):
    """(5) pycuda's Context.detach() on a retained primary context pushes without popping in the
    thread that made it and releases nothing from another (the stand-in follows cuda.hpp)."""
    standin, model, _, _ = _standin_model(monkeypatch, tmp_path)
    model.predict(random_inputs(np.random.default_rng(0)))
    assert standin.driver.primary_retains == 1
    seen = {}

    def close_elsewhere():
        model.close()
        seen["stack"] = list(standin.driver.stack())
        seen["pycuda"] = list(standin.cuda.pycuda_stack())
    closer = threading.Thread(target=close_elsewhere)
    closer.start()
    closer.join()
    assert standin.driver.primary_retains == 0 and seen == {"stack": [], "pycuda": []}
    assert standin.driver.stack() == [] and standin.cuda.pycuda_stack() == []
    model.close()                                              # idempotent
    assert standin.driver.primary_retains == 0

    second = rt.load(tmp_path / "model.engine")                # closed in the thread that loaded it
    second.predict(random_inputs(np.random.default_rng(1)))
    second.close()
    assert standin.driver.primary_retains == 0 and standin.driver.stack() == [] and standin.cuda.pycuda_stack() == []


def test_a_failed_load_releases_the_primary_context(monkeypatch, tmp_path):
    """(5) An engine TensorRT cannot deserialise: ModelLoadError, and nothing stays retained."""
    from _trt_standin import install
    standin = install(monkeypatch, "10.3.0.30")
    bad = tmp_path / "garbage.engine"
    bad.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(rt.ModelLoadError, match="could not deserialise"):
        rt.load(bad, verify_sidecar=False)
    with pytest.raises(rt.ModelLoadError, match="no sidecar"):
        rt.load(bad)
    assert standin.driver.primary_retains == 0 and standin.driver.stack() == []


def test_one_tensorrt_logger_for_builds_and_every_model(monkeypatch, tmp_path):
    """(6) TensorRT keeps a single logger pointer (NVIDIA/TensorRT#1475; trt_docs.py ILogger: "The
    logger should be valid until all objects created are released"): the stand-in records the
    warning TensorRT prints when a second logger arrives while objects of the first live."""
    standin, first, _, engine_path = _standin_model(monkeypatch, tmp_path)
    second = rt.load(engine_path)
    assert len(standin.trt.loggers) == 1 and standin.trt.logger_warnings == []
    assert first.logger is second.logger
    first.close()
    second.close()


def test_graph_capture_survives_another_threads_synchronous_copy(monkeypatch, tmp_path):
    """(7) cuda.h: "When a blocking stream is capturing, the legacy stream is in an unusable state
    until the blocking stream capture is terminated" (906). Streams are non-blocking, so another
    thread's synchronous pycuda copy during our capture neither fails nor breaks the capture."""
    standin, model, reference, _ = _standin_model(monkeypatch, tmp_path, use_cuda_graph=True)
    cuda, copies = standin.cuda, []

    def copy_from_another_thread():
        def other():
            with model.active():
                pointer = cuda.mem_alloc(64)
                try:
                    cuda.memcpy_htod(pointer, np.arange(16, dtype=np.float32))
                    copies.append("ok")
                except RuntimeError as error:
                    copies.append(str(error))
                pointer.free()
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    standin.driver.on_capture_begin = copy_from_another_thread
    rng = np.random.default_rng(2)
    for _ in range(3):                                          # capture once, then replay
        feeds = random_inputs(rng, batch=1, t_audio=97, t_video=11)
        np.testing.assert_allclose(model.predict(feeds).probs, reference.predict(feeds).probs, atol=1e-6)
    assert copies == ["ok"] and standin.libcuda.captures_begun == 1
    assert [stream.flags for stream in standin.driver.streams.values()] == [1]     # CU_STREAM_NON_BLOCKING
    model.close()


def test_a_capture_the_engine_refuses_falls_back_to_plain_enqueue_with_a_warning(monkeypatch, tmp_path):
    """(7) execute_async_v3 returns False inside the capture (the stand-in's capturable=False: an
    engine with operations a CUDA graph cannot hold): a RuntimeWarning once, right results from
    plain enqueues, no second capture attempt for those shapes. (The capture is tried on the second
    call at the same shapes: the first runs plain, see _enqueue.)"""
    standin, model, reference, _ = _standin_model(monkeypatch, tmp_path, trt_options={"capturable": False},
                                                  use_cuda_graph=True)
    rng = np.random.default_rng(3)
    first, second, third = (random_inputs(rng, batch=1, t_audio=97, t_video=11) for _ in range(3))
    np.testing.assert_allclose(model.predict(first).probs, reference.predict(first).probs, atol=1e-6)
    assert standin.libcuda.captures_begun == 0
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed .*returned False"):
        np.testing.assert_allclose(model.predict(second).probs, reference.predict(second).probs, atol=1e-6)
    np.testing.assert_allclose(model.predict(third).probs, reference.predict(third).probs, atol=1e-6)
    assert standin.libcuda.captures_begun == 1
    model.close()


def test_close_frees_every_threads_stream_events_and_buffers_with_its_context(monkeypatch, tmp_path):
    """(10) Streams, events, page-locked and device buffers of every thread are destroyed by
    close(), with the context current (pycuda leaks objects cleaned up out of their context's
    thread or after it is gone; the stand-in counts both)."""
    standin, model, _, _ = _standin_model(monkeypatch, tmp_path)
    feeds = random_inputs(np.random.default_rng(5), batch=1)
    model.predict(feeds)
    worker = threading.Thread(target=lambda: model.predict(feeds))
    worker.start()
    worker.join()
    live = standin.driver.live
    assert live["stream"] == 2 and live["event"] == 8 and live["device"] == 14 and live["host"] == 14
    model.close()
    assert live == {"stream": 0, "event": 0, "device": 0, "host": 0} and standin.driver.leaked == []


def test_prepare_sets_only_the_shapes_and_addresses_that_changed(monkeypatch, tmp_path):
    """(10) The context keeps input shapes and tensor addresses between calls (Polygraphy's
    TrtRunner skips unchanged ones too); results stay right across shape changes."""
    _, model, reference, _ = _standin_model(monkeypatch, tmp_path)
    rng = np.random.default_rng(6)
    small, large = random_inputs(rng, batch=1, t_audio=97, t_video=11), random_inputs(rng, batch=1, t_audio=150, t_video=11)
    model.predict(small)
    calls = model._state().context.calls
    assert calls == {"set_input_shape": 5, "set_tensor_address": 7}
    np.testing.assert_allclose(model.predict(small).probs, reference.predict(small).probs, atol=1e-6)
    assert calls == {"set_input_shape": 5, "set_tensor_address": 7}                      # nothing changed
    np.testing.assert_allclose(model.predict(large).probs, reference.predict(large).probs, atol=1e-6)
    assert calls == {"set_input_shape": 7, "set_tensor_address": 9}                      # audio + audio_mask grew
    np.testing.assert_allclose(model.predict(small).probs, reference.predict(small).probs, atol=1e-6)
    assert calls == {"set_input_shape": 9, "set_tensor_address": 9}                      # shapes back, buffers kept
    model.close()


def test_an_engine_from_another_patch_release_or_another_orin_module_is_refused(monkeypatch, tmp_path):
    """(8) TensorRT refuses patch differences ("expecting library version 8.5.1.7 got 8.5.3.1");
    every Orin module is named "Orin", so SM count and memory tell them apart."""
    from _trt_standin import Driver, build, install
    install(monkeypatch, "8.5.2.2")
    _, engine_path, _, _ = build(tmp_path)
    install(monkeypatch, "8.5.3.1")
    with pytest.raises(rt.ModelLoadError, match="built by TensorRT 8.5.2.2 but this is TensorRT 8.5.3.1"):
        rt.load(engine_path)
    install(monkeypatch, "8.5.2.2", driver=Driver(name="Orin", cc=(8, 7), sm_count=8, memory_mib=15656))
    with pytest.raises(rt.ModelLoadError, match=r"built on GPU 'Orin' \(sm 8.7, 16 SMs, 62841 MiB\) but this GPU "
                                                r"is 'Orin' \(sm 8.7, 8 SMs, 15656 MiB\).*build-engine"):
        rt.load(engine_path)


def test_the_jetson_extra_asks_for_a_pycuda_that_builds_on_cuda_13():
    """(9) pycuda before 2025.1.2 does not compile against CUDA 13 (JetPack 7): cuCtxCreate gained
    a parameter ("too few arguments to function cuCtxCreate_v4" compiling 2025.1.1 here)."""
    import re
    from pathlib import Path
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    jetson = re.search(r"^jetson = \[(.*)\]$", pyproject, re.MULTILINE).group(1)
    assert '"pycuda>=2025.1.2"' in jetson


def test_a_profile_tensorrt_refuses_is_a_context_limit_error_not_a_bare_runtime_error(monkeypatch, tmp_path):
    """(1) set_optimization_profile_async RAISES RuntimeError("Error in set optimization profile
    async.") on a refusal, though its docstring promises False (pyCore.cpp PY_ASSERT_RUNTIME_ERROR,
    8.5-10.x; the stand-in does the same). A context made outside the model holds profile 0 of an
    8.5 engine: the thread gets ContextLimitError saying so, and the profile goes back to the pool."""
    from edge_ladder.runtime.trt_backend import ContextLimitError
    _, model, reference, _ = _standin_model(monkeypatch, tmp_path, "8.5.2.2", build_options={"contexts": 2})
    foreign = model.engine.create_execution_context()          # the engine's first context: profile 0
    feeds = random_inputs(np.random.default_rng(7), batch=1)
    with pytest.raises(ContextLimitError, match="another live execution context of this engine, not made by "
                                                "this model, holds it.*--contexts N"):
        model.predict(feeds)
    del foreign
    np.testing.assert_allclose(model.predict(feeds).probs, reference.predict(feeds).probs, atol=1e-6)
    model.close()


def test_out_of_gpu_memory_while_growing_a_buffer_leaves_the_model_usable_and_closable(monkeypatch, tmp_path):
    """(10) pycuda's free() of an already freed allocation throws CUDA_ERROR_INVALID_HANDLE (cuda.hpp
    device_allocation::free / pagelocked_host_allocation::free; the stand-in too), and mem_alloc
    raises pycuda's MemoryError when the device is full (8 GB Orin boards). A buffer that cannot grow
    must leave no freed buffer behind: the call fails with the out-of-memory error, the next one
    retries, and close() frees everything."""
    standin, model, reference, _ = _standin_model(monkeypatch, tmp_path)
    rng = np.random.default_rng(8)
    small, large = random_inputs(rng, batch=1, t_audio=60, t_video=5), random_inputs(rng, batch=2, t_audio=190, t_video=19)
    model.predict(small)
    standin.driver.memory_limit = sum(standin.driver._allocated.values()) + 4096      # no room to grow
    with pytest.raises(standin.cuda.MemoryError, match="out of memory"):
        model.predict(large)
    standin.driver.memory_limit = None
    np.testing.assert_allclose(model.predict(large).probs, reference.predict(large).probs, atol=1e-6)
    np.testing.assert_allclose(model.predict(small).probs, reference.predict(small).probs, atol=1e-6)
    model.close()
    assert standin.driver.live == {"stream": 0, "event": 0, "device": 0, "host": 0}
    assert standin.driver.primary_retains == 0


def test_a_cuda_graph_is_replayed_only_while_the_context_keeps_its_shapes(monkeypatch, tmp_path):
    """(7) TensorRT updates a context's layer resources at the first enqueue after an input shape
    change (NvInferRuntime.h 8.5/8.6: "will trigger layer resource updates on the next call of
    enqueueV2() ... if the shapes are different than the previous set shapes"; the stand-in models
    it). A graph captured at shapes A and replayed after a run at shapes B would read resources
    laid out for B. Alternating A, A, B, A, A: every result right; graphs only for runs of equal
    shapes; the first call at new shapes runs plain (that is the enqueue the capture needs first)."""
    standin, model, reference, _ = _standin_model(monkeypatch, tmp_path, use_cuda_graph=True)
    rng = np.random.default_rng(9)
    # B smaller than A: its buffers fit in A's, so no reallocation drops A's graph on the way
    a, b = random_inputs(rng, batch=1, t_audio=150, t_video=11), random_inputs(rng, batch=1, t_audio=97, t_video=11)
    for feeds in (a, a, a, b, a, a, a):
        np.testing.assert_allclose(model.predict(feeds).probs, reference.predict(feeds).probs, atol=1e-6)
    assert standin.libcuda.captures_begun == 2              # the 2nd A and the 2nd A after B
    model.close()


def test_close_waits_for_calls_in_flight_and_refuses_new_ones(monkeypatch, tmp_path):
    """close() from one thread while another is inside predict(): it must not free that thread's
    context, stream and buffers under it (the call would then copy from freed device memory).
    close() waits for the call to end; a call that starts meanwhile gets the clear "closed"
    error; afterwards everything is freed and the primary context released."""
    standin, model, reference, _ = _standin_model(monkeypatch, tmp_path)
    feeds = random_inputs(np.random.default_rng(10), batch=1)
    inside, go = threading.Event(), threading.Event()

    def hold():
        if threading.current_thread().name == "busy":
            inside.set()
            go.wait(10)
    standin.driver.on_execute = hold
    outcome = {}

    def busy():
        try:
            outcome["probs"] = model.predict(feeds).probs
        except Exception as error:                  # reported below
            outcome["error"] = error
    worker = threading.Thread(target=busy, name="busy")
    worker.start()
    assert inside.wait(10)
    closer = threading.Thread(target=model.close)
    closer.start()
    closer.join(0.5)
    assert closer.is_alive()                                     # waiting for the call in flight
    late = {}
    latecomer = threading.Thread(target=lambda: late.setdefault("error", pytest.raises(rt.ModelLoadError,
                                                                                       model.predict, feeds)))
    latecomer.start()
    latecomer.join()
    assert "closed" in str(late["error"].value)
    go.set()
    worker.join()
    closer.join(10)
    assert not closer.is_alive() and "error" not in outcome, outcome
    np.testing.assert_allclose(outcome["probs"], reference.predict(feeds).probs, atol=1e-6)
    assert standin.driver.live == {"stream": 0, "event": 0, "device": 0, "host": 0}
    assert standin.driver.primary_retains == 0
    with pytest.raises(rt.ModelLoadError, match="closed"):
        model.predict(feeds)


def test_two_threads_starting_together_on_8_5_both_get_their_profile(monkeypatch, tmp_path):
    """(1) Before 10.0 the engine's FIRST execution context takes profile 0 implicitly
    (NvInferRuntime.h 8.5 ICudaEngine::createExecutionContext; the stand-in too). Thread A takes
    profile 0 from the pool, thread B profile 1; if B creates the engine's first context and A
    selects profile 0 before B has switched to 1, TensorRT refuses A. (Mic and camera callbacks
    of a Stream start exactly like this.) Taking a profile, creating the context and selecting the
    profile must be one step; the interleaving is forced with hooks (each waits at most 0.5 s)."""
    standin, model, reference, _ = _standin_model(monkeypatch, tmp_path, "8.5.2.2", build_options={"contexts": 2})
    b_created, a_done = threading.Event(), threading.Event()
    real_new_stream = model.gpu.new_stream

    def new_stream():
        if threading.current_thread().name == "A":       # A holds profile 0: let B create a context first
            b_created.wait(0.5)
        return real_new_stream()

    def context_created():
        if threading.current_thread().name == "B":       # B's context exists, profile not yet selected
            b_created.set()
            a_done.wait(0.5)
    monkeypatch.setattr(model.gpu, "new_stream", new_stream)
    standin.driver.on_context_created = context_created
    feeds = random_inputs(np.random.default_rng(11), batch=1)
    outcome = {}

    def run(name):
        try:
            outcome[name] = model.predict(feeds).probs
        except Exception as error:                     # reported below
            outcome[name] = error
        finally:
            if name == "A":
                a_done.set()
    a = threading.Thread(target=run, args=("A",), name="A")
    a.start()
    while not model._pool._held:                         # A has taken profile 0
        threading.Event().wait(0.001)
    b = threading.Thread(target=run, args=("B",), name="B")
    b.start()
    a.join()
    b.join()
    want = reference.predict(feeds).probs
    for name in "AB":
        assert isinstance(outcome[name], np.ndarray), f"thread {name}: {outcome[name]!r}"
        np.testing.assert_allclose(outcome[name], want, atol=1e-6)
    model.close()


def test_close_inside_the_models_own_active_block(monkeypatch, tmp_path):
    """close() from inside `with model.active():` (e.g. a front-end's shutdown path) releases the
    primary context there; leaving the block must not pop a context pycuda no longer holds
    (cuda.hpp context::pop throws "cannot pop non-current context" on an empty stack)."""
    standin, model, _, _ = _standin_model(monkeypatch, tmp_path)
    model.predict(random_inputs(np.random.default_rng(12), batch=1))
    with model.active():
        model.close()
    assert standin.driver.primary_retains == 0 and standin.driver.stack() == [] and standin.cuda.pycuda_stack() == []
    assert standin.driver.live == {"stream": 0, "event": 0, "device": 0, "host": 0}
