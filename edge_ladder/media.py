"""Reading CREMA-D media and turning one clip into model features (numpy + OpenCV, no torch).

    read_wav(path)                      -> (pcm int16 (n,), sample_rate)
    read_video(path, fps)               -> (frames uint8 (N, H, W, 3) BGR, times (N,) seconds)
    video_ticks(path, fps)              -> the same frames, one at a time (long recordings)
    audio_chunks(path), read_audio(path) -> any file's audio track, mono int16 at 16 kHz (PyAV)
    clip_features(wav, flv, detector)   -> (audio (T_a, 80) float32, face (T_v, 48, 48) float32,
                                            face_valid (T_v,) bool)

clip_features is THE offline front-end: `prepare` and the runtime's `edge-ladder infer` both
call it, so training features and deployed features agree exactly.
"""
from __future__ import annotations

import wave
from pathlib import Path
from typing import Iterator

import numpy as np

from . import frontend
from ._deps import require
from .crema import LFS_HINT, LfsPointerError, is_lfs_pointer
from .errors import EdgeLadderError


class MediaError(EdgeLadderError, ValueError):
    """A media file is missing, empty, unreadable or in an unexpected format."""


def _check_file(path: Path, kind: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{kind} file {path} does not exist.")
    if path.stat().st_size == 0:
        raise MediaError(f"{kind} file {path} is empty (0 bytes). Re-download it.")
    if is_lfs_pointer(path):
        raise LfsPointerError(f"{path} is a Git LFS pointer stub ({path.stat().st_size} bytes of text), "
                              f"not {kind}. {LFS_HINT}")
    return path


def read_wav(path) -> tuple[np.ndarray, int]:
    """A mono 16-bit PCM WAV -> (pcm int16 (n_samples,), sample_rate in Hz).

    Raises MediaError (LfsPointerError for LFS stubs) for missing, empty, non-WAV, non-16-bit,
    multi-channel or sample-less files, with the reason and a fix.
    """
    path = _check_file(path, "audio")
    try:
        with wave.open(str(path), "rb") as handle:
            channels, width = handle.getnchannels(), handle.getsampwidth()
            rate, n_frames = handle.getframerate(), handle.getnframes()
            data = handle.readframes(n_frames)
    except (wave.Error, EOFError) as error:
        with open(path, "rb") as handle:
            head = handle.read(12)
        raise MediaError(f"{path} is not a readable PCM WAV ({error}; starts with {head!r}, expected "
                         f"b'RIFF....WAVE'). Convert it with `ffmpeg -i IN -ac 1 -ar 16000 -c:a pcm_s16le OUT.wav`.")
    if width != 2:
        raise MediaError(f"{path}: expected 16-bit PCM; got {8 * width}-bit. Convert it with "
                         f"`ffmpeg -i IN -ac 1 -ar 16000 -c:a pcm_s16le OUT.wav`.")
    if channels != 1:
        raise MediaError(f"{path}: expected mono audio; got {channels} channels. Mix down with "
                         f"`ffmpeg -i IN -ac 1 -ar 16000 -c:a pcm_s16le OUT.wav`.")
    pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)
    if pcm.size == 0:
        raise MediaError(f"{path}: the WAV header is valid but it holds no samples (header says {n_frames}).")
    return pcm, rate


def open_video(path):
    """-> (an opened cv2.VideoCapture, the file's frame rate); MediaError (with the fix) for a
    missing, empty or LFS-stub file, one OpenCV cannot open, or one without a usable frame rate.
    The caller releases the capture."""
    path = _check_file(path, "video")
    cv2 = require("cv2")
    capture = cv2.VideoCapture(str(path))
    file_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0) if capture.isOpened() else 0.0
    if not capture.isOpened():
        capture.release()
        raise MediaError(f"{path}: OpenCV cannot open this video (unsupported or corrupt container). "
                         f"Check it with `ffprobe {path}`; re-download it if it is truncated.")
    if not (np.isfinite(file_fps) and 1.0 <= file_fps <= 1000.0):
        capture.release()
        raise MediaError(f"{path}: the file does not state a usable frame rate (got {file_fps}); cannot "
                         f"place its frames in time. Re-encode it with `ffmpeg -i IN -r 30 OUT.flv`.")
    return capture, file_fps


