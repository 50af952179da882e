"""The export chain as one call: checkpoint -> prune -> fold BN -> model.onnx -> model.fp16.onnx
(-> model.int8.onnx), each stage checked, everything recorded in export.json.

    EXPORT_DIR/model.onnx        fp32, opset 17, named I/O, dynamic B/T_a/T_v
    EXPORT_DIR/model.fp16.onnx   strongly-typed FP16 (fp32 I/O), for TensorRT 10.12+/11
    EXPORT_DIR/model.int8.onnx   INT8 convolutions (QDQ, fp32 I/O) for the CPU runtime; written
                                 when features_dir gives the train split to calibrate on
    EXPORT_DIR/export.json       params, MACs, opset, I/O signature, parity, profile, sha256s
"""
from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

from .._deps import require
from ..errors import EdgeLadderError
from ..features import atomic_write_json
from ..metrics import chance_level, chance_warning
from ..paths import checkpoint_file
from ..runtime.sidecar import sha256_file
from . import flops, fp16, onnx_export, opcheck, parity, prune
from . import int8 as int8_module
from .shapes import DEFAULT_PROFILE

FORMAT = "edge-ladder-export"


def training_macs(model, inputs: dict) -> int:
    """MACs of one training forward (clean + corrupted passes + decoders, `training_losses` with
    ladder='cross'), backward not counted; on a copy so running statistics stay untouched."""
    torch = require("torch")
    from torch.utils.flop_counter import FlopCounterMode
    train_model = copy.deepcopy(model).train()
    tensors = {n: torch.as_tensor(v) for n, v in inputs.items()}
    labels = torch.zeros(tensors["audio"].shape[0], dtype=torch.long)
    batch = tensors["audio"].shape[0]
    if batch < 2:  # batch statistics need two samples: count per sample on a pair
        tensors = {n: torch.cat([t, t]) for n, t in tensors.items()}
        labels = torch.cat([labels, labels])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        train_model.training_losses(**tensors, labels=labels, ladder="cross")
    return int(counter.get_total_flops()) // 2 // (2 if batch < 2 else 1)


def chance_checks(checkpoint: Path, ckpt: dict, evaluation) -> dict:
    """metrics.chance_level of the model on the dev split (RUN_DIR/metrics.json of the same best
    epoch, where train left it) and on the split the export evaluated on -> {what: result}."""
    checks = {}
    metrics_path = checkpoint.parent / "metrics.json"
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text())
        except ValueError:
            metrics = {}
        if "dev" in metrics and metrics.get("best_epoch") == ckpt.get("epoch"):
            checks["dev split"] = chance_level(metrics["dev"]["confusion"])
    if evaluation is not None:
        checks[f"{evaluation['split']} split"] = chance_level(evaluation["torch"]["confusion"])
    return {what: check for what, check in checks.items() if check["clips"]}


