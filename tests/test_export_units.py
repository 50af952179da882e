"""export/ stages that need no trained model: the FP16 graph pass, the INT8 plan, the TensorRT 8.5 op check,
batch-norm folding, profile shapes, the TensorRT build plan and precision check, the sidecar."""
from __future__ import annotations

import enum
import json
import subprocess
import sys
import types

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_ladder.errors import EdgeLadderError  # noqa: E402
from edge_ladder.export import engine, fp16, opcheck, shapes  # noqa: E402


def tiny_graph(rng, opset=17, extra_nodes=()):
    """x (B, T, 8) -> MatMul -> Relu -> masked ReduceSum / ReduceSum(mask) -> Div -> Gemm -> Softmax."""
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (16, 6)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.normal(0, 0.1, (6,)).astype(np.float32), "b2")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Unsqueeze", ["mask", "axes2"], ["m3"]),
        helper.make_node("Mul", ["r", "m3"], ["rm"]),
        helper.make_node("ReduceSum", ["rm", "axes"], ["s"], keepdims=0),
        helper.make_node("ReduceSum", ["m3", "axes"], ["n"], keepdims=0),
        helper.make_node("Div", ["s", "n"], ["pooled"]),
        helper.make_node("Gemm", ["pooled", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        *extra_nodes,
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", 8]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["B", "T"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 6]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", 6])],
        [w1, w2, b2, axes, numpy_helper.from_array(np.array([2], np.int64), "axes2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def dtypes_by_op(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    return {node.op_type + ":" + node.output[0]: types.get(node.output[0]) for node in inferred.graph.node}


def test_fp16_pass_keeps_reductions_division_softmax_in_fp32_and_io_in_fp32():
    rng = np.random.default_rng(1)
    model = tiny_graph(rng)
    half = fp16.convert_to_fp16(model)
    by_op = dtypes_by_op(half)
    kinds = {}
    for key, dtype in by_op.items():
        kinds.setdefault(key.split(":")[0], set()).add(dtype)
    assert kinds["MatMul"] == {TensorProto.FLOAT16} and kinds["Gemm"] == {TensorProto.FLOAT16}
    assert kinds["Relu"] == {TensorProto.FLOAT16}
    for op in ("ReduceSum", "Div", "Softmax"):
        assert kinds[op] == {TensorProto.FLOAT}, op
    assert "Cast" in kinds
    # weights stored as fp16, graph I/O still fp32
    assert {i.name: i.data_type for i in half.graph.initializer}["w1__fp16"] == TensorProto.FLOAT16
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in list(half.graph.input) + list(half.graph.output))
    opcheck.check_trt85(half)


def test_fp16_graph_runs_in_onnxruntime_close_to_fp32():
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(2)
    model = tiny_graph(rng)
    half = fp16.convert_to_fp16(model)
    s32 = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    s16 = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.normal(0, 2, (3, 97, 8)).astype(np.float32)
    mask = np.ones((3, 97), np.float32)
    mask[1, 40:] = 0
    logits32, probs32 = s32.run(None, {"x": x, "mask": mask})
    logits16, probs16 = s16.run(None, {"x": x, "mask": mask})
    assert probs16.dtype == np.float32
    error = np.abs(probs16 - probs32)
    assert 0 < error.max() < 1e-2, (error.max(), error.mean())   # fp16 weights: not bit-identical
    np.testing.assert_allclose(probs16.sum(1), 1.0, atol=1e-5)


def test_fp16_pass_leaves_out_of_range_constants_in_fp32():
    rng = np.random.default_rng(3)
    big = numpy_helper.from_array(np.full((6,), 1e6, np.float32), "big")
    model = tiny_graph(rng, extra_nodes=[helper.make_node("Add", ["logits", "big"], ["shifted"])])
    model.graph.initializer.append(big)
    model.graph.output.append(helper.make_tensor_value_info("shifted", TensorProto.FLOAT, ["B", 6]))
    half = fp16.convert_to_fp16(model)
    assert not any(i.name == "big__fp16" for i in half.graph.initializer)


def test_opcheck_rejects_what_tensorrt_8_5_cannot_parse():
    rng = np.random.default_rng(4)
    with pytest.raises(opcheck.OpsetError, match="opset 18"):
        opcheck.check_trt85(tiny_graph(rng, opset=18))
    layer_norm = helper.make_node("LayerNormalization", ["logits", "b2", "b2"], ["ln"], axis=-1)
    with pytest.raises(opcheck.OpsetError, match="LayerNormalization: added .* 8.6"):
        opcheck.check_trt85(tiny_graph(rng, extra_nodes=[layer_norm]))
    stft_like = helper.make_node("Einsum", ["logits", "logits"], ["e"], equation="bi,bi->b")
    with pytest.raises(opcheck.OpsetError, match="Einsum: not in the TensorRT 8.5 allow-list"):
        opcheck.check_trt85(tiny_graph(rng, extra_nodes=[stft_like]))
    histogram = opcheck.check_trt85(tiny_graph(rng))
    assert histogram["ReduceSum"] == 2 and histogram["Softmax"] == 1


def test_batchnorm_folding_of_a_real_ladder_net_is_exact_and_removes_bn(tmp_path):
    torch = pytest.importorskip("torch")
    from edge_ladder.export import flops, prune
    from edge_ladder.model import build_model, model_config
    torch.manual_seed(0)
    net = build_model(model_config("tiny"))
    with torch.no_grad():  # non-trivial gamma/beta and running statistics
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        net.train()
        for _ in range(2):
            b = 6
            net.training_losses(torch.randn(b, 41, 80) * 3 - 4, torch.ones(b, 41), torch.randn(b, 5, 1, 48, 48),
                                torch.ones(b, 5), torch.ones(b, 2), torch.randint(0, 6, (b,)))
    net.eval()
    module = prune.prune(net)
    folded, what = prune.fold_batchnorm(module)
    assert any("joint.bn -> joint.linear" in w for w in what) and any("gamma" in w for w in what)
    # the top (classifier) ladder layer folds into one Gemm too: BN, + beta, * gamma
    assert {"classifier.bn -> classifier.linear", "+ classifier.beta -> classifier.linear",
            "* classifier.gamma -> classifier.linear"} <= set(what)
    graph_text = str(folded.graph)
    assert "batch_norm" not in graph_text and "gamma" not in graph_text
    inputs = flops.reference_inputs(batch=3, audio_frames=97, video_frames=9, seed=7)
    inputs["audio_mask"][1, 60:] = 0
    inputs["presence"][2, 1] = 0
    tensors = {k: torch.as_tensor(v) for k, v in inputs.items()}
    with torch.no_grad():
        reference, result = module(**tensors), folded(**tensors)
    assert reference.abs().max() > 1e-3
    assert (reference - result).abs().max() <= 1e-5
    assert flops.count_params(folded) < flops.count_params(module) < flops.count_params(net)


def test_shapes_parse_derive_and_reject():
    assert shapes.parse_shapes("audio:1x300x80,face:1x30x1x48x48") == {"audio": (1, 300, 80), "face": (1, 30, 1, 48, 48)}
    profile = shapes.resolve_profile("audio:1x11x80", None, "audio:4x997x80,face_mask:4x97", shapes.DEFAULT_PROFILE)
    assert profile["min"]["audio_mask"] == (1, 11) and profile["max"]["face"] == (4, 97, 1, 48, 48)
    assert profile["max"]["presence"] == (4, 2)
    assert shapes.parse_shapes(shapes.format_shapes(profile["opt"])) == profile["opt"]
    for bad, message in (("audio=1x3x80", "expected NAME:DxDxD"), ("mel:1x3x80", "unknown input 'mel'"),
                         ("audio:1xAx80", "integers"), ("audio:1x0x80", "positive")):
        with pytest.raises(shapes.ShapeError, match=message):
            shapes.parse_shapes(bad, "--min-shapes")
    with pytest.raises(shapes.ShapeError, match="audio_frames is 300 from audio but 200 from audio_mask"):
        shapes.resolve_profile("audio:1x300x80,audio_mask:1x200", None, None)
    with pytest.raises(shapes.ShapeError, match="must be 80"):
        shapes.resolve_profile(None, "audio:1x300x64", None)
    with pytest.raises(shapes.ShapeError, match="min <= opt <= max"):
        shapes.resolve_profile("audio:1x500x80", None, None)


@pytest.mark.parametrize("version, fp16_flag, strongly, graph_fp16, ask_fp16, expected", [
    ("8.5.2", True, False, False, True, ("fp16", False, True, True)),     # JetPack 5.1: builder flag
    ("8.5.2", True, False, True, True, ("fp16", False, True, True)),      # fp16 graph, weakly typed + flag
    ("10.3.0", True, True, True, True, ("fp16", True, False, False)),     # JetPack 6: strongly typed
    ("10.3.0", True, True, False, True, ("fp16", False, True, False)),    # fp32 graph + flag still works
    ("11.4.0", False, True, True, True, ("fp16", True, False, False)),    # JetPack 7.2: only strong typing
    ("11.4.0", False, True, False, False, ("fp32", True, False, False)),
    ("8.6.2", True, False, False, False, ("fp32", False, False, True)),
])
def test_build_plan_per_tensorrt_version(version, fp16_flag, strongly, graph_fp16, ask_fp16, expected):
    plan = engine.plan_build(version, fp16_flag, strongly, graph_fp16, ask_fp16)
    assert (plan.precision, plan.strongly_typed, plan.fp16_flag, plan.explicit_batch) == expected
    # FP32 pins exactly where the FP16 graph is built weakly typed (its Casts are only hints there)
    assert plan.constrain_fp32 == (graph_fp16 and not plan.strongly_typed)


def test_build_plan_refuses_impossible_or_contradictory_requests():
    with pytest.raises(engine.EngineBuildError, match="no BuilderFlag.FP16.*model.fp16.onnx"):
        engine.plan_build("11.4.0", False, True, graph_is_fp16=False, fp16=True, onnx_path="out/model.onnx")
    with pytest.raises(engine.EngineBuildError, match="FP16 graph .* --fp16 was not given"):
        engine.plan_build("10.13.3", True, True, graph_is_fp16=True, fp16=False)


def layer(layer_type, inputs, outputs, parameter_type=None, tactic=None, name=None):
    """One entry of the engine inspector's "Layers" list (LayerInformationFormat.JSON, DETAILED)."""
    entry = {"Name": name or f"{layer_type}_{len(inputs)}_{len(outputs)}", "LayerType": layer_type,
             "Inputs": [{"Name": f"in{i}", "Location": "Device", "Dimensions": [1, 97, 64], "Format/Datatype": f}
                        for i, f in enumerate(inputs)],
             "Outputs": [{"Name": f"out{i}", "Location": "Device", "Dimensions": [1, 97, 64], "Format/Datatype": f}
                         for i, f in enumerate(outputs)]}
    if parameter_type:
        entry["ParameterType"] = parameter_type
    if tactic:
        entry["TacticName"] = tactic
    return entry


F32, F16 = "Row major linear FP32", "Row major linear FP16 format"
NHWC8_F16 = "Channel major FP16 format where channel % 8 == 0"


def inspector_json(*layers):
    return json.dumps({"Layers": list(layers)})


def test_precision_check_refuses_fp16_casts_around_fp32_convolutions_and_gemms():
    """model.fp16.onnx always has FP16 Casts: an engine whose Conv/Gemm fell back to FP32 is refused."""
    silent = engine.layer_precisions(inspector_json(
        layer("Cast", [F32], [F16], name="/audio/Cast_to_fp16"),
        layer("Reformat", [F16], [F32]),
        layer("CaskConvolution", [F32], [F32], parameter_type="Convolution"),
        layer("CaskGemmConvolution", [F32], [F32], parameter_type="FullyConnected"),
        layer("Reduce", [F32], [F32], parameter_type="Reduce")))
    assert silent == {"fp16": 1, "fp32": 4, "compute_fp16": 0, "compute_fp32": 2, "myelin": 0, "layers": 5}
    with pytest.raises(engine.EngineBuildError, match="FP16 was asked but every compute layer runs in FP32"):
        engine.verify_precision(silent, "fp16")


def test_precision_check_accepts_fp16_compute_with_fp32_softmax_and_reductions():
    counts = engine.layer_precisions(inspector_json(
        layer("Reformat", [F32], [NHWC8_F16]),
        layer("CaskConvolution", [NHWC8_F16], [NHWC8_F16], parameter_type="Convolution"),
        layer("Reformat", [NHWC8_F16], [F32]),
        layer("Reduce", [F32], [F32]),
        layer("SoftMax", [F32], [F32], parameter_type="SoftMax")))
    assert counts == {"fp16": 2, "fp32": 3, "compute_fp16": 1, "compute_fp32": 0, "myelin": 0, "layers": 5}
    engine.verify_precision(counts, "fp16")
    with pytest.raises(engine.EngineBuildError, match="FP32 was asked but 2 layers run in FP16"):
        engine.verify_precision(counts, "fp32")
    # TensorRT 10 shows Myelin's inner kernels: gemm reading "Half" is FP16 compute, kgen is not compute
    inner = engine.layer_precisions(inspector_json(
        layer("kgen", ["Float"], ["Half"], tactic="__myl_CastMul_0x1"),
        layer("gemm", ["Half", "Half"], ["Float"], tactic="sm87_xmma_gemm_f16f16_f16f32_f32_tn_n"),
        layer("kgen", ["Float"], ["Float"], tactic="__myl_ReduSumDiv_0x2")))
    assert (inner["compute_fp16"], inner["compute_fp32"]) == (1, 0)
    engine.verify_precision(inner, "fp16")


def test_precision_check_of_opaque_myelin_regions_uses_their_boundary_formats_and_tactic():
    """TensorRT 8.x reports a Myelin region as one layer: FP16 only when its own formats or tactic
    show FP16; an FP32-bounded region with no FP16 hint is refused (documented assumption)."""
    opaque = layer("Myelin", [F32, F32], [F32], name="{ForeignNode[/audio/MatMul.../head/Softmax]}")
    cast = layer("Cast", [F32], [F16])
    fp32_only = engine.layer_precisions(inspector_json(cast, opaque))
    assert (fp32_only["compute_fp16"], fp32_only["compute_fp32"], fp32_only["myelin"]) == (0, 1, 1)
    with pytest.raises(engine.EngineBuildError, match="1 of them are fused Myelin regions"):
        engine.verify_precision(fp32_only, "fp16")
    for fp16_region in (layer("Myelin", [F16, F32], [F32]), layer("Myelin", ["Float"], ["Half"]),
                        layer("Myelin", [F32], [F32], tactic="sm87_xmma_gemm_f16f16_f16f32_f32_nn_n")):
        counts = engine.layer_precisions(inspector_json(cast, fp16_region))
        assert (counts["compute_fp16"], counts["myelin"]) == (1, 1), fp16_region
        engine.verify_precision(counts, "fp16")
    bf16 = engine.layer_precisions(inspector_json(layer("Myelin", [F32], [F32], tactic="sm90_gemm_bf16bf16_bf16f32")))
    with pytest.raises(engine.EngineBuildError, match="every compute layer runs in FP32"):
        engine.verify_precision(bf16, "fp16")


def test_precision_check_refuses_engines_it_cannot_read():
    no_compute = engine.layer_precisions(inspector_json(layer("Cast", [F32], [F16]), layer("SoftMax", [F32], [F32])))
    with pytest.raises(engine.EngineBuildError, match="no convolution, matrix-multiply or Myelin layer"):
        engine.verify_precision(no_compute, "fp16")
    with pytest.raises(engine.EngineBuildError, match="DETAILED"):
        engine.verify_precision(engine.layer_precisions({"Layers": ["a", "b"]}), "fp16")


@pytest.mark.parametrize("layer_type, outputs, inputs, pinned", [
    ("SOFTMAX", ["float32"], ["float32"], True),
    ("REDUCE", ["float32"], ["float32"], True),
    ("ELEMENTWISE", ["float32"], ["float32", "float32"], True),      # the masked-mean Div
    ("ELEMENTWISE", ["float32"], ["float16", "float16"], True),      # sensitive kind producing float32
    ("UNARY", ["float32"], ["float32"], True),
    ("NORMALIZATION", ["float32"], ["float32", "float32", "float32"], True),
    ("SHUFFLE", ["float32"], ["float32", "int32"], True),            # in the graph's FP32 region
    ("POOLING", ["float32"], ["float32"], True),
    ("MATRIX_MULTIPLY", ["float32"], ["float32", "float32"], True),  # the FP16 pass left it in FP32
    ("CONVOLUTION", ["float16"], ["float16"], False),                # the FP16 region stays free
    ("MATRIX_MULTIPLY", ["float16"], ["float16", "float16"], False),
    ("ACTIVATION", ["float16"], ["float16"], False),
    ("ELEMENTWISE", ["float16"], ["float16", "float16"], False),
    ("ELEMENTWISE", ["bool"], ["float32", "float32"], False),        # comparison: no float output
    ("REDUCE", ["int32"], ["int32"], False),                         # shape arithmetic
    ("IDENTITY", ["float32"], ["float16"], False),                   # an ONNX Cast on TensorRT 8.5
    ("CAST", ["float32"], ["float16"], False),
    ("SHAPE", ["int64"], ["float32"], False),
    ("CONSTANT", ["float32"], [], False),
    ("FILL", ["float32"], [None], False),                            # no float input to judge by
])
def test_fp32_pins_select_the_graphs_fp32_layers_only(layer_type, outputs, inputs, pinned):
    assert engine.pins_to_fp32(layer_type, outputs, inputs) is pinned


# --- Stand-ins for the FP32-pin selection and flag logic (NOT TensorRT: TensorRT cannot be installed
# here). They expose only what constrain_fp32_layers / apply_precision read; the real bindings'
# names are checked by /work/shared/tools/trt_api_check.py.
class StandInDataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    BOOL = 2
    INT32 = 3


class StandInLayerType(enum.Enum):
    SOFTMAX = 0
    REDUCE = 1
    ELEMENTWISE = 2
    MATRIX_MULTIPLY = 3
    IDENTITY = 4
    CAST = 5
    CONVOLUTION = 6


def StandInLayer(layer_type, inputs, outputs, name):
    from _trt_standin import NetworkLayer, NetworkTensor
    return NetworkLayer(layer_type, name, [NetworkTensor(None, d) for d in inputs],
                        [NetworkTensor(None, d) for d in outputs])


class StandInNetwork:
    def __init__(self, layers):
        self.layers = layers

    num_layers = property(lambda self: len(self.layers))

    def get_layer(self, index):
        return self.layers[index]


class StandInConfig:
    def __init__(self):
        self.flags = []

    def set_flag(self, flag):
        self.flags.append(flag)


def stand_in_trt(obey_flag=True):
    flags = {"FP16": "FP16", **({"OBEY_PRECISION_CONSTRAINTS": "OBEY_PRECISION_CONSTRAINTS"} if obey_flag else {})}
    return types.SimpleNamespace(__version__="8.5.2-standin", float32=StandInDataType.FLOAT,
                                 float16=StandInDataType.HALF, BuilderFlag=types.SimpleNamespace(**flags))


def stand_in_network():
    F, H, B = StandInDataType.FLOAT, StandInDataType.HALF, StandInDataType.BOOL
    L = StandInLayerType
    return StandInNetwork([
        StandInLayer(L.CAST, [F], [H], "cast_in"),
        StandInLayer(L.CONVOLUTION, [H], [H], "conv_fp16"),
        StandInLayer(L.IDENTITY, [H], [F], "cast_out"),
        StandInLayer(L.ELEMENTWISE, [F, F], [B], "mask_compare"),
        StandInLayer(L.REDUCE, [F], [F], "masked_sum"),
        StandInLayer(L.ELEMENTWISE, [F, F], [F], "masked_mean_div"),
        StandInLayer(L.MATRIX_MULTIPLY, [F, F], [F], "head_matmul_fp32"),
        StandInLayer(L.SOFTMAX, [F], [F], "softmax"),
    ])


def test_fp32_pins_on_a_stand_in_network_pin_only_the_fp32_region():
    trt, network = stand_in_trt(), stand_in_network()
    assert engine.constrain_fp32_layers(trt, network) == 4
    pinned = {layer.name for layer in network.layers if layer.precision is not None}
    assert pinned == {"masked_sum", "masked_mean_div", "head_matmul_fp32", "softmax"}
    for layer in network.layers:
        expected = {0: StandInDataType.FLOAT} if layer.name in pinned else {}
        assert layer.output_types == expected, layer.name
        assert layer.precision in (None, StandInDataType.FLOAT)


@pytest.mark.parametrize("constrain", [True, False])
def test_apply_precision_sets_obey_constraints_exactly_for_weakly_typed_fp16_graphs(constrain):
    trt, network, config = stand_in_trt(), stand_in_network(), StandInConfig()
    plan = engine.BuildPlan("fp16", strongly_typed=False, fp16_flag=True, explicit_batch=True,
                            constrain_fp32=constrain)
    pinned = engine.apply_precision(trt, config, network, plan, log=lambda *_: None)
    if constrain:
        assert config.flags == ["FP16", "OBEY_PRECISION_CONSTRAINTS"] and pinned == 4
    else:
        assert config.flags == ["FP16"] and pinned == 0
        assert all(layer.precision is None for layer in network.layers)
    strong = engine.BuildPlan("fp16", strongly_typed=True, fp16_flag=False, explicit_batch=False)
    config = StandInConfig()
    assert engine.apply_precision(trt, config, network, strong, log=lambda *_: None) == 0 and config.flags == []


def test_apply_precision_refuses_pins_without_the_obey_flag():
    plan = engine.BuildPlan("fp16", strongly_typed=False, fp16_flag=True, explicit_batch=True, constrain_fp32=True)
    with pytest.raises(engine.EngineBuildError, match="no BuilderFlag.OBEY_PRECISION_CONSTRAINTS"):
        engine.apply_precision(stand_in_trt(obey_flag=False), StandInConfig(), stand_in_network(), plan)


def test_network_layer_dtypes_reads_a_stand_in_network():
    layers = engine.network_layer_dtypes(stand_in_trt(), stand_in_network())
    assert layers[1] == ("CONVOLUTION", ["float16"]) and layers[3] == ("ELEMENTWISE", ["bool"])
    assert engine.verify_network_precision(layers, "fp16")["compute_fp16"] == 1


def test_strongly_typed_precision_check_reads_the_network_definition():
    fp16_graph = [("CAST", ["float16"]), ("CONVOLUTION", ["float16"]), ("MATRIX_MULTIPLY", ["float32"]),
                  ("REDUCE", ["float32"]), ("SOFTMAX", ["float32"])]
    summary = engine.verify_network_precision(fp16_graph, "fp16")
    assert summary == {"compute_fp16": 1, "compute_fp32": 1, "fp16_outputs": 2, "layers": 5}
    # FP16 Casts alone are not an FP16 graph
    with pytest.raises(engine.EngineBuildError, match="no convolution, matrix-multiply or fully-connected"):
        engine.verify_network_precision([("CAST", ["float16"]), ("MATRIX_MULTIPLY", ["float32"])], "fp16", "m.onnx")
    with pytest.raises(engine.EngineBuildError, match="FP32 was asked but 2 layers"):
        engine.verify_network_precision(fp16_graph, "fp32")
    assert engine.verify_network_precision([("FULLY_CONNECTED", ["float32"])], "fp32")["compute_fp32"] == 1
    # a Myelin-only inspector result with FP32 boundaries: refused weakly typed, irrelevant strongly typed
    myelin_only = engine.layer_precisions(inspector_json(layer("Myelin", [F32, F32], [F32])))
    with pytest.raises(engine.EngineBuildError, match="fused Myelin regions"):
        engine.verify_precision(myelin_only, "fp16")
    engine.verify_network_precision(fp16_graph, "fp16")


def test_check_sidecar_refuses_changed_file_other_tensorrt_and_other_gpu(tmp_path):
    from edge_ladder.runtime.sidecar import EngineMismatchError, sha256_file
    engine_path = tmp_path / "model.engine"
    engine_path.write_bytes(np.random.default_rng(5).bytes(333))
    onnx_path = tmp_path / "model.fp16.onnx"
    onnx_path.write_bytes(b"onnx bytes")
    profile = shapes.resolve_profile(None, None, None)
    sidecar = {"format": engine.SIDECAR_FORMAT, "version": engine.SIDECAR_VERSION, "tensorrt_version": "10.3.0.30",
               "cuda_version": "12.6", "gpu_name": "Orin", "compute_capability": "8.7", "gpu_sm_count": 16,
               "gpu_memory_mib": 62841, "precision": "fp16",
               "profiles": engine.profile_for_sidecar(profile), "onnx": onnx_path.name,
               "onnx_sha256": sha256_file(onnx_path), "engine_sha256": sha256_file(engine_path)}
    (tmp_path / "model.engine.json").write_text(json.dumps(sidecar))
    orin = {"gpu_name": "Orin", "compute_capability": "8.7", "sm_count": 16, "memory_mib": 62841}
    thor = {"gpu_name": "Thor", "compute_capability": "11.0", "sm_count": 20, "memory_mib": 125772}
    ok = engine.check_sidecar(engine_path, tensorrt_version="10.3.0.30", device=orin)
    assert ok["profiles"][0]["audio"]["opt"] == [1, 198, 80]
    with pytest.raises(EngineMismatchError, match="TensorRT 10.3.0.30 but this is TensorRT 11.4.0.106.*build-engine"):
        engine.check_sidecar(engine_path, tensorrt_version="11.4.0.106", device=orin)
    with pytest.raises(EngineMismatchError, match="compute capability 8.7 but this GPU is 11.0"):
        engine.check_sidecar(engine_path, tensorrt_version="10.3.0.30", device=thor)
    engine_path.write_bytes(b"tampered")
    with pytest.raises(EngineMismatchError, match="changed since it was built"):
        engine.check_sidecar(engine_path, tensorrt_version="10.3.0.30", device=orin)


def test_export_modules_import_without_torch_or_tensorrt():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['tensorrt'] = None\n"
            "import edge_ladder.export, edge_ladder.export.engine, edge_ladder.export.cli_engine, "
            "edge_ladder.export.cli, edge_ladder.export.shapes, edge_ladder.export.opcheck, edge_ladder.export.fp16\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_build_engine_cli_errors_are_clear(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "edge_ladder", "build-engine", str(tmp_path / "none.onnx"),
                              "--out", str(tmp_path / "x.engine"), "--min-shapes", "audio:1x9"],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "does not exist" in missing.stderr or "audio has 3 dimensions" in missing.stderr


