#!/usr/bin/env python3
"""A robot's perception loop with edge-ladder: microphone + camera in, one emotion per hop out.

Live (on the robot):
    python examples/robot_loop.py export/model.engine            # TensorRT on a Jetson
    python examples/robot_loop.py export/model.onnx --camera 0   # ONNX Runtime on a CPU

Replay a recording as if it were live (same callbacks, same timing, optionally real time):
    python examples/robot_loop.py export/model.onnx --from-files clip.wav clip.flv [--realtime]

A Jetson CSI camera (IMX219 / IMX477 on the CSI connector) is not a /dev/video* V4L2 device for
OpenCV: pass a GStreamer pipeline string as --camera (needs an OpenCV built with GStreamer, such
as JetPack's python3-opencv; pip's opencv-python-headless has none):
    python examples/robot_loop.py model.engine --camera "nvarguscamerasrc sensor-id=0 ! \
        video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! nvvidconv ! \
        video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"

The loop is plain Python: the microphone callback (sounddevice-style: called from the audio
thread with a (frames, 1) int16 block) only queues the block, and the main loop queues the camera
frames it reads with OpenCV; one worker thread feeds both to the stream, so inference never runs
inside the audio driver's callback (a late callback drops samples). Every hop a Prediction comes
back with its time window; at the end the last, partial window too. Replace act() with your
robot's behaviour. Prints one JSON line per prediction.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edge_ladder import frontend, runtime
from edge_ladder._deps import MissingDependencyError
from edge_ladder.errors import EdgeLadderError
from edge_ladder.faces import FaceDetector
from edge_ladder.runtime.stream import Stream

BLOCK = 1024                     # microphone block size in samples (64 ms at 16 kHz)
MAX_QUEUED_FRAMES = 15           # camera frames waiting for the worker; newer ones are dropped beyond
VIDEO_SUFFIXES = (".flv", ".mp4", ".avi", ".mkv", ".mov", ".webm")
SOUNDDEVICE_HINT = ("live mode reads the microphone through sounddevice and PortAudio: pip install sounddevice "
                    "&& sudo apt install libportaudio2 (or replay a recording: --from-files WAV VIDEO)")
CSI_PIPELINE = ("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
                "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
                "appsink drop=true max-buffers=1")


class LoopError(EdgeLadderError):
    """What the user must fix before the loop can run: printed as one line, exit status 2."""


def act(prediction, out=None) -> None:
    """What the robot does with a prediction: here, one JSON line (to stdout by default)."""
    out = out or sys.stdout
    out.write(json.dumps({"t_start": round(prediction.t_start, 3), "t_end": round(prediction.t_end, 3),
                          "label": prediction.label, "smoothed": prediction.smoothed_label,
                          "p": round(float(prediction.probs.max()), 3),
                          "audio": prediction.presence[0], "face": prediction.presence[1],
                          "evidence": prediction.evidence,    # "none": the label is the model's prior
                          "ms": round(prediction.timings.get("total", 0.0), 2),
                          **({"partial": True} if prediction.partial else {}),
                          **({"skipped": prediction.skipped} if prediction.skipped else {})}) + "\n")
    out.flush()


class StreamWorker(threading.Thread):
    """Feeds the stream from a queue in its own thread and acts on every prediction there, so
    neither the audio driver's callback nor the camera loop ever waits for inference.
    audio()/frame() only queue (live, camera frames beyond MAX_QUEUED_FRAMES are dropped and
    counted, audio never; a replay as fast as possible waits instead); finish() flushes the last,
    partial window and waits; `error` holds what stopped it."""

    def __init__(self, stream, drop_frames: bool = True):
        super().__init__(name="edge-ladder-stream", daemon=True)
        self.stream = stream
        self.events: "queue.Queue" = queue.Queue()
        self.error = None
        self.dropped_frames = 0
        self.drop_frames = drop_frames
        self._frame_slots = threading.Semaphore(MAX_QUEUED_FRAMES)

    def audio(self, block, t) -> None:            # safe to call from the audio callback
        self.events.put(("audio", block, t))

    def frame(self, frame, t) -> None:
        if self._frame_slots.acquire(blocking=not self.drop_frames):
            self.events.put(("frame", frame, t))
        else:
            self.dropped_frames += 1

    def finish(self) -> None:
        self.events.put(None)
        self.join()
        if self.dropped_frames:
            print(f"robot_loop: dropped {self.dropped_frames} camera frames the stream could not keep up with",
                  file=sys.stderr)
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        try:
            while True:
                event = self.events.get()
                if event is None:
                    for prediction in self.stream.flush():
                        act(prediction)
                    return
                kind, item, t = event
                if kind == "frame":
                    self._frame_slots.release()
                feed = self.stream.feed_audio if kind == "audio" else self.stream.feed_frame
                for prediction in feed(item, t):
                    act(prediction)
        except Exception as error:                # reported by finish() in the main thread
            self.error = error


class Microphone:
    """Live audio through sounddevice (pip install sounddevice; needs PortAudio)."""

    def __init__(self, callback):
        try:
            import sounddevice  # optional: only the live mode needs it
        except ImportError as error:
            raise LoopError(f"{SOUNDDEVICE_HINT}. ({type(error).__name__}: {error})") from error
        except OSError as error:           # sounddevice is there, the PortAudio library is not
            raise LoopError(f"{SOUNDDEVICE_HINT}. ({error})") from error
        self._callback = callback
        try:
            self._stream = sounddevice.InputStream(samplerate=frontend.SAMPLE_RATE, channels=1, dtype="int16",
                                                   blocksize=BLOCK, callback=self._on_block)
        except Exception as error:  # noqa: BLE001 - sounddevice.PortAudioError and ValueError (no device)
            raise LoopError(f"cannot open a microphone at {frontend.SAMPLE_RATE} Hz mono: {error}. Is one plugged in? "
                            f"List the input devices with `python -m sounddevice`; the default one is used.") from error

    def _on_block(self, block, frames, time_info, status):
        self._callback(block[:, 0].copy(), time.monotonic() - frames / frontend.SAMPLE_RATE)

    def start(self):
        self._stream.start()

    def stop(self):
        self._stream.stop()
        self._stream.close()

    def close(self):
        self._stream.close()


def check_recording(wav_path, video_path) -> None:
    """--from-files WAV VIDEO: both files exist, in that order (never a silent audio-only run)."""
    wav, video = Path(wav_path), Path(video_path)
    if wav.suffix.lower() in VIDEO_SUFFIXES and video.suffix.lower() == ".wav":
        raise LoopError(f"--from-files takes the WAV first, then the video; got {wav} {video} (swapped?). "
                        f"Run: --from-files {video} {wav}")
    for kind, path, expected in (("audio", wav, "a 16 kHz mono WAV"), ("video", video, "a video (FLV, MP4, ...)")):
        if not path.is_file():
            raise LoopError(f"--from-files: {kind} file {path} does not exist (expected {expected}); "
                            f"usage: --from-files WAV VIDEO")


def replay(wav_path, video_path, realtime: bool):
    """A recording as the live callbacks would see it: ('audio', block, t) every BLOCK samples
    (when its last sample is recorded) and ('frame', frame_bgr, t) at each frame's time, in
    arrival order; with realtime, each event waits for its moment on the wall clock."""
    cv2 = __import__("cv2")
    from edge_ladder.media import read_wav
    check_recording(wav_path, video_path)
    pcm, rate = read_wav(wav_path)
    if rate != frontend.SAMPLE_RATE:
        raise LoopError(f"{wav_path}: expected {frontend.SAMPLE_RATE} Hz audio; got {rate} Hz. Resample it with "
                        f"`ffmpeg -i IN -ac 1 -ar {frontend.SAMPLE_RATE} -c:a pcm_s16le OUT.wav`.")
    capture = cv2.VideoCapture(str(video_path))
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        raise LoopError(f"{video_path}: OpenCV cannot read a frame of this video (unsupported or corrupt); check it "
                        f"with `ffprobe {video_path}`.")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    blocks = ((min(start + BLOCK, len(pcm)) / rate, start) for start in range(0, len(pcm), BLOCK))
    next_block = next(blocks, None)
    index, frame_ok = 0, ok
    started = time.monotonic()
    while next_block is not None or frame_ok:
        frame_t = index / fps if frame_ok else float("inf")
        if next_block is not None and next_block[0] <= frame_t:
            arrival, start = next_block
            event = ("audio", pcm[start:start + BLOCK], start / rate)
            next_block = next(blocks, None)
        else:
            arrival, event = frame_t, ("frame", frame, frame_t)
            index, (frame_ok, frame) = index + 1, capture.read()
        if realtime:
            time.sleep(max(0.0, started + arrival - time.monotonic()))
        yield event
    capture.release()


def camera_source(camera: str):
    """--camera -> (what OpenCV opens, its API flag, the device's name for messages): an index
    ("0" -> /dev/video0), a device path, or a GStreamer pipeline string (it holds '!')."""
    cv2 = __import__("cv2")
    if "!" in camera:
        return camera, cv2.CAP_GSTREAMER, "GStreamer pipeline"
    if camera.isdigit():
        return int(camera), cv2.CAP_ANY, f"camera {camera} (/dev/video{camera})"
    return camera, cv2.CAP_ANY, f"camera {camera}"


def open_camera(camera: str):
    """An opened cv2.VideoCapture that delivers frames, or LoopError naming the device and the
    usual causes."""
    cv2 = __import__("cv2")
    source, api, name = camera_source(camera)
    capture = cv2.VideoCapture(source, api)
    ok = capture.isOpened() and capture.read()[0]
    if ok:
        return capture
    capture.release()
    if api == cv2.CAP_GSTREAMER:
        gstreamer = [line for line in cv2.getBuildInformation().splitlines() if "GStreamer" in line]
        if gstreamer and "YES" not in gstreamer[0]:
            raise LoopError(f"cannot open the {name}: this OpenCV ({cv2.__version__}, {cv2.__file__}) is built "
                            f"without GStreamer. Use JetPack's python3-opencv (sudo apt install python3-opencv; "
                            f"pip uninstall opencv-python-headless in a venv made with --system-site-packages).")
        test = camera.replace("appsink", "fakesink")
        raise LoopError(f"cannot open the {name} {camera!r}: test it with `gst-launch-1.0 {test}`; for a CSI "
                        f"camera check the ribbon cable, the sensor-id and that nvargus-daemon runs (sudo systemctl "
                        f"restart nvargus-daemon).")
    raise LoopError(
        f"cannot open {name}. Usual causes: no such device (list them: ls /dev/video*; v4l2-ctl --list-devices); "
        f"no permission (ls -l /dev/video*; sudo usermod -aG video $USER, then log in again); the camera is in use "
        f"by another process; a Jetson CSI camera is not a V4L2 device for OpenCV: pass a GStreamer pipeline, "
        f"e.g. --camera \"{CSI_PIPELINE}\".")


def live_frames(capture, camera: str, seconds):
    """Camera frames with their capture time on the monotonic clock (the audio's clock too)."""
    started = time.monotonic()
    try:
        while seconds is None or time.monotonic() - started < seconds:
            ok, frame = capture.read()
            if not ok:
                raise LoopError(f"camera {camera} stopped delivering frames (unplugged, or taken by another process).")
            yield frame, time.monotonic()
    finally:
        capture.release()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model.onnx or model.engine")
    parser.add_argument("--from-files", nargs=2, metavar=("WAV", "VIDEO"), help="replay a recording as if live")
    parser.add_argument("--realtime", action="store_true", help="with --from-files: replay at recording speed")
    parser.add_argument("--camera", default="0",
                        help="live mode: OpenCV camera index (0 = /dev/video0), a device path, or a GStreamer "
                             "pipeline string ending in appsink (Jetson CSI cameras; see the module docstring)")
    parser.add_argument("--cascade", metavar="PATH", default=None,
                        help="Haar cascade XML for the face detector (default: $EDGE_LADDER_CASCADE, else "
                             "haarcascade_frontalface_default.xml from cv2.data or /usr/share/opencv4/haarcascades)")
    parser.add_argument("--window", type=float, default=2.0, help="window length in seconds (default 2.0)")
    parser.add_argument("--hop", type=float, default=0.5, help="seconds between predictions (default 0.5)")
    parser.add_argument("--smoothing", type=float, default=0.5, help="EMA weight of the past (default 0.5)")
    parser.add_argument("--seconds", type=float, default=None, help="live mode: stop after this long")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except MissingDependencyError as error:
        print(f"robot_loop.py: {error}", file=sys.stderr)
        return 3
    except EdgeLadderError as error:
        print(f"robot_loop.py: error: {error}", file=sys.stderr)
        return 2


def run(args) -> int:
    if args.from_files:
        check_recording(*args.from_files)
    model = runtime.load(args.model)
    detector = FaceDetector(cascade=args.cascade)       # a missing cascade is an error now, not mid-loop
    stream = Stream(model, window_s=args.window, hop_s=args.hop, smoothing=args.smoothing, detector=detector)
    worker = StreamWorker(stream, drop_frames=not args.from_files or args.realtime)
    worker.start()

    if args.from_files:
        for kind, item, t in replay(*args.from_files, realtime=args.realtime):
            (worker.audio if kind == "audio" else worker.frame)(item, t)
            if worker.error is not None:
                break
        worker.finish()                         # the last, partial window
        return 0

    mic = Microphone(worker.audio)              # sounddevice + PortAudio, or a clear error; the callback only queues
    try:
        capture = open_camera(args.camera)
    except BaseException:
        mic.close()
        raise
    mic.start()
    try:
        for frame, t in live_frames(capture, args.camera, args.seconds):
            worker.frame(frame, t)              # faces are tracked on the frames the 10 fps ticks use
            if worker.error is not None:
                break
    except KeyboardInterrupt:
        pass
    finally:
        mic.stop()
    worker.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
