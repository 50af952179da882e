"""ONNX Runtime backend on the real exported tiny model: parity with a direct onnxruntime
session on the test split, thread safety, fp16 export, intra-op threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from _runtime_standin import random_inputs
from edge_ladder import EMOTIONS, runtime
from edge_ladder.features import batch_clips, load_split


@pytest.fixture(scope="module")
def model(tiny_export):
    return runtime.load(tiny_export / "model.onnx", intra_op_threads=1)


def _direct_session(path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def test_runtime_equals_a_direct_onnxruntime_session_on_the_test_split(model, tiny_export, tiny_features):
    clips = load_split(tiny_features, "test")
    assert len(clips) >= 8
    session = _direct_session(tiny_export / "model.onnx")
    for start in range(0, len(clips), 5):                  # batches of 5: odd B, padded T
        feeds = batch_clips(clips[start:start + 5])
        logits, probs = session.run(["logits", "probs"], feeds)
        result = model.predict(feeds)
        np.testing.assert_allclose(result.probs, probs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.logits, logits, rtol=1e-5, atol=1e-5)
        assert result.labels == [EMOTIONS[i] for i in probs.argmax(axis=1)]
    # one clip at a time through predict_clip as well
    clip = clips[0]
    single = model.predict_clip(clip.audio, clip.face, clip.face_valid)
    np.testing.assert_allclose(single.probs, session.run(["probs"], batch_clips([clip]))[0], rtol=1e-5, atol=1e-6)


def test_fp16_export_serves_through_the_same_api(tiny_export, tiny_features):
    fp16 = runtime.load(tiny_export / "model.fp16.onnx", intra_op_threads=1, providers=["CPUExecutionProvider"])
    clips = load_split(tiny_features, "test")[:6]
    feeds = batch_clips(clips)                              # float32 in: the file has fp32 I/O
    result = fp16.predict(feeds)
    assert result.probs.dtype == np.float32
    direct = _direct_session(tiny_export / "model.fp16.onnx").run(["probs"], feeds)[0]      # fp32 I/O file
    np.testing.assert_allclose(result.probs, direct, rtol=0, atol=1e-6)                      # what the file gives
    reference = _direct_session(tiny_export / "model.onnx").run(["probs"], feeds)[0]
    from edge_ladder.export.parity import FP16_MAX_PROB_ERROR
    np.testing.assert_allclose(result.probs, reference, atol=FP16_MAX_PROB_ERROR)            # export's own bar


def test_eight_threads_get_the_serial_results(model):
    rng = np.random.default_rng(7)
    pool = [random_inputs(rng, batch=int(rng.integers(1, 4)), t_audio=int(rng.integers(40, 260)),
                          t_video=int(rng.integers(3, 27))) for _ in range(12)]
    serial = [model.predict(feeds).probs for feeds in pool]
    errors, mismatches = [], []

    def worker(seed):
        order = np.random.default_rng(seed).permutation(len(pool) * 4) % len(pool)
        try:
            for i in order:
                if not np.array_equal(model.predict(pool[i]).probs, serial[i]):
                    mismatches.append(i)
        except Exception as error:  # surfaced below with the thread's error
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert not mismatches, f"{len(mismatches)} of {8 * 4 * len(pool)} threaded calls differ from serial"


def test_intra_op_threads_is_applied(tiny_export):
    two = runtime.load(tiny_export / "model.onnx", intra_op_threads=2)
    assert two.intra_op_threads == 2 and two.providers == ["CPUExecutionProvider"]
    with pytest.raises(runtime.ModelLoadError, match="intra_op_threads must be >= 1"):
        runtime.load(tiny_export / "model.onnx", intra_op_threads=0)
