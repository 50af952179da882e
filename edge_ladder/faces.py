"""Face detection for the offline front-end: OpenCV's Haar cascade (numpy + cv2, no torch).

The cascade XML files ship inside opencv-python(-headless) under cv2.data.haarcascades up to
4.12; pyproject pins opencv-python-headless < 4.13 so they stay available (OpenCV 5 moved them
out of the wheel). JetPack's and apt's OpenCV (python3-opencv) have no cv2.data: their cascades
are under /usr/share/opencv4/haarcascades (Debian/Ubuntu package opencv-data, JetPack's
libopencv) or, for OpenCV built from source, /usr/local/share/opencv4/haarcascades.
find_cascade() looks in those places; `--cascade PATH` (prepare, infer, robot_loop.py),
cascade= (FaceDetector, Stream) or $EDGE_LADDER_CASCADE point at a file anywhere.
The same detector and the same tracking rule (FaceTracker) run in `prepare`, `edge-ladder infer`
and the streaming runtime, so their face crops agree exactly.

Tracking rule (FaceTracker.update, one call per 10 fps model tick, in time order):
  * a full-frame detection (FaceDetector.detect) runs on the first tick, every `redetect_every`
    ticks after the last one (with a face tracked, only for faces of at least 0.75x its size,
    the ones that could replace it), and on the tick the face is lost (the first tick on which
    the search around the last box misses);
  * on every other tick, only a region around the last detected box is searched
    (FaceDetector.detect_near), shrunk so the face there is about the cascade's own window: a
    720p frame's region search costs about a twentieth of its full-frame detection;
  * the last detected box stays the search anchor for `redetect_every` ticks without a
    detection; a tick without a detection reuses it as its box for up to `max_reuse` ticks
    (Haar flickers on single frames), then the tick has no face.
"""
from __future__ import annotations

import math
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
TRACK_FACE_PX = 26          # the region search shrinks the last face to about this side (by a whole
                            # factor, OpenCV's fast area resize): just above the cascade's 24-px window
TRACK_GROWTH = 1.4          # ... and finds faces up to this factor larger
REDETECT_MIN_SHARE = 0.75   # a periodic full-frame search while a face is tracked looks only for faces
                            # at least this share of its size: a smaller one would not replace it (the
                            # largest face is used), and skipping them shrinks the frame further
