"""Streaming inference for a robot: feed microphone samples and camera frames as they come,
get one timestamped Prediction per hop.

    stream = Stream(model, window_s=2.0, hop_s=0.5, smoothing=0.5)
    mic callback:     for p in stream.feed_audio(chunk): act(p)     # int16 or float, 16 kHz
    camera callback:  stream.feed_frame(frame_bgr, t)               # boxes=None: runs the detector

Framing is chosen so that a window's features EQUAL the offline path (edge_ladder.media) run on
the same samples and frames, exactly:
  audio  window [t_start, t_end) is samples [round(t_start*16000), round(t_end*16000)) of the
         stream; its log-mel is frontend.log_mel of exactly those samples.
  video  face frames are model ticks k / VIDEO_FPS. Each tick takes the camera frame nearest to
         it in time (ties to the later frame): the rule media.read_video applies to a file. A
         tick is decided as soon as a frame at or after it arrives; a window that is due before
         that uses the latest frame if it is at most one tick old, else marks the tick as no face.
  faces  each tick's frame is detected once (FaceDetector.detect); within a window, a missed
         tick reuses the previous box for up to detector.max_reuse ticks (FaceDetector.track).
  presence  [audio, face] by edge_ladder.presence, the rule `edge-ladder infer` applies too: audio
         is absent when the window is silent (RMS at or below silence_dbfs), face is absent when no
         tick of the window has a face; the model is told, it never fails. Prediction.evidence is
         "none" when neither is present.

Time: all t are seconds on the caller's clock (e.g. time.monotonic()); the first feed sets the
origin. Thread-safe: the mic and camera callbacks may run in different threads.

Front-ends (Stream(frontend=...); Stream.frontend says which one runs, Stream.describe() why):
  "numpy"    edge_ladder.frontend in numpy: the definition; features equal the offline path exactly
  "kernels"  the kernels/ C library (`make kernels`): on a TensorRT model with a CUDA build, the
             CUDA kernels write straight into the engine's input buffers ("kernels-cuda",
             runtime.gpu_frontend); on an ONNX Runtime model, the host kernels ("kernels-host").
             Features equal numpy's up to float rounding (about 1e-5 relative).
  "auto"     "kernels-cuda" when it can run, else "numpy"
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .. import EMOTIONS, frontend
from .. import frontend as _frontend_module
from ..errors import EdgeLadderError
from ..faces import track_boxes
from ..features import batch_inputs
from ..presence import SILENCE_DBFS, audio_present, evidence, face_present, rms_dbfs  # noqa: F401
from .base import Model


TIE_EPS_S = 1e-6     # seconds: timestamps closer than this count as equal


class StreamError(EdgeLadderError, ValueError):
    """Bad streaming input: wrong sample format, time running backwards, bad window settings."""


@dataclass
class Prediction:
    """One window's prediction. Times in seconds on the caller's clock."""
    t_start: float
    t_end: float
    probs: np.ndarray                 # (6,) float32, EMOTIONS order
    label: str
    smoothed_probs: np.ndarray        # (6,) exponential moving average over windows
    smoothed_label: str
    presence: tuple                   # (audio present, face present)
    timings: Dict[str, float] = field(default_factory=dict)   # ms
    inputs: Optional[Dict[str, np.ndarray]] = None            # the five model inputs (keep_inputs=True)
    frontend: str = "numpy"                                   # the front-end that computed them

    @property
    def evidence(self) -> str:
        """"audio+face" | "audio" | "face" | "none" (edge_ladder.presence): with "none" the label
        is the model's prior, not a reading."""
        return evidence(*self.presence)


class _Frame:
    """One camera frame; its face box is detected at most once, and only if a tick uses it."""
    __slots__ = ("t", "image", "_box", "_known", "_lock")

    def __init__(self, t: float, image: np.ndarray, box=None, known: bool = False):
        self.t, self.image, self._box, self._known = t, image, box, known
        self._lock = threading.Lock()

    def box(self, detect):
        if not self._known:
            with self._lock:
                if not self._known:
                    self._box, self._known = detect(self.image), True
        return self._box


