"""prepare: CREMA-D directory -> features directory; bad files skipped with reasons; actor splits."""
import json
import shutil

import numpy as np
import pytest

from edge_ladder import EMOTIONS, cli, crema, features, media, prepare as prep
from edge_ladder.faces import FaceDetector

LFS_STUB = (b"version https://git-lfs.github.com/spec/v1\n"
            b"oid sha256:0f3c1d6e0a9cbd5b7f53a1c2a6e1d3b0b4f1f0c9d8e7a6b5c4d3e2f1a0b9c8d7\nsize 77526\n")


def copy_clips(source, root, clip_ids):
    (root / "AudioWAV").mkdir(parents=True, exist_ok=True)
    (root / "VideoFlash").mkdir(parents=True, exist_ok=True)
    for clip_id in clip_ids:
        shutil.copy(source / "AudioWAV" / f"{clip_id}.wav", root / "AudioWAV" / f"{clip_id}.wav")
        shutil.copy(source / "VideoFlash" / f"{clip_id}.flv", root / "VideoFlash" / f"{clip_id}.flv")
    (root / "processedResults").mkdir(exist_ok=True)
    shutil.copy(source / "processedResults" / "summaryTable.csv", root / "processedResults" / "summaryTable.csv")


@pytest.fixture
def broken_corpus(tiny_corpus, tmp_path):
    """Three actors x 4 good clips under a data/ prefix, plus one clip of each kind of damage."""
    ids = sorted(crema.index_files(tiny_corpus))
    by_actor = {}
    for clip_id in ids:
        by_actor.setdefault(clip_id[:4], []).append(clip_id)
    good = [c for actor in ("1001", "1002", "1003") for c in by_actor[actor][:4]]
    bad = by_actor["1004"][:5]
    root = tmp_path / "CREMA-D" / "data"
    copy_clips(tiny_corpus, root, good + bad)
    stub, empty_wav, truncated, bad_name, both_stubs = bad
    (root / "AudioWAV" / f"{stub}.wav").write_bytes(LFS_STUB)
    (root / "AudioWAV" / f"{empty_wav}.wav").write_bytes(b"")
    flv = root / "VideoFlash" / f"{truncated}.flv"
    flv.write_bytes(flv.read_bytes()[:400])
    renamed = "1004_XYZ_ANG_XX"
    (root / "AudioWAV" / f"{bad_name}.wav").rename(root / "AudioWAV" / f"{renamed}.wav")
    (root / "VideoFlash" / f"{bad_name}.flv").rename(root / "VideoFlash" / f"{renamed}.flv")
    (root / "AudioWAV" / f"{both_stubs}.wav").write_bytes(LFS_STUB)
    (root / "VideoFlash" / f"{both_stubs}.flv").write_bytes(LFS_STUB)
    expected = {stub: prep.LFS, empty_wav: prep.BAD_AUDIO, truncated: prep.BAD_VIDEO, renamed: prep.BAD_NAME,
                both_stubs: prep.LFS}
    return tmp_path / "CREMA-D", good, expected


def test_bad_files_are_skipped_with_reasons_and_good_clips_kept(broken_corpus, tmp_path, capsys):
    crema_dir, good, expected = broken_corpus
    out = tmp_path / "features"
    summary = prep.prepare(crema_dir, out, workers=2)
    skipped = {s["id"]: s for s in summary["skipped"]}
    assert {k: v["category"] for k, v in skipped.items()} == expected
    assert "git lfs pull" in skipped[[k for k, v in expected.items() if v == prep.LFS][0]]["reason"]
    assert "empty" in skipped[[k for k, v in expected.items() if v == prep.BAD_AUDIO][0]]["reason"]
    assert "XYZ" in skipped["1004_XYZ_ANG_XX"]["reason"]
    manifest = features.read_manifest(out)
    assert sorted(e["id"] for e in manifest["clips"]) == sorted(good)
    for entry in manifest["clips"]:
        assert entry["label"] == EMOTIONS.index(crema.parse_name(entry["id"]).emotion)
        assert entry["actor"] == entry["id"][:4]
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["kept"] == len(good) and len(report["skipped"]) == len(expected)
    assert summary["face_detected_fraction"] > 0.9
    text = prep.format_summary(summary)
    assert "skipped 5 files" in text and "1004_XYZ_ANG_XX" in text