CHANNEL_ORDERS = ("bgr", "rgb", "gray")

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
    """Largest frontal face per frame, full-frame or near a known box, and the tracking rule.

    min_size:       smallest face side in pixels of the original frame; frames are shrunk so this
                    size becomes the cascade's 24-px window (48 -> detection at half resolution).
    scale_factor:   image-pyramid step of detectMultiScale (1.15 = 15 % per level).
    min_neighbors:  overlapping detections needed to accept a face (higher = fewer false faces).
    detect_width:   frames wider than this are downscaled for detection (speed); boxes are
                    returned in original-frame pixels. None = never downscale.
    max_reuse:      a tick without a detection reuses the last box for up to this many
                    consecutive ticks (FaceTracker).
    cascade:        the cascade XML: a path, a file name to look for, or None for $EDGE_LADDER_CASCADE
                    or haarcascade_frontalface_default.xml (find_cascade).
    redetect_every: ticks between full-frame detections while a face is tracked or none is
                    seen (FaceTracker); 1 = full-frame detection on every tick (no tracking).
    search_margin:  the region searched around the last box reaches this many face sides
                    beyond it on each side (0.3: a square of 1.6 times the face's side).
    """

    def __init__(self, min_size: int = 48, scale_factor: float = 1.15, min_neighbors: int = 3,
                 detect_width: int | None = 320, max_reuse: int = 5, cascade: Optional[str] = None,
                 redetect_every: int = 10, search_margin: float = 0.3):
        if int(redetect_every) < 1:
            raise ValueError(f"redetect_every must be >= 1 tick; got {redetect_every}.")
        if not float(search_margin) > 0:
            raise ValueError(f"search_margin must be > 0 face sides; got {search_margin}.")
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
        self.redetect_every = int(redetect_every)
        self.search_margin = float(search_margin)

    def _gray(self, frame: np.ndarray, channel_order: str) -> np.ndarray:
        """(H, W, 3) uint8 in channel_order, or (H, W) gray -> (H, W) uint8 gray (BT.601 luma)."""
        frame = np.asarray(frame)
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}; got {channel_order!r}.")
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3):
            raise ValueError(f"frame must be uint8 (H, W, 3) BGR/RGB or (H, W) gray; got {frame.dtype} {frame.shape}.")
        if frame.ndim == 2:
            return frame
        code = self._cv2.COLOR_BGR2GRAY if channel_order != "rgb" else self._cv2.COLOR_RGB2GRAY
        return self._cv2.cvtColor(frame, code)

    def _largest(self, gray: np.ndarray, scale: float, min_side: int, max_side: int = 0):
        """Detect in `gray` shrunk by `scale`; the largest face in unshrunk pixels, or None."""
        cv2 = self._cv2
        if scale < 1.0:
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        if min(gray.shape) < min_side:
            return None
        gray = cv2.equalizeHist(gray)
        found = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                               minNeighbors=self.min_neighbors, minSize=(min_side, min_side),
                                               maxSize=(max_side, max_side))
        if len(found) == 0:
            return None
        x, y, w, h = max(np.asarray(found, dtype=np.float64), key=lambda b: b[2] * b[3])
        return (x / scale, y / scale, w / scale, h / scale)

    def detect(self, frame: np.ndarray, channel_order: str = "bgr", min_face: Optional[float] = None):
        """One frame (H, W, 3) uint8 BGR (RGB with channel_order="rgb") or (H, W) gray ->
        (x, y, w, h) floats in pixels of the largest detected face, or None. Searches the
        whole frame, for faces of at least min_size pixels (or min_face, when larger)."""
        gray = self._gray(frame, channel_order)
        # Shrink the frame so the smallest wanted face is the cascade's own 24-px window: no time
        # is spent on faces smaller than min_size, and the pyramid starts at its first level.
        scale = min(1.0, CASCADE_WINDOW / self.min_size)
        if self.detect_width:
            scale = min(scale, self.detect_width / gray.shape[1])
        smallest = self.min_size
        if min_face is not None and min_face > self.min_size:
            # only larger faces wanted: shrink further, by a whole factor (OpenCV's fast area resize)
            smallest = float(min_face)
            scale = 1.0 / max(int(smallest // CASCADE_WINDOW), math.ceil(1.0 / scale - 1e-9))
        return self._largest(gray, scale, max(CASCADE_WINDOW, int(round(smallest * scale))))

    def detect_near(self, frame: np.ndarray, box, channel_order: str = "bgr"):
        """The largest face in a region around `box` (x, y, w, h), or None. The region reaches
        search_margin face sides beyond the box and is shrunk by the whole factor that makes a
        face of the box's size about TRACK_FACE_PX pixels (26-52 px: just above the cascade's
        24-px window); faces from the window up to TRACK_GROWTH x the box's size are found.
        Boxes in pixels of the whole frame."""
        frame = np.asarray(frame)
        height, width = frame.shape[:2]
        x, y, w, h = (float(v) for v in box)
        side = max(w, h)
        shrink = max(1, int(side // TRACK_FACE_PX))
        reach = self.search_margin * side
        x0, y0 = max(0, math.floor(x - reach)), max(0, math.floor(y - reach))
        x1, y1 = min(width, math.ceil(x + w + reach)), min(height, math.ceil(y + h + reach))
        # a whole multiple of the shrink factor: OpenCV's area resize then takes its fast path
        x1, y1 = x0 + (x1 - x0) // shrink * shrink, y0 + (y1 - y0) // shrink * shrink
        if x1 - x0 < CASCADE_WINDOW * shrink or y1 - y0 < CASCADE_WINDOW * shrink:
            return None
        gray = self._gray(frame[y0:y1, x0:x1], channel_order)
        found = self._largest(gray, 1.0 / shrink, CASCADE_WINDOW, int(side / shrink * TRACK_GROWTH))
        if found is None:
            return None
        fx, fy, fw, fh = found
        return (fx + x0, fy + y0, fw, fh)

    def tracker(self) -> "FaceTracker":
        """A new FaceTracker (the tracking rule's state for one camera or one clip)."""
        return FaceTracker(self)

    def track(self, frames, channel_order: str = "bgr") -> list:
        """Frames (N, H, W, 3) at the model's tick rate -> one box or None per frame, by the
        tracking rule (FaceTracker) from a fresh state."""
        tracker = self.tracker()
        return [tracker.update(frame, channel_order) for frame in frames]


class FaceTracker:
    """The tracking rule (module docstring) for one sequence of ticks. update() once per tick,
    in order; `counts` says how often each kind of search ran ('full', 'region') and how ticks
    ended ('found', 'reused', 'none')."""

    def __init__(self, detector: FaceDetector):
        self.detector = detector
        self.anchor: Optional[tuple] = None      # last detected box
        self.misses = 0                          # ticks since the anchor was detected
        self.since_full: Optional[int] = None    # ticks since the last full-frame detection
        self.counts = {"full": 0, "region": 0, "found": 0, "reused": 0, "none": 0}
        self.last_kind = ""                      # 'full', 'region', 'region+full' or '' (no search)

    def update(self, frame: Optional[np.ndarray], channel_order: str = "bgr"):
        """One tick's frame (None: the tick has no frame) -> its face box (x, y, w, h) or None."""
        detector = self.detector
        found, kinds = None, []
        if frame is not None:
            due = self.since_full is None or self.since_full + 1 >= detector.redetect_every
            if due:       # periodic: with a face tracked, only faces that could replace it (REDETECT_MIN_SHARE)
                min_face = REDETECT_MIN_SHARE * max(self.anchor[2:]) if self.anchor is not None else None
                found = self._full(frame, channel_order, kinds, min_face)
            if found is None and self.anchor is not None:
                kinds.append("region")
                self.counts["region"] += 1
                found = detector.detect_near(frame, self.anchor, channel_order)
                if found is None and self.misses == 0 and not due:
                    found = self._full(frame, channel_order, kinds)        # the face is lost: look everywhere
        if "full" not in kinds and self.since_full is not None:
            self.since_full += 1
        self.last_kind = "+".join(kinds)
        if found is not None:
            self.anchor, self.misses = found, 0
            self.counts["found"] += 1
            return found
        self.misses += 1
        box = self.anchor if self.anchor is not None and self.misses <= detector.max_reuse else None
        if self.anchor is not None and self.misses >= max(detector.redetect_every, detector.max_reuse):
            self.anchor = None
        self.counts["reused" if box is not None else "none"] += 1
        return box

    def skip(self, n_ticks: int) -> None:
        """n_ticks ticks without a frame, in O(1) (a camera gap no window can still use)."""
        if n_ticks <= 0:
            return
        self.misses += n_ticks
        if self.since_full is not None:
            self.since_full += n_ticks
        if self.anchor is not None and self.misses >= max(self.detector.redetect_every, self.detector.max_reuse):
            self.anchor = None
        self.counts["none"] += n_ticks
        self.last_kind = ""

    def _full(self, frame, channel_order, kinds, min_face=None):
        kinds.append("full")
        self.counts["full"] += 1
        self.since_full = 0
        return self.detector.detect(frame, channel_order, min_face)


def track_boxes(boxes, max_reuse: int) -> list:
    """The reuse rule alone on already-detected boxes (one box or None per frame): a miss
    reuses the last box for up to max_reuse consecutive misses. The streaming runtime applies it
    to boxes the caller's own detector gave."""
    out, last, missed = [], None, 0
    for box in boxes:
        if box is not None:
            last, missed = box, 0
        elif last is not None and missed < max_reuse:
            box, missed = last, missed + 1
        out.append(box)
    return out
