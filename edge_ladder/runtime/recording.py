"""Predictions over time on a recording: the live Stream run offline (`edge-ladder infer --window`).

    predictions = stream_recording(model, "take.wav", "take.mp4", window_s=2.0, hop_s=0.5)
    rows = window_rows(predictions)             # t_start, t_end, label, probs, presence per window
    plot_timeline("take.png", rows, title="take")

The recording is fed to a Stream exactly as a live microphone and camera would feed it, in
arrival order (an audio block when its last sample is recorded, a frame at its timestamp
i / the file's frame rate), then flushed: one Prediction per window, plus a last, partial window
over the samples after the last full window. The features equal the offline path's on the same
samples and frames (see runtime.stream). A recording without audio is fed as digital silence of
the video's length (the model is told the audio is absent); one without video is audio-only.
Never imports torch; matplotlib only for the plot.
"""
from __future__ import annotations

import heapq
from pathlib import Path
from typing import Iterator, List

import numpy as np

from .. import EMOTIONS, frontend
from ..errors import EdgeLadderError

BLOCK_S = 0.1                 # seconds of audio per feed_audio call


def video_frames(path) -> Iterator[tuple]:
    """(t seconds, frame (H, W, 3) uint8 BGR) for every decoded frame, t = i / the file's frame
    rate (media.read_video's clock), decoded one at a time."""
    from ..media import MediaError, open_video
    capture, fps = open_video(path)
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield index / fps, frame
            index += 1
        if index == 0:
            raise MediaError(f"{path}: no video frames could be decoded (empty or truncated file).")
    finally:
        capture.release()


def _video_duration(path) -> float:
    """Seconds of video: decoded frames / the file's frame rate (frames grabbed, not converted)."""
    from ..media import open_video
    capture, fps = open_video(path)
    try:
        frames = 0
        while capture.grab():
            frames += 1
    finally:
        capture.release()
    return frames / fps


def stream_recording(model, wav=None, video=None, window_s: float = 2.0, hop_s: float = 0.5, detector=None,
                     **stream_options) -> List:
    """One recording (a 16 kHz mono WAV and/or a video) through Stream(model, window_s, hop_s,
    smoothing=0, **stream_options) -> its Predictions in time order, the last one partial when
    samples remain after the last full window."""
    from ..media import MediaError, read_wav
    from .stream import Stream
    if wav is None and video is None:
        raise EdgeLadderError("a recording needs a WAV, a video, or both; got neither.")
    rate = frontend.SAMPLE_RATE
    if wav is not None:
        pcm, file_rate = read_wav(wav)
        if file_rate != rate:
            raise MediaError(f"{wav}: expected {rate} Hz audio; got {file_rate} Hz. Resample it with "
                             f"`ffmpeg -i IN -ac 1 -ar {rate} -c:a pcm_s16le OUT.wav`.")
    else:
        pcm = np.zeros(int(round(_video_duration(video) * rate)), np.int16)   # silence: audio absent
    stream = Stream(model, window_s=window_s, hop_s=hop_s, smoothing=0.0, detector=detector, **stream_options)
    block = int(round(BLOCK_S * rate))
    audio = (((min(start + block, pcm.size)) / rate, 1, start) for start in range(0, pcm.size, block))
    frames = ((t, 0, (t, frame)) for t, frame in video_frames(video)) if video is not None else iter(())
    predictions = []
    try:
        # arrival order: a block when its last sample is recorded, a frame at its timestamp (first on ties)
        for _, kind, item in heapq.merge(audio, frames, key=lambda event: event[:2]):
            if kind == 1:
                predictions += stream.feed_audio(pcm[item:item + block], t=item / rate)
            else:
                predictions += stream.feed_frame(item[1], item[0])
        predictions += stream.flush()
    finally:
        stream.close()
    return predictions


def window_rows(predictions) -> List[dict]:
    """Predictions -> one dict per window: t_start, t_end (s), label, a probability per emotion,
    audio_present, face_present, evidence (edge_ladder.presence), partial."""
    return [{"t_start": round(p.t_start, 4), "t_end": round(p.t_end, 4), "label": p.label,
             **{code: float(prob) for code, prob in zip(EMOTIONS, p.probs)},
             "audio_present": bool(p.presence[0]), "face_present": bool(p.presence[1]), "evidence": p.evidence,
             "partial": bool(p.partial)}
            for p in predictions]


def plot_timeline(path, rows: List[dict], title: str = "") -> Path:
    """A PNG of each emotion's probability over time (at window centres), the windows without a
    face shaded grey and those without audio hatched. Needs matplotlib (imported here only)."""
    from .._deps import require
    from ..atomic import atomic_write_png
    if not rows:
        raise EdgeLadderError("no windows to plot: the recording is shorter than one audio frame (25 ms).")
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    centres = np.array([(row["t_start"] + row["t_end"]) / 2 for row in rows])
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    for row in rows:
        if not row["face_present"]:
            ax.axvspan(row["t_start"], row["t_end"], color="0.5", alpha=0.08, lw=0)
        if not row["audio_present"]:
            ax.axvspan(row["t_start"], row["t_end"], fill=False, hatch="//", alpha=0.15, lw=0)
    for code in EMOTIONS:
        ax.plot(centres, [row[code] for row in rows], marker="o", ms=3, label=code)
    if rows[-1]["partial"]:
        ax.annotate("partial", (centres[-1], 1.0), ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("time (s), window centre; grey: windows without a face, hatched: without audio")
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.legend(ncol=6, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    return atomic_write_png(path, fig)
