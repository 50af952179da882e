"""Face detection for the offline front-end: OpenCV's Haar cascade (numpy + cv2, no torch).

The cascade XML files ship inside opencv-python(-headless) under cv2.data.haarcascades up to
4.12; pyproject pins opencv-python-headless < 4.13 so they stay available (OpenCV 5 moved them
out of the wheel). JetPack's and apt's OpenCV (python3-opencv) have no cv2.data: their cascades
are under /usr/share/opencv4/haarcascades (Debian/Ubuntu package opencv-data, JetPack's
libopencv) or, for OpenCV built from source, /usr/local/share/opencv4/haarcascades.
find_cascade() looks in those places; `--cascade PATH` (prepare, infer, robot_loop.py),
cascade= (FaceDetector, Stream) or $EDGE_LADDER_CASCADE point at a file anywhere.
The same detector runs in `prepare`, `edge-ladder infer` and the streaming runtime.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from ._deps import require
from .errors import EdgeLadderError

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
CASCADE_ENV = "EDGE_LADDER_CASCADE"     # a cascade XML file to use instead of looking for one
CASCADE_WINDOW = 24         # pixels: the training window of the frontal-face cascades
# where OpenCV installs its cascades when cv2.data is absent (apt / JetPack / source builds)
SYSTEM_CASCADE_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades",
                       "/usr/local/share/opencv4/haarcascades", "/usr/local/share/opencv/haarcascades")
POINT_AT_ONE = (f"point at the file with --cascade PATH (prepare, infer, robot_loop.py) or {CASCADE_ENV}=PATH, "
                f"or install one: pip install 'opencv-python-headless<4.13' (bundles them) or sudo apt install "
                f"opencv-data (puts them in /usr/share/opencv4/haarcascades)")


class FaceDetectorError(EdgeLadderError, RuntimeError):
    """The Haar cascade could not be found or loaded."""


def cascade_dirs(cv2=None) -> list:
    """Folders searched for a cascade file name, in order: cv2.data.haarcascades (pip's OpenCV),
    this Python's prefix (conda, venvs over a prefix install), then SYSTEM_CASCADE_DIRS."""
    folders = []
    data = getattr(getattr(cv2, "data", None), "haarcascades", None) if cv2 is not None else None
    if data:
        folders.append(Path(data))
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        folders += [Path(prefix) / "share" / name / "haarcascades" for name in ("opencv4", "opencv")]
    folders += [Path(folder) for folder in SYSTEM_CASCADE_DIRS]
    return list(dict.fromkeys(folders))


def find_cascade(cascade: Optional[str] = None, cv2=None) -> Path:
    """The cascade XML file to load. cascade: a path (used as given; a folder holding
    DEFAULT_CASCADE is fine), a bare file name (searched in cascade_dirs()), or None:
    $EDGE_LADDER_CASCADE when set, else DEFAULT_CASCADE searched.
    Raises FaceDetectorError saying where it looked and how to point at a file."""
    source = "cascade"
    if cascade is None and os.environ.get(CASCADE_ENV):
        cascade, source = os.environ[CASCADE_ENV], CASCADE_ENV
    cascade = str(cascade) if cascade is not None else DEFAULT_CASCADE
    path = Path(cascade).expanduser()
    if path.is_file():
        return path
    if path.is_dir() and (path / DEFAULT_CASCADE).is_file():  # the haarcascades folder itself
        return path / DEFAULT_CASCADE
    if source == CASCADE_ENV or path.name != cascade:          # a path, not a name to look for
        given = f"{CASCADE_ENV}={cascade}" if source == CASCADE_ENV else str(cascade)
        kind = f"is a folder without {DEFAULT_CASCADE}" if path.is_dir() else "does not exist"
        raise FaceDetectorError(f"Haar cascade {given} {kind}; {POINT_AT_ONE}.")
    folders = cascade_dirs(cv2)
    for folder in folders:
        if (folder / cascade).is_file():
            return folder / cascade
    where = ", ".join(str(folder) for folder in folders)
    no_data = ("" if cv2 is None or hasattr(cv2, "data") else
               f" This OpenCV ({getattr(cv2, '__version__', '?')}, {getattr(cv2, '__file__', '?')}) has no cv2.data "
               f"(JetPack's / apt's python3-opencv do not).")
    raise FaceDetectorError(f"Haar cascade {cascade} not found; looked in {where}.{no_data} To fix it, {POINT_AT_ONE}.")


class FaceDetector:
    """Largest frontal face per frame, with short-gap tracking.

    min_size:      smallest face side in pixels of the original frame; frames are shrunk so this
                   size becomes the cascade's 24-px window (48 -> detection at half resolution).
    scale_factor:  image-pyramid step of detectMultiScale (1.15 = 15 % per level).
    min_neighbors: overlapping detections needed to accept a face (higher = fewer false faces).
    detect_width:  frames wider than this are downscaled for detection (speed); boxes are
                   returned in original-frame pixels. None = never downscale.
    max_reuse:     track() reuses the last box for up to this many consecutive missed frames.
    cascade:       the cascade XML: a path, a file name to look for, or None for $EDGE_LADDER_CASCADE
                   or haarcascade_frontalface_default.xml (find_cascade).
    """

    def __init__(self, min_size: int = 48, scale_factor: float = 1.15, min_neighbors: int = 3,
                 detect_width: int | None = 320, max_reuse: int = 5, cascade: Optional[str] = None):
        cv2 = require("cv2")
        path = find_cascade(cascade, cv2)
        self._cascade = cv2.CascadeClassifier()
        try:
            loaded = self._cascade.load(str(path))
        except (cv2.error, SystemError) as error:          # OpenCV raises for some malformed XML
            loaded, why = False, f" ({' '.join(str(error).split())[:200]})"
        else:
            why = ""
        if not loaded or self._cascade.empty():
            raise FaceDetectorError(f"OpenCV could not load the Haar cascade {path}: not a cascade XML file, or "
                                    f"corrupt{why}; {POINT_AT_ONE}.")
        self.cascade_path = path
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
