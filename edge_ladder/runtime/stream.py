"""Streaming inference for a robot: feed microphone samples and camera frames as they come,
get one timestamped Prediction per hop.

    stream = Stream(model, window_s=2.0, hop_s=0.5, smoothing=0.5)
    audio:   for p in stream.feed_audio(chunk, t): act(p)      # int16 or float in [-1, 1], 16 kHz
    camera:  for p in stream.feed_frame(frame_bgr, t): act(p)  # boxes=None: the stream tracks faces
    end:     for p in stream.flush(): act(p)                   # the last, partial window

Every feed call returns the Predictions of the windows it completed, oldest first (usually none
or one): feed_audio when a window's audio completes it, feed_frame when a late frame does (see
"late frames"). When two threads feed, a window is run by whichever thread is not already
running one, and comes back from that thread's call; a call never waits for a model run of
another thread's, so the audio thread is never held up by inference it did not start.

Framing is chosen so that a window's features EQUAL the offline path (edge_ladder.media on the
whole recording, then the window's slice) exactly:
  audio  window [t_start, t_end) is samples [round(t_start*16000), round(t_end*16000)) of the
         stream. Its log-mel frames are the stream's frames f (samples [160 f, 160 f + 400)),
         each computed once, at the first window that needs it (frontend.log_mel computes
         every frame on its own, so frames computed a hop at a time equal the whole clip's).
  video  face frames are model ticks k / VIDEO_FPS. Each tick takes the camera frame nearest to
         it in time (ties to the later frame): the rule media.read_video applies to a file. A
         tick is decided as soon as a frame at or after it arrives, or when its window is due
         before that (then: the latest frame if it is at most one tick old, else no face).
  faces  each decided tick runs the tracking rule once, in tick order (faces.FaceTracker: a
         search around the last box, full-frame detection when the face is lost and every
         detector.redetect_every ticks), then its face crop is cut once and kept; a window
         assembles its ticks' crops. `prepare` and `infer` run the same rule over a clip's ticks.
  presence  [audio, face] by edge_ladder.presence, the rule `edge-ladder infer` applies too: audio
         is absent when the window is silent (RMS at or below silence_dbfs), face is absent when no
         tick of the window has a face; the model is told, it never fails. Prediction.evidence is
         "none" when neither is present.

Late frames (video_latency_s): a camera delivers a frame some time after its capture time t
(USB cameras plus decoding: 0.1-0.3 s). A window whose audio is complete waits until frames up
to its end have arrived (its last tick is decided) or until the audio clock passes its end by
video_latency_s, whichever is first; its ticks are decided then. Until the first frame arrives
the stream has no camera and windows never wait.

Time: all t are seconds on the caller's clock (e.g. time.monotonic()); the first feed sets the
origin. Clock mistakes are refused with StreamError naming both clocks' values: a frame more than
max_clock_skew_s from the audio clock (time.time() mixed with time.monotonic(), milliseconds),
audio timestamps in milliseconds, audio going backwards. A forward jump in audio time longer than
the window (the audio thread stalled) does not replay the gap: the windows that end inside it
are skipped (no work), and the next Prediction's `skipped` says how many. Shorter gaps are
filled with silence.

Front-ends (Stream(frontend=...); Stream.frontend says which one runs, Stream.describe() why):
  "numpy"    edge_ladder.frontend in numpy: the definition; features equal the offline path exactly
  "kernels"  the kernels/ C library (`make kernels`): on a TensorRT model with a CUDA build, the
             CUDA kernels write straight into the engine's input buffers ("kernels-cuda",
             runtime.gpu_frontend; the GPU computes each window's log-mel and crops from its PCM
             and frames, the host only tracks faces); on an ONNX Runtime model, the host kernels
             ("kernels-host", per frame and per tick as numpy). Features equal numpy's up to
             float rounding (about 1e-5 relative).
  "auto"     "kernels-cuda" when it can run, else "numpy"

Cost: Stream.stats() gives the thread CPU seconds the feed calls spent per stage (audio framing,
log-mel, detection, tracking, crops, model, other); `edge-ladder bench MODEL --stream` measures
them on a synthetic 720p camera + microphone.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .. import EMOTIONS, frontend
from .. import frontend as _frontend_module
from ..errors import EdgeLadderError
from ..features import batch_inputs
from ..presence import SILENCE_DBFS, audio_present, evidence, face_present, rms_dbfs  # noqa: F401
from .base import Model


TIE_EPS_S = 1e-6                  # seconds: timestamps closer than this count as equal
DEFAULT_VIDEO_LATENCY_S = 0.3     # a USB camera's capture-to-delivery time plus decoding
DEFAULT_MAX_CLOCK_SKEW_S = 60.0   # frame time vs audio clock beyond this: a clock mistake
EPOCH_LIKE_S = 1e9                # time.time() values are above this (2001+); monotonic clocks below
CHANNEL_ORDERS = ("bgr", "rgb", "gray")
STAGES = ("audio framing", "log-mel", "detection", "tracking", "crops", "model", "other")


class StreamError(EdgeLadderError, ValueError):
    """Bad streaming input: wrong sample format, clocks that disagree, bad window settings."""


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
    # ms: the model's (and 'preprocess'), 'latency': from the entry of the feed call that made the
    # window due to this Prediction (wall), 'latency_cpu': the same in CPU time of that thread
    timings: Dict[str, float] = field(default_factory=dict)
    inputs: Optional[Dict[str, np.ndarray]] = None            # the five model inputs (keep_inputs=True)
    frontend: str = "numpy"                                   # the front-end that computed them
    skipped: int = 0                  # windows skipped just before this one (a forward jump in audio time)
    partial: bool = False             # the last window of the input, shorter than window_s (flush())

    @property
    def evidence(self) -> str:
        """"audio+face" | "audio" | "face" | "none" (edge_ladder.presence): with "none" the label
        is the model's prior, not a reading."""
        return evidence(*self.presence)


