#!/usr/bin/env python3
"""A robot's perception loop with edge-ladder: microphone + camera in, one emotion per hop out.

Live (on the robot):
    python examples/robot_loop.py export/model.engine            # TensorRT on a Jetson
    python examples/robot_loop.py export/model.onnx --camera 0   # ONNX Runtime on a CPU

Replay a recording as if it were live (same callbacks, same timing, optionally real time):
    python examples/robot_loop.py export/model.onnx --from-files clip.wav clip.flv [--realtime]

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

import numpy as np

from edge_ladder import frontend, runtime
from edge_ladder.runtime.stream import Stream

BLOCK = 1024                     # microphone block size in samples (64 ms at 16 kHz)
MAX_QUEUED_FRAMES = 15           # camera frames waiting for the worker; newer ones are dropped beyond


def act(prediction, out=sys.stdout) -> None:
    """What the robot does with a prediction: here, one JSON line."""
    out.write(json.dumps({"t_start": round(prediction.t_start, 3), "t_end": round(prediction.t_end, 3),
                          "label": prediction.label, "smoothed": prediction.smoothed_label,
                          "p": round(float(prediction.probs.max()), 3),
                          "audio": prediction.presence[0], "face": prediction.presence[1],
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
        import sounddevice  # optional: only the live mode needs it
        self._callback = callback
        self._stream = sounddevice.InputStream(samplerate=frontend.SAMPLE_RATE, channels=1, dtype="int16",
                                               blocksize=BLOCK, callback=self._on_block)

    def _on_block(self, block, frames, time_info, status):
        self._callback(block[:, 0].copy(), time.monotonic() - frames / frontend.SAMPLE_RATE)

    def start(self):
        self._stream.start()

    def stop(self):
        self._stream.stop()
        self._stream.close()


def replay(wav_path, video_path, realtime: bool):
    """A recording as the live callbacks would see it: ('audio', block, t) every BLOCK samples
    (when its last sample is recorded) and ('frame', frame_bgr, t) at each frame's time, in
    arrival order; with realtime, each event waits for its moment on the wall clock."""
    cv2 = __import__("cv2")
    from edge_ladder.media import read_wav
    pcm, rate = read_wav(wav_path)
    if rate != frontend.SAMPLE_RATE:
        raise SystemExit(f"{wav_path}: expected {frontend.SAMPLE_RATE} Hz audio; got {rate} Hz.")
    capture = cv2.VideoCapture(str(video_path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    blocks = ((min(start + BLOCK, len(pcm)) / rate, start) for start in range(0, len(pcm), BLOCK))
    next_block = next(blocks, None)
    index, frame_ok, frame = 0, *capture.read()
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


def live_frames(camera: int, seconds):
    """Camera frames with their capture time on the monotonic clock (the audio's clock too)."""
    cv2 = __import__("cv2")
    capture = cv2.VideoCapture(camera)
    started = time.monotonic()
    try:
        while seconds is None or time.monotonic() - started < seconds:
            ok, frame = capture.read()
            if not ok:
                raise SystemExit(f"camera {camera} returned no frame; check the index and permissions.")
            yield frame, time.monotonic()
    finally:
        capture.release()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model.onnx or model.engine")
    parser.add_argument("--from-files", nargs=2, metavar=("WAV", "VIDEO"), help="replay a recording as if live")
    parser.add_argument("--realtime", action="store_true", help="with --from-files: replay at recording speed")
    parser.add_argument("--camera", type=int, default=0, help="OpenCV camera index (live mode)")
    parser.add_argument("--window", type=float, default=2.0, help="window length in seconds (default 2.0)")
    parser.add_argument("--hop", type=float, default=0.5, help="seconds between predictions (default 0.5)")
    parser.add_argument("--smoothing", type=float, default=0.5, help="EMA weight of the past (default 0.5)")
    parser.add_argument("--seconds", type=float, default=None, help="live mode: stop after this long")
    args = parser.parse_args(argv)

    model = runtime.load(args.model)
    stream = Stream(model, window_s=args.window, hop_s=args.hop, smoothing=args.smoothing)
    worker = StreamWorker(stream, drop_frames=not args.from_files or args.realtime)
    worker.start()

    if args.from_files:
        for kind, item, t in replay(*args.from_files, realtime=args.realtime):
            (worker.audio if kind == "audio" else worker.frame)(item, t)
            if worker.error is not None:
                break
        worker.finish()                         # the last, partial window
        return 0

    mic = Microphone(worker.audio)              # the callback only queues the block
    mic.start()
    try:
        for frame, t in live_frames(args.camera, args.seconds):
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