def read_video(path, fps: float = frontend.VIDEO_FPS) -> tuple[np.ndarray, np.ndarray]:
    """A video file -> (frames uint8 (N, H, W, 3) BGR, times (N,) float64 seconds) resampled to `fps`.

    Output frame k has time k / fps and is the decoded frame nearest to it by timestamp (the
    file's own frame rate, read from the file, gives each decoded frame's time i / file_fps).
    N covers the decoded duration: every k with k / fps < n_decoded / file_fps, so
    N = ceil(n_decoded * fps / file_fps).
    Raises MediaError for unreadable files, files without frames, a missing frame rate, or files
    that decode to less than half of the frames their header declares (truncated downloads).
    The whole video is held in memory: for long recordings, iterate video_ticks instead.
    """
    frames = list(video_ticks(path, fps))
    return np.stack(frames), np.arange(len(frames), dtype=np.float64) / fps


class TruncatedVideoError(MediaError):
    """The video decoded to less than half of the frames its header declares (raised by
    video_ticks after the frames that did decode)."""


def video_ticks(path, fps: float = frontend.VIDEO_FPS) -> Iterator[np.ndarray]:
    """A video file -> its frames resampled to `fps` (uint8 (H, W, 3) BGR, frame k at time
    k / fps), one at a time: the rule of read_video (which collects them), with one decoded
    frame in memory, so an hour-long recording streams.
    Raises MediaError (before any frame) for unreadable files or a missing frame rate, and, after
    the frames that decoded, for files without frames or truncated ones (TruncatedVideoError)."""
    if not fps > 0:
        raise MediaError(f"fps must be positive; got {fps}.")
    cv2 = require("cv2")
    capture, file_fps = open_video(path)
    path = Path(path)
    try:
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ratio = file_fps / fps          # decoded frames per output frame
        emitted, index, last = 0, 0, None
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            # emit every output frame k whose nearest decoded frame is this one
            while np.floor(emitted * ratio + 0.5) == index:
                yield frame
                emitted += 1
            index += 1
            last = frame
    finally:
        capture.release()
    if index == 0:
        raise MediaError(f"{path}: no video frames could be decoded (empty or truncated file). Re-download it.")
    if declared > 0 and index < 0.5 * declared:
        raise TruncatedVideoError(f"{path}: decoded only {index} of the {declared} frames its header declares; "
                                  f"the file is truncated. Re-download it.")
    # output times past the last decoded frame's nearest range but inside the clip: last frame
    while emitted * file_fps < index * fps - 1e-9:
        yield last
        emitted += 1


AUDIO_HINT = f"Convert it with `ffmpeg -i IN -ac 1 -ar {frontend.SAMPLE_RATE} -c:a pcm_s16le OUT.wav`."


class NoAudioTrackError(MediaError):
    """A media file that opens but holds no audio stream."""


