"""Checks of an exported file against its reference, through ONNX Runtime (CPU).

fp32: max |ONNX - torch| over logits and probs, on held-out clips and fresh random inputs with odd
      lengths (T_a = 97); the bar is 1e-4.
fp16: max |probs_fp16 - probs_fp32| (<= 1e-2) and, the flash-attention way, the fp16 file's
      error against the fp32 torch reference must stay within FP16_K x the error of a plain
      torch half-precision run of the same module (torch `.half()` on CPU where it runs, else
      autocast bfloat16; `reference` says which). The argmax agreement with the fp32 file is
      reported with the fp32 margin (top-1 minus runner-up probability) of every sample whose
      class flips, and the flips among the held-out clips apart, not refused: a flip needs a
      margin of at most twice the max probability error (<= 2e-2), so it is a near-tie, and
      whether one occurs depends on the CPU's fp16 rounding (a 2-epoch demo model's 18 samples,
      12 test clips and 6 random inputs, flipped none on one CPU and one on the CI's, with the
      same 6.9e-3 max error).
int8: on the held-out clips only (export/int8.py): max |probs_int8 - probs_fp32| <= 0.15, and the
      clips where fp32 is decisive (top-1 probability >= 0.1 ahead of the runner-up) keep their
      class (>= 99 %); near-ties may flip and the overall argmax agreement is reported. With no
      decisive clip (a model at chance level) that part is "not checked" (decisive_agreement None),
      never a pass.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._deps import require
from ..errors import EdgeLadderError
from ..features import INPUT_NAMES, batch_clips, load_split

FP32_MAX_ABS_ERROR = 1e-4
FP16_MAX_PROB_ERROR = 1e-2
FP16_K = 3.0          # fp16 file error <= K x torch-half error (+ FP16_ATOL for near-exact cases)
FP16_ATOL = 1e-4
INT8_MAX_PROB_ERROR = 0.15         # int8 (export/int8.py), on held-out clips only: calibrated for real data
INT8_DECISIVE_MARGIN = 0.1         # clips whose fp32 top-1 probability leads the runner-up by this much ...
INT8_MIN_DECISIVE_AGREEMENT = 0.99  # ... keep their class in int8; near-ties may flip (reported, not refused)


class ParityError(EdgeLadderError):
    """An exported file does not reproduce its reference within the stated tolerance."""


def onnx_session(path: Path):
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probs), both float32 (B, 6)."""
    logits, probs = session.run(["logits", "probs"], {n: inputs[n] for n in INPUT_NAMES})
    return logits, probs


def run_torch(module, inputs: dict, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probs) of a torch inference module, float32 numpy; `dtype` casts inputs (half)."""
    torch = require("torch")
    tensors = [torch.as_tensor(inputs[n]) for n in INPUT_NAMES]
    if dtype is not None:
        tensors = [t.to(dtype) for t in tensors]
    with torch.no_grad():
        logits = module(*tensors).float()
    return logits.numpy(), torch.softmax(logits, dim=-1).numpy()


class Runs:
    """(logits, probs) of the torch module and of each exported file on a fixed list of input
    batches, each computed once: one export's parity checks and task metrics read the same runs.

        runs = Runs(module, held_out + random_batches())
        runs.torch()                          # all batches
        runs.onnx("fp32", path, count=n)      # the first n batches (e.g. only the held-out ones)
    """

    def __init__(self, module, batches: list[dict]):
        self.module, self.batches = module, list(batches)
        self._outputs: dict = {}
        self._sessions: dict = {}

    def torch(self, count: int | None = None) -> list:
        return self._get("torch", lambda inputs: run_torch(self.module, inputs), count)

    def onnx(self, name: str, path: Path, count: int | None = None) -> list:
        """`name` keys the runs ('fp32', 'fp16', 'int8'): a file renamed after its check is not re-run."""
        def run(inputs):
            if name not in self._sessions:
                self._sessions[name] = onnx_session(path)
            return run_onnx(self._sessions[name], inputs)
        return self._get(name, run, count)

    def _get(self, key: str, run, count: int | None) -> list:
        count = len(self.batches) if count is None else count
        done = self._outputs.setdefault(key, [])
        for inputs in self.batches[len(done):count]:
            done.append(run(inputs))
        return done[:count]


def split_batches(features_dir: Path, split: str, batch_size: int = 16) -> tuple[list[dict], np.ndarray]:
    """Held-out clips as padded input batches, and their labels."""
    clips = load_split(Path(features_dir), split)
    if not clips:
        raise EdgeLadderError(f"split {split!r} of {features_dir} has no clips; choose another --split")
    batches = [batch_clips(clips[i:i + batch_size]) for i in range(0, len(clips), batch_size)]
    return batches, np.array([c.label for c in clips])


def random_batches(seed: int = 0) -> list[dict]:
    """Fresh random inputs with odd sizes, partial masks and a missing modality per batch."""
    rng = np.random.default_rng(seed)
    out = []
    for batch, t_audio, t_video in ((3, 97, 9), (1, 198, 20), (2, 31, 3)):
        inputs = {
            "audio": rng.normal(-4.0, 3.0, (batch, t_audio, 80)).astype(np.float32),
            "audio_mask": np.ones((batch, t_audio), np.float32),
            "face": rng.normal(0.0, 1.0, (batch, t_video, 1, 48, 48)).astype(np.float32),
            "face_mask": (rng.random((batch, t_video)) > 0.2).astype(np.float32),
            "presence": np.ones((batch, 2), np.float32),
        }
        inputs["face_mask"][:, 0] = 1.0
        if batch > 1:
            inputs["audio_mask"][1, t_audio // 2:] = 0.0     # a shorter clip, padded
            inputs["audio"][1, t_audio // 2:] = 0.0
            inputs["presence"][-1, 1] = 0.0                   # no face at all
            inputs["face_mask"][-1] = 0.0
            inputs["face"][-1] = 0.0
        out.append(inputs)
    return out


def fp32_parity(runs: Runs, onnx_path: Path) -> dict:
    """Max/mean abs error of the fp32 file's logits and probs against the torch module."""
    errors = [np.concatenate([np.abs(logits - ref_logits).ravel(), np.abs(probs - ref_probs).ravel()])
              for (ref_logits, ref_probs), (logits, probs) in zip(runs.torch(), runs.onnx("fp32", onnx_path))]
    errors = np.concatenate(errors)
    return {"max_abs_error": float(errors.max()), "mean_abs_error": float(errors.mean()),
            "tolerance": FP32_MAX_ABS_ERROR, "samples": int(sum(len(b["audio"]) for b in runs.batches))}


