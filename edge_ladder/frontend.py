"""Front-ends shared by `prepare`, the runtime and the CUDA kernels (numpy only, no torch).

These functions *define* the model's input features. kernels/ implements the same math on the
GPU and is tested against this file; change one and the other must follow.

Audio: PCM at 16 kHz -> log-mel frames (T, n_mels), float32.
    frame t covers samples [t*hop, t*hop + win); periodic Hann window of `win` samples,
    zero-padded to n_fft; power spectrum |DFT|^2 of the n_fft//2 + 1 bins; Slaney-style mel
    filterbank (librosa's default: slaney scale and area normalisation); log(max(mel, floor)).
    T = 1 + (n_samples - win) // hop  (0 when n_samples < win; no centre padding).
Faces: camera frame (H, W, 3) uint8 BGR/RGB (or (H, W) gray) + box (x, y, w, h) in pixels ->
    (S, S) float32 grayscale crop: luma = 0.299 R + 0.587 G + 0.114 B at each source pixel
    (a gray frame's pixel value), bilinear
    resampling with half-pixel centres and edge clamping, scaled to [0, 1], then standardised
    per crop: (crop - mean) / (std + FACE_STD_EPS).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000      # Hz, CREMA-D's AudioWAV rate
WIN = 400                # samples, 25 ms
HOP = 160                # samples, 10 ms -> 100 audio frames per second
N_FFT = 512              # next power of two above WIN
N_MELS = 80
F_MIN = 0.0
F_MAX = 8000.0           # Nyquist at 16 kHz
LOG_FLOOR = 1e-10        # log(max(mel, floor)): silence gives log(1e-10) = -23.03, not -inf
FACE_SIZE = 48           # crops are FACE_SIZE x FACE_SIZE grayscale
VIDEO_FPS = 10.0         # face frames per second fed to the model (resampled from the camera)
FACE_STD_EPS = 1e-2      # keeps flat crops (lost face, black frame) finite after standardising
BOX_SCALE = 1.25         # detector boxes are squared and grown by this factor before cropping


@dataclass(frozen=True)
class AudioSpec:
    sample_rate: int = SAMPLE_RATE
    win: int = WIN
    hop: int = HOP
    n_fft: int = N_FFT
    n_mels: int = N_MELS
    f_min: float = F_MIN
    f_max: float = F_MAX
    log_floor: float = LOG_FLOOR


def hz_to_mel(hz):
    """Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa with htk=False."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-12) / min_log_hz) / logstep, mels)


