"""`edge-ladder bench`: trtexec-grade latency reports for checkpoints, ONNX files and engines.

    edge-ladder bench run/checkpoint.pt export/model.onnx export/model.fp16.onnx export/model.int8.onnx \\
        --compare --json bench/compare.json --md bench/compare.md --histogram bench/latency.png

Method (trtexec's conventions, see /work/shared/reference/tensorrt.md):
  * inputs: a pool of fresh random inputs (never zero; masks and presence valid) is generated
    BEFORE timing; iteration i uses pool entry i mod pool size, so no two consecutive calls see
    the same data and generation is never timed;
  * warm-up by time (--warmup ms, default 200), then at least --iterations calls (default 10)
    AND at least --duration seconds (default 3);
  * end-to-end host latency = perf_counter around the whole predict call (validation, host
    copies, inference, and for TensorRT the stream synchronisation); the backends' own stage
    timings (TensorRT: h2d, compute from CUDA events, d2h, enqueue) are summarised beside it;
  * statistics: min, mean, median, p90, p95, p99, max. Percentiles are NEAREST-RANK, as trtexec:
    pXX is the smallest sample such that at least XX % of the samples are <= it (sorted index
    ceil(XX/100 * n) - 1). The median is the middle sample, or the mean of the two middle ones;
  * throughput_qps = batch x iterations / wall time, where wall time is the sum of that model's
    own timed calls (with --compare, time spent in the other models is not counted);
  * --compare runs every model in ONE process, interleaved round-robin (A B C A B C ...), so
    thermal and background drift hits all models alike; every model gets the same number of
    iterations. speedup[label] = mean latency of the FIRST model / mean latency of `label`
    (> 1: faster than the first model; the first model's own entry is 1.0);
  * --preprocess adds the front-ends to every iteration: a 2 s window of int16 PCM -> log-mel and
    VIDEO_FPS camera frames (640x480 BGR) + face box -> 48x48 crops, via edge_ladder.kernels
    when it reports it is built, else the numpy front-ends. The report then holds the model-only
    latency (latency_ms), the front-end alone (stages_ms.preprocess) and both together
    (latency_with_preprocess_ms).

Backends: onnxruntime (MODEL.onnx), tensorrt (MODEL.engine / .plan, via edge_ladder.runtime)
and torch (MODEL = checkpoint.pt: the FULL training model in eval mode, no_grad, eager, the
reference the pruned exports are measured against). torch is imported only for that backend.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import __version__
from .argtypes import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT
from .errors import EdgeLadderError
from .features import INPUT_NAMES, atomic_write_bytes, atomic_write_json
from .frontend import FACE_SIZE, N_MELS, SAMPLE_RATE, VIDEO_FPS, n_audio_frames

BACKENDS = ("onnxruntime", "tensorrt", "torch")
SUFFIX_BACKEND = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt",
                  ".pt": "torch", ".pth": "torch"}
STAT_KEYS = ("min", "mean", "median", "p90", "p95", "p99", "max")
PERCENTILES = {"p90": 90, "p95": 95, "p99": 99}
WINDOW_S = 2.0                 # the model's serving window: 2 s of audio and faces
CAMERA_SHAPE = (480, 640, 3)   # --preprocess camera frames (VGA, a typical USB/CSI camera mode)
POOL_BYTES = 256 << 20         # cap on the pre-generated input pool
POOL_MAX = 32                  # at most this many distinct input sets


class BenchError(EdgeLadderError, ValueError):
    """Bad benchmark request (flags, shapes, model paths)."""


# ---------------------------------------------------------------------------------------------
# Statistics


def percentile(sorted_ms: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (trtexec's definition): the smallest
    sample with at least pct % of the samples <= it. Exact arithmetic, so p90 of 10 samples is
    the 9th, not a float-rounding accident."""
    n = len(sorted_ms)
    if n == 0:
        raise BenchError("cannot take a percentile of zero samples; run at least one iteration")
    rank = math.ceil(Fraction(str(pct)) * n / 100)          # 1-based
    return float(sorted_ms[max(rank, 1) - 1])


def summarize(samples_ms: Sequence[float]) -> Dict[str, float]:
    """{min, mean, median, p90, p95, p99, max} of latencies in milliseconds."""
    values = sorted(float(v) for v in samples_ms)
    n = len(values)
    if n == 0:
        raise BenchError("no samples to summarise; run at least one iteration")
    middle = n // 2
    median = values[middle] if n % 2 else (values[middle - 1] + values[middle]) / 2
    stats = {"min": values[0], "mean": math.fsum(values) / n, "median": median}
    stats.update({key: percentile(values, pct) for key, pct in PERCENTILES.items()})
    stats["max"] = values[-1]
    return {key: stats[key] for key in STAT_KEYS}


# ---------------------------------------------------------------------------------------------
# Shapes and inputs