def torch_half_reference(module, batches: list[dict]) -> tuple[str, list[np.ndarray]]:
    """probs of a plain torch half-precision run: `.half()` if every op runs in half on this
    CPU, else autocast bfloat16. Returns (what was used, probs per batch)."""
    torch = require("torch")
    import copy
    half = copy.deepcopy(module).half()
    try:
        return "torch .half() (fp16, CPU)", [run_torch(half, b, torch.float16)[1] for b in batches]
    except RuntimeError:
        pass
    out = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for b in batches:
            out.append(run_torch(module, b)[1])
    return "torch autocast bfloat16 (CPU has no fp16 kernel for some op)", out


def fp16_parity(runs: Runs, fp32_path: Path, fp16_path: Path, held_out: int = 0) -> dict:
    """Agreement of the fp16 file with the fp32 file, and its error against the torch fp32
    reference relative to a torch half-precision run's error. The first `held_out` batches of
    `runs` are clips (the rest random inputs): their flips are also counted apart."""
    reference_name, half_probs = torch_half_reference(runs.module, runs.batches)
    agree, count, flips, clip_flips, clips = 0, 0, [], 0, 0
    err_vs_fp32, err_vs_ref, err_half = [], [], []
    for i, ((_, probs32), (_, probs16), (_, probs_ref), probs_half) in enumerate(zip(
            runs.onnx("fp32", fp32_path), runs.onnx("fp16", fp16_path), runs.torch(), half_probs)):
        same = probs16.argmax(1) == probs32.argmax(1)
        agree += int(same.sum())
        count += len(probs16)
        if i < held_out:
            clip_flips += int((~same).sum())
            clips += len(probs16)
        top2 = np.sort(probs32, axis=1)[:, -2:]
        flips += (top2[:, 1] - top2[:, 0])[~same].tolist()
        err_vs_fp32.append(np.abs(probs16 - probs32).ravel())
        err_vs_ref.append(np.abs(probs16 - probs_ref).ravel())
        err_half.append(np.abs(probs_half - probs_ref).ravel())
    err_vs_fp32, err_vs_ref, err_half = map(np.concatenate, (err_vs_fp32, err_vs_ref, err_half))
    return {
        "argmax_agreement": agree / count,
        "flip_margins": [float(m) for m in flips],     # fp32 top-1 lead of each clip whose class flips
        "max_prob_error": float(err_vs_fp32.max()),
        "mean_prob_error": float(err_vs_fp32.mean()),
        "max_prob_error_vs_torch_fp32": float(err_vs_ref.max()),
        "torch_half_reference": reference_name,
        "torch_half_max_prob_error": float(err_half.max()),
        "torch_half_mean_prob_error": float(err_half.mean()),
        "k": FP16_K,
        "tolerance": {"max_prob_error": FP16_MAX_PROB_ERROR},
        "samples": count,
        "held_out_samples": clips,                     # of them, held-out clips (the rest random inputs)
        "held_out_flips": clip_flips,
    }


def check_fp32(report: dict, what: str) -> None:
    if report["max_abs_error"] > FP32_MAX_ABS_ERROR:
        raise ParityError(f"{what}: fp32 ONNX differs from the torch module by {report['max_abs_error']:.3g} "
                          f"(max; mean {report['mean_abs_error']:.3g}); expected <= {FP32_MAX_ABS_ERROR:g}. "
                          f"An exporter or folding bug: re-run with --no-fold to isolate it.")


