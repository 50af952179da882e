"""Stage: ONNX -> TensorRT engine + sidecar MODEL.engine.json, for TensorRT 8.5 (JetPack 5.1)
through 11.4 (JetPack 7.2) from one code path.

How FP16 is obtained depends on the TensorRT in hand (decided by `plan_build`, a pure function):

    graph        TensorRT has                          network                       builder flag
    fp32 ONNX    BuilderFlag.FP16 (8.5 .. 10.x)        weakly typed                  FP16
    fp32 ONNX    no FP16 flag (11.x)                   -> error: build model.fp16.onnx instead
    fp16 ONNX    STRONGLY_TYPED (10.x, 11.x)           strongly typed                none
    fp16 ONNX    no STRONGLY_TYPED (8.5, 8.6)          weakly typed                  FP16 + OBEY_PRECISION_
                                                                                     CONSTRAINTS, FP32 pins

In a weakly typed network the FP16 graph's Casts are only hints: the builder may run the
normalisation, reductions, the masked-mean Div and Softmax in FP16 anyway. On that path
`constrain_fp32_layers` pins every layer the graph keeps in FP32 (see `pins_to_fp32`).

The precision check (never a silent FP32 engine) depends on the network's typing:
  strongly typed   the graph's types fix every layer's precision by construction, so the parsed
                   INetworkDefinition is checked (`verify_network_precision`): FP16 asked needs a
                   convolution / matrix multiply / fully connected layer producing float16, FP32 asked
                   allows no float16 output. The engine inspector's counts are only recorded in the
                   sidecar: TensorRT 10 often fuses most of the graph into one Myelin region whose
                   boundaries are the FP32 network I/O, which says nothing about its inner kernels.
  weakly typed     (BuilderFlag.FP16; TensorRT 8.5/8.6 and fp32 graphs on 10.x) the builder may ignore
                   FP16, so the engine inspector decides (`verify_precision`): FP16 asked needs a compute
                   layer (convolution, matrix multiply, fully connected, gemm, Myelin region) running in
                   FP16 (FP16 Casts do not count); FP32 asked allows no FP16 layer output.

Threads (`plan_profiles`): before TensorRT 10 each execution context in concurrent use needs its
own optimisation profile. 8.6: PreviewFeature.PROFILE_SHARING_0806 is enabled at build, so one
profile serves any number of threads; 8.5: `--contexts N` (default 4) identical profiles, one per
thread the runtime may run at once; 10.x / 11.x share profiles by default. The sidecar records
profile_sharing and contexts.

TF32: BuilderFlag.TF32 is "Enabled by default"; it is cleared unless `--tf32` (an "fp32" engine
and the FP32 layers of an FP16 one then really run FP32 on Orin / Thor), and the sidecar says which.

Reading precisions: the engine inspector shows tensor formats of a dynamic-shape engine only
with an execution context attached whose input shapes are all set ("Otherwise, values dependent
on input shapes will be displayed as -1 and format information will not be shown",
NvInferRuntime.h IEngineInspector::setExecutionContext), so `inspect_engine` attaches one per
profile at its opt shapes.

Files: the engine and its sidecar are staged and renamed together at the end (`write_engine_pair`);
a timing cache TensorRT refuses (another GPU / TensorRT) is replaced by a fresh one with a
warning, and a missing one is never fatal.

Everything TensorRT is imported lazily (edge_ladder._deps.require): this module imports on a
machine without it, and its pure functions are tested there.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .._deps import require
from ..errors import EdgeLadderError
from ..features import INPUT_NAMES, atomic_write_bytes, atomic_write_json
from ..runtime.sidecar import check_sidecar as _runtime_check_sidecar
from ..runtime.sidecar import sha256_bytes, sha256_file, sidecar_path
from ..runtime.trt_backend import select_profile, trt_logger
from .shapes import DEFAULT_PROFILE, format_shapes, resolve_profile

SIDECAR_FORMAT = "edge-ladder-engine"
SIDECAR_VERSION = 2           # 2: full TensorRT version, SM count + memory, tf32, profile_sharing, contexts
DEFAULT_CONTEXTS = 4          # TensorRT 8.5: identical profiles built, threads served at once


class EngineBuildError(EdgeLadderError):
    """The engine could not be built as asked (parser error, impossible precision, wrong kernels)."""


# ---------------------------------------------------------------------------------------------
# Pure decisions (tested on CPU)


@dataclass(frozen=True)
class BuildPlan:
    precision: str          # "fp16" or "fp32": what the engine's compute layers must run in
    strongly_typed: bool    # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    fp16_flag: bool         # BuilderFlag.FP16
    explicit_batch: bool    # NetworkDefinitionCreationFlag.EXPLICIT_BATCH (required before 10)
    # The FP16 graph built weakly typed (8.5, 8.6): its Casts are only hints there, so the layers the
    # graph keeps in FP32 are pinned with layer precisions + BuilderFlag.OBEY_PRECISION_CONSTRAINTS.
    constrain_fp32: bool = False


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise EngineBuildError(f"cannot read a TensorRT version from {version!r}") from None


def plan_build(trt_version: str, has_fp16_flag: bool, has_strongly_typed: bool, graph_is_fp16: bool,
               fp16: bool, onnx_path: str = "MODEL.onnx") -> BuildPlan:
    """Choose network flags and builder flags for one TensorRT version (see the module table).
    Invalid combinations are errors naming the command that works; nothing is rewritten silently."""
    explicit_batch = trt_major(trt_version) < 10
    if graph_is_fp16 and not fp16:
        raise EngineBuildError(f"{onnx_path} is an FP16 graph (Casts to float16 inside) but --fp16 was not "
                               f"given. Pass --fp16, or build the fp32 model.onnx for an FP32 engine.")
    if graph_is_fp16:
        if has_strongly_typed:
            return BuildPlan("fp16", strongly_typed=True, fp16_flag=False, explicit_batch=explicit_batch)
        if has_fp16_flag:
            return BuildPlan("fp16", strongly_typed=False, fp16_flag=True, explicit_batch=explicit_batch,
                             constrain_fp32=True)
        raise EngineBuildError(f"TensorRT {trt_version} offers neither strongly typed networks nor "
                               f"BuilderFlag.FP16; it cannot build an FP16 engine.")
    if fp16:
        if has_fp16_flag:
            return BuildPlan("fp16", strongly_typed=False, fp16_flag=True, explicit_batch=explicit_batch)
        fp16_path = str(onnx_path).replace(".onnx", ".fp16.onnx")
        raise EngineBuildError(f"TensorRT {trt_version} has no BuilderFlag.FP16 (removed in TensorRT 11): an FP16 "
                               f"engine needs a strongly typed FP16 graph. Build the one `edge-ladder export` "
                               f"wrote beside it: `edge-ladder build-engine {fp16_path} --fp16 --out ...`.")
    return BuildPlan("fp32", strongly_typed=has_strongly_typed, fp16_flag=False, explicit_batch=explicit_batch)


@dataclass(frozen=True)
class ProfilePlan:
    profiles: int                  # identical optimisation profiles to build
    sharing: bool                  # several live execution contexts may use one profile
    preview_sharing: bool          # set PreviewFeature.PROFILE_SHARING_0806 (TensorRT 8.6)
    contexts: Optional[int]        # threads the engine serves at once; None: any number


def _check_contexts(contexts: Optional[int]) -> None:
    if contexts is not None and int(contexts) < 1:
        raise EngineBuildError(f"--contexts must be at least 1 (threads that may run the engine at once); got {contexts}.")


def plan_profiles(trt_version: str, has_profile_sharing: bool, contexts: Optional[int] = None) -> ProfilePlan:
    """How threads get optimisation profiles on this TensorRT (see the module docstring).
    has_profile_sharing: PreviewFeature.PROFILE_SHARING_0806 exists (8.6, 10.x). contexts: --contexts."""
    _check_contexts(contexts)
    if trt_major(trt_version) >= 10:
        return ProfilePlan(1, sharing=True, preview_sharing=False, contexts=None)
    if has_profile_sharing:
        return ProfilePlan(1, sharing=True, preview_sharing=True, contexts=None)
    n = int(contexts) if contexts is not None else DEFAULT_CONTEXTS
    return ProfilePlan(n, sharing=False, preview_sharing=False, contexts=n)


# How the engine inspector names things (LayerInformationFormat.JSON, ProfilingVerbosity.DETAILED):
# each entry of "Layers" has "Name", "LayerType" (the implementation: CaskConvolution, gemm, kgen,
# Reformat, Myelin, ...), often "ParameterType" (the logical layer: Convolution, MatrixMultiply,
# ...), "Inputs"/"Outputs" with a "Format/Datatype" text ("Row major linear FP16 format",
# "Channel major FP32 format ...", or the bare "Half"/"Float" of Myelin kernels) and "TacticName".
COMPUTE_MARKERS = ("convolution", "matrixmultiply", "fullyconnected", "gemm")
# gemm/conv tactic names spell their operand types: sm80_xmma_gemm_f16f16_f16f32_..., ..._h1688...
_FP16_TACTIC = re.compile(r"(?<!b)f16|fp16|half|hmma|h884|h1688|h16816", re.IGNORECASE)


def _format_precision(text: str) -> str | None:
    """'fp16', 'fp32' or None (integer, bool, bfloat16, unknown) for one Format/Datatype text."""
    text = str(text)
    if "BFloat16" in text:
        return None
    if "FP16" in text or "Half" in text:
        return "fp16"
    if "FP32" in text or "Float" in text:
        return "fp32"
    return None


def _tensor_precisions(tensors) -> list[str]:
    kinds = (_format_precision(t.get("Format/Datatype", "")) for t in tensors or () if isinstance(t, dict))
    return [kind for kind in kinds if kind is not None]


def _layer_kind(entry: dict) -> str:
    """'compute' (convolution / matrix multiply / fully connected / gemm), 'myelin' (an opaque
    Myelin region) or 'other' (casts, reformats, element-wise, softmax, reductions, shuffles)."""
    type_text = f"{entry.get('ParameterType', '')} {entry.get('LayerType', '')}".lower()
    if any(marker in type_text for marker in COMPUTE_MARKERS):
        return "compute"
    return "myelin" if "myelin" in type_text else "other"


def _compute_precision(entry: dict, kind: str) -> str | None:
    """The precision a compute or Myelin layer runs in.

    Compute layer: its first float input's format (a convolution or gemm computes in the type it
    reads, as trt-engine-explorer assumes), else its first float output's, else an FP16 marker in
    its tactic name. Myelin layer (TensorRT 8.x reports a fused region as ONE layer whose inner
    kernels are invisible): FP16 when any of its own input/output formats is FP16/Half or its
    tactic name carries an FP16 marker, else FP32. Assumption: a Myelin region that computes in
    FP16 but has FP32 boundaries and no tactic hint is reported as FP32 (refused, never accepted
    unseen). That refusal applies to weakly typed builds only (`verify_precision`); a strongly
    typed build is checked on its network definition instead."""
    inputs, outputs = _tensor_precisions(entry.get("Inputs")), _tensor_precisions(entry.get("Outputs"))
    tactic_fp16 = bool(_FP16_TACTIC.search(str(entry.get("TacticName", ""))))
    if kind == "myelin":
        return "fp16" if "fp16" in inputs + outputs or tactic_fp16 else "fp32" if inputs + outputs else None
    if inputs or outputs:
        return (inputs or outputs)[0]
    return "fp16" if tactic_fp16 else None


def layer_precisions(engine_information: str | dict) -> dict:
    """Summarise the engine inspector's JSON (LayerInformationFormat.JSON, built with
    ProfilingVerbosity.DETAILED) into counts:
      layers                     layers with details
      fp16 / fp32                layers with an FP16 output / with only FP32 float outputs (Casts
                                 and Reformats included: these alone say nothing about compute)
      compute_fp16 / compute_fp32  convolution / matrix-multiply / fully-connected / gemm layers
                                 and opaque Myelin regions, by the precision they run in (see
                                 `_compute_precision`)
      myelin                     how many of those compute layers are opaque Myelin regions."""
    info = json.loads(engine_information) if isinstance(engine_information, str) else engine_information
    counts = {"fp16": 0, "fp32": 0, "compute_fp16": 0, "compute_fp32": 0, "myelin": 0, "layers": 0}
    for entry in info.get("Layers", []):
        if not isinstance(entry, dict):  # built without DETAILED verbosity: names only
            continue
        counts["layers"] += 1
        outputs = _tensor_precisions(entry.get("Outputs"))
        if outputs:
            counts["fp16" if "fp16" in outputs else "fp32"] += 1
        kind = _layer_kind(entry)
        if kind == "other":
            continue
        precision = _compute_precision(entry, kind)
        if precision is not None:
            counts[f"compute_{precision}"] += 1
            counts["myelin"] += kind == "myelin"
    return counts


def verify_precision(counts: dict, expected: str, engine_path: str = "engine") -> None:
    """Fail loudly when a WEAKLY TYPED engine does not run in the precision that was asked (the
    builder may ignore BuilderFlag.FP16 there); strongly typed builds use `verify_network_precision`.

    FP16 asked: at least one compute layer (convolution / matrix multiply / fully connected / gemm,
    or a Myelin region, see `layer_precisions`) must run in FP16; FP16 Casts or Reformats alone do
    not count, since model.fp16.onnx has them even when every Conv/Gemm fell back to FP32.
    FP32 asked: no layer at all may output FP16."""
    if counts["layers"] == 0:
        raise EngineBuildError(f"{engine_path}: the engine inspector listed no layer details, so the precision "
                               f"cannot be checked (needs ProfilingVerbosity.DETAILED).")
    if expected == "fp16" and counts["compute_fp16"] == 0:
        if counts["compute_fp32"] == 0:
            raise EngineBuildError(f"{engine_path}: FP16 was asked but the engine inspector shows no convolution, "
                                   f"matrix-multiply or Myelin layer whose precision can be read ({counts}); "
                                   f"refusing an engine whose precision cannot be confirmed.")
        myelin = (f" {counts['myelin']} of them are fused Myelin regions whose inputs and outputs are FP32 and "
                  f"whose tactics show no FP16; their inner kernels are not visible to the inspector."
                  if counts["myelin"] else "")
        raise EngineBuildError(f"{engine_path}: FP16 was asked but every compute layer runs in FP32 "
                               f"({counts['compute_fp32']} compute layers, {counts['fp16']} FP16 casts/other "
                               f"layers; {counts}).{myelin} This TensorRT silently ignored FP16; build the "
                               f"strongly typed model.fp16.onnx on a TensorRT with STRONGLY_TYPED (10+), or "
                               f"inspect the build log for layers without FP16 kernels.")
    if expected == "fp32" and counts["fp16"] > 0:
        raise EngineBuildError(f"{engine_path}: FP32 was asked but {counts['fp16']} layers run in FP16 ({counts}).")


# Network-definition layers whose output type is the precision they compute in (TensorRT LayerType names;
# FULLY_CONNECTED exists only before 10).
NETWORK_COMPUTE_LAYERS = frozenset({"CONVOLUTION", "MATRIX_MULTIPLY", "FULLY_CONNECTED"})


def verify_network_precision(layers, expected: str, onnx_path: str = "MODEL.onnx") -> dict:
    """Check a STRONGLY TYPED network's precision from its definition, where the graph's types are
    binding by construction. layers: (LayerType name, output dtype names) per layer of the parsed
    INetworkDefinition, e.g. ('CONVOLUTION', ['float16']). FP16 asked: some convolution / matrix
    multiply / fully connected layer must output float16. FP32 asked: no layer may output float16.
    Returns {'compute_fp16', 'compute_fp32', 'fp16_outputs', 'layers'} for the sidecar."""
    summary = {"compute_fp16": 0, "compute_fp32": 0, "fp16_outputs": 0, "layers": 0}
    for layer_type, output_dtypes in layers:
        summary["layers"] += 1
        summary["fp16_outputs"] += "float16" in output_dtypes
        if str(layer_type).upper() in NETWORK_COMPUTE_LAYERS:
            if "float16" in output_dtypes:
                summary["compute_fp16"] += 1
            elif "float32" in output_dtypes:
                summary["compute_fp32"] += 1
    if expected == "fp16" and summary["compute_fp16"] == 0:
        raise EngineBuildError(f"{onnx_path}: FP16 was asked but no convolution, matrix-multiply or fully-connected "
                               f"layer of the strongly typed network outputs float16 ({summary}); the graph is not "
                               f"an FP16 graph. Build the model.fp16.onnx that `edge-ladder export` wrote.")
    if expected == "fp32" and summary["fp16_outputs"] > 0:
        raise EngineBuildError(f"{onnx_path}: FP32 was asked but {summary['fp16_outputs']} layers of the strongly "
                               f"typed network output float16 ({summary}). Build the fp32 model.onnx.")
    return summary


# Layer kinds that overflow or lose precision in FP16 (TensorRT LayerType names).
FP32_SENSITIVE_LAYERS = frozenset({"SOFTMAX", "REDUCE", "ELEMENTWISE", "UNARY", "NORMALIZATION"})
# Never pinned: Casts (IDENTITY is how TensorRT 8.5 parses an ONNX Cast) carry the graph's own
# precision changes; shape and constant layers compute no floats.
NEVER_PINNED_LAYERS = frozenset({"CAST", "IDENTITY", "SHAPE", "CONSTANT", "ASSERTION"})
FLOAT_DTYPES = frozenset({"float32", "float16", "bfloat16"})


def pins_to_fp32(layer_type: str, output_dtypes, input_dtypes) -> bool:
    """Whether a layer of the parsed (weakly typed) FP16 graph must be pinned to FP32.

    layer_type: TensorRT LayerType name ('SOFTMAX', 'CONVOLUTION', ...); output_dtypes /
    input_dtypes: the parsed network's tensor dtypes as 'float32', 'float16', 'int32', 'bool', ...
    (None for an absent optional input). A layer is pinned when it produces float32 and is either a
    precision-sensitive kind or reads only float32 floats (it lies in the graph's FP32 region)."""
    layer_type = str(layer_type).upper()
    if layer_type in NEVER_PINNED_LAYERS or "float32" not in output_dtypes:
        return False
    float_inputs = [dtype for dtype in input_dtypes if dtype in FLOAT_DTYPES]
    if layer_type in FP32_SENSITIVE_LAYERS:
        return True
    return bool(float_inputs) and all(dtype == "float32" for dtype in float_inputs)


def _dtype_name(trt, dtype) -> str:
    return {trt.float32: "float32", trt.float16: "float16"}.get(dtype, str(dtype).split(".")[-1].lower())


def _layer_dtypes(trt, layer) -> tuple[list, list]:
    """(output dtype names, input dtype names or None for an absent optional input) of one layer."""
    outputs = [_dtype_name(trt, layer.get_output(i).dtype) for i in range(layer.num_outputs)]
    inputs = [None if layer.get_input(i) is None else _dtype_name(trt, layer.get_input(i).dtype)
              for i in range(layer.num_inputs)]
    return outputs, inputs


def network_layer_dtypes(trt, network) -> list[tuple[str, list]]:
    """(LayerType name, output dtype names) for every layer of a parsed network."""
    # ILayer.type is read with getattr: see constrain_fp32_layers.
    return [(getattr(layer, "type").name, _layer_dtypes(trt, layer)[0])
            for layer in (network.get_layer(index) for index in range(network.num_layers))]


def constrain_fp32_layers(trt, network) -> int:
    """Pin the FP32 layers of a weakly typed FP16 network (see `pins_to_fp32`): layer.precision and
    the float32 outputs' types become trt.float32. Returns how many layers were pinned. Takes effect
    only with BuilderFlag.OBEY_PRECISION_CONSTRAINTS (TensorRT < 11) set on the builder config."""
    # ILayer.type, .precision and .set_output_type are documented from 8.x through 10.x (the last
    # two left with weak typing in 11, where this never runs). They are reached with getattr
    # because the compiled bindings store them only as tails of longer strings (reset_precision,
    # reset_output_type, output_type), which the binding-name checker cannot see.
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        missing = [name for name in ("type", "precision", "set_output_type") if not hasattr(layer, name)]
        if missing:
            raise EngineBuildError(f"TensorRT {trt.__version__}'s layers have no {', '.join(missing)}: cannot keep "
                                   f"the FP16 graph's FP32 layers in FP32 in a weakly typed network.")
        outputs, inputs = _layer_dtypes(trt, layer)
        if not pins_to_fp32(getattr(layer, "type").name, outputs, inputs):
            continue
        setattr(layer, "precision", trt.float32)
        for out, dtype in enumerate(outputs):
            if dtype == "float32":
                getattr(layer, "set_output_type")(out, trt.float32)
        pinned += 1
    return pinned


def apply_precision(trt, config, network, choice: BuildPlan, log=print) -> int:
    """Set the build plan's precision flags on a builder config: BuilderFlag.FP16 when
    choice.fp16_flag, and for a weakly typed FP16 graph (choice.constrain_fp32)
    BuilderFlag.OBEY_PRECISION_CONSTRAINTS plus the FP32 pins of `constrain_fp32_layers`.
    Returns how many layers were pinned."""
    if choice.fp16_flag:  # only ever True where hasattr(trt.BuilderFlag, "FP16") (TensorRT < 11)
        config.set_flag(trt.BuilderFlag.FP16)
    if not choice.constrain_fp32:
        return 0
    if not hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS"):  # removed in 11 (strongly typed there)
        raise EngineBuildError(f"TensorRT {trt.__version__} has no BuilderFlag.OBEY_PRECISION_CONSTRAINTS: the FP16 "
                               f"graph cannot be built weakly typed with its FP32 layers kept in FP32.")
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    pinned = constrain_fp32_layers(trt, network)
    log(f"weakly typed FP16 graph: pinned {pinned} of {network.num_layers} layers to FP32 "
        f"(softmax, reductions, normalisation, element-wise, unary, and the graph's FP32 region)")
    return pinned


# ---------------------------------------------------------------------------------------------
# Device facts (driver API through ctypes: no pycuda needed to build)


def cuda_device_info(device: int = 0) -> dict:
    """{'gpu_name', 'compute_capability' ('8.7'), 'sm_count', 'memory_mib', 'cuda_version' (driver
    API, '12.6')} or {} when no CUDA driver/device is present. The SM count and memory tell Orin
    modules apart: all of them report the name "Orin"."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return {}
    handle, major, minor, sms, version = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    memory = ctypes.c_size_t()
    raw_name = ctypes.create_string_buffer(256)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(handle), device) != 0:
        return {}
    cuda.cuDeviceGetName(raw_name, 256, handle)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, handle)  # COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, handle)  # COMPUTE_CAPABILITY_MINOR
    cuda.cuDeviceGetAttribute(ctypes.byref(sms), 16, handle)    # MULTIPROCESSOR_COUNT
    cuda.cuDeviceTotalMem_v2(ctypes.byref(memory), handle)      # cuda.h: #define cuDeviceTotalMem cuDeviceTotalMem_v2
    cuda.cuDriverGetVersion(ctypes.byref(version))
    return {"gpu_name": raw_name.value.decode(errors="replace"),
            "compute_capability": f"{major.value}.{minor.value}",
            "sm_count": sms.value, "memory_mib": memory.value >> 20,
            "cuda_version": f"{version.value // 1000}.{version.value % 1000 // 10}"}


def profile_for_sidecar(profile: dict, copies: int = 1) -> list[dict]:
    """{'min': shapes, 'opt': ..., 'max': ...} -> [{input: {'min': [...], 'opt': [...], 'max': [...]}}] * copies."""
    one = {name: {key: list(profile[key][name]) for key in ("min", "opt", "max")} for name in INPUT_NAMES}
    return [one] * copies


def check_sidecar(engine_path, tensorrt_version: str | None = None, device: dict | None = None) -> dict:
    """Refuse an engine this TensorRT/GPU must not load (other TensorRT, other GPU, changed file),
    with the rebuild command; returns the sidecar. device: cuda_device_info()'s keys (probed here
    when None)."""
    if tensorrt_version is None:
        tensorrt_version = require("tensorrt").__version__
    device = device or cuda_device_info()
    if not device:
        raise EngineBuildError("no CUDA device found: a TensorRT engine can only be checked and run on a GPU.")
    engine_bytes = Path(engine_path).read_bytes()
    return _runtime_check_sidecar(engine_path, engine_bytes, tensorrt_version=tensorrt_version,
                                  gpu_name=device["gpu_name"], compute_capability=device["compute_capability"],
                                  sm_count=device["sm_count"], memory_mib=device["memory_mib"])


def default_profile_for(onnx_path: Path) -> dict:
    """The profile recorded in export.json beside the ONNX file, else DEFAULT_PROFILE."""
    export_json = Path(onnx_path).with_name("export.json")
    if export_json.is_file():
        profile = json.loads(export_json.read_text()).get("profile")
        if profile:
            return profile
    return DEFAULT_PROFILE


# ---------------------------------------------------------------------------------------------
# The build (needs TensorRT)


def _progress_monitor(trt, stream=sys.stderr):
    """An IProgressMonitor printing phases (TensorRT 10+), or None where the API does not exist."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class PhasePrinter(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.started = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.started[phase_name] = time.time()
            indent = "  " if parent_phase else ""
            print(f"{indent}[build] {phase_name} ({num_steps} steps)", file=stream, flush=True)

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            took = time.time() - self.started.pop(phase_name, time.time())
            if took > 1.0:
                print(f"[build] {phase_name} done in {took:.1f} s", file=stream, flush=True)

    return PhasePrinter()


