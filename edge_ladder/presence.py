"""The presence rule: whether a window (or a clip) carries audio and face evidence. numpy only;
`edge-ladder infer` and the streaming runtime (Stream) both decide with these functions, so the
same recording gets the same presence flags, and so the same prediction, offline and live.

    audio present   the PCM has samples and its RMS level is above SILENCE_DBFS (a muted or
                    unplugged microphone and digital silence are absent)
    face present    at least one video frame of the window has a detected face
    evidence        "audio+face" | "audio" | "face" | "none"

With no evidence the model still answers (both modalities flagged absent): that answer is its
prior, not a reading of anyone, and every result says so (evidence "none").
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .frontend import pcm_to_float

SILENCE_DBFS = -60.0        # RMS below this is silence: a quiet room is about -50 dBFS, speech -30 to -10
EVIDENCE = {(True, True): "audio+face", (True, False): "audio", (False, True): "face", (False, False): "none"}
NO_EVIDENCE = ("no evidence: the audio is silent or missing and no frame has a face, so the label is the "
               "model's prior, not a reading")


def rms_dbfs(samples) -> float:
    """RMS level of PCM (int16, or float in [-1, 1)) in dB full scale (-inf for digital silence)."""
    samples = pcm_to_float(np.asarray(samples))
    power = float(np.mean(np.square(samples, dtype=np.float64))) if samples.size else 0.0
    return 10.0 * math.log10(power) if power > 0 else -math.inf


def audio_present(samples, silence_dbfs: Optional[float] = SILENCE_DBFS) -> bool:
    """The audio rule: samples present unless their RMS is at or below silence_dbfs (None: any
    samples are present)."""
    samples = np.asarray(samples)
    return bool(samples.size > 0 and (silence_dbfs is None or rms_dbfs(samples) > silence_dbfs))


def face_present(face_valid) -> bool:
    """The face rule: at least one frame has a detected face."""
    return bool(np.asarray(face_valid, bool).any())


def evidence(audio: bool, face: bool) -> str:
    """(audio present, face present) -> "audio+face" | "audio" | "face" | "none"."""
    return EVIDENCE[(bool(audio), bool(face))]