def audio_chunks(path, chunk_samples: int = frontend.SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Any audio or video file FFmpeg reads (WAV, FLV, MP4, MKV, ...) -> its first audio track
    as mono int16 PCM at frontend.SAMPLE_RATE, in chunks of about `chunk_samples` samples
    (the last one shorter), decoded and resampled with PyAV (FFmpeg's libswresample; a 16 kHz
    mono 16-bit track passes through unchanged, so a CREMA-D WAV gives read_wav's samples).
    Samples are counted from the track's first decoded sample. Only one chunk is held in memory.
    Raises MediaError (LfsPointerError, NoAudioTrackError) for missing, empty, stub, unreadable
    or audio-less files; a decoding error part-way raises MediaError after the chunks before it."""
    path = _check_file(path, "audio")
    av = require("av")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise MediaError(f"{path}: FFmpeg (PyAV) cannot open it ({error}); check it with `ffprobe {path}`, "
                         f"re-download it if it is truncated. {AUDIO_HINT}") from None
    try:
        if not container.streams.audio:
            raise NoAudioTrackError(f"{path} has no audio track (streams: "
                                    f"{', '.join(s.type for s in container.streams) or 'none'}).")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=frontend.SAMPLE_RATE)
        pending, held = [], 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray().reshape(-1))       # s16 mono: (1, n) -> (n,)
                    held += pending[-1].size
                if held >= chunk_samples:
                    yield np.concatenate(pending).astype(np.int16, copy=False)
                    pending, held = [], 0
            for out in resampler.resample(None):                          # flush the resampler
                pending.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as error:
            raise MediaError(f"{path}: the audio track stops decoding ({error}); the file is damaged or "
                             f"truncated. {AUDIO_HINT}") from None
        if pending:
            yield np.concatenate(pending).astype(np.int16, copy=False)
    finally:
        container.close()


def read_audio(path) -> np.ndarray:
    """A file's first audio track -> mono int16 PCM (n,) at frontend.SAMPLE_RATE (audio_chunks,
    collected). MediaError when it holds no samples."""
    chunks = list(audio_chunks(path))
    if not chunks or sum(c.size for c in chunks) == 0:
        raise MediaError(f"{path}: the audio track holds no samples.")
    return np.concatenate(chunks)


def audio_features(wav_path) -> np.ndarray:
    """WAV file -> log-mel (T_a, 80) float32 (frontend.log_mel). The WAV must be 16 kHz."""
    pcm, rate = read_wav(wav_path)
    if rate != frontend.SAMPLE_RATE:
        raise MediaError(f"{wav_path}: expected {frontend.SAMPLE_RATE} Hz audio; got {rate} Hz. Resample it with "
                         f"`ffmpeg -i IN -ac 1 -ar {frontend.SAMPLE_RATE} -c:a pcm_s16le OUT.wav`.")
    return frontend.log_mel(pcm)


def face_features(frames: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, H, W, 3) uint8 BGR and one box (x, y, w, h) or None per frame ->
    (crops (N, 48, 48) float32, valid (N,) bool); frames without a box get a zero crop."""
    crops = np.zeros((len(frames), frontend.FACE_SIZE, frontend.FACE_SIZE), np.float32)
    valid = np.zeros(len(frames), bool)
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        if box is None:
            continue
        crops[i] = frontend.face_crop(frame, frontend.square_box(box, frame.shape))
        valid[i] = True
    return crops, valid


def clip_features(wav_path, video_path, detector=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One clip's files -> (audio (T_a, 80) float32 log-mel, face (T_v, 48, 48) float32 crops,
    face_valid (T_v,) bool). Video is resampled to frontend.VIDEO_FPS; frames where the detector
    finds no face (after tracking) are kept with a zero crop and face_valid False.

    Either path may be None for a one-modality clip: that modality comes back with 0 frames.
    `detector` is a faces.FaceDetector (a default one is built when None; pass one to reuse it).
    """
    if wav_path is None and video_path is None:
        raise MediaError("clip_features needs a WAV path, a video path, or both; got neither.")
    if wav_path is not None:
        audio = audio_features(wav_path)
    else:
        audio = np.zeros((0, frontend.N_MELS), np.float32)
    if video_path is not None:
        from .faces import FaceDetector
        frames, _ = read_video(video_path, frontend.VIDEO_FPS)
        detector = detector if detector is not None else FaceDetector()
        face, face_valid = face_features(frames, detector.track(frames))
    else:
        face = np.zeros((0, frontend.FACE_SIZE, frontend.FACE_SIZE), np.float32)
        face_valid = np.zeros(0, bool)
    return audio, face, face_valid
