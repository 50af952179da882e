"""WAV/FLV readers, the Haar face detector and clip_features (the front-end prepare and infer share)."""
import subprocess
import sys
import wave

import numpy as np
import pytest

from edge_ladder import corpus, frontend, media
from edge_ladder.crema import LfsPointerError
from edge_ladder.faces import FaceDetector

cv2 = pytest.importorskip("cv2")
LFS_STUB = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 96044\n"


def write_wav(path, pcm, rate=16000, channels=1, width=2):
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())
    return path


def write_video(path, frames, fps):
    corpus.write_flv(path, np.asarray(frames), fps)
    return path


def numbered_frames(n, size=(64, 48)):
    """Frames whose index is written in binary as six 16x16 black/white blocks (survives lossy FLV1)."""
    frames = []
    for i in range(n):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        for bit in range(6):
            if i >> bit & 1:
                row, col = divmod(bit, 3)
                frame[row * 16 + 8:row * 16 + 24, col * 16 + 8:col * 16 + 24] = 255
        frames.append(frame)
    return frames


def frame_numbers(frames):
    numbers = []
    for frame in frames:
        bits = [frame[(b // 3) * 16 + 12:(b // 3) * 16 + 20, (b % 3) * 16 + 12:(b % 3) * 16 + 20].mean() > 128
                for b in range(6)]
        numbers.append(sum(1 << b for b, on in enumerate(bits) if on))
    return numbers


def test_read_wav_round_trip(tmp_path):
    pcm = np.random.default_rng(0).integers(-30000, 30000, 16097).astype(np.int16)
    read, rate = media.read_wav(write_wav(tmp_path / "a.wav", pcm))
    assert rate == 16000 and read.dtype == np.int16
    np.testing.assert_array_equal(read, pcm)


@pytest.mark.parametrize("read, suffix", [(media.read_wav, ".wav"), (media.read_video, ".flv")])
def test_readers_reject_lfs_stubs_and_empty_files(tmp_path, read, suffix):
    stub = tmp_path / f"1001_DFA_ANG_XX{suffix}"
    stub.write_bytes(LFS_STUB)
    with pytest.raises(LfsPointerError, match="LFS.*git lfs pull"):
        read(stub)
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(media.MediaError, match="empty"):
        read(empty)


def test_read_wav_rejects_bad_files_with_reasons(tmp_path):
    text = tmp_path / "text.wav"
    text.write_text("this is not audio at all, just some text in a file\n" * 3)
    with pytest.raises(media.MediaError, match="not a readable PCM WAV"):
        media.read_wav(text)
    pcm = np.random.default_rng(1).integers(-300, 300, 2000).astype(np.int16)
    with pytest.raises(media.MediaError, match="mono"):
        media.read_wav(write_wav(tmp_path / "stereo.wav", pcm, channels=2))
    with pytest.raises(media.MediaError, match="16-bit"):
        media.read_wav(write_wav(tmp_path / "8bit.wav", pcm.astype(np.uint8), width=1))
    with pytest.raises(media.MediaError, match="no samples"):
        media.read_wav(write_wav(tmp_path / "header_only.wav", np.zeros(0, np.int16)))
    with pytest.raises(media.MediaError, match="does not exist"):
        media.read_wav(tmp_path / "missing.wav")
    with pytest.raises(media.MediaError, match="16000 Hz"):
        media.audio_features(write_wav(tmp_path / "44k.wav", pcm, rate=44100))


@pytest.mark.parametrize("file_fps, n_frames", [(30.0, 37), (15.0, 23), (5.0, 7)])
def test_read_video_resamples_to_nearest_frame_by_timestamp(tmp_path, file_fps, n_frames):
    path = write_video(tmp_path / "v.flv", numbered_frames(n_frames), file_fps)
    frames, times = media.read_video(path, fps=10.0)
    duration = n_frames / file_fps
    expected_count = int(np.ceil(duration * 10.0 - 1e-9))
    assert frames.shape == (expected_count, 48, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(times, np.arange(expected_count) / 10.0)
    expected = np.minimum(np.floor(times * file_fps + 0.5), n_frames - 1).astype(int)
    assert frame_numbers(frames) == list(expected)


def test_read_video_rejects_truncated_and_garbage_files(tmp_path):
    rng = np.random.default_rng(2)
    good = write_video(tmp_path / "good.flv", [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
                                               for _ in range(30)], 30.0)
    truncated = tmp_path / "truncated.flv"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(media.MediaError, match="truncated|no video frames|cannot open"):
        media.read_video(truncated)
    garbage = tmp_path / "garbage.flv"
    garbage.write_bytes(rng.integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(media.MediaError):
        media.read_video(garbage)


def generated_frames(n_actors=6, seed=7):
    """Frames of the make-corpus face renderer: several actors, emotions, intensities."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_actors):
        actor = corpus.make_actor(1001 + i, seed)
        emotion = corpus.FACES[("ANG", "HAP", "SAD", "NEU", "FEA", "DIS")[i % 6]]
        onsets = np.arange(0.2, 2.0, 0.25)
        frames.extend(corpus.render_video(actor, emotion, rng.uniform(0.6, 1.2), onsets, 0.2, 2.0, rng)[::3])
    return frames


def test_haar_detector_finds_generated_faces():
    detector = FaceDetector()
    frames = generated_frames()
    boxes = [detector.detect(frame) for frame in frames]
    rate = np.mean([box is not None for box in boxes])
    print(f"face detection on {len(frames)} generated frames: {100 * rate:.1f} %")
    assert rate >= 0.9
    for frame, box in zip(frames, boxes):
        if box is not None:
            x, y, w, h = box
            assert 40 <= w <= 110 and 0 <= x and x + w <= frame.shape[1] + 1


def test_haar_detector_finds_no_face_in_textures_and_tracks_short_gaps():
    rng = np.random.default_rng(3)
    smooth = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (0, 0), 6)
    detector = FaceDetector(max_reuse=1)
    assert detector.detect(smooth) is None
    face = generated_frames(n_actors=1)[0]
    assert detector.detect(face) is not None
    boxes = detector.track([face, smooth, smooth, face])
    assert boxes[1] == boxes[0] and boxes[2] is None and boxes[3] is not None
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(face.astype(np.float32))
    from edge_ladder.faces import FaceDetectorError
    with pytest.raises(FaceDetectorError, match="opencv-python-headless<4.13"):
        FaceDetector(cascade="no_such_cascade.xml")


def test_detector_downscales_large_frames_and_returns_original_pixels():
    face = generated_frames(n_actors=1)[0]
    big = cv2.resize(face, (640, 480), interpolation=cv2.INTER_LINEAR)
    small_box = FaceDetector(detect_width=None).detect(face)
    big_box = FaceDetector(detect_width=160).detect(big)
    assert small_box is not None and big_box is not None
    # same face, in original pixels: Haar boxes at different pyramid levels agree to ~15 %
    np.testing.assert_allclose(np.array(big_box) / 4, small_box, atol=0.15 * small_box[2])


def test_clip_features_marks_frames_without_a_face(tmp_path):
    rng = np.random.default_rng(4)
    pcm = (rng.normal(0, 3000, 16000 * 2 + 97)).astype(np.int16)
    wav = write_wav(tmp_path / "c.wav", pcm)
    faces = generated_frames(n_actors=1)
    blank = cv2.GaussianBlur(rng.integers(0, 255, faces[0].shape, dtype=np.uint8), (0, 0), 8)
    frames = faces[:8] + [blank] * 12 + faces[:10]                     # 30 frames at 15 fps = 2 s
    flv = write_video(tmp_path / "c.flv", frames, 15.0)
    audio, face, face_valid = media.clip_features(wav, flv, FaceDetector(max_reuse=2))
    np.testing.assert_array_equal(audio, frontend.log_mel(pcm))
    assert audio.shape == (frontend.n_audio_frames(pcm.size), 80) and audio.dtype == np.float32
    assert face.shape == (20, 48, 48) and face.dtype == np.float32 and face_valid.dtype == bool
    assert face_valid[:5].all() and not face_valid[9:12].any() and face_valid[-5:].all()
    assert np.all(face[~face_valid] == 0)
    valid = face[face_valid]
    np.testing.assert_allclose(valid.reshape(len(valid), -1).mean(1), 0, atol=1e-4)      # standardised
    audio_only = media.clip_features(wav, None)
    assert audio_only[1].shape == (0, 48, 48) and audio_only[0].shape == audio.shape
    with pytest.raises(media.MediaError, match="neither"):
        media.clip_features(None, None)


def test_media_faces_crema_import_without_torch():
    code = ("import sys, edge_ladder.media, edge_ladder.faces, edge_ladder.crema, edge_ladder.prepare; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
