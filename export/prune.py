"""Stages: checkpoint -> pruned inference module -> batch-norm folded module.

Pruning keeps only what inference runs: the clean backbones, the ladder encoders, the joint layer
and the classifier (`model.inference_module()`); decoders, combinators, noise and the corrupted
path exist only for training and are dropped.

Folding rewrites, on a torch.fx trace of the inference module,
    Linear/Conv -> BatchNorm (eval, running statistics)          into one Linear/Conv, and
    Linear -> (+ beta) -> (* gamma)   (per-feature vectors)      into that Linear,
which is the ladder encoder's  gamma * (BN_noaffine(W h) + beta)  -> one matrix product.
Anything that does not match stays as it is (correct, just not folded); `fold_batchnorm` returns
what it folded so the export report can say so.
"""
from __future__ import annotations

import copy
import operator
from pathlib import Path

from .._deps import require


def load_inference(checkpoint: Path):
    """(training model, pruned inference module, checkpoint dict) from a checkpoint file."""
    from ..model import load_checkpoint
    model, ckpt = load_checkpoint(checkpoint, command="export")
    model.eval()
    return model, prune(model), ckpt


def prune(model):
    """The inference-only module (shares no state that training could change: a deep copy)."""
    module = copy.deepcopy(model.inference_module())
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _bn_scale_shift(bn):
    """Per-channel (scale, shift) of an eval-mode BatchNorm: y = x * scale + shift."""
    torch = require("torch")
    inv_std = torch.rsqrt(bn.running_var + bn.eps)
    weight = bn.weight if bn.weight is not None else torch.ones_like(inv_std)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(inv_std)
    scale = weight * inv_std
    return scale, bias - bn.running_mean * scale


def _scale_output(layer, scale, shift):
    """Fold y -> y * scale + shift (per output channel) into a Linear/Conv in place."""
    torch = require("torch")
    with torch.no_grad():
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.mul_(scale.reshape(shape))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
        new_bias = bias * scale + shift
        layer.bias = torch.nn.Parameter(new_bias, requires_grad=False)


def _batchnorm_scale_shift(node, modules, attrs):
    """(scale, shift, description) when `node` is an eval-mode batch norm with known statistics
    (an nn.BatchNorm module or F.batch_norm on get_attr buffers), else None."""
    torch = require("torch")
    nn = torch.nn
    if node.op == "call_module" and isinstance(modules.get(node.target), (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        bn = modules[node.target]
        if bn.running_mean is None:
            return None
        scale, shift = _bn_scale_shift(bn)
        return scale, shift, node.target
    if node.op == "call_function" and node.target is torch.nn.functional.batch_norm:
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        args = dict(zip(names, node.args))
        args.update(node.kwargs)
        if args.get("training", False):
            return None
        tensors = []
        for key in ("running_mean", "running_var", "weight", "bias"):
            value = args.get(key)
            if value is None:
                tensors.append(None)
            elif getattr(value, "op", None) == "get_attr" and value.target in attrs:
                tensors.append(attrs[value.target].detach())
            else:
                return None
        mean, var, weight, bias = tensors
        if mean is None or var is None:
            return None
        inv_std = torch.rsqrt(var + args.get("eps", 1e-5))
        scale = inv_std * (weight if weight is not None else 1.0)
        shift = (bias if bias is not None else 0.0) - mean * scale
        return scale, shift, node.args[1].target.rsplit(".", 1)[0]
    return None


def fold_batchnorm(module):
    """Return (folded torch.fx.GraphModule, list of what was folded). The input is not modified.

    Patterns (all exact algebra on eval-mode statistics):
      Linear/Conv -> BN                    BN into the producer's weight and bias
      Linear -> (+ vector) / (* vector)    per-output-feature affine into the Linear
      BN -> Linear  (BN with no producer)  BN into the consumer: W' = W diag(s), b' = b + W t
    """
    torch = require("torch")
    fx = torch.fx
    nn = torch.nn
    try:
        traced = fx.symbolic_trace(copy.deepcopy(module))
    except Exception as error:  # data-dependent control flow: leave the module unfolded
        return module, [f"not folded: torch.fx could not trace the module ({type(error).__name__}: {error})"]
    modules = dict(traced.named_modules())
    attrs = {**dict(traced.named_parameters()), **dict(traced.named_buffers())}
    producers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    folded = []

    def only_user(node):
        return next(iter(node.users)) if len(node.users) == 1 else None

    # 1. Linear/Conv -> BN, and BN -> Linear
    for node in list(traced.graph.nodes):
        found = _batchnorm_scale_shift(node, modules, attrs)
        if found is None:
            continue
        scale, shift, name = found
        producer = node.args[0]
        consumer = only_user(node)
        if (isinstance(producer, fx.Node) and producer.op == "call_module"
                and isinstance(modules.get(producer.target), producers) and only_user(producer) is node):
            _scale_output(modules[producer.target], scale, shift)
            node.replace_all_uses_with(producer)
            folded.append(f"{name} -> {producer.target}")
        elif (consumer is not None and consumer.op == "call_module" and isinstance(modules.get(consumer.target), nn.Linear)
              and consumer.args[0] is node and modules[consumer.target].in_features == scale.numel()):
            layer = modules[consumer.target]
            with torch.no_grad():
                bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
                new_bias = bias + layer.weight @ shift
                layer.weight.mul_(scale[None, :])
                layer.bias = nn.Parameter(new_bias, requires_grad=False)
            consumer.replace_input_with(node, producer)
            folded.append(f"{name} -> {consumer.target} (forward)")
        else:
            continue
        traced.graph.erase_node(node)

    # 2. Linear -> (+ beta) -> (* gamma): per-feature vectors fold into the Linear
    adds = (operator.add, torch.add)
    muls = (operator.mul, torch.mul)
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Linear):
            continue
        layer = modules[node.target]
        while (user := only_user(node)) is not None:
            if user.op != "call_function" or user.target not in adds + muls or len(user.args) != 2 or user.kwargs:
                break
            other = user.args[1] if user.args[0] is node else user.args[0]
            if not (isinstance(other, fx.Node) and other.op == "get_attr" and other.target in attrs):
                break
            vector = attrs[other.target].detach()
            if vector.shape != (layer.out_features,):
                break
            if user.target in adds:
                _scale_output(layer, torch.ones_like(vector), vector)
            else:
                _scale_output(layer, vector, torch.zeros_like(vector))
            user.replace_all_uses_with(node)
            traced.graph.erase_node(user)
            folded.append(f"{'+' if user.target in adds else '*'} {other.target} -> {node.target}")
    traced.graph.eliminate_dead_code()
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    _delete_unused_parameters(traced)
    traced.eval()
    return traced, folded


def _delete_unused_parameters(traced) -> None:
    """Drop parameters the folded graph no longer reads (gamma/beta now inside a Linear), so the
    parameter count of the inference module is the count of numbers it uses."""
    used_attrs = {n.target for n in traced.graph.nodes if n.op == "get_attr"}
    called = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    for name, _ in list(traced.named_parameters()):
        owner, _, leaf = name.rpartition(".")
        if name in used_attrs or owner in called:
            continue
        delattr(traced.get_submodule(owner) if owner else traced, leaf)
