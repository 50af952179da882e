"""Synthetic prepared features (`edge-ladder make-features`): a features directory in the exact
format of `edge_ladder.features`, generated in seconds without a corpus. numpy only.

What the data encodes (so a test or a reader knows what a model can learn from it):

* The six labels factor into an **audio group** `label // 2` (3 values) and a **face group**
  `label % 2` (2 values). Audio alone can tell at most 3 classes apart, faces alone at most 2:
  only the fused model can separate all six, which is what the cross-modal model is for.
* Audio (T_a, 80) log-mel: an actor-specific spectral envelope (speaker identity: tilt, a formant
  bump, a level offset), a syllable-rate (3-5 Hz) energy envelope, frame noise, and the class
  cue: an energy band whose centre depends on the audio group (jittered per clip, +-3 bins)
  and whose strength varies per clip.
* Faces (T_v, 48, 48): an actor-specific smooth face template, a mouth-region expression
  (face group 0: bright arc, "smile"; 1: dark bar, "frown") whose intensity ramps up and down
  over the clip, pixel noise, each crop standardised like `frontend.standardise_crop`. About
  8 % of the frames, and a longer run in some clips, have no face (face_valid False, crop 0).
* Lengths vary per clip (1.5-3.5 s of audio, mean 2.5 s); T_v = floor(T_a * 10 / 100).
* Splits are speaker-independent (`features.actor_folds`): test actors are never seen in training.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from . import EMOTIONS
from .argtypes import FOLDS, NON_NEGATIVE_INT, POSITIVE_INT
from .errors import EdgeLadderError
from .features import FORMAT, VERSION, actor_folds, atomic_write_json, write_clip
from .frontend import FACE_SIZE, HOP, N_MELS, SAMPLE_RATE, VIDEO_FPS, standardise_crop

AUDIO_FPS = SAMPLE_RATE / HOP      # 100 log-mel frames per second, as frontend.log_mel makes them
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
AUDIO_BAND_CENTRES = (16, 40, 64)   # mel bins of the class band, one per audio group
FACE_MISSING_RATE = 0.08            # fraction of frames without a detected face


def _smooth_image(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """A smooth random (size, size) image: a cells x cells grid bilinearly upsampled."""
    grid = rng.normal(size=(cells, cells))
    coords = np.linspace(0, cells - 1, size)
    low = np.floor(coords).astype(int).clip(0, cells - 2)
    frac = coords - low
    rows = grid[low] * (1 - frac)[:, None] + grid[low + 1] * frac[:, None]           # (size, cells)
    return rows[:, low] * (1 - frac)[None, :] + rows[:, low + 1] * frac[None, :]      # (size, size)


def _actor_identity(rng: np.random.Generator, n_mels: int, size: int) -> dict:
    bins = np.arange(n_mels)
    formant = rng.uniform(0, n_mels)
    envelope = (rng.uniform(-1.0, 1.0) * np.linspace(-1, 1, n_mels)          # spectral tilt
                + 0.7 * np.exp(-0.5 * ((bins - formant) / 10.0) ** 2)      # speaker formant
                + rng.normal(-6.0, 0.5))                                  # level
    return {"envelope": envelope.astype(np.float32), "face": 0.6 * _smooth_image(rng, size)}


def _expression(group: int, size: int) -> np.ndarray:
    """Mouth-region pattern for a face group: 0 -> bright arc (smile), 1 -> dark bar (frown)."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    if group == 0:
        curve = 0.72 + 0.25 * (xx - 0.5) ** 2 * 4 * 0.3
        return 1.5 * np.exp(-0.5 * ((yy - curve) / 0.03) ** 2) * (np.abs(xx - 0.5) < 0.3)
    bar = np.exp(-0.5 * ((yy - 0.75) / 0.04) ** 2) * (np.abs(xx - 0.5) < 0.25)
    brows = np.exp(-0.5 * ((yy - 0.3) / 0.03) ** 2) * (np.abs(np.abs(xx - 0.5) - 0.18) < 0.1)
    return -1.5 * bar - 1.0 * brows


