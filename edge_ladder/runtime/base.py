"""What every backend shares: tensor specs, input validation, the Result type, the Model base.

Inputs are the model's five named float32 tensors (see edge_ladder.features.batch_inputs):

    audio      (B, T_a, 80)         log-mel frames
    audio_mask (B, T_a)             1/0
    face       (B, T_v, 1, 48, 48)  standardised face crops
    face_mask  (B, T_v)             1/0
    presence   (B, 2)               [audio present, face present], 1/0

Every check runs in numpy BEFORE any native call (ONNX Runtime, TensorRT), so a wrong input
gives a sentence naming the tensor, not a C++ stack trace or a CUDA fault.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import EMOTIONS
from ..errors import EdgeLadderError
from ..features import INPUT_NAMES, OUTPUT_NAMES, batch_inputs
MASK_NAMES = ("audio_mask", "face_mask", "presence")
# (tensor, its mask): both carry the same time axis
TIME_PAIRS = (("audio", "audio_mask"), ("face", "face_mask"))
# what each axis of each input means, for error messages
AXIS_NAMES = {
    "audio": ("B", "T_a", "n_mels"),
    "audio_mask": ("B", "T_a"),
    "face": ("B", "T_v", "1", "S", "S"),
    "face_mask": ("B", "T_v"),
    "presence": ("B", "2"),
}
# a hint per input for a wrong fixed dimension
FIX_HINTS = {
    "audio": ("The model takes 80 log-mel bands per frame: compute them with this version's front-end "
              "(edge_ladder.frontend.log_mel; for a corpus, re-run `edge-ladder prepare`)."),
    "face": "Face crops must be FACE_SIZE x FACE_SIZE grayscale (edge_ladder.frontend.face_crop).",
    "presence": "presence is [audio present, face present] per sample.",
}


class RuntimeInputError(EdgeLadderError, ValueError):
    """An input tensor does not fit the model: wrong name, dtype, rank, shape or values."""


class ModelLoadError(EdgeLadderError):
    """A model file cannot be loaded here (missing, wrong kind, built for another GPU/TensorRT)."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the loaded file declares it.

    shape: fixed dims as ints, dynamic dims as their symbolic name (e.g. 'B', 'T_a').
    min_shape / max_shape: the accepted range per dim (TensorRT optimisation profile), or None
    where the file puts no limit (ONNX dynamic axes).
    """
    name: str
    dtype: np.dtype
    shape: Tuple[object, ...]
    min_shape: Optional[Tuple[int, ...]] = None
    max_shape: Optional[Tuple[int, ...]] = None
    opt_shape: Optional[Tuple[int, ...]] = None

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        text = f"{self.name}: {np.dtype(self.dtype).name} ({dims})"
        if self.min_shape is not None and self.max_shape is not None:
            text += f" profile min {'x'.join(map(str, self.min_shape))} max {'x'.join(map(str, self.max_shape))}"
        return text


@dataclass
class Result:
    """One batch's prediction, the same from every backend.

    probs (B, 6) float32 in EMOTIONS order; logits (B, 6) float32; label_ids (B,) int64;
    labels: EMOTIONS codes; timings: milliseconds ('preprocess' when the caller measured one,
    'h2d', 'compute', 'd2h' for TensorRT, 'compute' for ONNX Runtime, always 'validate' and 'total').
    """
    probs: np.ndarray
    logits: np.ndarray
    label_ids: np.ndarray
    labels: list
    timings: Dict[str, float] = field(default_factory=dict)
    backend: str = ""

    def to_json(self) -> list:
        """One dict per sample: label, probabilities by emotion code (plain Python types)."""
        return [{"label": label, "label_id": int(idx),
                 "probs": {code: float(p) for code, p in zip(EMOTIONS, row)}}
                for label, idx, row in zip(self.labels, self.label_ids, self.probs)]


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _expected_text(spec: TensorSpec) -> str:
    axes = AXIS_NAMES.get(spec.name)
    dims = [str(d) if isinstance(d, int) else (axes[i] if axes and i < len(axes) else str(d))
            for i, d in enumerate(spec.shape)]
    return f"float32 ({', '.join(dims)})"


def validate_inputs(feeds: Mapping[str, np.ndarray], specs: Mapping[str, TensorSpec]) -> Dict[str, np.ndarray]:
    """Check the five inputs against the model's specs; return C-contiguous float32 arrays.

    Raises RuntimeInputError naming the tensor, what was expected and what arrived.
    Public contract: inputs are float32 whatever the file's own I/O precision (backends cast).
    """
    if not isinstance(feeds, Mapping):
        raise RuntimeInputError(f"inputs must be a dict of numpy arrays named {', '.join(specs)}; "
                                f"got {type(feeds).__name__}. Build one with edge_ladder.features.batch_inputs.")
    missing = [n for n in specs if n not in feeds]
    extra = [n for n in feeds if n not in specs]
    if missing or extra:
        raise RuntimeInputError(f"inputs must be exactly {', '.join(specs)}; missing {missing or 'none'}, "
                                f"unexpected {extra or 'none'}. Build them with edge_ladder.features.batch_inputs.")
    arrays: Dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        value = feeds[name]
        if not isinstance(value, np.ndarray):
            raise RuntimeInputError(f"{name} must be a numpy array {_expected_text(spec)}; got {type(value).__name__}.")
        hint = FIX_HINTS.get(name, "")
        axes = AXIS_NAMES.get(name, ())
        wrong_axes = [f"axis {axis} ({axes[axis] if axis < len(axes) else axis}) is {got}, expected {want}"
                      for axis, (want, got) in enumerate(zip(spec.shape, value.shape))
                      if isinstance(want, int) and want >= 0 and got != want]
        if value.dtype != np.float32 or value.ndim != spec.rank or wrong_axes:
            if value.ndim != spec.rank:
                fix = f"expected rank {spec.rank}, got rank {value.ndim}. {hint}"
            elif wrong_axes:
                fix = f"{'; '.join(wrong_axes)}. {hint}"
            else:
                fix = "Convert with .astype(np.float32)."
            raise RuntimeInputError(f"{name} must be {_expected_text(spec)}; got {value.dtype} "
                                    f"{_shape_text(value.shape)}: {fix}".rstrip())
        for axis, got in enumerate(value.shape):
            axis_name = axes[axis] if axis < len(axes) else str(axis)
            if got < 1:
                raise RuntimeInputError(f"{name} axis {axis} ({axis_name}) is empty in {_shape_text(value.shape)}; "
                                        f"every axis needs at least 1 element (batch_inputs pads empty clips to 1).")
            if spec.min_shape is not None and spec.max_shape is not None:
                low, high = spec.min_shape[axis], spec.max_shape[axis]
                if not low <= got <= high:
                    flag, bound = (("--min-shapes", map(min, spec.min_shape, value.shape)) if got < low
                                   else ("--max-shapes", map(max, spec.max_shape, value.shape)))
                    raise RuntimeInputError(
                        f"{name} axis {axis} ({axis_name}) is {got}, outside the engine's optimisation profile "
                        f"[{low}, {high}] (got shape {_shape_text(value.shape)}). Split or pad the input, or "
                        f"rebuild the engine with a wider range: `edge-ladder build-engine MODEL.onnx --out "
                        f"MODEL.engine {flag} {name}:{'x'.join(map(str, bound))}`.")
        arrays[name] = np.ascontiguousarray(value)
    batch_sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(batch_sizes.values())) != 1:
        raise RuntimeInputError(f"all inputs must have the same batch size B; got "
                                f"{', '.join(f'{n} {b}' for n, b in batch_sizes.items())}.")
    for tensor, mask in TIME_PAIRS:
        if tensor in arrays and mask in arrays and arrays[tensor].shape[1] != arrays[mask].shape[1]:
            raise RuntimeInputError(f"{tensor} and {mask} must share their time axis; got {tensor} "
                                    f"{_shape_text(arrays[tensor].shape)} and {mask} {_shape_text(arrays[mask].shape)}.")
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.isfinite(array).sum())
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            raise RuntimeInputError(f"{name} must be finite; got {bad} NaN/inf values (first at index {where}). "
                                    f"Check the front-end: log-mel uses a floor, face crops are standardised.")
        if name in MASK_NAMES and not ((array == 0.0) | (array == 1.0)).all():  # np.isin sorts: 10x slower
            odd = array[(array != 0.0) & (array != 1.0)]
            raise RuntimeInputError(f"{name} must hold only 0 and 1; got values such as {odd.ravel()[:3].tolist()}.")
    return arrays


def validate_shapes(shapes: Mapping[str, Sequence[int]], specs: Mapping[str, TensorSpec]) -> Dict[str, tuple]:
    """Check {input name: shape} for all inputs (no arrays: for buffers filled on the device)
    the way validate_inputs checks arrays' shapes. Returns {name: tuple of ints} in specs order."""
    if not isinstance(shapes, Mapping) or set(shapes) != set(specs):
        got = list(shapes) if isinstance(shapes, Mapping) else type(shapes).__name__
        raise RuntimeInputError(f"shapes must be a dict {{input name: shape}} for exactly {', '.join(specs)}; got {got}.")
    out: Dict[str, tuple] = {}
    for name, spec in specs.items():
        try:
            shape = tuple(int(d) for d in shapes[name])
        except (TypeError, ValueError) as error:
            raise RuntimeInputError(f"shapes[{name!r}] must be a tuple of ints; got {shapes[name]!r}.") from error
        axes = AXIS_NAMES.get(name, ())
        fixed_ok = all(not isinstance(want, int) or want < 0 or got == want for want, got in zip(spec.shape, shape))
        in_profile = spec.min_shape is None or spec.max_shape is None or all(
            low <= got <= high for low, got, high in zip(spec.min_shape, shape, spec.max_shape))
        if len(shape) != spec.rank or not fixed_ok or min(shape, default=0) < 1 or not in_profile:
            raise RuntimeInputError(f"shapes[{name!r}] = {_shape_text(shape)} does not fit {spec.describe()} "
                                    f"(axes {', '.join(axes)}; every axis >= 1).")
        out[name] = shape
    if len({shape[0] for shape in out.values()}) != 1:
        raise RuntimeInputError(f"all inputs must have the same batch size B; got {out}.")
    for tensor, mask in TIME_PAIRS:
        if tensor in out and mask in out and out[tensor][1] != out[mask][1]:
            raise RuntimeInputError(f"{tensor} and {mask} must share their time axis; got {out[tensor]} and {out[mask]}.")
    return out