def test_int8_plan_keeps_short_reductions_in_fp32():
    from edge_ladder.export import int8
    inits = [numpy_helper.from_array(np.zeros(shape, np.float32), name) for name, shape in
             (("w_gray", (8, 1, 3, 3)), ("w_deep", (8, 4, 3, 3)), ("w_depthwise", (8, 1, 5, 5)), ("w_k1", (8, 12, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w_gray"], ["a"], name="gray"),
             helper.make_node("Conv", ["a", "w_deep"], ["b"], name="deep"),
             helper.make_node("Conv", ["b", "w_depthwise"], ["c"], name="depthwise", group=8),
             helper.make_node("Conv", ["c1", "w_k1"], ["d"], name="pointwise"),
             helper.make_node("Conv", ["d", "runtime_weight"], ["e"], name="dynamic")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)], inits)
    quantize, keep = int8.conv_plan(helper.make_model(graph))
    assert quantize == ["deep", "depthwise"] and keep == {"gray": 9, "pointwise": 12}
    graph.node[1].name = "gray"                         # the quantizer selects by name: refused
    with pytest.raises(EdgeLadderError, match="empty or repeated"):
        int8.conv_plan(helper.make_model(graph))


def test_int8_calibration_takes_single_train_clips(tiny_features):
    from edge_ladder.export import int8
    from edge_ladder.features import INPUT_NAMES, load_split
    batches = int8.calibration_batches(tiny_features, limit=5)
    train_clips = load_split(tiny_features, "train")
    assert len(batches) == 5 < len(train_clips)
    lengths = {clip.audio.shape[0] for clip in train_clips}
    for batch in batches:
        assert list(batch) == list(INPUT_NAMES) and all(a.dtype == np.float32 for a in batch.values())
        assert batch["audio"].shape[0] == 1 and batch["audio"].shape[1] in lengths