def test_prepared_features_equal_clip_features_and_run_resumes(broken_corpus, tmp_path):
    crema_dir, good, _ = broken_corpus
    out = tmp_path / "features"
    prep.prepare(crema_dir, out, workers=1)
    clip_id = good[5]
    root = crema.find_root(crema_dir)
    audio, face, face_valid = media.clip_features(root / "AudioWAV" / f"{clip_id}.wav",
                                                  root / "VideoFlash" / f"{clip_id}.flv", FaceDetector())
    with np.load(out / "clips" / f"{clip_id}.npz") as data:
        np.testing.assert_array_equal(data["audio"], audio)
        np.testing.assert_array_equal(data["face_valid"], face_valid)
        np.testing.assert_allclose(data["face"], face, atol=2e-3 * np.abs(face).max())   # stored as float16
    clip_files = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    (out / "clips" / f"{good[0]}.npz").unlink()
    summary = prep.prepare(crema_dir, out, workers=1)
    assert summary["kept"] == len(good) and summary["resumed"] == len(good) - 1
    for name, mtime in clip_files.items():
        if name != f"{good[0]}.npz":
            assert (out / "clips" / name).stat().st_mtime_ns == mtime       # not redone
    assert (out / "clips" / f"{good[0]}.npz").exists()
    assert not [p for p in (out / "clips").iterdir() if p.name.startswith(".")]


def test_no_actor_is_in_two_splits(tiny_prepared):
    splits = features.read_splits(tiny_prepared)
    train, dev, test = (set(splits[s]) for s in ("train", "dev", "test"))
    assert train and dev and test
    assert not (train & dev) and not (train & test) and not (dev & test)
    manifest_actors = {e["actor"] for e in features.read_manifest(tiny_prepared)["clips"]}
    assert train | dev | test == manifest_actors
    seen = {}
    for split in ("train", "dev", "test"):
        for clip in features.load_split(tiny_prepared, split):
            assert seen.setdefault(clip.actor, split) == split


def test_other_folds_rotate_test_actors(tiny_corpus, tiny_prepared, tmp_path):
    shutil.copytree(tiny_prepared / "clips", tmp_path / "f1" / "clips")        # resume: no recomputation
    summary = prep.prepare(tiny_corpus, tmp_path / "f1", workers=1, folds=3, fold=1)
    assert summary["resumed"] == summary["kept"] == 72
    first = features.read_splits(tiny_prepared)
    other = features.read_splits(tmp_path / "f1")
    assert other["k"] == 3 and set(other["test"]) != set(first["test"])


def test_perceived_labels_from_summary_table(broken_corpus, tmp_path):
    crema_dir, good, _ = broken_corpus
    table = crema.read_summary_table(crema.summary_table_path(crema_dir))
    summary = prep.prepare(crema_dir, tmp_path / "voice", workers=1, labels="voice")
    manifest = features.read_manifest(tmp_path / "voice")
    assert manifest["label_source"] == "voice"
    kept = {e["id"]: e["label"] for e in manifest["clips"]}
    for clip_id in good:
        votes = table[clip_id]["voice"]
        if len(votes) == 1:
            assert kept[clip_id] == EMOTIONS.index(votes[0])
        else:
            assert clip_id not in kept
            assert any(s["id"] == clip_id and s["category"] == prep.NO_LABEL for s in summary["skipped"])
    assert any(kept[c] != EMOTIONS.index(crema.parse_name(c).emotion) for c in kept)   # not the file name


def test_max_seconds_skips_long_clips(broken_corpus, tmp_path):
    crema_dir, good, _ = broken_corpus
    summary = prep.prepare(crema_dir, tmp_path / "short", workers=1, max_seconds=2.2)
    too_long = [s for s in summary["skipped"] if s["category"] == prep.TOO_LONG]
    assert too_long and summary["kept"] and summary["kept"] + len(too_long) == len(good)
    assert "--max-seconds 2.2" in too_long[0]["reason"]


def test_only_stubs_fails_with_the_lfs_hint(tmp_path, capsys):
    root = tmp_path / "CREMA-D"
    for folder, suffix in (("AudioWAV", "wav"), ("VideoFlash", "flv")):
        (root / folder).mkdir(parents=True)
        for clip_id in ("1001_DFA_ANG_XX", "1002_IEO_HAP_HI", "1003_TIE_SAD_XX"):
            (root / folder / f"{clip_id}.{suffix}").write_bytes(LFS_STUB)
    with pytest.raises(crema.LfsPointerError, match="git lfs pull"):
        prep.prepare(root, tmp_path / "out", workers=1)
    assert cli.main(["prepare", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "git lfs pull" in err and "Traceback" not in err


def test_prepare_cli_rejects_a_directory_that_is_not_crema_d(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert cli.main(["prepare", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "AudioWAV/ and VideoFlash/" in capsys.readouterr().err


@pytest.mark.parametrize("actors", [1, 2])
def test_fewer_than_3_actors_fail_before_any_clip_is_processed(tmp_path, actors, capsys):
    """Was: every clip processed, then "need at least 3 actors", clips/ left without a manifest."""
    from edge_ladder.corpus import make_corpus
    corpus = make_corpus(tmp_path / "corpus", actors=actors, clips_per_actor=2, seed=0, workers=1)
    out = tmp_path / "features"
    assert cli.main(["prepare", str(corpus), "--out", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert f"holds clips of {actors} actor" in err and "needs at least 3" in err and "Nothing was processed" in err
    assert "`edge-ladder make-corpus DIR --actors 3`" in err and f"`edge-ladder infer MODEL --input {corpus}`" in err
    assert not out.exists()                          # no clips/, no half-made features directory
