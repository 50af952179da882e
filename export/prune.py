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
    from ..errors import EdgeLadderError
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise EdgeLadderError(f"checkpoint {checkpoint} does not exist. Train one with "
                              f"`edge-ladder train FEATURES_DIR --out RUN_DIR` (writes RUN_DIR/checkpoint.pt).")
    from ..model import load_checkpoint
    model, ckpt = load_checkpoint(checkpoint)
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


def fold_batchnorm(module):
    """Return (folded module, list of folded patterns as strings). The input is not modified."""
    torch = require("torch")
    fx = torch.fx
    nn = torch.nn
    try:
        traced = fx.symbolic_trace(copy.deepcopy(module))
    except Exception as error:  # data-dependent control flow: leave the module unfolded
        return module, [f"not folded: torch.fx could not trace the module ({type(error).__name__}: {error})"]
    modules = dict(traced.named_modules())
    folded = []
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    conv_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

    def single_user(node):
        return len(node.users) == 1

    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), bn_types):
            continue
        bn = modules[node.target]
        producer = node.args[0]
        if not (isinstance(producer, fx.Node) and producer.op == "call_module"
                and isinstance(modules.get(producer.target), conv_types) and single_user(producer)):
            continue
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        layer = modules[producer.target]
        scale, shift = _bn_scale_shift(bn)
        _scale_output(layer, scale, shift)
        node.replace_all_uses_with(producer)
        traced.graph.erase_node(node)
        folded.append(f"{producer.target} <- {node.target}")

    # Linear followed by per-feature + beta / * gamma (get_attr vectors of size out_features)
    params = dict(traced.named_parameters())
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Linear):
            continue
        layer = modules[node.target]
        current = node
        while single_user(current):
            user = next(iter(current.users))
            if user.op != "call_function" or user.target not in (operator.add, operator.mul, torch.add, torch.mul) \
                    or len(user.args) != 2 or user.kwargs:
                break
            other = user.args[1] if user.args[0] is current else user.args[0]
            if not (isinstance(other, fx.Node) and other.op == "get_attr" and other.target in params):
                break
            vector = params[other.target].detach()
            if vector.shape != (layer.out_features,):
                break
            if user.target in (operator.add, torch.add):
                _scale_output(layer, torch.ones_like(vector), vector)
            else:
                _scale_output(layer, vector, torch.zeros_like(vector))
            user.replace_all_uses_with(current)
            traced.graph.erase_node(user)
            folded.append(f"{node.target} <- {'+' if user.target in (operator.add, torch.add) else '*'} {other.target}")
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