class AudioRing:
    """Fixed-capacity float32 ring of the latest samples, addressed by absolute sample index."""

    def __init__(self, capacity: int):
        self.buffer = np.zeros(capacity, np.float32)
        self.written = 0                  # absolute index of the next sample

    def write(self, samples: np.ndarray) -> None:
        cap = self.buffer.size
        if samples.size > cap:
            raise StreamError(f"internal: chunk of {samples.size} samples exceeds the ring ({cap}); "
                              f"Stream.feed_audio splits chunks.")
        start = self.written % cap
        first = min(samples.size, cap - start)
        self.buffer[start:start + first] = samples[:first]
        self.buffer[:samples.size - first] = samples[first:]
        self.written += samples.size

    def read(self, begin: int, end: int) -> np.ndarray:
        """Samples [begin, end) by absolute index (must still be in the ring)."""
        cap = self.buffer.size
        if end > self.written or begin < self.written - cap or begin > end:
            raise StreamError(f"internal: samples [{begin}, {end}) not in the ring "
                              f"[{self.written - cap}, {self.written}).")
        idx = np.arange(begin, end) % cap
        return self.buffer[idx]


FRONTENDS = ("numpy", "kernels", "auto")


def choose_frontend(model: Model, requested: str) -> tuple:
    """(front-end that will run: 'numpy' | 'kernels-host' | 'kernels-cuda', why) for `model`.
    Raises StreamError for a combination that cannot run (never a silent substitute)."""
    if requested not in FRONTENDS:
        raise StreamError(f"frontend must be one of {', '.join(FRONTENDS)}; got {requested!r}.")
    if requested == "numpy":
        return "numpy", "requested"
    from edge_ladder import kernels
    from .gpu_frontend import GpuFrontEndError, check_available
    tensorrt = model.backend == "tensorrt"
    if requested == "auto":
        try:
            check_available(model)
        except GpuFrontEndError as error:
            return "numpy", f"auto: CUDA kernels not usable ({error})"
        return "kernels-cuda", f"auto: {model.backend} model with device input buffers and kernels built with CUDA"
    if not kernels.is_built():
        raise StreamError(f"frontend='kernels' needs the kernels library, which is not built. Build it with: "
                          f"{kernels.BUILD_COMMAND}; or use frontend='numpy'.")
    if tensorrt:
        try:
            check_available(model)
        except GpuFrontEndError as error:
            raise StreamError(f"frontend='kernels' on a TensorRT model: {error}") from error
        return "kernels-cuda", "requested; TensorRT model: CUDA kernels into the engine's input buffers"
    return "kernels-host", f"requested; {model.backend} model: host kernels ({kernels.library_path()})"


