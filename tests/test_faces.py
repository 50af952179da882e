"""The Haar cascade lookup (faces.find_cascade) on an OpenCV without cv2.data, as JetPack's and apt's
python3-opencv are, and --cascade / $EDGE_LADDER_CASCADE wherever a detector is built; then
faces.FaceTracker, the tracking rule prepare, infer and Stream share (full-frame detection on the
first tick, every redetect_every ticks and when the face is lost; otherwise a search near the last
box), and what it keeps: faces found on the generated corpus."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge_ladder import faces, media  # noqa: E402
from edge_ladder.cli import main  # noqa: E402
from edge_ladder.faces import CASCADE_ENV, DEFAULT_CASCADE, FaceDetector, FaceDetectorError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = Path(cv2.data.haarcascades) / DEFAULT_CASCADE     # pip's OpenCV, read before a test hides it


@pytest.fixture
def apt_opencv(monkeypatch, tmp_path):
    """This process's cv2 made to look like python3-opencv: no cv2.data; the system folders (and this
    Python's prefix) are empty folders under tmp_path. -> the system folder a cascade would be in."""
    monkeypatch.delattr(cv2, "data")
    monkeypatch.delenv(CASCADE_ENV, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path / "python"))
    system = tmp_path / "usr" / "share" / "opencv4" / "haarcascades"
    monkeypatch.setattr(faces, "SYSTEM_CASCADE_DIRS", (str(system), str(tmp_path / "usr/share/opencv/haarcascades")))
    return system


@pytest.fixture
def cascade_copy(tmp_path):
    path = tmp_path / "models" / "my_faces.xml"
    path.parent.mkdir()
    shutil.copy(BUNDLED, path)
    return path


def test_without_cv2_data_the_cascade_is_found_in_the_system_folder(apt_opencv):
    apt_opencv.mkdir(parents=True)
    shutil.copy(BUNDLED, apt_opencv / DEFAULT_CASCADE)     # where apt's opencv-data / JetPack put it
    assert FaceDetector().cascade_path == apt_opencv / DEFAULT_CASCADE


def test_a_missing_cascade_says_where_it_looked_and_how_to_point_at_one(apt_opencv, tmp_path):
    with pytest.raises(FaceDetectorError) as caught:
        FaceDetector()
    text = str(caught.value)
    assert f"Haar cascade {DEFAULT_CASCADE} not found; looked in " in text
    assert str(apt_opencv) in text and str(tmp_path / "venv" / "share" / "opencv4" / "haarcascades") in text
    assert "has no cv2.data" in text
    assert "--cascade PATH" in text and f"{CASCADE_ENV}=PATH" in text and "sudo apt install opencv-data" in text


def test_cascade_env_and_argument_point_at_a_file(apt_opencv, cascade_copy, monkeypatch):
    assert FaceDetector(cascade=str(cascade_copy)).cascade_path == cascade_copy
    monkeypatch.setenv(CASCADE_ENV, str(cascade_copy))
    assert FaceDetector().cascade_path == cascade_copy
    monkeypatch.setenv(CASCADE_ENV, str(cascade_copy.with_name("gone.xml")))
    with pytest.raises(FaceDetectorError, match=f"{CASCADE_ENV}=.*gone.xml does not exist"):
        FaceDetector()


def test_a_folder_holding_the_default_cascade_is_accepted(apt_opencv, tmp_path):
    folder = tmp_path / "opencv" / "data" / "haarcascades"
    folder.mkdir(parents=True)
    shutil.copy(BUNDLED, folder / DEFAULT_CASCADE)
    assert FaceDetector(cascade=str(folder)).cascade_path == folder / DEFAULT_CASCADE
    with pytest.raises(FaceDetectorError, match=f"is a folder without {DEFAULT_CASCADE}"):
        FaceDetector(cascade=str(tmp_path))


def test_a_file_that_is_not_a_cascade_is_refused(tmp_path):
    junk = tmp_path / "faces.xml"
    junk.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(FaceDetectorError, match="not a cascade XML file"):
        FaceDetector(cascade=str(junk))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from edge_ladder.corpus import make_corpus
    corpus = make_corpus(tmp_path_factory.mktemp("corpus"), actors=1, clips_per_actor=1, seed=3, workers=1)
    wav = sorted((corpus / "AudioWAV").glob("*.wav"))[0]
    return wav, corpus / "VideoFlash" / f"{wav.stem}.flv"


def test_infer_takes_cascade(apt_opencv, cascade_copy, tiny_export, clip, capsys):
    wav, flv = clip
    model = str(tiny_export / "model.onnx")
    assert main(["infer", model, "--audio", str(wav), "--video", str(flv), "--json"]) == 2
    assert "--cascade PATH" in capsys.readouterr().err
    assert main(["infer", model, "--audio", str(wav), "--video", str(flv), "--json", "--cascade", str(cascade_copy)]) == 0
    assert '"face": true' in capsys.readouterr().out
    assert main(["infer", model, "--audio", str(wav), "--json"]) == 0      # audio only: no detector needed


