"""The prepared-features directory: the contract between `prepare` / the synthetic generator
(writers) and `train` / `evaluate` / `export` parity checks (readers). numpy only.

    FEATURES_DIR/
      manifest.json   {"format": "edge-ladder-features", "version": 1,
                       "labels": ["ANG", ...], "n_mels": 80, "face_size": 48,
                       "audio_fps": 100.0, "video_fps": 10.0, "source": "...",
                       "clips": [{"id": "1001_DFA_ANG_XX", "actor": "1001", "label": 0,
                                  "file": "clips/1001_DFA_ANG_XX.npz",
                                  "audio_frames": 231, "video_frames": 23}, ...]}
      splits.json     {"k": 5, "fold": 0, "folds": [[actors...], ...],
                       "train": [actors...], "dev": [actors...], "test": [actors...]}
      clips/ID.npz    audio      (T_a, n_mels) float32  log-mel (edge_ladder.frontend.log_mel)
                      face       (T_v, S, S)   float16  standardised crops (frontend.face_crop)
                      face_valid (T_v,)        bool     False where no face was found (crop = 0)

Splits are by actor (speaker-independent): no actor is in two of train/dev/test.

Unlabelled features (`prepare DIR --unlabelled`: a robot's own recordings) use the same format
with "unlabelled": true in manifest.json, "label": -1 and "actor": the recording's name in every
clip entry (plus "source": the recording file, "start_s": the clip's start in it), and no
splits.json. `load_unlabelled` reads them (and, for a labelled directory, every clip with its
label dropped).
Every file is written atomically (edge_ladder.atomic: temp file + rename, the umask's mode), so
an interrupted run leaves no half-written clip and can resume.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_json  # noqa: F401 - the writers' old home

FORMAT = "edge-ladder-features"
VERSION = 1


def write_clip(path: Path, audio: np.ndarray, face: np.ndarray, face_valid: np.ndarray) -> None:
    """Write one clip's features atomically. audio (T_a, n_mels), face (T_v, S, S), face_valid (T_v,)."""
    import io
    if audio.ndim != 2 or face.ndim != 3 or face_valid.shape != (face.shape[0],):
        raise ValueError(f"clip arrays must be audio (T_a, n_mels), face (T_v, S, S), face_valid (T_v,); "
                         f"got {audio.shape}, {face.shape}, {face_valid.shape}")
    buffer = io.BytesIO()
    np.savez(buffer, audio=audio.astype(np.float32), face=face.astype(np.float16),
             face_valid=face_valid.astype(bool))
    atomic_write_bytes(Path(path), buffer.getvalue())


@dataclass
class Clip:
    id: str
    actor: str
    label: int
    audio: np.ndarray       # (T_a, n_mels) float32
    face: np.ndarray        # (T_v, S, S) float32
    face_valid: np.ndarray  # (T_v,) bool


from .errors import EdgeLadderError


class FeaturesError(EdgeLadderError, ValueError):
    """A features directory is missing, malformed or from another version."""


def read_manifest(features_dir: Path) -> dict:
    path = Path(features_dir) / "manifest.json"
    from .paths import corpus_hint, is_corpus
    if not path.exists() and is_corpus(features_dir):
        raise FeaturesError(corpus_hint(features_dir))
    if not path.exists():
        raise FeaturesError(f"{features_dir} is not a features directory: no manifest.json. "
                            f"Create one with `edge-ladder prepare CREMA_D_DIR --out {features_dir}` "
                            f"or `edge-ladder make-features {features_dir}` (synthetic).")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise FeaturesError(f"{path}: expected format {FORMAT!r} version {VERSION}; got "
                            f"{manifest.get('format')!r} version {manifest.get('version')}. Re-run prepare.")
    return manifest


def read_splits(features_dir: Path) -> dict:
    path = Path(features_dir) / "splits.json"
    if not path.exists():
        raise FeaturesError(f"{features_dir}: no splits.json. Re-run prepare (it writes the actor folds).")
    return json.loads(path.read_text())


def load_split(features_dir: Path, split: str, limit: int | None = None) -> list[Clip]:
    """All clips of one split ('train', 'dev', 'test' or 'all'), arrays loaded into memory; with
    `limit`, at most that many, evenly spread over the split, and only those are read."""
    features_dir = Path(features_dir)
    manifest = read_manifest(features_dir)
    if is_unlabelled(manifest):
        raise FeaturesError(f"{features_dir} holds unlabelled clips (prepare --unlabelled): it has no "
                            f"labels and no {split} split. Pass it to `edge-ladder train LABELLED_FEATURES "
                            f"--unlabelled {features_dir}`.")
    if split == "all":
        actors = None
    else:
        splits = read_splits(features_dir)
        if split not in ("train", "dev", "test"):
            raise FeaturesError(f"split must be one of train, dev, test, all; got {split!r}")
        actors = set(map(str, splits[split]))
    entries = [entry for entry in manifest["clips"] if actors is None or str(entry["actor"]) in actors]
    if limit is not None and len(entries) > limit:
        entries = [entries[i] for i in np.unique(np.linspace(0, len(entries) - 1, limit).round().astype(int))]
    clips = []
    for entry in entries:
        with np.load(features_dir / entry["file"]) as data:
            clips.append(Clip(id=entry["id"], actor=str(entry["actor"]), label=int(entry["label"]),
                              audio=data["audio"].astype(np.float32),
                              face=data["face"].astype(np.float32),
                              face_valid=data["face_valid"].astype(bool)))
    return clips