def window_shapes(batch: int = 1, seconds: float = WINDOW_S) -> Dict[str, tuple]:
    """audio and face shapes of a `seconds` window: 2 s -> audio (B, 198, 80), face (B, 20, 1, 48, 48)."""
    t_audio = n_audio_frames(int(round(seconds * SAMPLE_RATE)))
    t_video = int(round(seconds * VIDEO_FPS))
    if t_audio < 1 or t_video < 1:
        raise BenchError(f"window of {seconds} s holds {t_audio} audio and {t_video} face frames; "
                         f"use at least 0.1 s")
    return {"audio": (batch, t_audio, N_MELS), "face": (batch, t_video, 1, FACE_SIZE, FACE_SIZE)}


_SHAPE_FORM = {"audio": "audio:BxT_ax80 (e.g. audio:1x198x80)",
               "face": "face:BxT_vx1x48x48 (e.g. face:1x20x1x48x48)"}


def parse_shapes(text: str, batch: Optional[int] = None) -> Dict[str, tuple]:
    """'audio:1x198x80,face:1x20x1x48x48' -> {'audio': (1, 198, 80), 'face': (1, 20, 1, 48, 48)}.

    Either tensor may be left out; it then takes the 2 s window's shape at the same batch.
    The masks and presence follow from these two. Raises BenchError naming the tensor and the
    expected form. `batch` (from --batch) must agree with the shapes' batch dimension.
    """
    given: Dict[str, tuple] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, dims = item.partition(":")
        name = name.strip()
        if not sep:
            raise BenchError(f"--shapes entry {item!r} has no ':'; expected NAME:DIMS such as "
                             f"{_SHAPE_FORM['audio']} or {_SHAPE_FORM['face']}")
        if name not in _SHAPE_FORM:
            derived = " (masks and presence follow from audio and face)" if name in INPUT_NAMES else ""
            raise BenchError(f"--shapes names tensor {name!r}{derived}; only audio and face take a shape: "
                             f"{_SHAPE_FORM['audio']}, {_SHAPE_FORM['face']}")
        if name in given:
            raise BenchError(f"--shapes gives tensor {name!r} twice; give each tensor once")
        if not re.fullmatch(r"\d+(x\d+)*", dims.strip()):
            raise BenchError(f"--shapes {name}:{dims} is not a list of positive integers joined by 'x'; "
                             f"expected {_SHAPE_FORM[name]}")
        shape = tuple(int(d) for d in dims.strip().split("x"))
        rank = 3 if name == "audio" else 5
        if len(shape) != rank or min(shape) < 1:
            raise BenchError(f"--shapes {name}:{dims} has {len(shape)} dims; expected {rank} positive "
                             f"dims: {_SHAPE_FORM[name]}")
        fixed = (N_MELS,) if name == "audio" else (1, FACE_SIZE, FACE_SIZE)
        if shape[-len(fixed):] != fixed:
            raise BenchError(f"--shapes {name}:{dims} must end in {'x'.join(map(str, fixed))} "
                             f"(the model's fixed dims); expected {_SHAPE_FORM[name]}")
        given[name] = shape
    if not given:
        raise BenchError(f"--shapes is empty; expected e.g. audio:1x198x80,face:1x20x1x48x48")
    batches = {name: shape[0] for name, shape in given.items()}
    if len(set(batches.values())) > 1:
        raise BenchError(f"--shapes batch dims disagree: audio has B={batches['audio']}, face has "
                         f"B={batches['face']}; give both the same first dimension")
    shape_batch = next(iter(batches.values()))
    if batch is not None and batch != shape_batch:
        raise BenchError(f"--batch {batch} disagrees with --shapes batch {shape_batch}; drop --batch or "
                         f"make the first dimension of every shape {batch}")
    shapes = window_shapes(shape_batch)
    shapes.update(given)
    return shapes


def input_shapes(shapes: Dict[str, tuple]) -> Dict[str, tuple]:
    """audio and face shapes -> all five input shapes."""
    batch, t_audio = shapes["audio"][:2]
    t_video = shapes["face"][1]
    return {"audio": shapes["audio"], "audio_mask": (batch, t_audio), "face": shapes["face"],
            "face_mask": (batch, t_video), "presence": (batch, 2)}