def check_fp16(report: dict, what: str) -> None:
    problems = []
    if report["max_prob_error"] > FP16_MAX_PROB_ERROR:
        problems.append(f"max prob error {report['max_prob_error']:.3g} > {FP16_MAX_PROB_ERROR:g}")
    bound = FP16_K * report["torch_half_max_prob_error"] + FP16_ATOL
    if report["max_prob_error_vs_torch_fp32"] > bound:
        problems.append(f"error vs torch fp32 {report['max_prob_error_vs_torch_fp32']:.3g} > "
                        f"{FP16_K:g} x {report['torch_half_reference']} error "
                        f"{report['torch_half_max_prob_error']:.3g} + {FP16_ATOL:g}")
    if problems:
        raise ParityError(f"{what}: fp16 ONNX is not accurate enough: " + "; ".join(problems) +
                          ". Add the offending op to export/fp16.py FP32_BLOCK_LIST.")


def int8_parity(runs: Runs, fp32_path: Path, int8_path: Path, count: int) -> dict:
    """The int8 file against the fp32 file on the first `count` batches of `runs`, the held-out
    ones (random inputs are not used: the activation ranges were calibrated on real clips):
    probability errors, argmax agreement over all clips, and over the decisive ones (fp32 top-1
    ahead of the runner-up by INT8_DECISIVE_MARGIN)."""
    same, decisive, errors = [], [], []
    for (_, probs32), (_, probs8) in zip(runs.onnx("fp32", fp32_path, count), runs.onnx("int8", int8_path, count)):
        top2 = np.sort(probs32, axis=1)[:, -2:]
        same.append(probs8.argmax(1) == probs32.argmax(1))
        decisive.append(top2[:, 1] - top2[:, 0] >= INT8_DECISIVE_MARGIN)
        errors.append(np.abs(probs8 - probs32).ravel())
    if not same:
        raise EdgeLadderError("the INT8 check needs held-out clips (--features); none were given.")
    same, decisive, errors = map(np.concatenate, (same, decisive, errors))
    return {"argmax_agreement": float(same.mean()), "decisive_samples": int(decisive.sum()),
            "decisive_agreement": float(same[decisive].mean()) if decisive.any() else None,   # None: not checked
            "max_prob_error": float(errors.max()), "mean_prob_error": float(errors.mean()), "samples": int(same.size),
            "tolerance": {"max_prob_error": INT8_MAX_PROB_ERROR, "decisive_margin": INT8_DECISIVE_MARGIN,
                          "decisive_agreement": INT8_MIN_DECISIVE_AGREEMENT}}


def check_int8(report: dict, what: str) -> None:
    problems = []
    if report["max_prob_error"] > INT8_MAX_PROB_ERROR:
        problems.append(f"max prob error {report['max_prob_error']:.3g} > {INT8_MAX_PROB_ERROR:g}")
    if report["decisive_agreement"] is not None and report["decisive_agreement"] < INT8_MIN_DECISIVE_AGREEMENT:
        problems.append(f"{report['decisive_agreement']:.4f} of the {report['decisive_samples']} clips where fp32 is "
                        f"decisive (top-1 >= {INT8_DECISIVE_MARGIN:g} ahead) keep their class "
                        f"< {INT8_MIN_DECISIVE_AGREEMENT}")
    if problems:
        raise ParityError(f"{what}: INT8 ONNX is not accurate enough on the held-out clips: " + "; ".join(problems) +
                          ". Calibrate on more clips (export/int8.py CALIBRATION_CLIPS), keep more convolutions "
                          "in fp32 (MIN_REDUCTION), or export without it: --no-int8.")


def decisive_text(report: dict) -> str:
    """'decisive clips 0.9896 of 96' or 'decisive clips not checked (0 of 54 decisive)'."""
    if report["decisive_agreement"] is None:
        return f"decisive clips: not checked, 0 of {report['samples']} decisive"
    return f"decisive clips {report['decisive_agreement']:.4f} of {report['decisive_samples']}"


def _metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    from ..metrics import classification_report
    return {**classification_report(labels, predictions), "n": int(len(labels))}


def evaluate_outputs(outputs: list, labels: np.ndarray) -> dict:
    """edge_ladder.metrics.classification_report (macro_f1, accuracy, per_class, confusion) + 'n'
    of (logits, probs) per batch of split_batches' batches (e.g. Runs' first len(batches))."""
    return _metrics(labels, np.concatenate([logits.argmax(1) for logits, _ in outputs]))


def evaluate_onnx(onnx_path: Path, features_dir: Path, split: str = "test", batch_size: int = 16) -> dict:
    """Classification metrics of an ONNX file (fp32, fp16 or int8) on a split, through ONNX Runtime
    CPU (see evaluate_outputs)."""
    batches, labels = split_batches(features_dir, split, batch_size)
    return evaluate_outputs(Runs(None, batches).onnx("file", onnx_path), labels)