def clock_hint(value: float, reference: float, origin: float) -> str:
    """The likely mistake behind two clock readings that disagree, as a sentence."""
    if (abs(value) >= EPOCH_LIKE_S) != (abs(reference) >= EPOCH_LIKE_S):
        return ("one looks like time.time() (seconds since 1970) and the other like time.monotonic() "
                "(seconds since boot): take both from time.monotonic()")
    for a, b in ((value, reference), (value - origin, reference - origin)):
        if a > 0 and b > 0 and 950.0 <= max(a, b) / min(a, b) <= 1050.0:
            return "one of them counts milliseconds: pass seconds (t_ms / 1000)"
    return ("take audio and frame times from the same clock (time.monotonic()); if the microphone or "
            "camera delivered nothing for that long, call stream.reset() before feeding again")


class _Frame:
    """One camera frame: time (relative to the origin), image, and the caller's box if given."""
    __slots__ = ("t", "image", "box", "given", "_bgr")

    def __init__(self, t: float, image: np.ndarray, box=None, given: bool = False):
        self.t, self.image, self.box, self.given, self._bgr = t, image, box, given, None

    def bgr(self, cv2_module) -> np.ndarray:
        """A gray image as 3-channel BGR (for the kernels, which crop colour frames), made once."""
        if self._bgr is None:
            self._bgr = cv2_module.cvtColor(self.image, cv2_module.COLOR_GRAY2BGR)
        return self._bgr


class _Tick:
    """One model tick: its frame (or None), then, once processed in tick order, its square crop
    box and face crop (None: no face). The image is dropped once cropped (kept for the GPU)."""
    __slots__ = ("k", "frame", "done", "square", "crop", "image")

    def __init__(self, k: int, frame: Optional[_Frame]):
        self.k, self.frame, self.done = k, frame, False
        self.square = self.crop = self.image = None


_NO_TICK = _Tick(-1, None)        # a tick no frame ever covered, or one dropped (camera far ahead)
_NO_TICK.done = True


@dataclass
class _Job:
    """What one window needs, copied out under the lock when it becomes due."""
    index: int
    first_sample: int
    samples: np.ndarray
    ticks: list
    tick_end: int                     # the window's ticks are [tick_end - len(ticks), tick_end)
    skipped: int
    entered: float                    # perf_counter at the entry of the feed call that made it due
    entered_cpu: float                # cpu_clock() then, in that call's thread
    thread: int                       # that thread's id
    partial: bool = False


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

    def jump(self, position: int) -> None:
        """Continue at absolute index `position` (> written); everything before it reads as silence."""
        self.buffer[:] = 0.0
        self.written = int(position)

    def read(self, begin: int, end: int) -> np.ndarray:
        """Samples [begin, end) by absolute index (must still be in the ring)."""
        cap = self.buffer.size
        if end > self.written or begin < self.written - cap or begin > end:
            raise StreamError(f"internal: samples [{begin}, {end}) not in the ring "
                              f"[{self.written - cap}, {self.written}).")
        n, first = end - begin, begin % cap
        if first + n <= cap:
            return self.buffer[first:first + n].copy()
        return np.concatenate([self.buffer[first:], self.buffer[:first + n - cap]])