def synth_clip(rng: np.random.Generator, label: int, actor: dict, n_mels: int = N_MELS,
               size: int = FACE_SIZE, seconds: tuple = (1.5, 3.5)):
    """One clip: audio (T_a, n_mels) float32, face (T_v, size, size) float32, face_valid (T_v,) bool."""
    audio_group, face_group = label // 2, label % 2
    t_audio = int(rng.uniform(*seconds) * AUDIO_FPS)
    t_video = max(1, int(t_audio * VIDEO_FPS / AUDIO_FPS))
    bins = np.arange(n_mels)
    # audio: speaker envelope + syllable energy + class band + noise
    times = np.arange(t_audio) / AUDIO_FPS
    rate = rng.uniform(3.0, 5.0)
    energy = 1.5 * np.sin(2 * np.pi * rate * times + rng.uniform(0, 2 * np.pi))      # (T_a,)
    centre = AUDIO_BAND_CENTRES[audio_group] * n_mels / N_MELS + rng.uniform(-3, 3)
    band = rng.uniform(1.2, 2.0) * np.exp(-0.5 * ((bins - centre) / 4.0) ** 2)         # (n_mels,)
    voiced = (energy > -0.5).astype(np.float64)[:, None]                             # (T_a, 1)
    audio = (actor["envelope"][None, :] + energy[:, None] * 0.5 + voiced * band[None, :]
             + rng.normal(0.0, 1.0, size=(t_audio, n_mels)))                          # (T_a, n_mels)
    # face: actor template + ramped expression + noise, standardised per crop
    ramp = np.sin(np.pi * (np.arange(t_video) + 0.5) / t_video) ** 0.5 * rng.uniform(0.6, 1.2)
    pattern = _expression(face_group, size)
    face = np.empty((t_video, size, size), np.float32)
    for t in range(t_video):
        frame = actor["face"] + ramp[t] * pattern + rng.normal(0.0, 0.6, size=(size, size))
        face[t] = standardise_crop(frame.astype(np.float32))
    face_valid = rng.random(t_video) >= FACE_MISSING_RATE
    if rng.random() < 0.2:  # the face is lost for a while (turned head, occlusion)
        start = rng.integers(0, t_video)
        face_valid[start:start + rng.integers(2, 6)] = False
    face[~face_valid] = 0.0
    return audio.astype(np.float32), face, face_valid


def make_features(out_dir, actors: int = 12, clips_per_actor: int = 12, seed: int = 0,
                  k: int = 5, fold: int = 0, seconds: tuple = (1.5, 3.5)) -> Path:
    """Write a synthetic features directory (manifest.json, splits.json, clips/*.npz) -> out_dir.

    Labels cycle through EMOTIONS within each actor, so every actor has balanced classes.
    Deterministic for a given seed.
    """
    if actors < 3:
        raise EdgeLadderError(f"make-features needs at least 3 actors (train/dev/test are split by "
                              f"actor); got --actors {actors}")
    if clips_per_actor < 1:
        raise EdgeLadderError(f"--clips-per-actor must be >= 1; got {clips_per_actor}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    entries = []
    actor_ids = [str(1001 + a) for a in range(actors)]
    for actor_id in actor_ids:
        identity = _actor_identity(rng, N_MELS, FACE_SIZE)
        for i in range(clips_per_actor):
            label = i % len(EMOTIONS)
            repeat = i // (len(EMOTIONS) * len(SENTENCES))
            level = "XX" if repeat == 0 else f"R{repeat}"
            clip_id = f"{actor_id}_{SENTENCES[(i // len(EMOTIONS)) % len(SENTENCES)]}_{EMOTIONS[label]}_{level}"
            audio, face, face_valid = synth_clip(rng, label, identity, seconds=seconds)
            file = f"clips/{clip_id}.npz"
            write_clip(out_dir / file, audio, face, face_valid)
            entries.append({"id": clip_id, "actor": actor_id, "label": label, "file": file,
                            "audio_frames": int(audio.shape[0]), "video_frames": int(face.shape[0])})
    atomic_write_json(out_dir / "splits.json", actor_folds(actor_ids, k=k, fold=fold, seed=seed))
    atomic_write_json(out_dir / "manifest.json", {
        "format": FORMAT, "version": VERSION, "labels": list(EMOTIONS), "n_mels": N_MELS,
        "face_size": FACE_SIZE, "audio_fps": AUDIO_FPS, "video_fps": VIDEO_FPS,
        "source": f"synthetic (edge_ladder.synthetic, seed={seed})", "clips": entries})
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="features directory to write")
    parser.add_argument("--actors", type=POSITIVE_INT, default=12, help="number of speakers (default 12)")
    parser.add_argument("--clips-per-actor", type=POSITIVE_INT, default=12, help="clips per speaker (default 12)")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    parser.add_argument("--k", type=FOLDS, default=5, help="actor folds, >= 3 (default 5)")
    parser.add_argument("--fold", type=NON_NEGATIVE_INT, default=0, help="test fold; the next one is dev")


def run(args: argparse.Namespace) -> int:
    out = make_features(args.out_dir, actors=args.actors, clips_per_actor=args.clips_per_actor,
                        seed=args.seed, k=args.k, fold=args.fold)
    print(f"wrote {args.actors * args.clips_per_actor} synthetic clips to {out}")
    return 0