class Stream:
    """Sliding-window inference over live audio (+ video).

    model: a runtime Model (runtime.load). window_s, hop_s: window length and step (seconds;
    multiples of 1/VIDEO_FPS so windows hold whole face ticks). smoothing: weight of the past in
    the exponential moving average of probs (0 = none, 0.5 default; < 1). detector: a
    faces.FaceDetector for frames fed without boxes (built on first need). silence_dbfs: RMS
    below which a window counts as silent (audio absent); None disables. max_frame_gap_s: a
    tick farther than this from every camera frame has no face (camera stalled). keep_inputs:
    attach each window's five model inputs to its Prediction (for logging and checks).
    frontend: "numpy" (default), "kernels" or "auto" (see the module docstring). cascade: the
    Haar cascade file of that detector (faces.find_cascade: None = $EDGE_LADDER_CASCADE or the
    default file from cv2.data / /usr/share/opencv4/haarcascades); given, it is loaded here.
    """

    def __init__(self, model: Model, window_s: float = 2.0, hop_s: float = 0.5, smoothing: float = 0.5,
                 detector=None, silence_dbfs: Optional[float] = SILENCE_DBFS, max_frame_gap_s: float = 0.25,
                 sample_rate: int = frontend.SAMPLE_RATE, keep_inputs: bool = False,
                 frontend: str = "numpy", cascade: Optional[str] = None):
        requested_frontend, frontend = frontend, _frontend_module
        fps = frontend.VIDEO_FPS
        if sample_rate != frontend.SAMPLE_RATE:
            raise StreamError(f"the model's front-end runs at {frontend.SAMPLE_RATE} Hz; got sample_rate="
                              f"{sample_rate}. Open the microphone at {frontend.SAMPLE_RATE} Hz or resample first.")
        for name, value in (("window_s", window_s), ("hop_s", hop_s)):
            ticks = value * fps
            if not value > 0 or abs(ticks - round(ticks)) > 1e-6:
                raise StreamError(f"{name} must be a positive multiple of 1/VIDEO_FPS = {1 / fps:g} s; got {value}.")
        if hop_s > window_s:
            raise StreamError(f"hop_s ({hop_s}) must not exceed window_s ({window_s}): samples would be skipped.")
        if round(window_s * sample_rate) < frontend.WIN:
            raise StreamError(f"window_s must hold at least one audio frame ({frontend.WIN} samples); got {window_s}.")
        if not 0.0 <= smoothing < 1.0:
            raise StreamError(f"smoothing must be in [0, 1): the weight of the past in the moving average; got {smoothing}.")
        self.model = model
        self.window_s, self.hop_s, self.smoothing = float(window_s), float(hop_s), float(smoothing)
        self.silence_dbfs = silence_dbfs
        self.max_frame_gap_s = float(max_frame_gap_s)
        self.detector = detector
        if detector is None and cascade is not None:   # a wrong path fails here, not in the camera thread
            from ..faces import FaceDetector
            self.detector = FaceDetector(cascade=cascade)
        self.keep_inputs = keep_inputs
        self.window_samples = round(window_s * sample_rate)
        self.hop_samples = round(hop_s * sample_rate)
        self.window_ticks = round(window_s * fps)
        self.hop_ticks = round(hop_s * fps)
        self.frontend, self.frontend_reason = choose_frontend(model, requested_frontend)
        self._gpu = None
        if self.frontend == "kernels-cuda":
            from .gpu_frontend import GpuFrontEnd
            self._gpu = GpuFrontEnd(model)
        self._lock = threading.Lock()
        self._predict_lock = threading.Lock()
        self._detector_lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.origin: Optional[float] = None
        self._audio = AudioRing(self.window_samples + self.hop_samples)
        self._next_window = 0                          # index of the next window to emit
        # video: decided ticks k -> (frame or None, raw box or None); the latest frame waits
        # for the next one to decide which ticks it is nearest to
        self._ticks: "collections.OrderedDict[int, tuple]" = collections.OrderedDict()
        self._next_tick = 0
        self._pending: Optional[_Frame] = None         # latest frame (t relative to origin)
        self._smoothed: Optional[np.ndarray] = None

    # ---------------------------------------------------------------------------------------
    # time

    def _set_origin(self, t: Optional[float]) -> None:
        if self.origin is None:
            self.origin = 0.0 if t is None else float(t)

    def _window_bounds(self, index: int):
        """Window `index` -> (first sample, end sample, first tick, end tick)."""
        first_sample = index * self.hop_samples
        first_tick = index * self.hop_ticks
        return first_sample, first_sample + self.window_samples, first_tick, first_tick + self.window_ticks

    # ---------------------------------------------------------------------------------------
    # audio

    def feed_audio(self, samples, t: Optional[float] = None) -> List[Prediction]:
        """Append mono samples (int16, or float in [-1, 1)) at 16 kHz; any chunk size.

        t: time of the chunk's first sample (optional; a gap since the previous chunk is filled
        with silence, overlap is an error). Returns the Predictions of every window completed
        by this chunk, oldest first (usually zero or one).
        """
        samples = np.asarray(samples)
        if samples.ndim == 2 and 1 in samples.shape:
            samples = samples.reshape(-1)        # sounddevice delivers (frames, channels=1)
        if samples.ndim != 1:
            raise StreamError(f"audio chunk must be mono (n,) or (n, 1); got shape {samples.shape}. "
                              f"Open the microphone with channels=1 or mix down with chunk.mean(axis=1).")
        try:
            samples = frontend.pcm_to_float(samples)
        except TypeError as error:
            raise StreamError(str(error)) from error
        if not np.isfinite(samples).all():
            raise StreamError("audio chunk holds NaN/inf samples; check the capture callback.")
        jobs = []
        with self._lock:
            self._set_origin(t)
            if t is not None:
                expected = self.origin + self._audio.written / frontend.SAMPLE_RATE
                gap = round((float(t) - expected) * frontend.SAMPLE_RATE)
                if gap < -1:
                    raise StreamError(f"audio time went backwards: chunk starts at t={t:.4f} s but {-gap} samples "
                                      f"before the end of the previous chunk ({expected:.4f} s).")
                if gap > 1:
                    samples = np.concatenate([np.zeros(gap, np.float32), samples])
            offset = 0
            while offset < samples.size:
                # write at most up to the next window's end, so the ring (window + hop) holds it
                room = self._window_bounds(self._next_window)[1] - self._audio.written
                take = min(samples.size - offset, room)
                self._audio.write(samples[offset:offset + take])
                offset += take
                while self._audio.written >= self._window_bounds(self._next_window)[1]:
                    jobs.append(self._window_inputs(self._next_window))
                    self._next_window += 1
        return [self._run(job) for job in jobs]

    # ---------------------------------------------------------------------------------------
    # video

    def feed_frame(self, frame_bgr: np.ndarray, t: float, boxes=None) -> None:
        """One camera frame (H, W, 3) uint8 BGR taken at time t (seconds, same clock as audio).

        boxes: face boxes (x, y, w, h) from your own detector (the largest is used; [] = no face),
        or None to run the stream's FaceDetector. Frames must come in time order.
        """
        frame = np.asarray(frame_bgr)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise StreamError(f"frame must be uint8 (H, W, 3) BGR; got {frame.dtype} {frame.shape}. "
                              f"Pass OpenCV's VideoCapture frames as they are.")
        if t is None or not np.isfinite(t):
            raise StreamError(f"feed_frame needs the frame's capture time t in seconds; got {t!r}.")
        box = self._largest(boxes) if boxes is not None else None
        used = []
        with self._lock:
            self._set_origin(t)
            rel = float(t) - self.origin
            if self._pending is not None and rel < self._pending.t:
                raise StreamError(f"frames must arrive in time order; got t={t} after t={self._pending.t + self.origin}.")
            new = _Frame(rel, frame, box, known=boxes is not None)
            fps = frontend.VIDEO_FPS
            while self._next_tick / fps <= rel:
                tau = self._next_tick / fps
                # nearest of the previous and the new frame; the midpoint (within float rounding
                # of timestamps like i / 15) goes to the later frame, as in media.read_video
                prev = self._pending
                choice = prev if prev is not None and tau < (prev.t + rel) / 2 - TIE_EPS_S else new
                if self._store_tick(self._next_tick, choice, tau):
                    used.append(choice)
            self._pending = new
        # detect faces here, in the camera thread, only on frames that ticks use (a 30 fps
        # camera feeds 3 frames per tick); a window built meanwhile detects on demand instead
        for chosen in used:
            chosen.box(self._detect)

    def _largest(self, boxes):
        boxes = [tuple(float(v) for v in b) for b in boxes]
        for b in boxes:
            if len(b) != 4 or not (b[2] > 0 and b[3] > 0):
                raise StreamError(f"face boxes must be (x, y, w, h) with positive w and h; got {b}.")
        return max(boxes, key=lambda b: b[2] * b[3]) if boxes else None

    def _detect(self, frame):
        with self._detector_lock:
            if self.detector is None:
                from ..faces import FaceDetector
                self.detector = FaceDetector()
        return self.detector.detect(frame)

    def _store_tick(self, k: int, choice: Optional[_Frame], tau: float) -> bool:
        """Decide tick k: the frame `choice` if it is close enough in time, else no frame.
        Returns whether the frame was used."""
        used = choice is not None and abs(choice.t - tau) <= self.max_frame_gap_s
        self._ticks[k] = choice if used else None
        self._next_tick = k + 1
        # keep the ticks the next window needs; bounded even when no audio arrives
        keep_from = max(self._window_bounds(self._next_window)[2], k + 1 - 2 * self.window_ticks)
        while self._ticks and next(iter(self._ticks)) < keep_from:
            self._ticks.popitem(last=False)
        return used

    # ---------------------------------------------------------------------------------------
    # windows

    def _window_inputs(self, index: int):
        """Under the lock: copy what window `index` needs out of the ring buffers."""
        s0, s1, k0, k1 = self._window_bounds(index)
        fps = frontend.VIDEO_FPS
        # ticks still waiting for a newer frame: the latest frame if at most one tick old
        while self._next_tick < k1:
            tau = self._next_tick / fps
            pending = self._pending
            usable = pending is not None and tau - pending.t <= 1.0 / fps
            self._store_tick(self._next_tick, pending if usable else None, tau)
        samples = self._audio.read(s0, s1)
        ticks = [self._ticks.get(k) for k in range(k0, k1)]
        return index, samples, ticks

    def window_boxes(self, ticks) -> list:
        """[_Frame or None per tick] -> [(image, square box) or (None, None) per tick]: detection
        (once per frame), tracking over misses, frontend.square_box."""
        raw_boxes = [frame.box(self._detect) if frame is not None else None for frame in ticks]
        max_reuse = self.detector.max_reuse if self.detector is not None else 0
        boxes = track_boxes(raw_boxes, max_reuse)
        return [(frame.image, frontend.square_box(box, frame.image.shape)) if frame is not None and box is not None
                else (None, None) for frame, box in zip(ticks, boxes)]

    def window_features(self, samples: np.ndarray, ticks) -> tuple:
        """(samples, [_Frame or None per tick]) -> (audio (T_a, 80), face (T_v, 48, 48), face_valid (T_v,)),
        by the numpy front-end or the host kernels (self.frontend)."""
        crops = self.window_boxes(ticks)
        face = np.zeros((len(ticks), frontend.FACE_SIZE, frontend.FACE_SIZE), np.float32)
        valid = np.array([box is not None for _, box in crops], bool)
        if self.frontend == "kernels-host":
            from edge_ladder import kernels
            audio = kernels.log_mel(samples)
            for i, (image, box) in enumerate(crops):
                if box is not None:
                    face[i] = kernels.face_crops(image, np.asarray(box, np.float32)[None])[0]
            return audio, face, valid
        audio = frontend.log_mel(samples)
        for i, (image, box) in enumerate(crops):
            if box is not None:
                face[i] = frontend.face_crop(image, box)
        return audio, face, valid

    def _run(self, job) -> Prediction:
        index, samples, ticks = job
        start = time.perf_counter()
        present = audio_present(samples, self.silence_dbfs)
        if self._gpu is not None:
            crops = self.window_boxes(ticks)
            boxes_ms = (time.perf_counter() - start) * 1e3
            result, feeds = self._gpu.run(samples, crops, audio_present=present, keep_inputs=self.keep_inputs)
            result.timings["preprocess"] += boxes_ms
            result.timings["total"] += boxes_ms
            presence = (bool(present), face_present([box is not None for _, box in crops]))
        else:
            audio, face, valid = self.window_features(samples, ticks)
            feeds = batch_inputs([audio], [face], [valid], audio_present=[present], face_present=[face_present(valid)])
            preprocess_ms = (time.perf_counter() - start) * 1e3
            result = self.model.predict(feeds, preprocess_ms=preprocess_ms)
            presence = (bool(feeds["presence"][0, 0]), bool(feeds["presence"][0, 1]))
        probs = result.probs[0]
        with self._predict_lock:
            if self._smoothed is None or self.smoothing == 0.0:
                self._smoothed = probs.copy()
            else:
                self._smoothed = (self.smoothing * self._smoothed + (1.0 - self.smoothing) * probs).astype(np.float32)
            smoothed = self._smoothed.copy()
        s0, s1, _, _ = self._window_bounds(index)
        rate = frontend.SAMPLE_RATE
        return Prediction(t_start=self.origin + s0 / rate, t_end=self.origin + s1 / rate, probs=probs,
                          label=result.labels[0], smoothed_probs=smoothed,
                          smoothed_label=EMOTIONS[int(np.argmax(smoothed))],
                          presence=presence, timings=result.timings,
                          inputs=feeds if self.keep_inputs else None, frontend=self.frontend)

    def describe(self) -> str:
        """Window settings, the front-end that runs and why, and the model."""
        return (f"Stream window {self.window_s:g} s, hop {self.hop_s:g} s, smoothing {self.smoothing:g}\n"
                f"  front-end {self.frontend} ({self.frontend_reason})\n" + self.model.describe())

    def close(self) -> None:
        """Free the GPU front-end's device buffers (the model stays open: close it yourself)."""
        if self._gpu is not None:
            self._gpu.close()

    def reset(self) -> None:
        """Forget all buffered audio, frames and smoothing (e.g. after the robot turns to a new person)."""
        with self._lock, self._predict_lock:
            self._clear()