class LogMelCache:
    """The stream's log-mel frames by absolute frame index f (samples [HOP f, HOP f + WIN)), each
    computed once: window() computes only the frames no earlier window computed and keeps the
    frames the next windows share. Windows must come in time order."""

    def __init__(self, compute):
        self.compute = compute            # PCM float32 (n,) -> (T, n_mels) float32, frames from sample 0
        self.start = self.end = 0         # frames [start, end) are in self.frames
        self.frames = np.zeros((0, frontend.N_MELS), np.float32)
        self.computed = 0                 # frames computed so far (for the stats)

    def window(self, first_frame: int, n_frames: int, samples: np.ndarray, first_sample: int) -> np.ndarray:
        """Frames [first_frame, first_frame + n_frames) -> (n_frames, n_mels); `samples` are the
        stream's samples from absolute index first_sample and hold every one of those frames."""
        stop = first_frame + n_frames
        if not self.start <= first_frame <= self.end:          # a gap (skipped windows) or the first window
            self.start = self.end = first_frame
            self.frames = self.frames[:0]
        if stop > self.end:
            begin = self.end * frontend.HOP - first_sample
            new = self.compute(samples[begin:(stop - 1) * frontend.HOP + frontend.WIN - first_sample])
            if new.shape[0] != stop - self.end:
                raise StreamError(f"internal: computed {new.shape[0]} log-mel frames, expected {stop - self.end}.")
            self.computed += new.shape[0]
            self.frames = np.concatenate([self.frames[first_frame - self.start:], new])
            self.start, self.end = first_frame, stop
        return self.frames[first_frame - self.start:stop - self.start]


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
    faces.FaceDetector for frames fed without boxes (built on first need; its redetect_every,
    max_reuse and search_margin set the tracking rule). silence_dbfs: RMS below which a window
    counts as silent (audio absent); None disables. max_frame_gap_s: a tick farther than this
    from every camera frame has no face (camera stalled). keep_inputs: attach each window's five
    model inputs to its Prediction (for logging and checks). frontend: "numpy" (default),
    "kernels" or "auto" (see the module docstring). video_latency_s: how long past a window's
    end (in audio time) it may wait for late frames (default 0.3 s, a USB camera; 0 = never
    wait). channel_order: "bgr" (OpenCV), "rgb" or "gray" frames. max_clock_skew_s: a frame
    farther than this from the audio clock is refused as a clock mistake (None: never).
    cascade: the Haar cascade file of that detector (faces.find_cascade: None = $EDGE_LADDER_CASCADE
    or the default file from cv2.data / /usr/share/opencv4/haarcascades); given, it is loaded here.
    cpu_clock: the clock stats() charges the stages with (time.thread_time: the feeding
    threads' own CPU; time.process_time counts OpenCV's worker threads too, when nothing else
    in the process runs meanwhile).
    """

    def __init__(self, model: Model, window_s: float = 2.0, hop_s: float = 0.5, smoothing: float = 0.5,
                 detector=None, silence_dbfs: Optional[float] = SILENCE_DBFS, max_frame_gap_s: float = 0.25,
                 sample_rate: int = frontend.SAMPLE_RATE, keep_inputs: bool = False,
                 frontend: str = "numpy", video_latency_s: float = DEFAULT_VIDEO_LATENCY_S,
                 channel_order: str = "bgr", max_clock_skew_s: Optional[float] = DEFAULT_MAX_CLOCK_SKEW_S,
                 cascade: Optional[str] = None, cpu_clock=time.thread_time):
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
        if not (isinstance(video_latency_s, (int, float)) and 0.0 <= video_latency_s <= 10.0):
            raise StreamError(f"video_latency_s must be in [0, 10] seconds (how long a window may wait for late "
                              f"frames; {DEFAULT_VIDEO_LATENCY_S} suits a USB camera); got {video_latency_s!r}.")
        if channel_order not in CHANNEL_ORDERS:
            raise StreamError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}; got {channel_order!r}.")
        if max_clock_skew_s is not None and not max_clock_skew_s > 0:
            raise StreamError(f"max_clock_skew_s must be > 0 seconds or None; got {max_clock_skew_s!r}.")
        self.model = model
        self.window_s, self.hop_s, self.smoothing = float(window_s), float(hop_s), float(smoothing)
        self.silence_dbfs = silence_dbfs
        self.max_frame_gap_s = float(max_frame_gap_s)
        self.video_latency_s = float(video_latency_s)
        self.channel_order = channel_order
        self.max_clock_skew_s = None if max_clock_skew_s is None else float(max_clock_skew_s)
        self.detector = detector
        if detector is None and cascade is not None:   # a wrong path fails here, not in the camera thread
            from ..faces import FaceDetector
            self.detector = FaceDetector(cascade=cascade)
        self.keep_inputs = keep_inputs
        self.cpu_clock = cpu_clock
        self.window_samples = round(window_s * sample_rate)
        self.hop_samples = round(hop_s * sample_rate)
        self.latency_samples = round(self.video_latency_s * sample_rate)
        self.window_ticks = round(window_s * fps)
        self.hop_ticks = round(hop_s * fps)
        self.frontend, self.frontend_reason = choose_frontend(model, requested_frontend)
        self._gpu = None
        if self.frontend == "kernels-cuda":
            from .gpu_frontend import GpuFrontEnd
            self._gpu = GpuFrontEnd(model)
        self._lock = threading.Lock()          # all bookkeeping; held briefly, never around heavy work
        self._track_lock = threading.Lock()    # the tracking rule and crops, tick by tick in order
        self._emit_lock = threading.Lock()     # model runs, window by window in order
        self._detector_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._cpu = dict.fromkeys(STAGES, 0.0)
        self._clear()

    def _clear(self) -> None:
        self.origin: Optional[float] = None
        self._audio = AudioRing(self.window_samples + self.hop_samples + self.latency_samples)
        self._audio_fed = False
        self._last_audio = None                        # (t, n samples) of the last timestamped chunk
        self._next_window = 0                          # index of the next window to emit
        self._emitted_end = 0                          # end sample of the last window emitted
        self._flushed_at = -1                          # `written` at the last flush's partial window
        self._skipped = 0                              # windows skipped since the last Prediction
        # video: decided ticks k -> _Tick; the latest frame waits for the next one to decide which
        # ticks it is nearest to; decided ticks wait in _untracked for the tracking rule
        self._ticks: "collections.OrderedDict[int, _Tick]" = collections.OrderedDict()
        self._next_tick = 0
        self._pending: Optional[_Frame] = None         # latest frame (t relative to origin)
        self._untracked: collections.deque = collections.deque()   # _Tick, or int: ticks skipped
        self._tracker = None
        self._given = (None, 0)                        # caller boxes: (last box, consecutive misses)
        self._jobs: collections.deque = collections.deque()
        self._mel = LogMelCache(self._log_mel_function())
        self._smoothed: Optional[np.ndarray] = None
        self._counts = {"windows": 0, "partial": 0, "skipped": 0, "face_windows": 0, "ticks": 0, "face_ticks": 0}

    def _log_mel_function(self):
        if self.frontend == "kernels-host":
            from edge_ladder import kernels
            return kernels.log_mel
        return frontend.log_mel

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

    def _audio_clock(self) -> float:
        """Time of the next audio sample on the caller's clock."""
        return self.origin + self._audio.written / frontend.SAMPLE_RATE

    def _clock_error(self, what: str, value: float, reference_name: str, reference: float) -> StreamError:
        return StreamError(f"{what} t={value:.6g} s is {value - reference:+.6g} s from {reference_name} "
                           f"({reference:.6g} s), more than max_clock_skew_s={self.max_clock_skew_s:g}: "
                           f"{clock_hint(value, reference, self.origin)}.")

    def _check_frame_clock(self, t: float) -> None:
        """Under the lock: refuse a frame time far from the stream's clock."""
        if self.max_clock_skew_s is None:
            return
        if self._audio_fed:
            reference, name = self._audio_clock(), "the stream's audio clock (the time of its next sample)"
            if self._last_audio is None:
                name += "; audio fed without t counts from the first feed's time"
        elif self._pending is not None:
            reference, name = self.origin + self._pending.t, "the previous frame"
        else:
            return
        if abs(t - reference) > self.max_clock_skew_s:
            raise self._clock_error("frame time", t, name, reference)

    def _place_audio(self, t: float, samples: np.ndarray) -> np.ndarray:
        """Under the lock: put a timestamped chunk at its time -> the samples to write (a short gap
        is filled with silence; a gap longer than the window is jumped over, see _jump)."""
        rate = frontend.SAMPLE_RATE
        if self.max_clock_skew_s is not None and not self._audio_fed and self._pending is not None:
            frame_t = self.origin + self._pending.t       # first audio after frames: one clock for both?
            if abs(t - frame_t) > self.max_clock_skew_s:
                raise self._clock_error("the first audio chunk's time", t, "the latest camera frame", frame_t)
        if self._last_audio is not None:
            last_t, last_n = self._last_audio
            advance, span = t - last_t, last_n / rate
            if span >= 0.005 and 950.0 <= advance / span <= 1050.0:
                raise StreamError(f"audio timestamps advance {advance / span:.0f}x faster than the samples: chunk at "
                                  f"t={t:.6g} after t={last_t:.6g}, which held {last_n} samples ({span:.4g} s). "
                                  f"They look like milliseconds: pass t in seconds (t_ms / 1000).")
        self._last_audio = (t, samples.size)
        expected = self._audio_clock()
        gap = round((t - expected) * rate)
        if gap < -1:
            if self.max_clock_skew_s is not None and -gap / rate > self.max_clock_skew_s:
                raise self._clock_error("audio chunk time", t, "the end of the previous chunk", expected)
            raise StreamError(f"audio time went backwards: chunk starts at t={t:.4f} s but {-gap} samples "
                              f"before the end of the previous chunk ({expected:.4f} s).")
        if gap > self.window_samples:
            self._jump(self._audio.written + gap)
        elif gap > 1:
            samples = np.concatenate([np.zeros(gap, np.float32), samples])
        return samples

    def _jump(self, position: int) -> None:
        """Under the lock: audio continues at absolute sample `position`, more than a window after
        the last one. Windows whose audio is complete are emitted first; every window that ends
        at or before `position` (old samples and silence only) is skipped without any work."""
        self._collect_due((time.perf_counter(), self.cpu_clock()), force=True)
        first_after = (position - self.window_samples) // self.hop_samples + 1
        if first_after > self._next_window:
            self._skipped += first_after - self._next_window
            self._counts["skipped"] += first_after - self._next_window
            self._next_window = first_after
        self._audio.jump(position)

    # ---------------------------------------------------------------------------------------
    # audio

    def _audio_samples(self, samples) -> np.ndarray:
        """A chunk as mono float32 in [-1, 1], or StreamError saying what is wrong and the fix."""
        samples = np.asarray(samples)
        if samples.ndim == 2 and 1 in samples.shape:
            samples = samples.reshape(-1)        # sounddevice delivers (frames, channels=1)
        if samples.ndim != 1:
            raise StreamError(f"audio chunk must be mono (n,) or (n, 1); got shape {samples.shape}. "
                              f"Open the microphone with channels=1 or mix down with chunk.mean(axis=1).")
        floating = np.issubdtype(samples.dtype, np.floating)
        try:
            samples = frontend.pcm_to_float(samples)
        except TypeError as error:
            raise StreamError(str(error)) from error
        if not np.isfinite(samples).all():
            raise StreamError("audio chunk holds NaN/inf samples; check the capture callback.")
        if floating and samples.size:
            peak = float(np.abs(samples).max())
            if peak > 1.0:
                raise StreamError(f"float audio must lie in [-1, 1]; this chunk peaks at {peak:.6g}"
                                  f"{' (int16 values stored as float?)' if peak <= 32768.0 else ''}. Pass int16 "
                                  f"samples as they are, or divide them by 32768 (samples / 32768.0).")
        return samples

    def feed_audio(self, samples, t: Optional[float] = None) -> List[Prediction]:
        """Append mono samples (int16, or float in [-1, 1]) at 16 kHz; any chunk size.

        t: time of the chunk's first sample (optional; a gap since the previous chunk is filled
        with silence, or skipped when longer than the window; overlap is an error). Returns the
        Predictions of the windows completed by this call, oldest first (usually zero or one).
        """
        cpu = self.cpu_clock()
        entered = (time.perf_counter(), cpu)
        samples = self._audio_samples(samples)
        with self._lock:
            self._set_origin(t)
            if t is not None:
                if not np.isfinite(t):
                    raise StreamError(f"audio time t must be finite seconds or None; got {t!r}.")
                samples = self._place_audio(float(t), samples)
            offset = 0
            while offset < samples.size:
                # write at most up to the pending window's end (or its deadline while it waits for
                # frames), so the ring (window + hop + video latency) still holds it
                take = min(samples.size - offset, self._write_limit() - self._audio.written)
                if take <= 0:
                    raise StreamError(f"internal: no room to write audio (window {self._next_window}).")
                self._audio.write(samples[offset:offset + take])
                self._audio_fed = True
                offset += take
                self._collect_due(entered)
        self._charge("audio framing", cpu)
        return self._drain()

    def _write_limit(self) -> int:
        s_end = self._window_bounds(self._next_window)[1]
        return s_end if self._audio.written < s_end else s_end + self.latency_samples

    # ---------------------------------------------------------------------------------------
    # video

    def _check_frame(self, frame) -> np.ndarray:
        frame = np.asarray(frame)
        if self.channel_order == "gray":
            if frame.ndim == 3 and frame.shape[2] == 1:
                frame = frame[:, :, 0]
            if frame.dtype != np.uint8 or frame.ndim != 2:
                raise StreamError(f"frame must be uint8 (H, W) gray (Stream channel_order='gray'); got {frame.dtype} "
                                  f"{frame.shape}. For colour frames use channel_order='bgr' or 'rgb'.")
            return frame
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise StreamError(f"frame must be uint8 (H, W, 3) {self.channel_order.upper()} (Stream channel_order="
                              f"'{self.channel_order}'); got {frame.dtype} {frame.shape}. Pass OpenCV's VideoCapture "
                              f"frames as they are; for gray frames use Stream(channel_order='gray').")
        return frame

    def feed_frame(self, frame_bgr: np.ndarray, t: float, boxes=None) -> List[Prediction]:
        """One camera frame (H, W, 3) uint8 BGR (RGB or (H, W) gray as Stream's channel_order
        says) captured at time t (seconds, same clock as audio).

        boxes: face boxes (x, y, w, h) from your own detector (the largest is used; [] = no face),
        or None to run the stream's face tracking. Frames must come in time order. Returns the
        Predictions of windows that were waiting for this frame (see late frames), oldest first.
        """
        cpu = self.cpu_clock()
        entered = (time.perf_counter(), cpu)
        frame = self._check_frame(frame_bgr)
        if t is None or not np.isfinite(t):
            raise StreamError(f"feed_frame needs the frame's capture time t in seconds; got {t!r}.")
        t = float(t)
        box = self._largest(boxes) if boxes is not None else None
        with self._lock:
            self._set_origin(t)
            self._check_frame_clock(t)
            rel = t - self.origin
            if self._pending is not None and rel < self._pending.t:
                raise StreamError(f"frames must arrive in time order; got t={t} after t={self._pending.t + self.origin}.")
            new = _Frame(rel, frame, box, given=boxes is not None)
            self._skip_stale_ticks(rel)
            fps = frontend.VIDEO_FPS
            while self._next_tick / fps <= rel:
                tau = self._next_tick / fps
                # nearest of the previous and the new frame; the midpoint (within float rounding
                # of timestamps like i / 15) goes to the later frame, as in media.read_video
                prev = self._pending
                choice = prev if prev is not None and tau < (prev.t + rel) / 2 - TIE_EPS_S else new
                self._store_tick(self._next_tick, choice, tau)
            self._pending = new
            self._collect_due(entered)
        self._charge("other", cpu)
        # the tracking rule and crops run here, in the camera's thread, on the ticks this frame
        # decided (a 30 fps camera feeds 3 frames per tick); a window due meanwhile runs them itself
        self._track_pending()
        return self._drain()

    def _largest(self, boxes):
        boxes = [tuple(float(v) for v in b) for b in boxes]
        for b in boxes:
            if len(b) != 4 or not (b[2] > 0 and b[3] > 0):
                raise StreamError(f"face boxes must be (x, y, w, h) with positive w and h; got {b}.")
        return max(boxes, key=lambda b: b[2] * b[3]) if boxes else None

    def _skip_stale_ticks(self, rel: float) -> None:
        """Under the lock: ticks more than two windows before a frame that arrives after a long
        camera gap are decided without a frame in O(1) (they are past keeping anyway)."""
        prev = self._pending
        horizon = math.floor(rel * frontend.VIDEO_FPS) - 2 * self.window_ticks
        if horizon > self._next_tick and (prev is None or horizon / frontend.VIDEO_FPS > prev.t + self.max_frame_gap_s):
            self._untracked.append(horizon - self._next_tick)
            self._next_tick = horizon

    def _store_tick(self, k: int, choice: Optional[_Frame], tau: float) -> None:
        """Under the lock: decide tick k, the frame `choice` if it is close enough in time, else
        no frame; queue it for the tracking rule."""
        used = choice is not None and abs(choice.t - tau) <= self.max_frame_gap_s
        tick = _Tick(k, choice if used else None)
        self._ticks[k] = tick
        self._untracked.append(tick)
        self._next_tick = k + 1
        # keep the ticks the next window needs; bounded even when no audio arrives
        keep_from = max(self._window_bounds(self._next_window)[2], k + 1 - 2 * self.window_ticks)
        while self._ticks and next(iter(self._ticks)) < keep_from:
            self._ticks.popitem(last=False)

    def _decide_ticks_until(self, k_end: int) -> None:
        """Under the lock: decide ticks up to k_end now (a window is due before frames reached
        them): the latest frame if it is at most one tick old, else no frame."""
        fps = frontend.VIDEO_FPS
        while self._next_tick < k_end:
            tau = self._next_tick / fps
            pending = self._pending
            usable = pending is not None and tau - pending.t <= 1.0 / fps
            self._store_tick(self._next_tick, pending if usable else None, tau)

    def _detector_instance(self):
        with self._detector_lock:
            if self.detector is None:
                from ..faces import FaceDetector
                self.detector = FaceDetector()
        return self.detector

    def _track_pending(self, until_tick: Optional[int] = None) -> None:
        """Run the tracking rule and crop each decided tick, in tick order (up to until_tick)."""
        with self._track_lock:
            while True:
                with self._lock:
                    if not self._untracked:
                        return
                    item = self._untracked[0]
                    if until_tick is not None and isinstance(item, _Tick) and item.k >= until_tick:
                        return
                    self._untracked.popleft()
                if isinstance(item, int):
                    if self._tracker is not None:
                        self._tracker.skip(item)
                    self._given = (self._given[0], self._given[1] + item)
                else:
                    self._process_tick(item)

    def _process_tick(self, tick: _Tick) -> None:
        """Under the track lock: one tick's face box (tracking rule, or the caller's box with the
        reuse rule), square crop box and crop."""
        cpu = self.cpu_clock()
        frame, box, stage = tick.frame, None, "other"
        if frame is None or frame.given:
            max_reuse = self.detector.max_reuse if self.detector is not None else 0
            last, missed = self._given
            raw = frame.box if frame is not None else None
            if raw is not None:
                last, missed = raw, 0
            elif last is not None and missed < max_reuse:
                raw, missed = last, missed + 1
            else:
                missed += 1
            self._given = (last, missed)
            box = raw if frame is not None else None
            if frame is None and self._tracker is not None:
                self._tracker.update(None)
        else:
            if self._tracker is None:
                self._tracker = self._detector_instance().tracker()
            box = self._tracker.update(frame.image, self.channel_order)
            stage = "detection" if "full" in self._tracker.last_kind else "tracking"
        self._charge(stage, cpu)
        if box is not None:
            cpu = self.cpu_clock()
            image = frame.image
            tick.square = frontend.square_box(box, image.shape)
            if self._gpu is not None:
                tick.image = frame.bgr(self._detector_instance()._cv2) if self.channel_order == "gray" else image
            elif self.frontend == "kernels-host":
                from edge_ladder import kernels
                colour = frame.bgr(self._detector_instance()._cv2) if self.channel_order == "gray" else image
                order = "bgr" if self.channel_order == "gray" else self.channel_order
                tick.crop = kernels.face_crops(colour, np.asarray(tick.square, np.float32)[None],
                                               channel_order=order)[0]
            else:
                tick.crop = frontend.face_crop(image, tick.square, channel_order=self.channel_order)
            self._charge("crops", cpu)
        tick.frame = None                      # the image is not needed any more (the GPU keeps tick.image)
        tick.done = True

    # ---------------------------------------------------------------------------------------
    # windows

    def _collect_due(self, entered: tuple, force: bool = False) -> None:
        """Under the lock: queue every window that is due, in order. A window is due when its
        audio is complete and its frames have arrived, there is no camera, or the audio clock is
        video_latency_s past its end (force: now)."""
        while True:
            s0, s1, k0, k1 = self._window_bounds(self._next_window)
            written = self._audio.written
            if written < s1:
                return
            video_ready = self._pending is None or self._next_tick >= k1
            if not (video_ready or force or written >= s1 + self.latency_samples):
                return
            self._decide_ticks_until(k1)
            self._queue_job(s0, s1, k0, k1, entered)
            self._next_window += 1

    def _queue_job(self, s0: int, s1: int, k0: int, k1: int, entered: tuple, partial: bool = False) -> None:
        """entered: (perf_counter, cpu_clock) at the entry of the feed call that made the window due."""
        ticks = [self._ticks.get(k, _NO_TICK) for k in range(k0, k1)]
        self._jobs.append(_Job(self._next_window, s0, self._audio.read(s0, s1), ticks, k1, self._skipped,
                               entered[0], entered[1], threading.get_ident(), partial))
        self._skipped = 0
        self._emitted_end = max(self._emitted_end, s1)

    def flush(self) -> List[Prediction]:
        """End of input: emit the windows still waiting for frames (their ticks decided now) and
        a last, partial window (Prediction.partial) over the samples after the last window's end,
        if there are any. Feeding may continue afterwards (the grid of windows goes on)."""
        cpu = self.cpu_clock()
        entered = (time.perf_counter(), cpu)
        with self._lock:
            if self.origin is not None:
                self._collect_due(entered, force=True)
                written = self._audio.written
                if written > self._emitted_end and written != self._flushed_at:
                    s0, _, k0, _ = self._window_bounds(self._next_window)
                    k_end = max(k0, math.ceil(written / frontend.SAMPLE_RATE * frontend.VIDEO_FPS - 1e-9))
                    self._decide_ticks_until(k_end)
                    self._queue_job(s0, written, k0, k_end, entered, partial=True)
                    self._flushed_at = written
        self._charge("other", cpu)
        return self._drain()

    def _drain(self) -> List[Prediction]:
        """Run the queued windows in order, unless another thread is running them (it then runs
        these too: a caller never waits for another thread's model run)."""
        out: List[Prediction] = []
        while self._emit_lock.acquire(blocking=False):
            try:
                while True:
                    with self._lock:
                        job = self._jobs.popleft() if self._jobs else None
                    if job is None:
                        break
                    out.append(self._run(job))
            finally:
                self._emit_lock.release()
            with self._lock:
                if not self._jobs:          # none queued between our last look and the release
                    break
        return out

    def _run(self, job: _Job) -> Prediction:
        """Under the emit lock: one window's features (cached frames + crops), model, smoothing."""
        self._track_pending(until_tick=job.tick_end)
        start, cpu = time.perf_counter(), self.cpu_clock()
        samples = job.samples
        n_frames = frontend.n_audio_frames(samples.size)
        present = audio_present(samples, self.silence_dbfs) and n_frames > 0
        valid = np.array([tick.square is not None for tick in job.ticks], bool)
        if self._gpu is not None:
            crops = [(tick.image, tick.square) if tick.square is not None else (None, None) for tick in job.ticks]
            order = "bgr" if self.channel_order == "gray" else self.channel_order
            self._charge("other", cpu)
            cpu = self.cpu_clock()
            result, feeds = self._gpu.run(samples, crops, audio_present=present, keep_inputs=self.keep_inputs,
                                          channel_order=order)
            self._charge("model", cpu)
            presence = (bool(present), face_present(valid))
        else:
            mel_cpu = self.cpu_clock()
            audio = self._mel.window(job.first_sample // frontend.HOP, n_frames, samples, job.first_sample)
            mel_spent = self.cpu_clock() - mel_cpu
            face = np.zeros((len(job.ticks), frontend.FACE_SIZE, frontend.FACE_SIZE), np.float32)
            for i, tick in enumerate(job.ticks):
                if tick.crop is not None:
                    face[i] = tick.crop
            feeds = batch_inputs([audio], [face], [valid], audio_present=[present], face_present=[face_present(valid)])
            preprocess_ms = (time.perf_counter() - start) * 1e3
            self._add("log-mel", mel_spent)
            self._add("other", self.cpu_clock() - cpu - mel_spent)
            cpu = self.cpu_clock()
            result = self.model.predict(feeds, preprocess_ms=preprocess_ms)
            self._charge("model", cpu)
            presence = (bool(feeds["presence"][0, 0]), bool(feeds["presence"][0, 1]))
        cpu = self.cpu_clock()
        probs = result.probs[0]
        if self._smoothed is None or self.smoothing == 0.0:
            self._smoothed = probs.copy()
        else:
            self._smoothed = (self.smoothing * self._smoothed + (1.0 - self.smoothing) * probs).astype(np.float32)
        smoothed = self._smoothed.copy()
        rate = frontend.SAMPLE_RATE
        with self._stats_lock:
            counts = self._counts
            counts["windows"] += 1
            counts["partial"] += int(job.partial)
            counts["face_windows"] += int(presence[1])
            counts["ticks"] += len(job.ticks)
            counts["face_ticks"] += int(valid.sum())
        timings = dict(result.timings)
        timings["latency"] = (time.perf_counter() - job.entered) * 1e3
        if job.thread == threading.get_ident():
            timings["latency_cpu"] = (self.cpu_clock() - job.entered_cpu) * 1e3
        self._charge("other", cpu)
        return Prediction(t_start=self.origin + job.first_sample / rate,
                          t_end=self.origin + (job.first_sample + samples.size) / rate, probs=probs,
                          label=result.labels[0], smoothed_probs=smoothed,
                          smoothed_label=EMOTIONS[int(np.argmax(smoothed))],
                          presence=presence, timings=timings,
                          inputs=feeds if self.keep_inputs else None, frontend=self.frontend,
                          skipped=job.skipped, partial=job.partial)

    # ---------------------------------------------------------------------------------------
    # bookkeeping

    def _add(self, stage: str, seconds: float) -> None:
        with self._stats_lock:
            self._cpu[stage] += max(seconds, 0.0)

    def _charge(self, stage: str, since: float) -> None:
        """Add the thread CPU time since `since` (a self.cpu_clock()) to `stage`."""
        self._add(stage, self.cpu_clock() - since)

    def stats(self) -> dict:
        """What the stream did so far: thread CPU seconds per stage of the feed calls ('cpu_s'),
        windows emitted / partial / skipped, windows and ticks with a face, the tracking rule's
        counts (full-frame and region searches; ticks found, reused, without a face) and the
        log-mel frames computed."""
        with self._stats_lock:
            out = {"cpu_s": dict(self._cpu), **self._counts}
        out["log_mel_frames"] = self._mel.computed
        out["tracker"] = dict(self._tracker.counts) if self._tracker is not None else {}
        return out

    def describe(self) -> str:
        """Window settings, the front-end that runs and why, and the model."""
        return (f"Stream window {self.window_s:g} s, hop {self.hop_s:g} s, smoothing {self.smoothing:g}, "
                f"video latency bound {self.video_latency_s:g} s, {self.channel_order} frames\n"
                f"  front-end {self.frontend} ({self.frontend_reason})\n" + self.model.describe())

    def close(self) -> None:
        """Free the GPU front-end's device buffers (the model stays open: close it yourself)."""
        if self._gpu is not None:
            self._gpu.close()

    def reset(self) -> None:
        """Forget all buffered audio, frames, tracking and smoothing (e.g. after the robot turns
        to a new person, or after a pause longer than max_clock_skew_s)."""
        with self._emit_lock, self._track_lock, self._lock:
            self._clear()
