"""`edge-ladder bench MODEL --stream`: what a live Stream costs a robot's CPU.

    edge-ladder bench export/model.onnx --stream [--camera 1280x720@30] [--duration 60] \\
        [--threads 1] [--json stream.json] [--md stream.md]

A synthetic camera and microphone (TalkingHead: the generated corpus's drawn face and voice,
edge_ladder.corpus, the face a third of the frame's height and drifting across it; speech
sentence after sentence) are fed to one Stream in arrival order: an audio block when its last
sample is recorded (--block, 20 ms), a frame at its capture time plus --camera-delay. Stream
time runs as fast as the CPU allows (generating the frames is not timed), so the figures are
CPU time, which other jobs on the machine change little, not wall time:

  feed_cpu_share     thread CPU seconds spent inside feed_audio / feed_frame / flush, per second
                     of stream: the share of one core the stream takes (0.05 = 5 %);
  feed_process_cpu_share  the same calls' CPU in all of the process's threads (OpenCV's and
                     OpenBLAS's worker threads included);
  stages_cpu_share   Stream.stats()'s process CPU per stage (audio framing, log-mel, detection =
                     ticks with a full-frame search, tracking = ticks with only the search near the
                     last box, crops, model, other), per second of stream;
  feed_to_model      the feed calls' process CPU / the model's own process CPU in the same run;
  windows_per_s      windows emitted per second of stream, and realtime_factor = stream seconds
                     / wall seconds spent in the feed calls;
  faces              the share of windows with a face and of ticks with a face, the tracker's counts;
  latency_ms         per window, from the entry of the feed call that made it due to its
                     Prediction (Prediction.timings['latency']: never the video_latency_s wait),
                     wall time; latency_cpu_ms the same span in process CPU time (what it costs
                     without other jobs taking the cores).

The targets the README reports against are in TARGETS; `met` says which were met in this run.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import __version__, corpus, frontend
from .errors import EdgeLadderError

DEFAULT_CAMERA = "1280x720@30"
DEFAULT_DURATION_S = 30.0
DEFAULT_BLOCK_MS = 20.0
CANVAS_SHARE = 0.5                 # the corpus's 160 x 120 canvas scaled to half the frame height:
                                   # a face about a quarter of the height (174 x 200 px at 720p)
TARGETS = {"feed_cpu_share_max": 0.05, "feed_to_model_max": 25.0, "face_windows_min": 0.95,
           "latency_p99_ms_max": 10.0}


class StreamBenchError(EdgeLadderError, ValueError):
    """Bad --stream benchmark request."""


@dataclass(frozen=True)
class CameraMode:
    width: int
    height: int
    fps: float

    def __str__(self) -> str:
        return f"{self.width}x{self.height}@{self.fps:g}"


def parse_camera(text: str) -> CameraMode:
    """'1280x720@30' -> CameraMode(1280, 720, 30.0)."""
    match = re.fullmatch(r"\s*(\d+)x(\d+)@(\d+(?:\.\d+)?)\s*", str(text))
    if not match:
        raise StreamBenchError(f"--camera {text!r} is not WIDTHxHEIGHT@FPS; expected e.g. 1280x720@30 or 640x480@15")
    width, height, fps = int(match[1]), int(match[2]), float(match[3])
    if not (160 <= width <= 7680 and 120 <= height <= 4320 and 1 <= fps <= 240):
        raise StreamBenchError(f"--camera {text}: expected 160-7680 x 120-4320 pixels at 1-240 fps")
    return CameraMode(width, height, fps)


class TalkingHead:
    """A synthetic camera + microphone of one speaking person (edge_ladder.corpus's actor).

    frame(t): (H, W, 3) uint8 BGR, the corpus's 160x120 drawn face scaled to CANVAS_SHARE of the
    frame's height, drifting slowly across the frame (up to ~100 px/s at 720p), the mouth
    following the speech; pcm(seconds): int16 at 16 kHz, corpus sentences one after another.
    """

    def __init__(self, camera: CameraMode, seconds: float, seed: int = 0, actor_id: int = corpus.FIRST_ACTOR):
        cv2 = corpus._cv2()
        self.camera = camera
        self.rng = np.random.default_rng([seed, 7])
        self.actor = corpus.make_actor(actor_id, seed)
        emotions = list(corpus.VOICES)
        pieces, onsets, faces, offset = [], [], [], 0.0
        while offset < seconds + 1.0:
            emotion = emotions[len(pieces) % len(emotions)]
            pcm, sentence_onsets, length, duration = corpus.synth_audio(
                self.actor, corpus.VOICES[emotion], 1.0, 7, self.rng)
            pieces.append(pcm)
            onsets.extend(offset + np.asarray(sentence_onsets))
            faces.append((offset, corpus.FACES[emotion]))
            offset += pcm.size / frontend.SAMPLE_RATE
        self._pcm = np.concatenate(pieces)
        self._onsets, self._length, self._faces = np.asarray(onsets), length, faces
        scale = camera.height * CANVAS_SHARE / corpus.VIDEO_SIZE[1]
        self.canvas = (int(round(corpus.VIDEO_SIZE[0] * scale)), int(round(corpus.VIDEO_SIZE[1] * scale)))
        gradient = np.linspace(0.8, 1.15, camera.height, dtype=np.float32)[:, None, None]
        backdrop = gradient * np.array(self.actor.background, np.float32)
        self._backdrop = np.clip(np.broadcast_to(backdrop, (camera.height, camera.width, 3)), 0, 255).astype(np.uint8)
        self._cv2 = cv2

    def pcm(self, seconds: float) -> np.ndarray:
        return self._pcm[:int(round(seconds * frontend.SAMPLE_RATE))]

    def frame(self, t: float) -> np.ndarray:
        face = next(face for start, face in reversed(self._faces) if start <= t)
        mouth = float(corpus.syllable_envelope(np.array([t]), self._onsets, self._length)[0])
        small = corpus.draw_face(self.actor, face, 1.0, mouth, (2 * np.sin(1.3 * t), 2 * np.sin(0.9 * t)),
                                 1.0 + 0.08 * np.sin(0.7 * t), self.rng)
        width, height = self.canvas
        canvas = self._cv2.resize(small, (width, height), interpolation=self._cv2.INTER_LINEAR)
        free_x, free_y = self.camera.width - width, self.camera.height - height
        x = int(round(free_x * (0.5 + 0.4 * np.sin(2 * np.pi * t / 17.0))))
        y = int(round(free_y * (0.5 + 0.4 * np.sin(2 * np.pi * t / 11.0))))
        frame = self._backdrop.copy()
        frame[y:y + height, x:x + width] = canvas
        return frame


def arrival_order(seconds: float, camera: CameraMode, block_samples: int, camera_delay_s: float = 0.0):
    """[(arrival time, kind 'audio' | 'frame', index)] of a stream of `seconds`: audio block j
    (samples [j n, (j + 1) n)) arrives when its last sample is recorded, frame i (captured at
    i / fps) camera_delay_s after its capture."""
    rate = frontend.SAMPLE_RATE
    n_samples = int(round(seconds * rate))
    events = [((min((j + 1) * block_samples, n_samples)) / rate, 0, "audio", j)
              for j in range((n_samples + block_samples - 1) // block_samples)]
    n_frames = int(np.ceil(seconds * camera.fps - 1e-9))
    events += [(i / camera.fps + camera_delay_s, 1, "frame", i) for i in range(n_frames)]
    return [(t, kind, index) for t, _, kind, index in sorted(events)]


def drive(stream, head: TalkingHead, seconds: float, block_ms: float = DEFAULT_BLOCK_MS,
          camera_delay_s: float = 0.0) -> dict:
    """Feed `seconds` of the head's stream to `stream` (timestamps from 0 s), then flush().
    -> {'predictions', 'thread_cpu_s', 'process_cpu_s', 'wall_s', 'calls'} of the feed calls."""
    block = max(1, int(round(block_ms * frontend.SAMPLE_RATE / 1000)))
    pcm = head.pcm(seconds)
    predictions: list = []
    thread_cpu = process_cpu = wall = 0.0
    calls = 0
    for _, kind, index in arrival_order(seconds, head.camera, block, camera_delay_s):
        if kind == "audio":
            args = (pcm[index * block:(index + 1) * block],)
            call, t = stream.feed_audio, index * block / frontend.SAMPLE_RATE
        else:
            t = index / head.camera.fps
            args, call = (head.frame(t),), stream.feed_frame
        t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
        out = call(*args, t)
        thread_cpu += time.thread_time() - t0
        process_cpu += time.process_time() - p0
        wall += time.perf_counter() - w0
        calls += 1
        predictions += out or []
    t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
    predictions += stream.flush()
    thread_cpu += time.thread_time() - t0
    process_cpu += time.process_time() - p0
    wall += time.perf_counter() - w0
    return {"predictions": predictions, "thread_cpu_s": thread_cpu, "process_cpu_s": process_cpu, "wall_s": wall,
            "calls": calls + 1}


def stream_benchmark(model_path, *, camera: str = DEFAULT_CAMERA, duration_s: float = DEFAULT_DURATION_S,
                     window_s: float = 2.0, hop_s: float = 0.5, threads: Optional[int] = 1,
                     frontend_name: str = "numpy", block_ms: float = DEFAULT_BLOCK_MS, camera_delay_s: float = 0.0,
                     video_latency_s: Optional[float] = None, redetect_every: Optional[int] = None,
                     backend: Optional[str] = None, seed: int = 0, env: bool = True, warmup_s: float = 2.0,
                     progress=None) -> dict:
    """Run the streaming benchmark on one model file; -> the report (module docstring)."""
    from .bench import summarize
    from .benchenv import capture_environment
    from .faces import FaceDetector
    from .runtime import backend_for, load
    from .runtime.stream import DEFAULT_VIDEO_LATENCY_S, STAGES, Stream
    mode = parse_camera(camera)
    if not duration_s >= 1.0:
        raise StreamBenchError(f"--duration must be at least 1 s of stream for --stream; got {duration_s}")
    if not 1.0 <= block_ms <= 1000.0:
        raise StreamBenchError(f"--block must be 1-1000 ms of audio per feed_audio call; got {block_ms}")
    if warmup_s < 0:
        raise StreamBenchError(f"--warmup must be >= 0 ms of stream; got {warmup_s * 1e3:g}")
    if camera_delay_s < 0:
        raise StreamBenchError(f"--camera-delay must be >= 0 s; got {camera_delay_s}")
    chosen = backend_for(str(model_path), backend)
    if threads is not None and chosen != "onnxruntime":
        threads = None                          # TensorRT runs on the GPU: no CPU threads to set
    say = progress or (lambda text: None)
    model = load(model_path, backend, **({"intra_op_threads": threads} if threads else {}))
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    latency = DEFAULT_VIDEO_LATENCY_S if video_latency_s is None else video_latency_s
    detector = FaceDetector(**({"redetect_every": redetect_every} if redetect_every else {}))
    try:
        say(f"generating a talking head at {mode} and its voice ({duration_s + warmup_s:g} s)")
        head = TalkingHead(mode, duration_s + warmup_s, seed=seed)
        make = lambda: Stream(model, window_s=window_s, hop_s=hop_s, smoothing=0.5, detector=detector,
                              frontend=frontend_name, video_latency_s=latency, cpu_clock=time.process_time)
        if warmup_s > 0:
            drive(make(), head, warmup_s, block_ms, camera_delay_s)      # load the cascade, warm ORT
        stream = make()
        say(f"feeding {duration_s:g} s of {mode} video + 16 kHz audio in {block_ms:g} ms blocks to "
            f"{stream.frontend} Stream(window {window_s:g} s, hop {hop_s:g} s)")
        record = drive(stream, head, duration_s, block_ms, camera_delay_s)
        stats = stream.stats()
    finally:
        model.close()
    predictions = record["predictions"]
    per_s = lambda seconds: seconds / duration_s
    stages = {stage: per_s(stats["cpu_s"][stage]) for stage in STAGES}
    model_cpu = stats["cpu_s"]["model"]
    report = {
        "mode": "stream", "edge_ladder": __version__, "model": str(model_path), "backend": model.backend,
        "camera": str(mode), "audio": f"{frontend.SAMPLE_RATE} Hz int16, {block_ms:g} ms blocks",
        "window_s": window_s, "hop_s": hop_s, "frontend": stream.frontend, "intra_op_threads": threads,
        "video_latency_s": latency, "camera_delay_s": camera_delay_s, "redetect_every": detector.redetect_every,
        "duration_s": duration_s, "calls": record["calls"],
        "feed_cpu_share": per_s(record["thread_cpu_s"]),
        "feed_process_cpu_share": per_s(record["process_cpu_s"]),
        "stages_cpu_share": stages,
        "stages_sum_cpu_share": sum(stages.values()),
        "model_cpu_share": per_s(model_cpu),
        "feed_to_model": record["process_cpu_s"] / model_cpu if model_cpu > 0 else float("inf"),
        "windows": len(predictions), "partial_windows": stats["partial"],
        "windows_per_s": len(predictions) / duration_s,
        "realtime_factor": duration_s / record["wall_s"] if record["wall_s"] > 0 else float("inf"),
        "faces": {"windows_with_face": np.mean([p.presence[1] for p in predictions]) if predictions else 0.0,
                  "ticks_with_face": stats["face_ticks"] / max(1, stats["ticks"]),
                  "tracker": stats["tracker"]},
        "latency_ms": summarize([p.timings["latency"] for p in predictions]) if predictions else None,
        "latency_cpu_ms": summarize([p.timings["latency_cpu"] for p in predictions]) if predictions else None,
        "log_mel_frames": stats["log_mel_frames"],
        "load_average": {"start": list(load_start) if load_start else None,
                         "end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "targets": dict(TARGETS),
    }
    report["faces"]["windows_with_face"] = float(report["faces"]["windows_with_face"])
    report["met"] = {
        "feed_cpu_share": report["feed_cpu_share"] <= TARGETS["feed_cpu_share_max"],
        "feed_to_model": report["feed_to_model"] <= TARGETS["feed_to_model_max"],
        "face_windows": report["faces"]["windows_with_face"] >= TARGETS["face_windows_min"],
        "latency_p99": report["latency_ms"] is not None and report["latency_ms"]["p99"] <= TARGETS["latency_p99_ms_max"],
    }
    if env:
        report["env"] = capture_environment()
    return report


def markdown(report: dict) -> str:
    """The stream report as a Markdown table plus its settings and environment."""
    from .benchenv import environment_line
    stages = report["stages_cpu_share"]
    lat = report["latency_ms"] or {}
    cpu_lat = report.get("latency_cpu_ms") or {}
    rows = [("feed calls, thread CPU", f"{100 * report['feed_cpu_share']:.2f} % of one core"),
            ("feed calls, process CPU (all threads)", f"{100 * report['feed_process_cpu_share']:.2f} % of one core")]
    rows += [(f"  {stage}", f"{100 * share:.3f} %") for stage, share in stages.items()]
    rows += [("feed calls / model, process CPU", f"{report['feed_to_model']:.1f}x"),
             ("windows per second of stream", f"{report['windows_per_s']:.2f} ({report['windows']} windows, "
                                               f"{report['partial_windows']} partial)"),
             ("stream seconds per wall second in the feed calls", f"{report['realtime_factor']:.1f}"),
             ("windows with a face", f"{100 * report['faces']['windows_with_face']:.1f} %"),
             ("ticks with a face", f"{100 * report['faces']['ticks_with_face']:.1f} %"),
             ("latency window due -> Prediction, wall, mean / p99 / max",
              f"{lat.get('mean', float('nan')):.2f} / {lat.get('p99', float('nan')):.2f} / "
              f"{lat.get('max', float('nan')):.2f} ms"),
             ("the same in CPU time (process), mean / p99 / max",
              f"{cpu_lat.get('mean', float('nan')):.2f} / {cpu_lat.get('p99', float('nan')):.2f} / "
              f"{cpu_lat.get('max', float('nan')):.2f} ms")]
    met = report.get("met", {})
    text = "| measure | value |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)
    text += (f"\n\nStream: {report['model']} ({report['backend']}, {report['intra_op_threads'] or 'default'} "
             f"intra-op threads), {report['frontend']} front-end, camera {report['camera']}, audio {report['audio']}, "
             f"window {report['window_s']:g} s, hop {report['hop_s']:g} s, {report['duration_s']:g} s of stream, "
             f"full-frame detection every {report['redetect_every']} ticks, tracker {report['faces']['tracker']}.")
    text += ("\nTargets: feed <= 5 % of one core " + ("met" if met.get("feed_cpu_share") else "NOT met") +
             ", <= 25x the model " + ("met" if met.get("feed_to_model") else "NOT met") +
             ", faces in >= 95 % of windows " + ("met" if met.get("face_windows") else "NOT met") +
             ", latency p99 <= 10 ms " + ("met" if met.get("latency_p99") else "NOT met") + ".")
    load = report.get("load_average") or {}
    if load.get("start"):
        text += f"\nLoad average at start {load['start'][0]:.2f}, at end {load['end'][0]:.2f} (1 min)."
    if report.get("env"):
        text += f"\n\nEnvironment: {environment_line(report['env'])}"
    return text + "\n"