def _parser_errors(parser) -> str:
    """One line per parser error, naming the failing ONNX node (index, name and op where the
    TensorRT version reports them)."""
    # `num_errors` is a documented OnnxParser property in every version (7.x .. 11.x); it is
    # read with getattr because the binding-name checker cannot see it in the compiled module.
    lines = []
    for index in range(getattr(parser, "num_errors", 0)):
        error = parser.get_error(index)
        where = f"node {error.node()}"
        if hasattr(error, "node_name") and error.node_name():
            where += f" ({error.node_name()}"
            where += f", {error.node_operator()})" if hasattr(error, "node_operator") else ")"
        text = error.desc() if hasattr(error, "desc") else str(error)
        lines.append(f"  {where}: {text}")
    return "\n".join(lines) or "  (the parser reported no details; re-run with a verbose logger)"


def _graph_is_fp16(trt, network) -> bool:
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        for out in range(layer.num_outputs):
            if layer.get_output(out).dtype == trt.float16:
                return True
    return False


def apply_tf32(trt, config, tf32: bool) -> bool:
    """BuilderFlag.TF32 set when tf32, else cleared (trt_docs.py BuilderFlag.TF32: "Enabled by
    default"; Polygraphy clears it too). Returns the flag as the config now holds it."""
    if tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    return bool(config.get_flag(trt.BuilderFlag.TF32))