def export_checkpoint(checkpoint, out_dir, features_dir=None, split: str = "test", opset: int = 17,
                      fold: bool = True, int8: bool = True, log=print) -> dict:
    """Run the whole export chain; returns the export.json dict (also written to out_dir).
    `features_dir`: held-out clips for the parity checks and the macro-F1 comparison (random
    inputs are always checked too), and the train split INT8 calibrates on. `int8`: write
    model.int8.onnx (needs features_dir). Raises ParityError/OpsetError when the fp32 or fp16 file is
    not right; an int8 file that fails its check is refused with a warning and not written."""
    checkpoint, out_dir = checkpoint_file(checkpoint, "export"), Path(out_dir)   # a RUN_DIR is fine
    if opset > opcheck.MAX_OPSET:
        raise EdgeLadderError(f"--opset {opset} is newer than TensorRT 8.5's parser reads (<= {opcheck.MAX_OPSET}); "
                              f"use --opset {opcheck.MAX_OPSET}")
    if opset < 13:
        raise EdgeLadderError(f"--opset {opset} is too old for this exporter (needs >= 13); use --opset 17")
    onnx = require("onnx")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    # 1. prune and fold
    model, inference, ckpt = prune.load_inference(checkpoint)
    reference = flops.reference_inputs()
    if fold:
        deployable, folded = prune.fold_batchnorm(inference)
    else:
        deployable, folded = inference, ["not folded (--no-fold)"]
    counts = {
        "params": {"training": flops.count_params(model), "inference": flops.count_params(deployable),
                   "inference_before_folding": flops.count_params(inference)},
        "flops": {"convention": "MACs of matrix products and convolutions (1 MAC = multiply + add; "
                                "FLOPs = 2 x MACs), element-wise ops not counted; training = one forward "
                                "of the clean + corrupted passes and decoders (no backward)",
                  "reference_input": {"batch": 1, "audio_frames": flops.REFERENCE_AUDIO_FRAMES,
                                      "video_frames": flops.REFERENCE_VIDEO_FRAMES},
                  "training_macs": training_macs(model, reference),
                  "inference_macs": flops.count_macs(deployable, reference)},
    }
    counts["flops"]["training"] = 2 * counts["flops"]["training_macs"]
    counts["flops"]["inference"] = 2 * counts["flops"]["inference_macs"]
    log(f"pruned: {counts['params']['training']:,} -> {counts['params']['inference']:,} parameters, "
        f"{counts['flops']['training_macs']:,} -> {counts['flops']['inference_macs']:,} MACs at a 2 s window "
        f"(T_a={flops.REFERENCE_AUDIO_FRAMES}, T_v={flops.REFERENCE_VIDEO_FRAMES}); folded {len(folded)} affine ops")

    # 2. fp32 ONNX
    if features_dir is not None:
        held_out, labels = parity.split_batches(features_dir, split)
    else:
        held_out = []
    # every model runs once on these; the checks and the metrics below share the runs
    runs = parity.Runs(inference, held_out + parity.random_batches(seed=int(time.time()) % 10_000))
    fp32_path, fp16_path = out_dir / "model.onnx", out_dir / "model.fp16.onnx"
    fp32_model = onnx_export.export_onnx(deployable, flops.reference_inputs(batch=2, audio_frames=97,
                                                                            video_frames=9), fp32_path, opset)
    ops_fp32 = opcheck.check_trt85(fp32_model, str(fp32_path))
    fp32_report = parity.fp32_parity(runs, fp32_path)
    parity.check_fp32(fp32_report, str(fp32_path))
    log(f"{fp32_path}: max |onnx - torch| = {fp32_report['max_abs_error']:.2e} "
        f"(mean {fp32_report['mean_abs_error']:.2e}) over {fp32_report['samples']} samples")

    # 3. fp16 ONNX
    precision = fp16.convert_file(fp32_path, fp16_path)
    fp16_model = onnx.load(str(fp16_path))
    ops_fp16 = opcheck.check_trt85(fp16_model, str(fp16_path))
    fp16_report = parity.fp16_parity(runs, fp32_path, fp16_path, held_out=len(held_out))
    parity.check_fp16(fp16_report, str(fp16_path))
    flips = fp16_report["flip_margins"]
    flipped = f" ({len(flips)} near-tie flips, fp32 margins <= {max(flips):.1e})" if flips else ""
    log(f"{fp16_path}: argmax agreement {fp16_report['argmax_agreement']:.4f}{flipped}, max |p16 - p32| = "
        f"{fp16_report['max_prob_error']:.2e} (mean {fp16_report['mean_prob_error']:.2e}); vs torch fp32 "
        f"{fp16_report['max_prob_error_vs_torch_fp32']:.2e}, {fp16_report['torch_half_reference']} "
        f"{fp16_report['torch_half_max_prob_error']:.2e}")

    # 4. int8 ONNX (CPU runtime), calibrated on the train split, checked on the held-out one;
    # optional: whatever goes wrong is recorded and printed, and fp32/fp16 stand
    int8_path, int8_report = out_dir / "model.int8.onnx", None
    candidate = int8_path.with_name(int8_path.name + ".candidate")
    if not int8:
        int8_file = {"skipped": "--no-int8"}
    elif features_dir is None:
        int8_file = {"skipped": "no features directory: INT8 calibrates on its train split (--features)"}
    elif split in ("train", "all"):
        int8_file = {"skipped": f"--split {split} holds the clips INT8 calibrates on; its check needs held-out "
                                f"ones (--split test or dev)"}
    else:
        try:
            quantized = int8_module.quantize_file(fp32_path, candidate, int8_module.calibration_batches(features_dir))
            int8_report = parity.int8_parity(runs, fp32_path, candidate, count=len(held_out))
            parity.check_int8(int8_report, str(int8_path))
        except int8_module.CalibrationError as error:
            int8_file = {"skipped": str(error)}
            log(f"{int8_path}: not written: {error}")
        except Exception as error:  # noqa: BLE001 - the quantizer's own errors too; reported, not hidden
            int8_file = {"rejected": f"{type(error).__name__}: {error}"}
            hint = "" if "--no-int8" in str(error) else " Export without it: --no-int8."
            log(f"WARNING: {int8_path} REJECTED and not written: {type(error).__name__}: {error}{hint}")
        else:
            os.replace(candidate, int8_path)
            int8_file = {"path": int8_path.name, "sha256": sha256_file(int8_path), **quantized}
            log(f"{int8_path}: {len(quantized['quantized_convs'])} convolutions int8, {len(quantized['fp32_convs'])} "
                f"kept fp32; vs fp32 on {split}: argmax agreement {int8_report['argmax_agreement']:.4f} "
                f"({parity.decisive_text(int8_report)}), max |p8 - p32| = {int8_report['max_prob_error']:.2e} "
                f"(mean {int8_report['mean_prob_error']:.2e})")
            if int8_report["decisive_agreement"] is None:
                log(f"WARNING: {int8_path}: its decisions were NOT checked: fp32 is decisive (top-1 >= "
                    f"{parity.INT8_DECISIVE_MARGIN:g} ahead) on none of the {int8_report['samples']} {split} clips, "
                    f"so only the probability error was. Check the model (see the chance-level test below) or "
                    f"export without it: --no-int8.")
        finally:
            if candidate.exists():
                candidate.unlink()
    if "path" not in int8_file and int8_path.exists():
        int8_path.unlink()                  # refused, skipped, or a stale file from an earlier export

    # 5. task metrics on the split
    evaluation = None
    if features_dir is not None:
        files = {"fp32": fp32_path, "fp16": fp16_path, **({"int8": int8_path} if "path" in int8_file else {})}
        count = len(held_out)
        evaluation = {"split": split, "torch": parity.evaluate_outputs(runs.torch(count), labels)}
        for name, path in files.items():     # int8: its candidate's runs (same bytes, renamed)
            evaluation[f"onnx_{name}"] = parity.evaluate_outputs(runs.onnx(name, path, count), labels)
        log(f"macro-F1 on {split}: torch {evaluation['torch']['macro_f1']:.4f}, " +
            ", ".join(f"{name} ONNX {evaluation[f'onnx_{name}']['macro_f1']:.4f}" for name in files))

    # 6. a model that has not learned (stuck on one class, dev accuracy at chance) exports, with a warning
    chance = chance_checks(checkpoint, ckpt, evaluation)
    for what, check in chance.items():
        warning = chance_warning(check, what)
        log(warning or f"chance-level test on the {what}: accuracy {check['accuracy']:.3f} against "
                       f"{check['chance_accuracy']:.3f} for a constant answer (binomial p = {check['p_value']:.2g})")

    signature = onnx_export.io_signature(fp32_model)
    report = {
        "format": FORMAT, "version": 1,
        "checkpoint": {"path": str(checkpoint.resolve()), "sha256": sha256_file(checkpoint)},
        **counts,
        "folded": folded,
        "opset": opset,
        "inputs": signature["inputs"], "outputs": signature["outputs"],
        "files": {"fp32": {"path": fp32_path.name, "sha256": sha256_file(fp32_path), "ops": ops_fp32},
                  "fp16": {"path": fp16_path.name, "sha256": sha256_file(fp16_path), "ops": ops_fp16,
                           "precision": precision},
                  "int8": int8_file},
        "parity": {"fp32": fp32_report, "fp16": fp16_report, "int8": int8_report},
        "evaluation": evaluation,
        "chance_level": chance,
        "profile": {key: dict(value) for key, value in DEFAULT_PROFILE.items()},
        "seconds": round(time.time() - started, 2),
    }
    atomic_write_json(out_dir / "export.json", report)
    return report