def test_prepare_takes_cascade_and_checks_it_before_any_clip(apt_opencv, cascade_copy, tmp_path):
    from edge_ladder.corpus import make_corpus
    from edge_ladder.prepare import prepare
    corpus = make_corpus(tmp_path / "corpus", actors=3, clips_per_actor=1, seed=0, workers=1)
    with pytest.raises(FaceDetectorError, match="not found; looked in"):
        prepare(corpus, tmp_path / "no_cascade", workers=1)
    assert not (tmp_path / "no_cascade").exists()          # nothing processed, nothing written
    summary = prepare(corpus, tmp_path / "features", workers=1, cascade=str(cascade_copy))
    assert summary["kept"] == 3 and summary["face_detected_fraction"] > 0.5


def test_stream_takes_cascade(apt_opencv, cascade_copy, tiny_export):
    from edge_ladder import runtime
    model = runtime.load(tiny_export / "model.onnx")
    stream = runtime.Stream(model, cascade=str(cascade_copy))
    assert stream.detector.cascade_path == cascade_copy
    with pytest.raises(FaceDetectorError, match="gone.xml does not exist"):
        runtime.Stream(model, cascade=str(cascade_copy.with_name("gone.xml")))


def test_robot_loop_takes_cascade(apt_opencv, cascade_copy, tiny_export, clip, capsys):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import robot_loop
    finally:
        sys.path.remove(str(ROOT / "examples"))
    wav, flv = clip
    argv = [str(tiny_export / "model.onnx"), "--from-files", str(wav), str(flv), "--window", "1.0"]
    assert robot_loop.main(argv) == 2
    assert "robot_loop.py: error: Haar cascade" in capsys.readouterr().err
    assert robot_loop.main([*argv, "--cascade", str(cascade_copy)]) == 0
    assert '"face": true' in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# the tracking rule


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
    """Face-found rate on the generated corpus: the old rule (a full-frame detection on every
    tick, a miss reusing the last box for max_reuse ticks) against tracking: no faces traded
    for speed."""
    from edge_ladder.faces import track_boxes
    flvs = sorted((tiny_corpus / "VideoFlash").glob("*.flv"))
    detector = FaceDetector()
    found = {"full-frame every tick": 0, "tracking": 0}
    total = 0
    for flv in flvs:
        frames = media.read_video(flv)[0]
        old = track_boxes([detector.detect(frame) for frame in frames], detector.max_reuse)
        found["full-frame every tick"] += sum(box is not None for box in old)
        found["tracking"] += sum(box is not None for box in detector.track(frames))
        total += len(frames)
    rates = {name: count / total for name, count in found.items()}
    print(f"faces found in {total} ticks of {len(flvs)} generated clips: {rates}")
    assert rates["tracking"] >= rates["full-frame every tick"] - 0.005 and rates["tracking"] >= 0.99


def test_a_periodic_full_detection_looks_only_for_faces_that_could_replace_the_tracked_one(clip_frames):
    small = clip_frames[0][0]
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[100:580, 400:1040] = cv2.resize(small, (640, 480), interpolation=cv2.INTER_LINEAR)
    detector = FaceDetector()
    box = detector.detect(frame)
    assert detector.detect(frame, min_face=0.75 * box[2]) == pytest.approx(box, abs=0.15 * box[2])
    assert detector.detect(frame, min_face=1.6 * box[2]) is None            # only faces much larger: none
    scales = []                                   # the shrink of each full-frame search
    original = detector._largest
    detector._largest = lambda gray, scale, *a, **k: (scales.append(scale) if gray.shape == frame.shape[:2] else None,
                                                      original(gray, scale, *a, **k))[1]
    tracker = detector.tracker()
    for _ in range(11):
        tracker.update(frame)
    assert tracker.counts["full"] == 2 and tracker.counts["region"] == 9
    # the first search: 1280 -> 320 px wide; the periodic one shrinks by the whole factor that makes
    # 0.75x the tracked face the cascade's 24-px window
    assert scales[0] == 0.25 and scales[1] < 0.25 and (1 / scales[1]).is_integer()


def test_detector_settings_are_checked():
    with pytest.raises(ValueError, match="redetect_every must be >= 1"):
        FaceDetector(redetect_every=0)
    with pytest.raises(ValueError, match="search_margin must be > 0"):
        FaceDetector(search_margin=0)
    with pytest.raises(ValueError, match="channel_order must be one of bgr, rgb, gray"):
        FaceDetector().detect(np.zeros((10, 10, 3), np.uint8), channel_order="hsv")
