"""Runtime basics: imports without torch, input validation, backend choice, engine sidecar checks."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from _runtime_standin import make_standin_onnx, random_inputs
from edge_ladder import runtime
from edge_ladder.runtime.base import RuntimeInputError, TensorSpec, validate_inputs, validate_shapes
from edge_ladder.runtime.sidecar import EngineMismatchError, check_sidecar, sha256_bytes, sidecar_path

RUNTIME_MODULES = ["edge_ladder.runtime", "edge_ladder.runtime.base", "edge_ladder.runtime.onnx_backend",
                   "edge_ladder.runtime.trt_backend", "edge_ladder.runtime.cuda", "edge_ladder.runtime.sidecar",
                   "edge_ladder.runtime.stream", "edge_ladder.runtime.cli", "edge_ladder.runtime.gpu_frontend"]


def test_every_runtime_module_imports_and_serves_without_torch(tmp_path):
    """With torch made unimportable, every runtime module imports and an ONNX model serves."""
    model = make_standin_onnx(tmp_path / "m.onnx")
    code = f"""
import sys, importlib, pkgutil
sys.modules["torch"] = None
import edge_ladder.runtime as rt
found = {{"edge_ladder.runtime." + m.name for m in pkgutil.iter_modules(rt.__path__)}}
for name in sorted(found | set({RUNTIME_MODULES!r})):
    importlib.import_module(name)
import numpy as np
sys.path.insert(0, {str(__file__).rsplit('/', 1)[0]!r})
from _runtime_standin import random_inputs
result = rt.load({str(model)!r}).predict(random_inputs(np.random.default_rng(3)))
assert result.probs.shape == (2, 6)
assert sys.modules["torch"] is None and not [m for m in sys.modules if m.startswith("torch.")], "torch got imported"
print("ok", len(found))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return runtime.load(make_standin_onnx(tmp_path_factory.mktemp("standin") / "m.onnx"), intra_op_threads=1)


def test_model_exposes_specs_with_dynamic_dims(standin):
    assert list(standin.inputs) == list(runtime.INPUT_NAMES)
    assert standin.inputs["audio"].shape == ("B", "T_a", 80)
    assert standin.inputs["face"].shape == ("B", "T_v", 1, 48, 48)
    assert standin.outputs["probs"].dtype == np.float32
    assert "audio: float32 (B, T_a, 80)" in standin.describe()


def test_result_has_probs_labels_and_timings(standin):
    feeds = random_inputs(np.random.default_rng(5), batch=3, t_audio=97, t_video=7)
    result = standin.predict(feeds)
    assert result.probs.shape == (3, 6) and result.probs.dtype == np.float32
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, rtol=1e-5)
    assert result.label_ids.tolist() == result.probs.argmax(axis=1).tolist()
    assert result.labels == [runtime.base.EMOTIONS[i] for i in result.label_ids]
    assert {"validate", "compute", "total"} <= set(result.timings)
    assert result.timings["total"] >= result.timings["compute"] > 0
    assert result.to_json()[0]["label"] == result.labels[0]


def _bad(feeds, **changes):
    out = dict(feeds)
    out.update(changes)
    return out


@pytest.mark.parametrize("change, message", [
    (lambda f: _bad(f, audio=f["audio"][:, :, :64].astype(np.float64)),
     r"audio must be float32 \(B, T_a, 80\); got float64 \(2, 97, 64\).*`edge-ladder prepare`"),
    (lambda f: _bad(f, audio=f["audio"][:, :, :64]), r"axis 2 \(n_mels\) is 64, expected 80"),
    (lambda f: _bad(f, audio=f["audio"].astype(np.float64)), r"got float64 \(2, 97, 80\).*astype\(np.float32\)"),
    (lambda f: _bad(f, face=f["face"][:, :, 0]), r"face must be float32 \(B, T_v, 1, 48, 48\).*rank 5"),
    (lambda f: _bad(f, face=f["face"][:, :, :, :40, :40]), r"axis 3 \(S\) is 40, expected 48"),
    (lambda f: _bad(f, presence=f["presence"][:1]), r"same batch size B.*presence 1"),
    (lambda f: _bad(f, audio_mask=f["audio_mask"][:, :90]), r"audio and audio_mask must share their time axis"),
    (lambda f: _bad(f, face_mask=f["face_mask"][:, :5]), r"face and face_mask must share their time axis"),
    (lambda f: _bad(f, audio=np.where(np.arange(80) == 7, np.nan, f["audio"]).astype(np.float32)),
     r"audio must be finite; got 194 NaN/inf"),
    (lambda f: _bad(f, face_mask=f["face_mask"] * 0.5), r"face_mask must hold only 0 and 1"),
    (lambda f: _bad(f, presence=f["presence"] + 1), r"presence must hold only 0 and 1"),
    (lambda f: {k: v for k, v in f.items() if k != "presence"}, r"missing \['presence'\]"),
    (lambda f: _bad(f, extra=f["presence"]), r"unexpected \['extra'\]"),
    (lambda f: _bad(f, audio=f["audio"].tolist()), r"audio must be a numpy array"),
    (lambda f: _bad(f, audio=f["audio"][:, :0], audio_mask=f["audio_mask"][:, :0]), r"axis 1 \(T_a\) is empty"),
])
def test_bad_inputs_are_refused_before_the_native_call(standin, change, message):
    feeds = random_inputs(np.random.default_rng(11), batch=2, t_audio=97, t_video=13)
    with pytest.raises(RuntimeInputError, match=message):
        standin.predict(change(feeds))


