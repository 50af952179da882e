"""edge_ladder.synthetic: the generated features directory and the structure it encodes."""
import json

import numpy as np
import pytest

from edge_ladder.errors import EdgeLadderError
from edge_ladder.features import load_split, read_splits
from edge_ladder.synthetic import AUDIO_BAND_CENTRES, make_features


def test_format_lengths_and_splits(tiny_features):
    manifest = json.loads((tiny_features / "manifest.json").read_text())
    assert len(manifest["clips"]) == 144 and manifest["n_mels"] == 80 and manifest["face_size"] == 48
    clips = load_split(tiny_features, "all")
    lengths = {c.audio.shape[0] for c in clips}
    assert len(lengths) > 20 and min(lengths) >= 150 and max(lengths) <= 350
    for clip in clips:
        assert clip.face.shape[1:] == (48, 48) and clip.face.shape[0] == clip.audio.shape[0] // 10
        assert np.all(clip.face[~clip.face_valid] == 0)
    missing = np.concatenate([~c.face_valid for c in clips])
    assert 0.03 < missing.mean() < 0.2
    splits = read_splits(tiny_features)
    train, dev, test = (set(splits[s]) for s in ("train", "dev", "test"))
    assert not (train & dev or train & test or dev & test)
    for actor in {c.actor for c in clips}:
        assert sorted(c.label for c in clips if c.actor == actor) == sorted(list(range(6)) * 2)


def _actor_centred(clips, feature):
    values = np.stack([feature(c) for c in clips])
    actors = np.array([c.actor for c in clips])
    for actor in set(actors):
        values[actors == actor] -= values[actors == actor].mean(axis=0)
    return values


def test_classes_live_in_both_modalities(tiny_features):
    clips = load_split(tiny_features, "all")
    labels = np.array([c.label for c in clips])
    spectra = _actor_centred(clips, lambda c: c.audio.mean(axis=0))               # (N, 80)
    band_energy = spectra[:, list(AUDIO_BAND_CENTRES)]                             # (N, 3)
    assert np.mean(band_energy.argmax(axis=1) == labels // 2) > 0.9               # audio -> audio group
    mouth = _actor_centred(clips, lambda c: c.face[c.face_valid][:, 33:37, 16:32].mean(axis=(0, 1, 2))[None])[:, 0]
    assert np.mean((mouth < 0) == (labels % 2 == 1)) > 0.9                         # face -> face group
    # neither modality alone separates labels that share its group
    same_audio = (labels // 2 == 0)
    gap = abs(band_energy[same_audio & (labels == 0), 0].mean() - band_energy[same_audio & (labels == 1), 0].mean())
    assert gap < 0.2


def test_deterministic_and_validated(tmp_path):
    a = make_features(tmp_path / "a", actors=3, clips_per_actor=2, seed=3)
    b = make_features(tmp_path / "b", actors=3, clips_per_actor=2, seed=3)
    c = make_features(tmp_path / "c", actors=3, clips_per_actor=2, seed=4)
    clips_a, clips_b, clips_c = (load_split(d, "all") for d in (a, b, c))
    assert all(np.array_equal(x.audio, y.audio) and np.array_equal(x.face, y.face) for x, y in zip(clips_a, clips_b))
    assert not np.array_equal(clips_a[0].audio[:50], clips_c[0].audio[:50])
    with pytest.raises(EdgeLadderError, match="at least 3 actors"):
        make_features(tmp_path / "d", actors=2)