def make_result(logits: np.ndarray, probs: np.ndarray, timings: Dict[str, float], backend: str) -> Result:
    probs = np.asarray(probs, np.float32)
    label_ids = probs.argmax(axis=1).astype(np.int64)
    return Result(probs=probs, logits=np.asarray(logits, np.float32), label_ids=label_ids,
                  labels=[EMOTIONS[i] for i in label_ids], timings=timings, backend=backend)


class Model:
    """A loaded model file. Subclasses set `backend`, `path`, `inputs`, `outputs` and implement
    `_execute(arrays) -> (outputs dict, timings dict)`. `predict` is safe to call from many threads."""
    backend = "base"

    def __init__(self, path: Path, inputs: Dict[str, TensorSpec], outputs: Dict[str, TensorSpec]):
        self.path = Path(path)
        self.inputs = inputs
        self.outputs = outputs
        missing_in = [n for n in INPUT_NAMES if n not in inputs]
        missing_out = [n for n in OUTPUT_NAMES if n not in outputs]
        if missing_in or missing_out or len(inputs) != len(INPUT_NAMES):
            raise ModelLoadError(f"{self.path} is not an edge-ladder model: expected inputs {list(INPUT_NAMES)} and "
                                 f"outputs {list(OUTPUT_NAMES)}; the file has inputs {list(inputs)} and outputs "
                                 f"{list(outputs)}. Export it with `edge-ladder export`.")

    def _execute(self, arrays: Dict[str, np.ndarray]):  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Validated raw outputs {'logits': (B, 6), 'probs': (B, 6)} float32."""
        outputs, _ = self._execute(validate_inputs(feeds, self.inputs))
        return outputs

    def predict(self, feeds: Mapping[str, np.ndarray], preprocess_ms: Optional[float] = None) -> Result:
        """Validate, run, and wrap the outputs in a Result (timings in ms)."""
        start = time.perf_counter()
        arrays = validate_inputs(feeds, self.inputs)
        validated = time.perf_counter()
        outputs, timings = self._execute(arrays)
        timings = {"validate": (validated - start) * 1e3, **timings,
                   "total": (time.perf_counter() - start) * 1e3}
        if preprocess_ms is not None:
            timings = {"preprocess": float(preprocess_ms), **timings}
            timings["total"] += float(preprocess_ms)
        return make_result(outputs["logits"], outputs["probs"], timings, self.backend)

    def predict_clip(self, audio: np.ndarray, face: np.ndarray, face_valid: np.ndarray,
                     audio_present: Optional[bool] = None, face_present: Optional[bool] = None) -> Result:
        """One clip's features (audio (T_a, 80), face (T_v, 48, 48), face_valid (T_v,)) -> Result (B=1)."""
        feeds = batch_inputs([audio], [face], [face_valid],
                             None if audio_present is None else [audio_present],
                             None if face_present is None else [face_present])
        return self.predict(feeds)

    def describe(self) -> str:
        lines = [f"{self.backend} model {self.path}"]
        lines += ["  in  " + s.describe() for s in self.inputs.values()]
        lines += ["  out " + s.describe() for s in self.outputs.values()]
        return "\n".join(lines)

    def close(self) -> None:
        """Release native resources (sessions, device buffers). Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
