"""Face detection for the offline front-end: OpenCV's Haar cascade (numpy + cv2, no torch).

The cascade XML files ship inside opencv-python(-headless) under cv2.data.haarcascades up to
4.12; pyproject pins opencv-python-headless < 4.13 so they stay available (OpenCV 5 moved them
out of the wheel). The same detector runs in `prepare` and in `edge-ladder infer`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._deps import require
from .errors import EdgeLadderError

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
CASCADE_WINDOW = 24         # pixels: the training window of the frontal-face cascades


class FaceDetectorError(EdgeLadderError, RuntimeError):
    """The Haar cascade could not be found or loaded."""


class FaceDetector:
    """Largest frontal face per frame, with short-gap tracking.

    min_size:      smallest face side in pixels of the original frame; frames are shrunk so this
                   size becomes the cascade's 24-px window (48 -> detection at half resolution).
    scale_factor:  image-pyramid step of detectMultiScale (1.15 = 15 % per level).
    min_neighbors: overlapping detections needed to accept a face (higher = fewer false faces).
    detect_width:  frames wider than this are downscaled for detection (speed); boxes are
                   returned in original-frame pixels. None = never downscale.
    max_reuse:     track() reuses the last box for up to this many consecutive missed frames.
    """

    def __init__(self, min_size: int = 48, scale_factor: float = 1.15, min_neighbors: int = 3,
                 detect_width: int | None = 320, max_reuse: int = 5, cascade: str = DEFAULT_CASCADE):
        cv2 = require("cv2")
        path = Path(cascade)
        if not path.is_file():
            path = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / cascade
        if not path.is_file():
            raise FaceDetectorError(
                f"Haar cascade {cascade!r} not found (looked in cv2.data.haarcascades = {path.parent}). "
                f"Install opencv-python-headless<4.13, which bundles the cascades, or pass cascade=PATH.")
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FaceDetectorError(f"OpenCV could not load the Haar cascade {path}; the file is corrupt.")
        self._cv2 = cv2
        self.min_size = int(min_size)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.detect_width = detect_width
        self.max_reuse = int(max_reuse)

    def detect(self, frame_bgr: np.ndarray):
        """One frame (H, W, 3) uint8 BGR (or (H, W) gray) -> (x, y, w, h) floats in pixels of the
        largest detected face, or None."""
        frame = np.asarray(frame_bgr)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3):
            raise ValueError(f"frame must be uint8 (H, W, 3) BGR or (H, W) gray; got {frame.dtype} {frame.shape}.")
        cv2 = self._cv2
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        # Shrink the frame so the smallest wanted face is the cascade's own 24-px window: no time
        # is spent on faces smaller than min_size, and the pyramid starts at its first level.
        scale = min(1.0, CASCADE_WINDOW / self.min_size)
        if self.detect_width:
            scale = min(scale, self.detect_width / gray.shape[1])
        if scale < 1.0:
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(CASCADE_WINDOW, int(round(self.min_size * scale)))
        found = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(min_side, min_side))
        if len(found) == 0:
            return None
        x, y, w, h = max(np.asarray(found, dtype=np.float64), key=lambda b: b[2] * b[3])
        return (x / scale, y / scale, w / scale, h / scale)

    def track(self, frames) -> list:
        """Frames (N, H, W, 3) -> one box or None per frame; a missed frame reuses the previous
        box for up to max_reuse consecutive misses (Haar flickers on single frames)."""
        return track_boxes([self.detect(frame) for frame in frames], self.max_reuse)


def track_boxes(boxes, max_reuse: int) -> list:
    """FaceDetector.track's rule on already-detected boxes (one box or None per frame): a miss
    reuses the last box for up to max_reuse consecutive misses. The streaming runtime applies
    it to boxes detected frame by frame."""
    out, last, missed = [], None, 0
    for box in boxes:
        if box is not None:
            last, missed = box, 0
        elif last is not None and missed < max_reuse:
            box, missed = last, missed + 1
        out.append(box)
    return out
