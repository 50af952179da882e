"""The engine sidecar MODEL.engine.json: what an engine was built from, with and for.

A TensorRT engine only runs with the exact TensorRT version it was built by (TensorRT refuses a
patch difference: "expecting library version 8.5.1.7 got 8.5.3.1") and is tuned for the GPU it
was built on; deserialising one runs code. So before the runtime deserialises MODEL.engine it
reads MODEL.engine.json (written by `edge-ladder build-engine`) and refuses, with the rebuild
command, an engine built by another TensorRT version (all four fields compared), for another
GPU (name, compute capability, SM count and memory: every Orin module is named "Orin"), or
whose bytes (or source ONNX) changed.

    {"format": "edge-ladder-engine", "version": 2,
     "tensorrt_version": "10.3.0.30", "cuda_version": "12.6",
     "gpu_name": "Orin", "compute_capability": "8.7", "gpu_sm_count": 16, "gpu_memory_mib": 62841,
     "precision": "fp16", "tf32": false, "profile_sharing": true, "contexts": null,
     "profiles": [{"audio": {"min": [1, 1, 80], "opt": [1, 200, 80], "max": [8, 1000, 80]}, ...}],
     "onnx": "model.fp16.onnx", "onnx_sha256": "...", "engine_sha256": "..."}

torch-free: export's build-engine may import this module to write the same keys.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Union

from .base import ModelLoadError

FORMAT = "edge-ladder-engine"
REQUIRED_KEYS = ("tensorrt_version", "gpu_name", "compute_capability", "gpu_sm_count", "gpu_memory_mib",
                 "engine_sha256")
# Two memory sizes name the same module when within this fraction of the larger: the reported
# total moves by a few MiB with carve-outs between releases; modules differ by 2x (4/8/16/32/64 GB).
MEMORY_TOLERANCE = 0.05


class EngineMismatchError(ModelLoadError):
    """The engine was built for another TensorRT/GPU, or its file changed since the build."""


def sidecar_path(engine_path: Union[str, Path]) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rebuild_command(engine_path: Union[str, Path], sidecar: Optional[dict] = None) -> str:
    """The build-engine command for this engine: the one the sidecar recorded (with its
    precision and shape flags) when present, else the plain form."""
    if (sidecar or {}).get("rebuild_command"):
        return str(sidecar["rebuild_command"])
    engine_path = Path(engine_path)
    onnx = (sidecar or {}).get("onnx") or engine_path.with_suffix(".onnx").name
    onnx_path = Path(onnx) if Path(onnx).is_absolute() else engine_path.parent / onnx
    return f"edge-ladder build-engine {onnx_path} --out {engine_path}"


def read_sidecar(engine_path: Union[str, Path]) -> dict:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineMismatchError(
            f"{engine_path} has no sidecar {path.name}, so the runtime cannot tell which TensorRT and GPU it "
            f"was built for (and deserialising an unknown engine runs its code). Rebuild it on this device: "
            f"`{rebuild_command(engine_path)}`, or pass verify_sidecar=False / --no-verify-sidecar if you "
            f"built it yourself with trtexec.")
    try:
        sidecar = json.loads(path.read_text())
    except ValueError as error:
        raise EngineMismatchError(f"{path} is not valid JSON ({error}). Rebuild: `{rebuild_command(engine_path)}`.") from error
    missing = [k for k in REQUIRED_KEYS if k not in sidecar]
    if missing:
        raise EngineMismatchError(f"{path} lacks {missing}; expected the keys written by this version's "
                                  f"`edge-ladder build-engine` (an older one did not record them). Rebuild: "
                                  f"`{rebuild_command(engine_path, sidecar)}`.")
    return sidecar


def _capability_text(capability) -> str:
    if isinstance(capability, (tuple, list)):
        return ".".join(str(c) for c in capability)
    return str(capability)


def same_memory(a_mib, b_mib) -> bool:
    """Whether two device memory sizes (MiB) are the same module's (MEMORY_TOLERANCE)."""
    a_mib, b_mib = int(a_mib), int(b_mib)
    return abs(a_mib - b_mib) <= MEMORY_TOLERANCE * max(a_mib, b_mib)


def check_sidecar(engine_path: Union[str, Path], engine_bytes: bytes, *, tensorrt_version: str,
                  gpu_name: str, compute_capability, sm_count: int, memory_mib: int,
                  sidecar: Optional[dict] = None) -> dict:
    """Refuse an engine that this TensorRT/GPU must not deserialise. Returns the sidecar dict.

    engine_bytes: the engine file's contents (hashed against engine_sha256).
    tensorrt_version: tensorrt.__version__ here; must equal the build's in full (8.5.2.2).
    gpu_name, compute_capability, sm_count, memory_mib: this device's (e.g. 'Orin', (8, 7), 16,
    62841); name, capability and SM count must match, memory within MEMORY_TOLERANCE.
    The source ONNX recorded in the sidecar, when present on disk, must still hash the same.
    """
    engine_path = Path(engine_path)
    sidecar = read_sidecar(engine_path) if sidecar is None else sidecar
    rebuild = rebuild_command(engine_path, sidecar)
    problems = []
    if sha256_bytes(engine_bytes) != sidecar["engine_sha256"]:
        problems.append(f"the engine file changed since it was built (sha256 differs from {sidecar_path(engine_path).name})")
    if str(sidecar["tensorrt_version"]) != str(tensorrt_version):
        problems.append(f"it was built by TensorRT {sidecar['tensorrt_version']} but this is TensorRT {tensorrt_version} "
                        f"(TensorRT refuses engines from any other version, patch releases included)")
    built_cc, here_cc = _capability_text(sidecar["compute_capability"]), _capability_text(compute_capability)
    built_gpu = (f"'{sidecar['gpu_name']}' (sm {built_cc}, {sidecar['gpu_sm_count']} SMs, "
                 f"{sidecar['gpu_memory_mib']} MiB)")
    here_gpu = f"'{gpu_name}' (sm {here_cc}, {sm_count} SMs, {memory_mib} MiB)"
    if built_cc != here_cc:
        problems.append(f"it was built for compute capability {built_cc} but this GPU is {here_cc}")
    elif (str(sidecar["gpu_name"]) != str(gpu_name) or int(sidecar["gpu_sm_count"]) != int(sm_count)
          or not same_memory(sidecar["gpu_memory_mib"], memory_mib)):
        problems.append(f"it was built on GPU {built_gpu} but this GPU is {here_gpu}")
    onnx = sidecar.get("onnx")
    if onnx and sidecar.get("onnx_sha256"):
        onnx_path = Path(onnx) if Path(onnx).is_absolute() else engine_path.parent / onnx
        if onnx_path.is_file() and sha256_file(onnx_path) != sidecar["onnx_sha256"]:
            problems.append(f"its source {onnx_path.name} changed since the build (stale engine)")
    if problems:
        raise EngineMismatchError(f"refusing to load {engine_path}: " + "; ".join(problems) +
                                  f". Engines are tied to the TensorRT version and GPU they were built with; "
                                  f"rebuild it on this device: `{rebuild}`.")
    return sidecar