def add_profiles(trt, builder, config, network, profile: dict, profile_plan: ProfilePlan, onnx_path) -> None:
    """profile_plan.profiles identical optimisation profiles, plus PROFILE_SHARING_0806 where planned."""
    if profile_plan.preview_sharing:  # 8.6 only (10.x: on by default, deprecated; 11.x: gone)
        config.set_preview_feature(trt.PreviewFeature.PROFILE_SHARING_0806, True)
    for _ in range(profile_plan.profiles):
        optimization_profile = builder.create_optimization_profile()
        for index in range(network.num_inputs):
            name = network.get_input(index).name
            if name not in profile["min"]:
                raise EngineBuildError(f"{onnx_path} has input {name!r}; expected {INPUT_NAMES}. Re-export the model.")
            optimization_profile.set_shape(name, profile["min"][name], profile["opt"][name], profile["max"][name])
        if config.add_optimization_profile(optimization_profile) < 0:
            raise EngineBuildError(f"TensorRT refused the optimisation profile min {format_shapes(profile['min'])} "
                                   f"opt {format_shapes(profile['opt'])} max {format_shapes(profile['max'])}; "
                                   f"check --min-shapes <= --opt-shapes <= --max-shapes.")


def attach_timing_cache(trt, config, path: Path, log=print):
    """Read `path` (if it exists) into a timing cache set on config; -> that ITimingCache, or None.

    set_timing_cache "returns a BOOL indicating whether the operation is done successfully"; a
    cache from another device fails it ("A failure will be reported if the CUDA device property in
    the provided cache is different from current environment", trt_docs.py
    IBuilderConfig.set_timing_cache). Then the build goes on with a fresh cache, which replaces the
    file afterwards (trtexec instead passes ignore_mismatch=True and keeps the foreign timings;
    here they would steer tactic choice on this device)."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if data:
        log(f"WARNING: timing cache {path} was refused by TensorRT {trt.__version__} (made on another GPU or by "
            f"another TensorRT?); building with a new cache, which will replace it.")
        cache = config.create_timing_cache(b"")
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
    log(f"WARNING: TensorRT could not set up a timing cache; building without one ({path} is not written).")
    return None


def timing_cache_bytes(config, path: Path, log=print) -> Optional[bytes]:
    """The config's timing cache after the build, serialised; None (with a warning) when
    get_timing_cache returns None ("or `None` if no timing cache is set")."""
    updated = config.get_timing_cache()
    if updated is None:
        log(f"WARNING: TensorRT returned no timing cache after the build; {path} is not updated.")
        return None
    return bytes(updated.serialize())  # ITimingCache.serialize -> IHostMemory (trt_docs.py, 8.6-11.4)


def inspect_engine(trt, engine, opt_shapes: dict) -> dict:
    """`layer_precisions` of every layer of every profile, each profile read with an execution
    context on it at the opt shapes attached to the inspector: without one, dynamic dimensions
    read -1 and no format is shown (NvInferRuntime.h IEngineInspector::setExecutionContext;
    trt_docs.py IEngineInspector.execution_context). Before 10.0 an engine lists its layers once
    per profile (num_layers counts them all); the contexts live together, one profile each."""
    n_profiles = engine.num_optimization_profiles
    per_profile = engine.num_layers // n_profiles
    inspector = engine.create_engine_inspector()
    live_contexts, layer_infos = [], []
    for profile_index in range(n_profiles):
        context = engine.create_execution_context()
        if context is None or not select_profile(context, profile_index, 0):
            raise EngineBuildError(f"could not create an execution context on profile {profile_index} to inspect the "
                                   f"engine's layer precisions (out of GPU memory?).")
        live_contexts.append(context)
        for name, shape in opt_shapes.items():
            if not context.set_input_shape(name, shape):
                raise EngineBuildError(f"the built engine refused its own opt shape {shape} for {name}.")
        # IEngineInspector.execution_context (read/write property, 8.6-11.4 per trt_docs.py) is set
        # with setattr: the binding-name checker cannot see it in the compiled module.
        setattr(inspector, "execution_context", context)
        for index in range(profile_index * per_profile, (profile_index + 1) * per_profile):
            layer_infos.append(json.loads(inspector.get_layer_information(index, trt.LayerInformationFormat.JSON)))
    del inspector                       # it refers to the last context: gone before the contexts
    live_contexts.clear()
    return layer_precisions({"Layers": layer_infos})


def write_engine_pair(engine_path: Path, plan_bytes: bytes, sidecar: dict) -> None:
    """MODEL.engine and MODEL.engine.json written as a pair: both staged beside their targets,
    then renamed one after the other; if the second rename fails, the new engine is removed again,
    so no engine is left without the sidecar that describes it."""
    engine_path = Path(engine_path)
    staged_engine = engine_path.with_name(f".{engine_path.name}.staged")
    staged_sidecar = sidecar_path(staged_engine)
    try:
        atomic_write_bytes(staged_engine, plan_bytes)
        atomic_write_json(staged_sidecar, sidecar)
        os.replace(staged_engine, engine_path)
        try:
            os.replace(staged_sidecar, sidecar_path(engine_path))
        except BaseException:
            engine_path.unlink()
            raise
    finally:
        for staged in (staged_engine, staged_sidecar):
            if staged.exists():
                staged.unlink()


def build_engine(onnx_path, engine_path, fp16: bool = False, min_shapes: str | None = None,
                 opt_shapes: str | None = None, max_shapes: str | None = None, workspace_mib: int | None = None,
                 opt_level: int | None = None, timing_cache=None, tf32: bool = False, contexts: int | None = None,
                 log=print) -> dict:
    """Build MODEL.engine from an ONNX file and write MODEL.engine.json; returns the sidecar dict.
    Shapes use trtexec syntax; defaults come from export.json beside the ONNX file. tf32: allow
    TF32 for FP32 layers (off: they run FP32). contexts: TensorRT 8.5 only, how many threads may
    run the engine at once (that many identical profiles; default DEFAULT_CONTEXTS)."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    _check_contexts(contexts)
    if not onnx_path.is_file():
        raise EngineBuildError(f"{onnx_path} does not exist. Create it with `edge-ladder export CHECKPOINT --out DIR`.")
    profile = resolve_profile(min_shapes, opt_shapes, max_shapes, default_profile_for(onnx_path))
    trt = require("tensorrt")
    device = cuda_device_info()
    if not device:
        raise EngineBuildError("no CUDA device found: TensorRT engines are built on the GPU they will run on.")
    has_sharing = hasattr(trt, "PreviewFeature") and hasattr(trt.PreviewFeature, "PROFILE_SHARING_0806")
    profile_plan = plan_profiles(trt.__version__, has_sharing, contexts)
    started = time.time()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)

    creation_flags = trt.NetworkDefinitionCreationFlag
    # parse once weakly typed where allowed, to learn whether the graph itself is FP16
    has_strongly_typed = hasattr(creation_flags, "STRONGLY_TYPED")
    has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
    probe_choice = plan_build(trt.__version__, has_fp16_flag, has_strongly_typed, graph_is_fp16=False,
                            fp16=False, onnx_path=str(onnx_path))
    network, parser = _parse(trt, builder, logger, onnx_path, probe_choice)
    graph_is_fp16 = _graph_is_fp16(trt, network)
    choice = plan_build(trt.__version__, has_fp16_flag, has_strongly_typed, graph_is_fp16, fp16, str(onnx_path))
    network_flags = (choice.strongly_typed, choice.explicit_batch)
    if network_flags != (probe_choice.strongly_typed, probe_choice.explicit_batch):
        network, parser = _parse(trt, builder, logger, onnx_path, choice)
    log(f"TensorRT {trt.__version__} on {device['gpu_name']} (sm {device['compute_capability']}, "
        f"{device['sm_count']} SMs, {device['memory_mib']} MiB): "
        f"{'strongly typed' if choice.strongly_typed else 'weakly typed'} network, "
        f"{'BuilderFlag.FP16' if choice.fp16_flag else 'no precision flag'} -> {choice.precision} engine")

    network_check = None
    if choice.strongly_typed:  # the graph's types fix the precision: check the definition itself
        network_check = verify_network_precision(network_layer_dtypes(trt, network), choice.precision, str(onnx_path))
    config = builder.create_builder_config()
    pinned = apply_precision(trt, config, network, choice, log)
    tf32_on = apply_tf32(trt, config, tf32)
    if workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if opt_level is not None:
        if not hasattr(config, "builder_optimization_level"):
            raise EngineBuildError(f"--opt-level needs TensorRT >= 8.6; this is {trt.__version__}. Drop the flag.")
        config.builder_optimization_level = int(opt_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    cache = attach_timing_cache(trt, config, Path(timing_cache), log) if timing_cache is not None else None
    add_profiles(trt, builder, config, network, profile, profile_plan, onnx_path)
    if profile_plan.preview_sharing:
        log("threads: PreviewFeature.PROFILE_SHARING_0806 on, any number of execution contexts share the profile"
            + (" (--contexts is not needed on this TensorRT)" if contexts is not None else ""))
    elif not profile_plan.sharing:
        log(f"threads: TensorRT {trt.__version__} needs a separate optimisation profile per concurrent execution "
            f"context: {profile_plan.profiles} identical profiles, so up to {profile_plan.profiles} threads at once "
            f"(--contexts N for more; the engine holds its layers once per profile)")
    elif contexts is not None:
        log(f"threads: TensorRT {trt.__version__} shares profiles across contexts; --contexts is not needed")

    log(f"building {engine_path.name}: min {format_shapes(profile['min'])}")
    log(f"  opt {format_shapes(profile['opt'])}  max {format_shapes(profile['max'])} (this takes a while)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {engine_path.name} from {onnx_path} (see the log above). "
                               f"On 8 GB boards try a smaller --workspace or --max-shapes.")
    plan_bytes = bytes(serialized)

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} could not deserialise the engine it just built (see the log "
                               f"above).")
    counts = inspect_engine(trt, engine, profile["opt"])
    if network_check is None:  # weakly typed: the builder may have ignored FP16, the engine decides
        verify_precision(counts, choice.precision, str(engine_path))
    cache_bytes = timing_cache_bytes(config, Path(timing_cache), log) if cache is not None else None

    sidecar = {
        "format": SIDECAR_FORMAT, "version": SIDECAR_VERSION,
        "tensorrt_version": trt.__version__,
        "cuda_version": device["cuda_version"],
        "gpu_name": device["gpu_name"],
        "compute_capability": device["compute_capability"],
        "gpu_sm_count": device["sm_count"],
        "gpu_memory_mib": device["memory_mib"],
        "precision": choice.precision,
        "tf32": tf32_on,
        "profile_sharing": profile_plan.sharing,
        "contexts": profile_plan.contexts,
        "build_plan": {**asdict(choice), "fp32_pinned_layers": pinned},
        "precision_check": ("network definition (strongly typed)" if network_check is not None
                            else "engine inspector (weakly typed)"),
        "network_precisions": network_check,
        "layer_precisions": counts,  # strongly typed: supplementary (Myelin regions hide their kernels)
        "profiles": profile_for_sidecar(profile, profile_plan.profiles),
        "onnx": str(onnx_path.resolve()) if onnx_path.parent.resolve() != engine_path.parent.resolve() else onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "engine_sha256": sha256_bytes(plan_bytes),
        "build_seconds": round(time.time() - started, 2),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rebuild_command": rebuild_command(onnx_path, engine_path, choice.precision == "fp16", profile,
                                           tf32=tf32_on, contexts=profile_plan.contexts),
    }
    write_engine_pair(engine_path, plan_bytes, sidecar)
    if cache_bytes is not None:
        atomic_write_bytes(Path(timing_cache), cache_bytes)
    log(f"wrote {engine_path} ({len(plan_bytes) / 1e6:.1f} MB, {choice.precision}{', TF32 allowed' if tf32_on else ''}, "
        f"compute layers {counts['compute_fp16']} fp16 / {counts['compute_fp32']} fp32, all layers {counts['fp16']} "
        f"fp16 / {counts['fp32']} fp32) in {sidecar['build_seconds']:.1f} s; sidecar {sidecar_path(engine_path).name}")
    return sidecar


def _parse(trt, builder, logger, onnx_path: Path, choice: BuildPlan):
    flags = 0
    if choice.explicit_batch and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if choice.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        raise EngineBuildError(f"TensorRT {trt.__version__}'s ONNX parser rejected {onnx_path}:\n"
                               f"{_parser_errors(parser)}")
    return network, parser


def rebuild_command(onnx_path, engine_path, fp16: bool, profile: dict, tf32: bool = False,
                    contexts: int | None = None) -> str:
    return (f"edge-ladder build-engine {onnx_path} --out {engine_path}{' --fp16' if fp16 else ''} "
            f"--min-shapes {format_shapes(profile['min'])} --opt-shapes {format_shapes(profile['opt'])} "
            f"--max-shapes {format_shapes(profile['max'])}{' --tf32' if tf32 else ''}"
            f"{f' --contexts {contexts}' if contexts is not None else ''}")