def test_profile_ranges_are_checked_per_dim():
    """A TensorRT-style spec with an optimisation profile: dims outside [min, max] are refused
    with the build-engine flag that would widen the range."""
    specs = {"audio": TensorSpec("audio", np.dtype(np.float32), ("B", "T_a", 80), (1, 10, 80), (4, 300, 80)),
             "audio_mask": TensorSpec("audio_mask", np.dtype(np.float32), ("B", "T_a"), (1, 10), (4, 300)),
             "face": TensorSpec("face", np.dtype(np.float32), ("B", "T_v", 1, 48, 48), (1, 1, 1, 48, 48), (4, 30, 1, 48, 48)),
             "face_mask": TensorSpec("face_mask", np.dtype(np.float32), ("B", "T_v"), (1, 1), (4, 30)),
             "presence": TensorSpec("presence", np.dtype(np.float32), ("B", 2), (1, 2), (4, 2))}
    rng = np.random.default_rng(2)
    assert set(validate_inputs(random_inputs(rng, batch=3, t_audio=97, t_video=13), specs)) == set(specs)
    with pytest.raises(RuntimeInputError, match=r"audio axis 1 \(T_a\) is 301.*\[10, 300\].*--max-shapes audio:4x301x80"):
        validate_inputs(random_inputs(rng, batch=2, t_audio=301, t_video=13), specs)
    with pytest.raises(RuntimeInputError, match=r"audio axis 1 \(T_a\) is 7.*--min-shapes audio:1x7x80"):
        validate_inputs(random_inputs(rng, batch=2, t_audio=7, t_video=13), specs)
    with pytest.raises(RuntimeInputError, match=r"axis 0 \(B\) is 5"):
        validate_inputs(random_inputs(rng, batch=5, t_audio=97, t_video=13), specs)


def test_shapes_for_device_filled_inputs_are_checked_like_arrays():
    """validate_shapes (TensorRTModel.device_inputs / execute_prefilled): same rules as arrays."""
    specs = {"audio": TensorSpec("audio", np.dtype(np.float16), ("B", "T_a", 80), (1, 10, 80), (4, 300, 80)),
             "audio_mask": TensorSpec("audio_mask", np.dtype(np.float16), ("B", "T_a"), (1, 10), (4, 300)),
             "face": TensorSpec("face", np.dtype(np.float16), ("B", "T_v", 1, 48, 48), (1, 1, 1, 48, 48), (4, 30, 1, 48, 48)),
             "face_mask": TensorSpec("face_mask", np.dtype(np.float16), ("B", "T_v"), (1, 1), (4, 30)),
             "presence": TensorSpec("presence", np.dtype(np.float16), ("B", 2), (1, 2), (4, 2))}
    good = {"audio": [3, 97, 80], "audio_mask": (3, 97), "face": (3, 13, 1, 48, 48), "face_mask": (3, 13),
            "presence": (3, 2)}
    checked = validate_shapes(good, specs)
    assert list(checked) == list(specs) and checked["audio"] == (3, 97, 80)
    bad = [({"audio": (3, 301, 80), "audio_mask": (3, 301)}, r"shapes\['audio'\] = \(3, 301, 80\).*max 4x300x80"),
           ({"face": (3, 13, 1, 48, 47)}, r"shapes\['face'\]"),
           ({"presence": (2, 2)}, "same batch size"),
           ({"face_mask": (3, 12)}, "share their time axis"),
           ({"audio_mask": (3, 97, 1)}, r"shapes\['audio_mask'\]"),
           ({"audio": ("x", 1, 80)}, "tuple of ints")]
    for change, message in bad:
        with pytest.raises(RuntimeInputError, match=message):
            validate_shapes({**good, **change}, specs)
    with pytest.raises(RuntimeInputError, match="exactly audio, audio_mask"):
        validate_shapes({k: v for k, v in good.items() if k != "presence"}, specs)


