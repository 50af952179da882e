"""`build-engine` (export/engine.py) end to end on TensorRT 8.5 / 8.6 / 10.3 / 11.4 stand-ins
(tests/_trt_standin.py: each behaviour it models names its trt_docs.py entry or header). These
run on a CPU; the same chain on a real TensorRT is in test_runtime_trt.py (marked tensorrt)."""
from __future__ import annotations

import json
import os

import pytest

from _trt_standin import CACHE_MAGIC, Driver, build, install
from edge_ladder.export import engine
from edge_ladder.runtime.sidecar import sidecar_path

VERSIONS = ["8.5.2.2", "8.6.2.3", "10.3.0.30", "11.4.0.106"]


# (1) threads: a profile per concurrent context before 10.0

@pytest.mark.parametrize("version, profiles, sharing, preview", [
    ("8.5.2.2", 3, False, False),       # no PROFILE_SHARING_0806: --contexts 3 identical profiles
    ("8.6.2.3", 1, True, True),         # PreviewFeature.PROFILE_SHARING_0806 enabled at build
    ("10.3.0.30", 1, True, False),      # sharing is the default from 10.0
    ("11.4.0.106", 1, True, False),
])
def test_each_tensorrt_gets_profiles_its_threads_can_share(monkeypatch, tmp_path, version, profiles, sharing, preview):
    standin = install(monkeypatch, version)
    _, _, sidecar, lines = build(tmp_path, contexts=3 if version.startswith("8.5") else None)
    config = standin.trt.built_configs[-1]
    assert len(config.profiles) == profiles
    assert all(p.shapes == config.profiles[0].shapes for p in config.profiles)
    feature = getattr(standin.trt.PreviewFeature, "PROFILE_SHARING_0806", None)
    assert (feature is not None and version.startswith("8.6") and config.get_preview_feature(feature)) == preview
    assert sidecar["profile_sharing"] is sharing and len(sidecar["profiles"]) == profiles
    assert sidecar["contexts"] == (3 if not sharing else None)
    assert ("--contexts 3" in sidecar["rebuild_command"]) is (not sharing)
    assert any(line.startswith("threads:") for line in lines) is (int(version.split(".")[0]) < 10)


def test_profile_plan_defaults_and_refuses_zero_contexts():
    assert engine.plan_profiles("8.5.2.2", False) == engine.ProfilePlan(4, False, False, 4)
    assert engine.plan_profiles("8.6.2.3", True, contexts=8).profiles == 1
    with pytest.raises(engine.EngineBuildError, match="--contexts must be at least 1"):
        engine.plan_profiles("8.5.2.2", False, contexts=0)


# (2) TF32 off unless --tf32

@pytest.mark.parametrize("version", VERSIONS)
def test_tf32_is_cleared_unless_asked_and_the_sidecar_says_which(monkeypatch, tmp_path, version):
    """trt_docs.py BuilderFlag.TF32: "Enabled by default" (the stand-in config starts with it)."""
    standin = install(monkeypatch, version)
    _, _, sidecar, _ = build(tmp_path)
    assert not standin.trt.built_configs[-1].get_flag(standin.trt.BuilderFlag.TF32)
    assert sidecar["tf32"] is False and "--tf32" not in sidecar["rebuild_command"]
    _, _, sidecar, lines = build(tmp_path, tf32=True)
    assert standin.trt.built_configs[-1].get_flag(standin.trt.BuilderFlag.TF32)
    assert sidecar["tf32"] is True and "--tf32" in sidecar["rebuild_command"] and "TF32 allowed" in lines[-1]


# (3) the inspector reads formats only through a context at set shapes

@pytest.mark.parametrize("version, contexts", [("8.6.2.3", None), ("8.5.2.2", 2), ("10.3.0.30", None)])
def test_weakly_typed_fp16_check_reads_every_profile_through_its_own_context(monkeypatch, tmp_path, version, contexts):
    """fp32 graph + --fp16: weakly typed, so the engine inspector decides. The stand-in inspector
    shows -1 dims and no formats without a context on the layer's profile at set input shapes
    (NvInferRuntime.h IEngineInspector::setExecutionContext; trt_docs.py IEngineInspector.execution_context)."""
    install(monkeypatch, version)
    _, engine_path, sidecar, _ = build(tmp_path, fp16=True, contexts=contexts)
    profiles = contexts or 1
    assert sidecar["precision"] == "fp16" and sidecar["precision_check"] == "engine inspector (weakly typed)"
    assert sidecar["layer_precisions"]["compute_fp16"] == profiles          # the MatMul, once per profile
    assert sidecar["layer_precisions"]["layers"] == 16 * profiles and engine_path.exists()