def random_inputs(shapes: Dict[str, tuple], rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """One set of the five float32 inputs, random and valid:

    audio: log-mel-like values (normal, mean -6, std 3; never 0 in the valid frames);
    face: standardised crops (standard normal, never 0 in the valid frames);
    masks: sample 0 uses the full length (so the padded T is exercised); every other sample a
    random length in [T/2, T]; padding is zero as batch_inputs writes it; presence [1, 1].
    """
    full = input_shapes(shapes)
    batch, t_audio, _ = full["audio"]
    t_video = full["face"][1]

    def lengths(t):
        out = rng.integers(max(1, (t + 1) // 2), t + 1, size=batch)
        out[0] = t
        return out

    def nonzero(shape, mean, std):
        values = rng.normal(mean, std, size=shape).astype(np.float32)
        values[values == 0] = np.float32(1e-3)  # exact zeros are possible in float32, never wanted
        return values

    audio_len, video_len = lengths(t_audio), lengths(t_video)
    audio_mask = (np.arange(t_audio)[None, :] < audio_len[:, None]).astype(np.float32)
    face_mask = (np.arange(t_video)[None, :] < video_len[:, None]).astype(np.float32)
    audio = nonzero(full["audio"], -6.0, 3.0) * audio_mask[:, :, None]
    face = nonzero(full["face"], 0.0, 1.0) * face_mask[:, :, None, None, None]
    return {"audio": audio, "audio_mask": audio_mask, "face": face, "face_mask": face_mask,
            "presence": np.ones((batch, 2), np.float32)}


def input_pool(shapes: Dict[str, tuple], seed: int = 0, size: Optional[int] = None) -> List[dict]:
    """Pre-generated distinct input sets (outside every timed region), capped at POOL_BYTES."""
    full = input_shapes(shapes)
    per_set = sum(int(np.prod(s)) * 4 for s in full.values())
    if size is None:
        size = int(max(2, min(POOL_MAX, POOL_BYTES // per_set)))
    rng = np.random.default_rng(seed)
    return [random_inputs(shapes, rng) for _ in range(size)]


# ---------------------------------------------------------------------------------------------
# Front-end (--preprocess)


def raw_window_pool(shapes: Dict[str, tuple], seed: int = 0, size: int = 3) -> List[dict]:
    """Raw sensor windows for --preprocess that the front-ends turn into exactly `shapes`: per
    sample int16 PCM ((T_a - 1) x HOP + WIN samples at 16 kHz, 2 s -> 31920) and T_v camera
    frames (CAMERA_SHAPE, uint8 BGR, never all zero) with one face box each."""
    from .frontend import HOP, WIN
    rng = np.random.default_rng(seed)
    batch, t_audio = shapes["audio"][:2]
    n_samples = (t_audio - 1) * HOP + WIN
    n_frames = shapes["face"][1]
    height, width, _ = CAMERA_SHAPE
    pool = []
    for _ in range(size):
        window = {"pcm": [], "frames": [], "boxes": []}
        for _ in range(batch):
            window["pcm"].append(rng.integers(-12000, 12000, size=n_samples, dtype=np.int16))
            window["frames"].append(rng.integers(1, 256, size=(n_frames,) + CAMERA_SHAPE, dtype=np.uint8))
            side = int(rng.integers(height // 4, height // 2))
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            window["boxes"].append((x, y, side, side))
        pool.append(window)
    return pool


def kernels_built() -> bool:
    """True when edge_ladder.kernels reports its C library is built (probed when called)."""
    try:
        from . import kernels
    except ImportError:
        return False
    return bool(kernels.is_built())


def make_preprocess(prefer_kernels: bool = True):
    """-> (name, fn(window) -> five inputs): the front-end the runtime runs on a raw window.
    'kernels' (edge_ladder.kernels host path, crops written straight into the face input) when
    it is built and preferred, else 'numpy' (edge_ladder.frontend)."""
    from .frontend import face_crop, log_mel, square_box
    use_kernels = prefer_kernels and kernels_built()
    if use_kernels:
        from . import kernels
        log_mel = kernels.log_mel  # noqa: F811 - same contract, C implementation

    def preprocess(window: dict) -> dict:
        batch, n_frames = len(window["pcm"]), len(window["frames"][0])
        audio = np.stack([log_mel(pcm) for pcm in window["pcm"]])                    # (B, T_a, 80)
        face = np.empty((batch, n_frames, 1, FACE_SIZE, FACE_SIZE), np.float32)      # (B, T_v, 1, S, S)
        for b, (frames, box) in enumerate(zip(window["frames"], window["boxes"])):
            crop_box = square_box(box, frames.shape[1:])
            for t, frame in enumerate(frames):
                if use_kernels:
                    kernels.face_crops(frame, [crop_box], out=face, slots=[[b, t]])
                else:
                    face[b, t, 0] = face_crop(frame, crop_box)
        # every window is complete: all frames valid, both modalities present
        return {"audio": audio, "audio_mask": np.ones(audio.shape[:2], np.float32), "face": face,
                "face_mask": np.ones((batch, n_frames), np.float32), "presence": np.ones((batch, 2), np.float32)}

    return ("kernels" if use_kernels else "numpy"), preprocess


# ---------------------------------------------------------------------------------------------
# Models


@dataclass
class ModelSpec:
    path: str
    backend: str
    label: str = ""


def infer_backend(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_BACKEND:
        raise BenchError(f"cannot tell the backend of {path!r} from its suffix {suffix or '(none)'}; "
                         f"expected .onnx (onnxruntime), .engine/.plan (tensorrt) or .pt (torch), "
                         f"or name it: {path}@onnxruntime")
    return SUFFIX_BACKEND[suffix]


def parse_model_spec(text: str, backend: Optional[str] = None) -> ModelSpec:
    """'PATH' or 'PATH@BACKEND' (+ the --backend default) -> ModelSpec. A backend that cannot run
    the file is an error, never silently replaced."""
    path, sep, named = text.rpartition("@") if "@" in text else (text, "", "")
    if Path(path).is_dir():                 # a directory holding one model, else "did you mean ...?"
        from .paths import model_file
        path = str(model_file(path))
    if sep and named not in BACKENDS:
        raise BenchError(f"model {text!r} names backend {named!r}; expected one of {', '.join(BACKENDS)}")
    chosen = named or backend or infer_backend(path)
    if chosen not in BACKENDS:
        raise BenchError(f"--backend {chosen!r}; expected one of {', '.join(BACKENDS)}")
    suffix = Path(path).suffix.lower()
    natural = SUFFIX_BACKEND.get(suffix)
    if natural is not None and natural != chosen:
        raise BenchError(f"{path} is a {suffix} file, which the {natural} backend runs; the {chosen} "
                         f"backend cannot. Drop --backend, or give a "
                         f"{'checkpoint .pt' if chosen == 'torch' else '.onnx' if chosen == 'onnxruntime' else '.engine'} file")
    if not Path(path).exists():
        raise BenchError(f"model file {path} does not exist; expected a checkpoint.pt (train), "
                         f"model.onnx / model.fp16.onnx / model.int8.onnx (export) or an .engine (build-engine)")
    return ModelSpec(path=str(path), backend=chosen, label=f"{chosen}:{Path(path).name}")


def unique_labels(specs: List[ModelSpec]) -> None:
    seen: Dict[str, int] = {}
    for spec in specs:
        base = spec.label or f"{spec.backend}:{Path(spec.path).name}"
        seen[base] = seen.get(base, 0) + 1
        spec.label = base if seen[base] == 1 else f"{base}#{seen[base]}"


class Runner:
    """One loaded model. __call__(inputs) runs one batch and returns the backend's own stage
    timings in ms (may be empty). `info` goes into the report (threads, precision, ...)."""
    label = ""
    backend = ""
    path = ""
    info: dict = {}

    def __call__(self, inputs: dict) -> Dict[str, float]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the model (sessions, device buffers)."""


class RuntimeRunner(Runner):
    """ONNX Runtime or TensorRT through edge_ladder.runtime (never imports torch)."""

    def __init__(self, spec: ModelSpec, threads: Optional[int] = None):
        from .runtime import load as load_model
        self.label, self.backend, self.path = spec.label, spec.backend, spec.path
        opts = {"intra_op_threads": threads} if threads and spec.backend == "onnxruntime" else {}
        self.model = load_model(spec.path, backend=spec.backend, **opts)
        self.info = {"runtime": type(self.model).__name__}
        for attribute in ("providers", "intra_op_threads"):
            if hasattr(self.model, attribute):
                self.info[attribute] = getattr(self.model, attribute)

    def __call__(self, inputs: dict) -> Dict[str, float]:
        result = self.model.predict(inputs)
        return {k: float(v) for k, v in (result.timings or {}).items() if isinstance(v, (int, float))}

    def close(self) -> None:
        self.model.close()


class TorchRunner(Runner):
    """The checkpoint's whole training model (LadderNet with its decoders loaded), called the way
    PyTorch users call it: forward() in eval mode, no_grad, eager. forward() runs the clean path
    only (no decoders, no noise), so the comparison with the pruned ONNX measures export + folding
    + runtime, not skipped decoder work. The reference the exports are compared with."""

    def __init__(self, spec: ModelSpec, threads: Optional[int] = None):
        from ._deps import require
        self.torch = require("torch")
        from .model import load_checkpoint
        self._threads_before = self.torch.get_num_threads()
        if threads:
            self.torch.set_num_threads(threads)  # process-wide, as torch offers it; restored by close()
        self.label, self.backend, self.path = spec.label, spec.backend, spec.path
        self.model, _ckpt = load_checkpoint(spec.path)
        self.model.eval()
        self.info = {"torch": self.torch.__version__, "torch_threads": self.torch.get_num_threads(),
                     "mode": "training model (decoders loaded), forward() = clean path, eval, no_grad, eager",
                     "parameters": sum(p.numel() for p in self.model.parameters())}

    def __call__(self, inputs: dict) -> Dict[str, float]:
        torch = self.torch
        with torch.no_grad():
            tensors = {name: torch.from_numpy(value) for name, value in inputs.items()}
            self.model(**tensors)
        return {}

    def close(self) -> None:
        self.torch.set_num_threads(self._threads_before)


def open_runner(spec: ModelSpec, threads: Optional[int] = None) -> Runner:
    """Load one model. threads: CPU threads for torch / ONNX Runtime (None: library default)."""
    return TorchRunner(spec, threads) if spec.backend == "torch" else RuntimeRunner(spec, threads)


# ---------------------------------------------------------------------------------------------
# The timed loop


def measure(runners: Sequence[Runner], pool: Sequence[dict], *, warmup_ms: float = 200.0,
            iterations: int = 10, duration_s: float = 3.0, preprocess: Optional[Callable] = None,
            raw_pool: Optional[Sequence[dict]] = None, clock: Callable[[], float] = time.perf_counter) -> List[dict]:
    """Warm up, then run every runner round-robin until each has at least `iterations` calls and
    the timed loop has lasted at least `duration_s`. Returns one dict per runner:
    {'latency_samples_ms', 'stage_samples_ms' {stage: [...]}, 'iterations', 'wall_s'}.

    With `preprocess`, each call first turns raw_pool[i mod len] into inputs (timed separately as
    the 'preprocess' stage; the model sees those inputs).
    """
    if iterations < 1:
        raise BenchError(f"--iterations must be >= 1; got {iterations}")
    if duration_s < 0 or warmup_ms < 0:
        raise BenchError(f"--duration and --warmup must be >= 0; got {duration_s} s, {warmup_ms} ms")
    if not runners:
        raise BenchError("no models to benchmark")
    records = [{"latency_samples_ms": [], "stage_samples_ms": {}, "iterations": 0, "wall_s": 0.0}
               for _ in runners]

    def one_call(index: int, step: int, record: Optional[dict]):
        runner = runners[index]
        pre_ms = None
        if preprocess is not None:
            start = clock()
            inputs = preprocess(raw_pool[step % len(raw_pool)])
            pre_ms = (clock() - start) * 1e3
        else:
            inputs = pool[step % len(pool)]
        start = clock()
        stages = runner(inputs)
        elapsed = clock() - start
        if record is None:
            return
        record["latency_samples_ms"].append(elapsed * 1e3)
        record["iterations"] += 1
        record["wall_s"] += elapsed
        if pre_ms is not None:
            stages = dict(stages, preprocess=pre_ms)
        for stage, value in stages.items():
            record["stage_samples_ms"].setdefault(stage, []).append(float(value))

    # warm-up: round-robin for warmup_ms x number of models, every model at least once
    step = 0
    start = clock()
    while True:
        for index in range(len(runners)):
            one_call(index, step, None)
        step += 1
        if (clock() - start) * 1e3 >= warmup_ms * len(runners):
            break
    # timed loop: A B C A B C ... same iteration count for all
    step = 0
    start = clock()
    while True:
        for index in range(len(runners)):
            one_call(index, step, records[index])
        step += 1
        if step >= iterations and clock() - start >= duration_s:
            break
    return records


def run_report(runner: Runner, record: dict, *, batch: int, shapes: Dict[str, tuple], env: Optional[dict]) -> dict:
    """One model's JSON-ready report."""
    latencies = record["latency_samples_ms"]
    report = {
        "backend": runner.backend,
        "model": runner.path,
        "label": runner.label,
        "batch": batch,
        "shapes": {name: list(shape) for name, shape in input_shapes(shapes).items()},
        "latency_ms": summarize(latencies),
        "throughput_qps": batch * record["iterations"] / record["wall_s"] if record["wall_s"] > 0 else float("inf"),
        "iterations": record["iterations"],
        "wall_s": record["wall_s"],
        "stages_ms": {stage: summarize(values) for stage, values in record["stage_samples_ms"].items()},
        "runner": dict(runner.info),
    }
    pre = record["stage_samples_ms"].get("preprocess")
    if pre is not None:
        report["latency_with_preprocess_ms"] = summarize([a + b for a, b in zip(latencies, pre)])
    report["latency_samples_ms"] = [round(v, 5) for v in latencies]
    if env is not None:
        report["env"] = env
    return report


def speedups(runs: List[dict]) -> Dict[str, float]:
    """speedup[label] = first run's mean latency / this run's mean latency."""
    reference = runs[0]["latency_ms"]["mean"]
    return {run["label"]: reference / run["latency_ms"]["mean"] for run in runs}


SPEEDUP_DEFINITION = ("speedup[label] = mean end-to-end latency of the first model / mean end-to-end "
                      "latency of `label`, measured interleaved in one process (> 1 means faster than "
                      "the first model)")


def benchmark(models: Sequence, *, batch: Optional[int] = None, shapes: Optional[Dict[str, tuple]] = None,
              window_s: float = WINDOW_S, warmup_ms: float = 200.0, iterations: int = 10,
              duration_s: float = 3.0, compare: bool = False, preprocess: bool = False,
              seed: int = 0, env: bool = True, tegrastats_interval_ms: int = 100, threads: Optional[int] = None,
              backend: Optional[str] = None, progress: Optional[Callable[[str], None]] = None,
              clock: Callable[[], float] = time.perf_counter) -> dict:
    """Benchmark one or more models. `models`: paths, 'PATH@BACKEND' strings, ModelSpec or
    already-loaded Runner objects.

    Without `compare` the models run one after another (each its own warm-up and loop); with it
    they run interleaved and the report has `speedup`. One model: the report is that model's
    run dict; several: {'runs': [...], 'env': ..., 'speedup' (compare only), ...}.
    `shapes` (audio and face, as parse_shapes returns) default to the `window_s` window at `batch`
    (default 1); a `batch` that disagrees with the shapes' first dimension is an error.
    """
    from .benchenv import capture_environment
    if batch is not None and batch < 1:
        raise BenchError(f"--batch must be >= 1; got {batch}")
    if shapes is not None and batch is not None and batch != shapes["audio"][0]:
        raise BenchError(f"batch {batch} disagrees with the shapes' batch {shapes['audio'][0]}; "
                         f"give one of them, or make them equal")
    if threads is not None and threads < 1:
        raise BenchError(f"--threads must be >= 1; got {threads}")
    specs = [m if isinstance(m, (ModelSpec, Runner)) else parse_model_spec(str(m), backend) for m in models]
    if threads is not None and all(getattr(s, "backend", "") == "tensorrt" for s in specs):
        raise BenchError("--threads sets CPU threads of torch and ONNX Runtime; every MODEL here is a "
                         "TensorRT engine, which it does not affect. Drop --threads")
    if compare and len(specs) < 2:
        raise BenchError(f"--compare needs at least two models; got {len(specs)}. "
                         f"Add another MODEL, e.g. the checkpoint and its model.onnx")
    unique_labels(specs)
    shapes = dict(shapes) if shapes is not None else window_shapes(batch or 1, window_s)
    batch = shapes["audio"][0]
    environment = capture_environment() if env else None
    say = progress or (lambda text: None)

    runners, opened = [], []
    try:
        for spec in specs:
            if isinstance(spec, Runner):
                runners.append(spec)
                continue
            say(f"loading {spec.label} ({spec.path})")
            runners.append(open_runner(spec, threads))
            opened.append(runners[-1])
        runs = _time_runners(runners, shapes, batch, compare=compare, preprocess=preprocess, seed=seed,
                             warmup_ms=warmup_ms, iterations=iterations, duration_s=duration_s,
                             environment=environment, tegrastats_interval_ms=tegrastats_interval_ms,
                             clock=clock, say=say)
    finally:
        for runner in opened:
            runner.close()
    if len(runs) == 1:
        return runs[0]
    report = {"edge_ladder": __version__, "batch": batch, "runs": runs, "env": environment}
    if compare:
        report["interleaved"] = True
        report["speedup"] = speedups(runs)
        report["speedup_definition"] = SPEEDUP_DEFINITION
    return report


def _time_runners(runners, shapes, batch, *, compare, preprocess, seed, warmup_ms, iterations, duration_s,
                  environment, tegrastats_interval_ms, clock, say) -> List[dict]:
    from .benchenv import TegrastatsSampler, summarize_tegrastats
    pool = input_pool(shapes, seed=seed)
    raw_pool, pre_fn, pre_name = None, None, None
    if preprocess:
        raw_pool = raw_window_pool(shapes, seed=seed)
        pre_name, pre_fn = make_preprocess()

    groups = [list(range(len(runners)))] if compare else [[i] for i in range(len(runners))]
    runs: List[dict] = [None] * len(runners)
    for group in groups:
        say(f"timing {', '.join(runners[i].label for i in group)}"
            f"{' interleaved' if len(group) > 1 else ''}: warm-up {warmup_ms:g} ms, "
            f">= {iterations} iterations and >= {duration_s:g} s")
        # tegrastats is sampled only when the environment is asked for (and exists: Jetson)
        sampler = TegrastatsSampler(tegrastats_interval_ms) if environment is not None else None
        with sampler if sampler is not None else contextlib.nullcontext():
            records = measure([runners[i] for i in group], pool, warmup_ms=warmup_ms, iterations=iterations,
                              duration_s=duration_s, preprocess=pre_fn, raw_pool=raw_pool, clock=clock)
        for i, record in zip(group, records):
            runs[i] = run_report(runners[i], record, batch=batch, shapes=shapes, env=environment)
            if pre_name:
                runs[i]["preprocess"] = pre_name
        if sampler is not None and sampler.available():
            total_wall = sum(records[k]["wall_s"] for k in range(len(group)))
            queries = batch * sum(records[k]["iterations"] for k in range(len(group)))
            stats = summarize_tegrastats(sampler.samples, total_wall, queries)
            if len(group) > 1:  # power cannot be split between interleaved models
                stats["scope"] = f"interleaved mix of {len(group)} models; run one model alone for its own energy"
            for i in group:
                runs[i]["tegrastats"] = stats
    return runs


def compare(models: Sequence, *, window_s: float = WINDOW_S, batch: Optional[int] = None, duration_s: float = 3.0,
            warmup_ms: float = 200.0, iterations: int = 10, **kwargs) -> dict:
    """Interleaved benchmark of several models; report['speedup'] against the first. The demo
    calls compare([ckpt, onnx, fp16_onnx], duration_s=...) and writes DIR/bench/compare.json."""
    return benchmark(models, window_s=window_s, batch=batch, duration_s=duration_s,
                     warmup_ms=warmup_ms, iterations=iterations, compare=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# Output


def report_runs(report: dict) -> List[dict]:
    return report["runs"] if "runs" in report else [report]


def write_json(path, report: dict) -> Path:
    path = Path(path)
    atomic_write_json(path, report)
    return path


def markdown_table(report: dict) -> str:
    """Latency table (ms) of every run, environment line below."""
    from .benchenv import environment_line
    runs = report_runs(report)
    ratios = report.get("speedup")
    header = ["model", "backend", "batch", "mean", "median", "p90", "p99", "min", "max", "qps", "iters"]
    if ratios:
        header.append("speedup")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for run in runs:
        stats = run["latency_ms"]
        row = [Path(run["model"]).name, run["backend"], str(run["batch"])]
        row += [f"{stats[k]:.3f}" for k in ("mean", "median", "p90", "p99", "min", "max")]
        row += [f"{run['throughput_qps']:.1f}", str(run["iterations"])]
        if ratios:
            row.append(f"{ratios[run['label']]:.2f}x")
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    for run in runs:
        stages = {k: v for k, v in run.get("stages_ms", {}).items() if k not in ("total",)}
        if stages:
            notes.append(f"- {run['label']} stages (mean ms): " +
                         ", ".join(f"{k} {v['mean']:.3f}" for k, v in stages.items()))
        if "latency_with_preprocess_ms" in run:
            notes.append(f"- {run['label']} with {run.get('preprocess', '')} preprocessing: mean "
                         f"{run['latency_with_preprocess_ms']['mean']:.3f} ms, p99 "
                         f"{run['latency_with_preprocess_ms']['p99']:.3f} ms")
        teg = run.get("tegrastats")
        if teg and teg.get("energy_per_inference_mj") is not None:
            notes.append(f"- {run['label']} tegrastats: {teg['power_mw']['mean']:.0f} mW mean, "
                         f"{teg['energy_per_inference_mj']:.2f} mJ/inference, GR3D "
                         f"{teg.get('gr3d_percent', {}).get('mean', float('nan')):.0f} %")
    if ratios:
        notes.append(f"- {SPEEDUP_DEFINITION}")
    env = report.get("env") or runs[0].get("env")
    text = "\n".join(lines)
    text += "\n\nLatency: end-to-end host ms per batch (nearest-rank percentiles, trtexec conventions)."
    if notes:
        text += "\n" + "\n".join(notes)
    if env:
        text += f"\n\nEnvironment: {environment_line(env)}"
    return text + "\n"


def write_markdown(path, report: dict) -> Path:
    path = Path(path)
    atomic_write_bytes(path, markdown_table(report).encode())
    return path


def write_histogram(path, report: dict) -> Path:
    """Latency histogram PNG (one translucent histogram per model, shared bins)."""
    from ._deps import require
    from .atomic import atomic_write_png
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = report_runs(report)
    all_ms = np.concatenate([np.asarray(r["latency_samples_ms"]) for r in runs])
    bins = np.linspace(all_ms.min(), np.percentile(all_ms, 99.5) * 1.05 + 1e-9, 60)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for run in runs:
        stats = run["latency_ms"]
        ax.hist(np.clip(run["latency_samples_ms"], None, bins[-1]), bins=bins, alpha=0.55,
                label=f"{run['label']}  mean {stats['mean']:.2f} ms, p99 {stats['p99']:.2f} ms")
    ax.set_xlabel("end-to-end latency per batch (ms); the last bin holds everything above p99.5")
    ax.set_ylabel("iterations")
    ax.set_title(f"edge-ladder bench, batch {runs[0]['batch']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return atomic_write_png(path, fig)


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(cli: argparse.ArgumentParser) -> None:
    cli.add_argument("models", nargs="+", metavar="MODEL",
                        help="checkpoint.pt (torch), model.onnx (onnxruntime) or .engine (tensorrt); "
                             "PATH@BACKEND names the backend explicitly")
    cli.add_argument("--backend", choices=BACKENDS, default=None,
                        help="backend for every MODEL (default: from the file suffix)")
    cli.add_argument("--batch", type=POSITIVE_INT, default=None, help="batch size (default 1, or the --shapes batch)")
    cli.add_argument("--shapes", default=None,
                        help="input shapes, trtexec style: audio:1x198x80,face:1x20x1x48x48 "
                             "(default: a 2 s window; masks and presence follow)")
    cli.add_argument("--warmup", type=NON_NEGATIVE, default=None,
                        help="warm-up time in ms (default 200); with --stream: ms of stream fed before timing "
                             "(default: one window)")
    cli.add_argument("--iterations", type=POSITIVE_INT, default=10, help="at least this many iterations (default 10)")
    cli.add_argument("--duration", type=NON_NEGATIVE, default=None,
                        help="and at least this many seconds (default 3); with --stream: seconds of stream (default 30)")
    cli.add_argument("--compare", action="store_true",
                        help="run all MODELs interleaved in one process and print speedups vs the first")
    cli.add_argument("--preprocess", action="store_true",
                        help="also time the front-ends (log-mel + face crops) on a raw 2 s window")
    cli.add_argument("--threads", type=POSITIVE_INT, default=None,
                        help="CPU threads of torch and ONNX Runtime (default: each library's own; "
                             "1 gives the steadiest interleaved comparison on a small CPU)")
    cli.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the random input pool")
    cli.add_argument("--json", metavar="OUT", default=None, help="write the report as JSON (atomic)")
    cli.add_argument("--md", metavar="OUT", default=None, help="write the Markdown table")
    cli.add_argument("--histogram", metavar="OUT.png", default=None, help="write a latency histogram PNG")
    cli.add_argument("--tegrastats-interval", type=POSITIVE_INT, default=100,
                        help="tegrastats sampling interval in ms on a Jetson (default 100)")
    stream = cli.add_argument_group("streaming (--stream): the CPU a live Stream takes, per stage")
    stream.add_argument("--stream", action="store_true",
                        help="feed a synthetic camera + microphone to one Stream for --duration seconds and report "
                             "the share of one core the feed calls take, per stage, and window latency")
    stream.add_argument("--camera", default=None, metavar="WxH@FPS", help="synthetic camera mode (default 1280x720@30)")
    stream.add_argument("--window", type=float, default=None, help="Stream window in seconds (default 2.0)")
    stream.add_argument("--hop", type=float, default=None, help="Stream hop in seconds (default 0.5)")
    stream.add_argument("--frontend", choices=("numpy", "kernels", "auto"), default=None,
                        help="Stream front-end (default numpy)")
    stream.add_argument("--block", type=float, default=None, help="audio block per feed_audio call in ms (default 20)")
    stream.add_argument("--camera-delay", type=NON_NEGATIVE, default=None,
                        help="seconds between a frame's capture and its arrival (default 0)")
    stream.add_argument("--video-latency", type=NON_NEGATIVE, default=None,
                        help="Stream(video_latency_s=...) (default: Stream's, 0.3 s)")
    stream.add_argument("--redetect-every", type=POSITIVE_INT, default=None,
                        help="ticks between full-frame face detections (default: FaceDetector's, 10)")


STREAM_ONLY = ("camera", "window", "hop", "frontend", "block", "camera_delay", "video_latency", "redetect_every")


def run_stream(args: argparse.Namespace) -> int:
    """`bench MODEL --stream`: edge_ladder.stream_bench on one model; prints the Markdown report."""
    import sys
    from . import stream_bench
    refused = [flag for flag, used in (("--compare", args.compare), ("--preprocess", args.preprocess),
                                       ("--batch", args.batch is not None), ("--shapes", args.shapes is not None),
                                       ("--histogram", args.histogram is not None)) if used]
    if refused:
        raise BenchError(f"{', '.join(refused)} {'does' if len(refused) == 1 else 'do'} not apply to --stream (one "
                         f"Stream, batch 1, its own inputs); drop {'it' if len(refused) == 1 else 'them'}")
    if len(args.models) != 1:
        raise BenchError(f"--stream benchmarks one MODEL; got {len(args.models)}. Run it once per model")
    spec = parse_model_spec(args.models[0], args.backend)
    if spec.backend == "torch":
        raise BenchError(f"--stream runs the deployed runtime (ONNX Runtime or TensorRT); {spec.path} is a PyTorch "
                         f"checkpoint. Export it first: edge-ladder export {spec.path} --out EXPORT_DIR")
    options = {key: value for key, value in (
        ("camera", args.camera), ("duration_s", args.duration), ("window_s", args.window), ("hop_s", args.hop),
        ("frontend_name", args.frontend), ("block_ms", args.block), ("camera_delay_s", args.camera_delay),
        ("video_latency_s", args.video_latency), ("redetect_every", args.redetect_every)) if value is not None}
    report = stream_bench.stream_benchmark(spec.path, backend=spec.backend, seed=args.seed,
                                           threads=1 if args.threads is None else args.threads,
                                           warmup_s=(args.window or 2.0) if args.warmup is None else args.warmup / 1e3,
                                           progress=lambda text: print(text, file=sys.stderr), **options)
    print(stream_bench.markdown(report), end="")
    if args.json:
        print(f"wrote {write_json(args.json, report)}")
    if args.md:
        atomic_write_bytes(Path(args.md), stream_bench.markdown(report).encode())
        print(f"wrote {args.md}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.stream:
        return run_stream(args)
    used = [f"--{name.replace('_', '-')}" for name in STREAM_ONLY if getattr(args, name) is not None]
    if used:
        raise BenchError(f"{', '.join(used)} {'applies' if len(used) == 1 else 'apply'} to --stream only; add "
                         f"--stream or drop {'it' if len(used) == 1 else 'them'}")
    if args.duration is None:
        args.duration = 3.0
    if args.warmup is None:
        args.warmup = 200.0
    if args.batch is not None and args.batch < 1:
        raise BenchError(f"--batch must be >= 1; got {args.batch}")
    if args.histogram and not str(args.histogram).lower().endswith(".png"):
        raise BenchError(f"--histogram writes a PNG; got {args.histogram!r}. Name it e.g. latency.png")
    if args.tegrastats_interval < 1:
        raise BenchError(f"--tegrastats-interval must be >= 1 ms; got {args.tegrastats_interval}")
    shapes = parse_shapes(args.shapes, args.batch) if args.shapes else window_shapes(args.batch or 1)
    import sys
    report = benchmark(args.models, shapes=shapes, batch=shapes["audio"][0], warmup_ms=args.warmup,
                       iterations=args.iterations, duration_s=args.duration, compare=args.compare,
                       preprocess=args.preprocess, seed=args.seed, backend=args.backend,
                       tegrastats_interval_ms=args.tegrastats_interval, threads=args.threads,
                       progress=lambda text: print(text, file=sys.stderr))
    print(markdown_table(report), end="")
    if args.json:
        print(f"wrote {write_json(args.json, report)}")
    if args.md:
        print(f"wrote {write_markdown(args.md, report)}")
    if args.histogram:
        print(f"wrote {write_histogram(args.histogram, report)}")
    return 0
