"""examples/robot_loop.py fails loudly and clearly: a missing or swapped recording, live mode without
sounddevice / PortAudio, a camera that cannot be opened (and the Jetson CSI camera's pipeline)."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import robot_loop  # noqa: E402

sys.path.remove(str(ROOT / "examples"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from edge_ladder.corpus import make_corpus
    corpus = make_corpus(tmp_path_factory.mktemp("corpus"), actors=1, clips_per_actor=1, seed=7, workers=1)
    wav = sorted((corpus / "AudioWAV").glob("*.wav"))[0]
    return wav, corpus / "VideoFlash" / f"{wav.stem}.flv"


def run(argv, capsys):
    code = robot_loop.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_missing_video_file_is_an_error_not_an_audio_only_run(tiny_export, clip, tmp_path, capsys):
    wav, _ = clip
    missing = tmp_path / "take1.flv"
    code, out, err = run([str(tiny_export / "model.onnx"), "--from-files", str(wav), str(missing)], capsys)
    assert code == 2 and out == ""                      # was: exit 0, audio-only predictions, no warning
    assert f"robot_loop.py: error: --from-files: video file {missing} does not exist" in err
    code, _, err = run([str(tiny_export / "model.onnx"), "--from-files", str(tmp_path / "x.wav"), str(clip[1])],
                       capsys)
    assert code == 2 and f"audio file {tmp_path / 'x.wav'} does not exist" in err


def test_swapped_recording_arguments_say_the_right_order(tiny_export, clip, capsys):
    wav, flv = clip
    code, _, err = run([str(tiny_export / "model.onnx"), "--from-files", str(flv), str(wav)], capsys)
    assert code == 2                                    # was: a MediaError traceback
    assert "takes the WAV first, then the video" in err and f"Run: --from-files {wav} {flv}" in err


def test_a_video_opencv_cannot_read_is_named(tiny_export, clip, tmp_path, capsys):
    broken = tmp_path / "broken.flv"
    broken.write_bytes(b"FLV not really" * 10)
    code, _, err = run([str(tiny_export / "model.onnx"), "--from-files", str(clip[0]), str(broken)], capsys)
    assert code == 2 and f"{broken}: OpenCV cannot read a frame of this video" in err


def test_live_mode_without_sounddevice_names_both_installs(tiny_export, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)        # not installed
    code, _, err = run([str(tiny_export / "model.onnx")], capsys)
    assert code == 2 and "Traceback" not in err                  # was: a raw ModuleNotFoundError
    assert "pip install sounddevice" in err and "sudo apt install libportaudio2" in err


def test_live_mode_without_portaudio_names_libportaudio2(tiny_export, monkeypatch, tmp_path, capsys):
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run([str(tiny_export / "model.onnx")], capsys)
    assert code == 2 and "sudo apt install libportaudio2" in err and "PortAudio library not found" in err


@pytest.fixture
def fake_microphone(monkeypatch):
    """sounddevice with an InputStream that never delivers audio (a microphone that is there)."""
    module = types.ModuleType("sounddevice")

    class InputStream:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def start(self):
            pass

        def stop(self):
            pass

        def close(self):
            pass

    module.InputStream = InputStream
    monkeypatch.setitem(sys.modules, "sounddevice", module)


def test_a_camera_that_cannot_be_opened_names_the_device_and_the_causes(tiny_export, fake_microphone, capsys):
    code, _, err = run([str(tiny_export / "model.onnx"), "--camera", "97", "--seconds", "0.2"], capsys)
    assert code == 2                                              # was: "returned no frame; check the index"
    assert "cannot open camera 97 (/dev/video97)" in err
    assert "ls /dev/video*" in err and "sudo usermod -aG video $USER" in err and "in use by another process" in err
    assert "CSI camera" in err and "nvarguscamerasrc sensor-id=0 !" in err and "appsink" in err


def test_a_gstreamer_pipeline_needs_an_opencv_with_gstreamer(tiny_export, fake_microphone, capsys):
    import cv2
    has_gstreamer = any("GStreamer" in line and "YES" in line for line in cv2.getBuildInformation().splitlines())
    argv = [str(tiny_export / "model.onnx"), "--camera", "videotestsrc num-buffers=30 ! videoconvert ! "
            "video/x-raw,format=BGR ! appsink", "--seconds", "0.5"]
    code, _, err = run(argv, capsys)
    if has_gstreamer:                                             # e.g. JetPack's python3-opencv: it runs
        assert code == 0, err
    else:                                                         # pip's opencv-python-headless
        assert code == 2 and "is built without GStreamer" in err and "python3-opencv" in err


def test_the_csi_pipeline_in_the_docs_is_the_one_in_the_message():
    docs = " ".join(robot_loop.__doc__.replace("\\\n", " ").split())
    assert " ".join(robot_loop.CSI_PIPELINE.split()) in docs