def test_fp16_check_still_refuses_an_engine_whose_builder_ignored_fp16(monkeypatch, tmp_path):
    """BuilderFlag.FP16 allows FP16 kernels, it does not require them (ignores_fp16 models a
    builder that picked FP32 ones): the check reads real formats and refuses; nothing is written."""
    install(monkeypatch, "8.6.2.3", ignores_fp16=True)
    with pytest.raises(engine.EngineBuildError, match="every compute layer runs in FP32"):
        build(tmp_path, fp16=True)
    assert not (tmp_path / "model.engine").exists() and not sidecar_path(tmp_path / "model.engine").exists()


# (4) timing caches and the engine + sidecar pair

def _cache_device(path) -> dict:
    return json.loads(path.read_bytes()[len(CACHE_MAGIC):])


def test_a_timing_cache_from_another_device_is_replaced_with_a_warning(monkeypatch, tmp_path):
    """set_timing_cache returns False for a cache of another device (trt_docs.py
    IBuilderConfig.set_timing_cache); get_timing_cache is then None ("or None if no timing cache
    is set"). The build goes on with a fresh cache and writes a matching engine + sidecar."""
    nx = Driver(name="Orin", cc=(8, 7), sm_count=8, memory_mib=7620)             # an Orin NX 8 GB's cache
    cache = tmp_path / "trt.cache"
    cache.write_bytes(CACHE_MAGIC + json.dumps({"device": nx.device_key(), "entries": {"old": "timed"}}).encode())
    standin = install(monkeypatch, "10.3.0.30")
    _, engine_path, _, lines = build(tmp_path, timing_cache=cache)
    assert any(line.startswith(f"WARNING: timing cache {cache} was refused") for line in lines)
    assert _cache_device(cache)["device"] == standin.driver.device_key()
    assert "old" not in _cache_device(cache)["entries"]
    engine.check_sidecar(engine_path, device=standin.driver.device_info())
    _, _, _, lines = build(tmp_path, timing_cache=cache)                        # this device's cache: used
    assert not any("WARNING" in line for line in lines)


def test_an_unreadable_timing_cache_is_replaced_too(monkeypatch, tmp_path):
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"\x00garbage")                     # create_timing_cache gives None
    standin = install(monkeypatch, "8.6.2.3")
    _, engine_path, _, lines = build(tmp_path, timing_cache=cache)
    assert any("WARNING: timing cache" in line for line in lines)
    assert _cache_device(cache)["device"] == standin.driver.device_key()
    engine.check_sidecar(engine_path, device=standin.driver.device_info())


def test_engine_and_sidecar_are_written_as_a_pair(monkeypatch, tmp_path):
    """If the sidecar cannot be put in place, no engine is left without it (the runtime would
    refuse it), and no staged file is left behind."""
    install(monkeypatch, "10.3.0.30")
    real_replace = os.replace

    def failing_replace(source, target):
        if str(target).endswith("model.engine.json"):
            raise OSError(28, "No space left on device")
        return real_replace(source, target)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        build(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


# (8) the sidecar's identity of the build

def test_sidecar_records_full_version_and_gpu_identity(monkeypatch, tmp_path):
    standin = install(monkeypatch, "8.5.2.2")
    _, _, sidecar, _ = build(tmp_path)
    assert sidecar["tensorrt_version"] == "8.5.2.2" and sidecar["version"] == engine.SIDECAR_VERSION
    assert (sidecar["gpu_name"], sidecar["compute_capability"], sidecar["gpu_sm_count"], sidecar["gpu_memory_mib"]) == \
        ("Orin", "8.7", standin.driver.sm_count, standin.driver.memory_mib)


def test_build_engine_cli_refuses_zero_contexts_before_anything_else(tmp_path):
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "edge_ladder", "build-engine", str(tmp_path / "none.onnx"),
                           "--out", str(tmp_path / "x.engine"), "--contexts", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "argument --contexts: expected an integer >= 1 (threads that may run the engine at once)" in done.stderr


def test_inspecting_an_engine_whose_profile_tensorrt_refuses_is_a_build_error(monkeypatch, tmp_path):
    """set_optimization_profile_async raises RuntimeError on a refusal (pyCore.cpp, modelled by the
    stand-in): inspect_engine turns it into EngineBuildError naming the profile."""
    standin = install(monkeypatch, "8.5.2.2")
    _, engine_path, sidecar, _ = build(tmp_path, contexts=2)
    trt = standin.trt
    built = trt.Runtime(trt.Logger()).deserialize_cuda_engine(engine_path.read_bytes())
    held = built.create_execution_context()                     # holds profile 0
    opt = {name: tuple(dims["opt"]) for name, dims in sidecar["profiles"][0].items()}
    with pytest.raises(engine.EngineBuildError, match="could not create an execution context on profile 0"):
        engine.inspect_engine(trt, built, opt)
    del held
