"""The Haar cascade lookup (faces.find_cascade) on an OpenCV without cv2.data, as JetPack's and apt's
python3-opencv are, and --cascade / $EDGE_LADDER_CASCADE wherever a detector is built."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

cv2 = pytest.importorskip("cv2")

from edge_ladder import faces  # noqa: E402
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