UNLABELLED = -1           # the label of a clip without one


def is_unlabelled(manifest: dict) -> bool:
    return bool(manifest.get("unlabelled", False))


def load_unlabelled(features_dir: Path) -> list[Clip]:
    """Every clip of a features directory with its label set to UNLABELLED (-1): an unlabelled
    directory (prepare --unlabelled), or a labelled one whose labels are not to be used."""
    features_dir = Path(features_dir)
    manifest = read_manifest(features_dir)
    clips = []
    for entry in manifest["clips"]:
        with np.load(features_dir / entry["file"]) as data:
            clips.append(Clip(id=entry["id"], actor=str(entry["actor"]), label=UNLABELLED,
                              audio=data["audio"].astype(np.float32),
                              face=data["face"].astype(np.float32),
                              face_valid=data["face_valid"].astype(bool)))
    if not clips:
        raise FeaturesError(f"{features_dir}: manifest.json lists no clips. Re-run prepare.")
    return clips


MIN_SPLIT_ACTORS = 3       # one each for train, dev and test: splits are by actor, never by clip


def actor_folds(actors, k: int = 5, fold: int = 0, seed: int = 0) -> dict:
    """Speaker-independent split: actors are shuffled, dealt into k folds; fold `fold` is the
    test set, the next fold is dev, the rest train."""
    actors = sorted({str(a) for a in actors})
    if len(actors) < MIN_SPLIT_ACTORS:
        raise FeaturesError(f"need at least {MIN_SPLIT_ACTORS} actors for train/dev/test splits; got {len(actors)}")
    k = min(k, len(actors))
    if not 0 <= fold < k:
        raise FeaturesError(f"fold must be in [0, {k}); got {fold}")
    order = np.random.default_rng(seed).permutation(len(actors))
    folds = [sorted(actors[i] for i in order[f::k]) for f in range(k)]
    dev_fold = (fold + 1) % k
    train = sorted(a for f, members in enumerate(folds) if f not in (fold, dev_fold) for a in members)
    return {"k": k, "fold": fold, "seed": seed, "folds": folds,
            "train": train, "dev": folds[dev_fold], "test": folds[fold]}


INPUT_NAMES = ("audio", "audio_mask", "face", "face_mask", "presence")
OUTPUT_NAMES = ("logits", "probs")


def batch_inputs(audio_list, face_list, face_valid_list, audio_present=None, face_present=None) -> dict:
    """Pad variable-length clips into the model's five named inputs (numpy, float32):

        audio      (B, T_a, n_mels)     log-mel frames, zero after each clip's end
        audio_mask (B, T_a)             1.0 for real frames, 0.0 for padding
        face       (B, T_v, 1, S, S)    standardised crops, zero where masked
        face_mask  (B, T_v)             1.0 for frames with a detected face, 0.0 otherwise
        presence   (B, 2)               [audio present, face present] per sample

    T_a and T_v are the longest clip's lengths (at least 1, so an empty clip still has a shape).
    A modality is present when it has at least one valid frame, unless the caller overrides it.
    """
    batch = len(audio_list)
    if not (batch == len(face_list) == len(face_valid_list)) or batch == 0:
        raise ValueError(f"need the same non-zero number of audio, face and face_valid arrays; got "
                         f"{len(audio_list)}, {len(face_list)}, {len(face_valid_list)}")
    n_mels = audio_list[0].shape[1]
    size = face_list[0].shape[-1]
    t_audio = max(1, max(a.shape[0] for a in audio_list))
    t_video = max(1, max(f.shape[0] for f in face_list))
    out = {
        "audio": np.zeros((batch, t_audio, n_mels), np.float32),
        "audio_mask": np.zeros((batch, t_audio), np.float32),
        "face": np.zeros((batch, t_video, 1, size, size), np.float32),
        "face_mask": np.zeros((batch, t_video), np.float32),
        "presence": np.zeros((batch, 2), np.float32),
    }
    for i, (audio, face, valid) in enumerate(zip(audio_list, face_list, face_valid_list)):
        valid = np.asarray(valid, bool)
        out["audio"][i, :audio.shape[0]] = audio
        out["audio_mask"][i, :audio.shape[0]] = 1.0
        out["face"][i, :face.shape[0], 0] = np.where(valid[:, None, None], face, 0.0)
        out["face_mask"][i, :face.shape[0]] = valid
        out["presence"][i, 0] = float(audio.shape[0] > 0) if audio_present is None else float(audio_present[i])
        out["presence"][i, 1] = float(valid.any()) if face_present is None else float(face_present[i])
    return out


def batch_clips(clips) -> dict:
    """`batch_inputs` for a list of Clip objects."""
    return batch_inputs([c.audio for c in clips], [c.face for c in clips], [c.face_valid for c in clips])
