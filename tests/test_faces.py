"""faces.FaceTracker: the tracking rule prepare, infer and Stream share (full-frame detection on
the first tick, every redetect_every ticks and when the face is lost; otherwise a search near
the last box), and what it keeps: faces found on the generated corpus."""
from __future__ import annotations

import numpy as np
import pytest

from edge_ladder import media
from edge_ladder.faces import FaceDetector

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def clip_frames(tiny_corpus):
    """Model-rate (10 fps) frames of three generated clips."""
    flvs = sorted((tiny_corpus / "VideoFlash").glob("*.flv"))[:3]
    return [media.read_video(flv)[0] for flv in flvs]


def spy(detector):
    """Record per call which search ran: 'full' (detect) or 'near' (detect_near)."""
    calls = []
    detect, near = detector.detect, detector.detect_near
    detector.detect = lambda *a, **k: calls.append("full") or detect(*a, **k)
    detector.detect_near = lambda *a, **k: calls.append("near") or near(*a, **k)
    return calls


def test_tracking_searches_near_the_last_box_between_full_detections(clip_frames):
    detector = FaceDetector(redetect_every=10)
    calls = spy(detector)
    tracker = detector.tracker()
    kinds = []
    for frame in np.concatenate(clip_frames):
        box = tracker.update(frame)
        assert box is not None
        kinds.append(tracker.last_kind)
    assert kinds[0] == "full"
    fulls = [i for i, kind in enumerate(kinds) if "full" in kind]
    for previous, current in zip(fulls, fulls[1:]):
        # periodic every 10 ticks, or the tick the search near the box missed (the face was "lost")
        assert current - previous == 10 or kinds[current] == "region+full"
    assert kinds.count("region") >= 0.7 * len(kinds)
    assert calls.count("near") == tracker.counts["region"] and calls.count("full") == tracker.counts["full"]
    assert tracker.counts["found"] == len(kinds)


def test_a_lost_face_triggers_one_full_detection_then_the_box_is_reused_and_searched(clip_frames):
    face = clip_frames[0][0]
    wall = cv2.GaussianBlur(np.random.default_rng(3).integers(0, 255, face.shape, dtype=np.uint8), (0, 0), 6)
    detector = FaceDetector(redetect_every=10, max_reuse=2)
    tracker = detector.tracker()
    first = tracker.update(face)
    boxes, kinds = [], []
    for frame in [wall, wall, wall, face]:
        boxes.append(tracker.update(frame))
        kinds.append(tracker.last_kind)
    assert kinds == ["region+full", "region", "region", "region"]        # one full search when lost
    assert boxes[:3] == [first, first, None] and boxes[3] is not None    # reused for max_reuse ticks


def test_no_face_costs_one_full_detection_every_n_ticks():
    wall = np.full((120, 160, 3), 90, np.uint8)
    detector = FaceDetector(redetect_every=10)
    tracker = detector.tracker()
    boxes = [tracker.update(wall) for _ in range(25)]
    assert boxes == [None] * 25
    assert tracker.counts["full"] == 3 and tracker.counts["region"] == 0          # ticks 0, 10, 20
    every_tick = FaceDetector(redetect_every=1).tracker()
    [every_tick.update(wall) for _ in range(25)]
    assert every_tick.counts["full"] == 25
    tracker.skip(7)                                                              # a camera gap
    assert tracker.counts["none"] == 32


def test_detect_near_finds_the_face_of_a_720p_frame_in_pixels_of_the_frame(clip_frames):
    small = clip_frames[0][0]
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[100:580, 400:1040] = cv2.resize(small, (640, 480), interpolation=cv2.INTER_LINEAR)
    detector = FaceDetector()
    full = detector.detect(frame)
    assert full is not None
    moved = (full[0] + 15, full[1] - 10, full[2], full[3])          # the last box, off by a few pixels
    near = detector.detect_near(frame, moved)
    assert near is not None
    np.testing.assert_allclose(near, full, atol=0.15 * full[2])
    assert detector.detect_near(frame, (1200.0, 10.0, 60.0, 60.0)) is None   # nothing near an empty corner


def test_the_tracking_rule_keeps_the_face_found_rate_of_full_detection(tiny_corpus):
    """Face-found rate on the generated corpus, full-frame detection on every tick (the old rule)
    against tracking: no faces traded for speed."""
    flvs = sorted((tiny_corpus / "VideoFlash").glob("*.flv"))
    rates = {}
    for name, every in (("full every tick", 1), ("tracking", 10)):
        detector = FaceDetector(redetect_every=every)
        found = total = 0
        for flv in flvs:
            boxes = detector.track(media.read_video(flv)[0])
            found += sum(box is not None for box in boxes)
            total += len(boxes)
        rates[name] = found / total
    print(f"faces found in {len(flvs)} generated clips: {rates}")
    assert rates["tracking"] >= rates["full every tick"] - 0.005 and rates["tracking"] >= 0.99


def test_detector_settings_are_checked():
    with pytest.raises(ValueError, match="redetect_every must be >= 1"):
        FaceDetector(redetect_every=0)
    with pytest.raises(ValueError, match="search_margin must be > 0"):
        FaceDetector(search_margin=0)
    with pytest.raises(ValueError, match="channel_order must be one of bgr, rgb, gray"):
        FaceDetector().detect(np.zeros((10, 10, 3), np.uint8), channel_order="hsv")