def test_execute_prefilled_requires_every_mask_and_presence_from_the_host():
    """check_host_inputs (TensorRTModel.execute_prefilled): a forgotten mask/presence would run on stale data."""
    from edge_ladder.runtime.trt_backend import check_host_inputs
    rng = np.random.default_rng(5)
    feeds = random_inputs(rng, batch=1, t_audio=97, t_video=11)
    shapes = {name: array.shape for name, array in feeds.items()}
    masks = {name: feeds[name] for name in ("audio_mask", "face_mask", "presence")}
    assert set(check_host_inputs(masks, shapes)) == set(masks)
    assert set(check_host_inputs({**masks, "audio": feeds["audio"]}, shapes)) == set(masks) | {"audio"}
    for missing in masks:
        with pytest.raises(RuntimeInputError, match=f"must hold audio_mask, face_mask, presence.*missing {missing}"):
            check_host_inputs({k: v for k, v in masks.items() if k != missing}, shapes)
    with pytest.raises(RuntimeInputError, match="missing audio_mask, face_mask, presence"):
        check_host_inputs(None, shapes)
    bad = [({"face_mask": masks["face_mask"] * 0.5}, "only 0 and 1"),
           ({"presence": masks["presence"].astype(np.float64)}, r"host_inputs\['presence'\] must be float32"),
           ({"extra": masks["presence"]}, "not an input of this model")]
    for change, message in bad:
        with pytest.raises(RuntimeInputError, match=message):
            check_host_inputs({**masks, **change}, shapes)


def test_missing_cuda_driver_library_error_names_what_needs_it(monkeypatch):
    """memset_async (GPU front-end) and CUDA graphs share libcuda: the error names the caller."""
    import ctypes
    from edge_ladder.runtime import cuda

    def no_library(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")
    monkeypatch.setattr(cuda, "_libcuda", None)
    monkeypatch.setattr(ctypes, "CDLL", no_library)
    with pytest.raises(runtime.ModelLoadError, match=r"memset_async \(the CUDA front-end.*libcuda.so.1"):
        cuda.memset_async(1 << 20, 97, 0)
    with pytest.raises(runtime.ModelLoadError, match=r"CUDA graph capture.*libcuda.so.1"):
        cuda.CudaGraph().capture(0, lambda: True)


def test_backend_is_chosen_by_suffix_or_name(tmp_path):
    assert runtime.backend_for("m.onnx") == "onnxruntime"
    assert runtime.backend_for("m.engine") == "tensorrt"
    assert runtime.backend_for("m.bin", "tensorrt") == "tensorrt"
    with pytest.raises(runtime.ModelLoadError, match="cannot tell the backend.*'.bin'"):
        runtime.backend_for("m.bin")
    with pytest.raises(runtime.ModelLoadError, match="PyTorch checkpoint.*edge-ladder export m.pt"):
        runtime.backend_for("m.pt")
    with pytest.raises(runtime.ModelLoadError, match="is a onnxruntime file but backend='tensorrt'"):
        runtime.backend_for("m.onnx", "tensorrt")
    with pytest.raises(runtime.ModelLoadError, match="backend must be one of"):
        runtime.backend_for("m.onnx", "tflite")
    with pytest.raises(runtime.ModelLoadError, match="does not exist"):
        runtime.load(tmp_path / "missing.onnx")
    model = make_standin_onnx(tmp_path / "m.onnx")
    with pytest.raises(runtime.ModelLoadError, match=r"unknown option\(s\) \['use_cuda_graph'\]"):
        runtime.load(model, use_cuda_graph=True)
    with pytest.raises(runtime.ModelLoadError, match="not in this onnxruntime build"):
        runtime.load(model, providers=["NoSuchExecutionProvider"])
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(runtime.ModelLoadError, match="onnxruntime could not load"):
        runtime.load(tmp_path / "junk.onnx")


def test_a_model_with_other_io_names_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(tmp_path / "o.onnx"))
    with pytest.raises(runtime.ModelLoadError, match="not an edge-ladder model.*inputs \\['x'\\]"):
        runtime.load(tmp_path / "o.onnx")


# ---------------------------------------------------------------------------------------------
# engine sidecar (pure checks: what the TensorRT backend runs before deserialising)