def mel_to_hz(mels):
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filterbank(spec: AudioSpec = AudioSpec()) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) float32 triangular filters with Slaney area normalisation."""
    n_bins = spec.n_fft // 2 + 1
    fft_hz = np.linspace(0.0, spec.sample_rate / 2, n_bins)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(spec.f_min), hz_to_mel(spec.f_max), spec.n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def hann_window(win: int = WIN) -> np.ndarray:
    """Periodic Hann window (win,) float32, as scipy.signal.get_window('hann', win)."""
    n = np.arange(win, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / win)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _analysis_constants(spec: AudioSpec):
    """log_mel's constants for `spec`, built once: Hann window (win,) and filterbank transpose
    (n_fft//2 + 1, n_mels), float64, read-only (shared between calls)."""
    window = hann_window(spec.win).astype(np.float64)
    filters_t = mel_filterbank(spec).astype(np.float64).T
    window.flags.writeable = False
    filters_t.flags.writeable = False
    return window, filters_t


def n_audio_frames(n_samples: int, spec: AudioSpec = AudioSpec()) -> int:
    return 0 if n_samples < spec.win else 1 + (n_samples - spec.win) // spec.hop


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 in [-1, 1); float input is returned as float32 unchanged."""
    pcm = np.asarray(pcm)
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    if np.issubdtype(pcm.dtype, np.floating):
        return pcm.astype(np.float32, copy=False)
    raise TypeError(f"audio PCM must be int16 or float; got {pcm.dtype}. "
                    f"Convert with pcm.astype(np.int16) or scale to float32 in [-1, 1].")


def log_mel(pcm: np.ndarray, spec: AudioSpec = AudioSpec()) -> np.ndarray:
    """Mono PCM (n_samples,) int16 or float at spec.sample_rate -> (T, n_mels) float32."""
    samples = pcm_to_float(pcm)
    if samples.ndim != 1:
        raise ValueError(f"audio must be mono (n_samples,); got shape {samples.shape}. "
                         f"Mix down first, e.g. pcm.mean(axis=1).")
    n_frames = n_audio_frames(samples.shape[0], spec)
    if n_frames == 0:
        return np.zeros((0, spec.n_mels), np.float32)
    starts = np.arange(n_frames) * spec.hop
    frames = samples[starts[:, None] + np.arange(spec.win)[None, :]]           # (T, win)
    window, filters_t = _analysis_constants(spec)
    frames = frames.astype(np.float64) * window
    spectrum = np.fft.rfft(frames, n=spec.n_fft, axis=1)                        # (T, n_fft//2+1)
    power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
    # one (1, bins) @ (bins, n_mels) product per frame: a frame's value never depends on how many
    # frames are computed together (a (T, bins) GEMM's blocking may), so the streaming runtime's
    # per-hop frames equal the offline path's whole-clip frames bit for bit
    mel = np.matmul(power[:, None, :], filters_t)[:, 0, :]                       # (T, n_mels)
    return np.log(np.maximum(mel, spec.log_floor)).astype(np.float32)


def square_box(box, frame_shape, scale: float = BOX_SCALE):
    """Detector box (x, y, w, h) -> square box grown by `scale`, same centre (floats, may exceed
    the frame: sampling clamps at the edges)."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * scale
    cx, cy = x + w / 2, y + h / 2
    return (cx - side / 2, cy - side / 2, side, side)


def face_crop(frame: np.ndarray, box, size: int = FACE_SIZE, channel_order: str = "bgr") -> np.ndarray:
    """One camera frame (H, W, 3) uint8 BGR or RGB (channel_order), or (H, W) uint8 gray
    (channel_order="gray": the luma is the pixel value), and a box (x, y, w, h) -> (size, size)
    float32 crop, grayscale, bilinear, standardised (see module docstring)."""
    if channel_order not in ("bgr", "rgb", "gray"):
        raise ValueError(f"channel_order must be 'bgr', 'rgb' or 'gray'; got {channel_order!r}.")
    gray = channel_order == "gray"
    if frame.dtype != np.uint8 or (frame.ndim != 2 if gray else (frame.ndim != 3 or frame.shape[2] != 3)):
        raise ValueError(f"frame must be uint8 {'(H, W)' if gray else '(H, W, 3)'} for channel_order="
                         f"{channel_order!r}; got {frame.dtype} {frame.shape}.")
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        raise ValueError(f"face box must have positive width and height; got {box}.")
    height, width = frame.shape[:2]
    weights = (0.114, 0.587, 0.299) if channel_order == "bgr" else (0.299, 0.587, 0.114)
    # sample positions: half-pixel centres, clamped to the frame
    src_x = np.clip(x + (np.arange(size) + 0.5) * (w / size) - 0.5, 0.0, width - 1.0)
    src_y = np.clip(y + (np.arange(size) + 0.5) * (h / size) - 0.5, 0.0, height - 1.0)
    x0 = np.floor(src_x).astype(np.int64)
    y0 = np.floor(src_y).astype(np.int64)
    x1 = np.minimum(x0 + 1, width - 1)
    y1 = np.minimum(y0 + 1, height - 1)
    fx = (src_x - x0).astype(np.float32)[None, :]
    fy = (src_y - y0).astype(np.float32)[:, None]

    # the four bilinear neighbours of every sample in one gather: [row y0|y1, S, column x0|x1, S]
    rows, cols = np.stack([y0, y1])[:, :, None, None], np.stack([x0, x1])[None, None, :, :]
    if frame.flags.c_contiguous:      # np.take on the pixel list: 4x faster than 2-D fancy indexing
        pix = np.take(frame.reshape((height * width,) + frame.shape[2:]), rows * width + cols, axis=0)
    else:
        pix = frame[rows, cols]
    pix = pix.astype(np.float32)                                                # (2, S, 2, S[, 3])
    if not gray:
        pix = pix[..., 0] * weights[0] + pix[..., 1] * weights[1] + pix[..., 2] * weights[2]
    top = pix[0, :, 0] * (1 - fx) + pix[0, :, 1] * fx
    bottom = pix[1, :, 0] * (1 - fx) + pix[1, :, 1] * fx
    crop = (top * (1 - fy) + bottom * fy) / 255.0                               # (S, S) in [0, 1]
    return standardise_crop(crop)


def standardise_crop(crop: np.ndarray) -> np.ndarray:
    crop = crop.astype(np.float32)
    return ((crop - crop.mean()) / (crop.std() + FACE_STD_EPS)).astype(np.float32)


def video_frame_times(n_frames: int, fps: float = VIDEO_FPS) -> np.ndarray:
    """Timestamps (seconds) of the model-rate face frames for a clip of n_frames."""
    return np.arange(n_frames, dtype=np.float64) / fps
