"""Export: checkpoint -> pruned module -> ONNX fp32/fp16 -> TensorRT engine (installed as edge_ladder.export)."""