def _engine_with_sidecar(tmp_path, **overrides):
    engine = tmp_path / "model.engine"
    data = np.random.default_rng(0).bytes(4096)
    engine.write_bytes(data)
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"onnx bytes")
    import hashlib
    sidecar = {"format": "edge-ladder-engine", "version": 2, "tensorrt_version": "10.3.0.30", "cuda_version": "12.6",
               "gpu_name": "Orin", "compute_capability": "8.7", "gpu_sm_count": 16, "gpu_memory_mib": 62841,
               "precision": "fp16", "profiles": [],
               "onnx": "model.onnx", "onnx_sha256": hashlib.sha256(b"onnx bytes").hexdigest(),
               "engine_sha256": sha256_bytes(data), **overrides}
    sidecar_path(engine).write_text(json.dumps(sidecar))
    return engine, data


AGX_ORIN_64 = dict(tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability=(8, 7), sm_count=16, memory_mib=62841)


def test_sidecar_accepts_the_matching_device(tmp_path):
    engine, data = _engine_with_sidecar(tmp_path)
    assert sidecar_path(engine).name == "model.engine.json"
    got = check_sidecar(engine, data, **AGX_ORIN_64)
    assert got["precision"] == "fp16"
    # the same module whose reported memory moved by a carve-out (within 5 %)
    assert check_sidecar(engine, data, **{**AGX_ORIN_64, "memory_mib": 62841 - 900})


@pytest.mark.parametrize("here, message", [
    (dict(tensorrt_version="10.13.3.9"), "built by TensorRT 10.3.0.30 but this is TensorRT 10.13.3.9"),
    # TensorRT refuses patch releases too: "expecting library version 8.5.1.7 got 8.5.3.1"
    (dict(tensorrt_version="10.3.0.26"), "built by TensorRT 10.3.0.30 but this is TensorRT 10.3.0.26 .*patch"),
    (dict(compute_capability=(8, 9)), "compute capability 8.7 but this GPU is 8.9"),
    (dict(gpu_name="Xavier"), r"built on GPU 'Orin' \(sm 8.7, 16 SMs, 62841 MiB\) but this GPU is 'Xavier'"),
    # every Orin module is named "Orin": an AGX Orin 32 GB (14 SMs), an Orin NX 16 GB (8 SMs, 15.3 GiB)
    (dict(sm_count=14, memory_mib=30536), "but this GPU is 'Orin' \\(sm 8.7, 14 SMs, 30536 MiB\\)"),
    (dict(sm_count=8, memory_mib=15656), "but this GPU is 'Orin' \\(sm 8.7, 8 SMs, 15656 MiB\\)"),
    (dict(memory_mib=30536), "but this GPU is 'Orin' \\(sm 8.7, 16 SMs, 30536 MiB\\)"),
])
def test_sidecar_refuses_another_trt_or_gpu_with_the_rebuild_command(tmp_path, here, message):
    engine, data = _engine_with_sidecar(tmp_path)
    facts = {**AGX_ORIN_64, **here}
    with pytest.raises(EngineMismatchError, match=message) as error:
        check_sidecar(engine, data, **facts)
    assert f"edge-ladder build-engine {tmp_path / 'model.onnx'} --out {engine}" in str(error.value)


def test_sidecar_of_an_older_build_engine_is_refused_with_the_rebuild_command(tmp_path):
    engine, data = _engine_with_sidecar(tmp_path)
    old = json.loads(sidecar_path(engine).read_text())
    del old["gpu_sm_count"], old["gpu_memory_mib"]
    sidecar_path(engine).write_text(json.dumps(old))
    with pytest.raises(EngineMismatchError, match=r"lacks \['gpu_sm_count', 'gpu_memory_mib'\].*build-engine"):
        check_sidecar(engine, data, **AGX_ORIN_64)


def test_sidecar_refuses_changed_files_and_missing_sidecars(tmp_path):
    engine, data = _engine_with_sidecar(tmp_path)
    facts = {**AGX_ORIN_64, "compute_capability": "8.7"}
    with pytest.raises(EngineMismatchError, match="engine file changed"):
        check_sidecar(engine, data[:-1] + b"x", **facts)
    (tmp_path / "model.onnx").write_bytes(b"retrained")
    with pytest.raises(EngineMismatchError, match="model.onnx changed since the build"):
        check_sidecar(engine, data, **facts)
    sidecar_path(engine).unlink()
    with pytest.raises(EngineMismatchError, match="no sidecar model.engine.json.*build-engine"):
        check_sidecar(engine, data, **facts)
