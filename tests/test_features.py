"""The features-directory contract: atomic writes, actor splits, padding into named inputs."""
import json

import numpy as np
import pytest

from edge_ladder import features


def test_actor_folds_are_speaker_independent_and_cover_every_actor():
    actors = [str(1001 + i) for i in range(23)]
    for fold in range(5):
        splits = features.actor_folds(actors, k=5, fold=fold, seed=3)
        train, dev, test = set(splits["train"]), set(splits["dev"]), set(splits["test"])
        assert not (train & dev) and not (train & test) and not (dev & test)
        assert train | dev | test == set(actors)
        assert dev and test
    # every actor is in exactly one test fold across the k folds
    tests = [a for fold in range(5) for a in features.actor_folds(actors, k=5, fold=fold, seed=3)["test"]]
    assert sorted(tests) == sorted(actors)


def test_actor_folds_rejects_too_few_actors_and_bad_fold():
    with pytest.raises(features.FeaturesError, match="at least 3 actors"):
        features.actor_folds(["1001", "1002"])
    with pytest.raises(features.FeaturesError, match="fold must be"):
        features.actor_folds(["1", "2", "3", "4"], k=4, fold=4)


def test_write_clip_roundtrip_and_atomic(tmp_path):
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((97, 80)).astype(np.float32)
    face = rng.standard_normal((11, 48, 48)).astype(np.float32)
    valid = rng.random(11) > 0.3
    path = tmp_path / "clips" / "1001_DFA_ANG_XX.npz"
    features.write_clip(path, audio, face, valid)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    with np.load(path) as data:
        np.testing.assert_array_equal(data["audio"], audio)
        np.testing.assert_allclose(data["face"].astype(np.float32), face, atol=2e-3 * np.abs(face).max())
        np.testing.assert_array_equal(data["face_valid"], valid)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    features.atomic_write_json(path, {"ok": 1})

    def crash(src, dst):  # power loss between writing the temp file and the rename
        raise OSError("simulated crash")
    from edge_ladder import atomic       # the one writer features re-exports
    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        features.atomic_write_json(path, {"ok": 2})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"], "temp file must be removed"


def test_batch_inputs_pads_masks_and_sets_presence():
    rng = np.random.default_rng(1)
    audio = [rng.standard_normal((97, 80)).astype(np.float32), rng.standard_normal((41, 80)).astype(np.float32)]
    face = [rng.standard_normal((9, 48, 48)).astype(np.float32), rng.standard_normal((13, 48, 48)).astype(np.float32)]
    valid = [np.ones(9, bool), np.zeros(13, bool)]
    batch = features.batch_inputs(audio, face, valid)
    assert batch["audio"].shape == (2, 97, 80) and batch["face"].shape == (2, 13, 1, 48, 48)
    assert all(v.dtype == np.float32 for v in batch.values())
    np.testing.assert_array_equal(batch["audio"][1, :41], audio[1])
    assert not batch["audio"][1, 41:].any() and batch["audio_mask"][1].sum() == 41
    assert batch["face_mask"][0].sum() == 9 and batch["face_mask"][1].sum() == 0
    assert not batch["face"][1].any(), "crops of frames without a face must be zeroed"
    np.testing.assert_array_equal(batch["presence"], [[1, 1], [1, 0]])
    # the caller's flags override the data (runtime: a muted microphone still yields frames)
    flagged = features.batch_inputs(audio, face, valid, audio_present=[0, 1], face_present=[1, 1])
    np.testing.assert_array_equal(flagged["presence"], [[0, 1], [1, 1]])
    np.testing.assert_array_equal(flagged["face_mask"], batch["face_mask"])


def test_read_manifest_explains_missing_directory(tmp_path):
    with pytest.raises(features.FeaturesError, match="edge-ladder prepare"):
        features.read_manifest(tmp_path)
