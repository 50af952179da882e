"""What can any model read from a crema corpus' media? Cue-level ceilings, and which cues the front-ends expose.

    python benchmarks/corpus_ceiling.py --corpus CORPUS_DIR --features FEATURES_DIR [--out ceiling.json]
    python benchmarks/corpus_ceiling.py --corpus CORPUS_DIR --render-actors 91 --clips-per-actor 82

The corpus' own "ideal observer" (a logistic regression on the cue values each clip was rendered with,
corpus.json) is not an observer of the media: its voice cues are relative to the actor (pitch x the
actor's f0, rate x the actor's syllable rate, loudness over the actor's gain, formants x the actor's
vocal tract), which no single clip tells a model. This script measures, on K actor folds (the
features' splits.json k and seed, or k = 5, seed 0):

  1. accuracy of the cue observer as the corpus reports it (relative cues);
  2. the speaker-blind observer: the same regression on the cues as the media carry them (absolute:
     log f0, log syllable rate, dB over full scale, log formant scale);
  3. per cue, the R^2 of a ridge read-out from per-clip statistics of the prepared features (audio:
     per-bin mean and std of the log-mel, the mean over the louder half of the frames, mean |d/dt|
     and mean |d/df|; face: the 12 x 12 pooled crop's mean and std over frames), out of fold: a cue
     the read-out cannot recover (R^2 < --visible) is not in the features in any simple form;
  4. the speaker-blind observer restricted to the visible cues: the ceiling for a model that reads
     the front-end's features no better than a linear read-out of their statistics.

--render-actors N re-renders only the audio (corpus_crema.render_audio, same seed and plan as
make-corpus; no video, ~0.05 s a clip) for N actors x --clips-per-actor clips and computes its
log-mel with the product's front-end, so the audio rows can be measured at CREMA-D's 91 x 82 without
generating 7,462 videos. Needs scikit-learn (the dev extra).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

FACE_POOL = 12


def absolute_cues(cues: dict, actor) -> dict:
    """Rendered (actor-relative) voice cues -> the values the waveform carries (corpus.make_actor's speaker)."""
    out = dict(cues)
    out["pitch"] = float(np.log(cues["pitch"] * actor.f0))
    out["rate"] = float(np.log(cues["rate"] * actor.rate))
    out["gain_db"] = float(cues["gain_db"] + 20 * np.log10(actor.gain))
    out["formant"] = float(np.log(cues["formant"] * actor.formant_scale))
    return out


def audio_statistics(logmel: np.ndarray) -> np.ndarray:
    """(T, n_mels) log-mel -> (5 n_mels,) per-clip statistics (module docstring, step 3)."""
    peak = logmel.max(axis=1)
    loud = logmel[peak >= np.median(peak)] if len(logmel) >= 8 else logmel
    return np.concatenate([logmel.mean(0), logmel.std(0), loud.mean(0),
                           np.abs(np.diff(logmel, axis=0)).mean(0) if len(logmel) > 1 else np.zeros(logmel.shape[1]),
                           np.abs(np.diff(loud, axis=1)).mean(0)])


def face_statistics(face: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, S, S) crops, (T,) valid -> (2 x 144,) mean and std over valid frames of the 12 x 12 pooled crop."""
    frames = face[valid] if valid.any() else face
    size = frames.shape[-1]
    pooled = frames.reshape(len(frames), FACE_POOL, size // FACE_POOL, FACE_POOL, size // FACE_POOL).mean(axis=(2, 4))
    pooled = pooled.reshape(len(frames), -1)
    return np.concatenate([pooled.mean(0), pooled.std(0)])


def fold_masks(actors: np.ndarray, k: int, seed: int):
    """(train, test) boolean masks per actor fold; the dev fold joins train (no model selection here)."""
    from edge_ladder.features import actor_folds
    for fold in range(k):
        split = actor_folds(actors, k=k, fold=fold, seed=seed)
        yield np.isin(actors, split["train"] + split["dev"]), np.isin(actors, split["test"])


def observer_accuracy(x: np.ndarray, y: np.ndarray, actors: np.ndarray, k: int, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    accs = []
    for train, test in fold_masks(actors, k, seed):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(x[train], y[train])
        accs.append(float((model.predict(x[test]) == y[test]).mean()))
    return {"mean": round(float(np.mean(accs)), 4), "folds": [round(a, 4) for a in accs]}


def readout_r2(stats: np.ndarray, target: np.ndarray, actors: np.ndarray, k: int, seed: int) -> float:
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    pred = np.zeros_like(target)
    for train, test in fold_masks(actors, k, seed):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13))).fit(stats[train], target[train])
        pred[test] = model.predict(stats[test])
    return round(float(r2_score(target, pred)), 3)


def rendered_audio(settings: dict, actors: int, clips_per_actor: int, workers: int):
    """Audio-only re-render of make-corpus' plan -> [(clip id, clip_cues, audio_statistics)] in plan order."""
    from edge_ladder.corpus import FIRST_ACTOR
    from edge_ladder.corpus_crema import plan_clips
    from edge_ladder.parallel import run_parallel
    plan = plan_clips(range(FIRST_ACTOR, FIRST_ACTOR + actors), clips_per_actor, int(settings["seed"]))
    tasks = [(int(settings["seed"]), *clip) for clip in plan]
    return run_parallel(_render_statistics, tasks, workers=workers, desc="render audio", progress=False)


def _render_statistics(task) -> tuple:
    from edge_ladder.corpus_crema import clip_cues, render_audio
    from edge_ladder.frontend import log_mel
    seed, actor, sentence, emotion, level = task
    cues = clip_cues(seed, actor, sentence, emotion, level)
    pcm = render_audio(seed, actor, sentence, emotion, level, cues["cues"])[0]
    return f"{actor}_{sentence}_{emotion}_{level}", cues, audio_statistics(log_mel(pcm))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, help="a make-corpus --difficulty crema directory (corpus.json)")
    parser.add_argument("--features", help="its prepared features (prepare CORPUS --out FEATURES)")
    parser.add_argument("--render-actors", type=int, default=0, help="re-render the audio of this many actors instead")
    parser.add_argument("--clips-per-actor", type=int, default=82)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--visible", type=float, default=0.5, help="R^2 at which a cue counts as visible (default 0.5)")
    parser.add_argument("--out", help="write the measurements as JSON here")
    args = parser.parse_args(argv)
    from edge_ladder import EMOTIONS
    from edge_ladder.corpus import make_actor
    from edge_ladder.corpus_crema import CUES, clip_cues

    started = time.time()
    record = json.loads((Path(args.corpus) / "corpus.json").read_text())
    settings = record["settings"]
    seed = int(settings["seed"])
    k, fold_seed = 5, 0
    stats = {}
    if args.render_actors:
        rows = rendered_audio(settings, args.render_actors, args.clips_per_actor, args.workers)
        ids = [r[0] for r in rows]
        planned = {r[0]: r[1] for r in rows}
        stats["audio"] = np.array([r[2] for r in rows])
        source = f"audio re-rendered: {args.render_actors} actors x {args.clips_per_actor} clips, seed {seed}"
    elif args.features:
        from edge_ladder.features import read_manifest, read_splits
        features = Path(args.features)
        splits = read_splits(features)
        k, fold_seed = int(splits.get("k", 5)), int(splits.get("seed", 0))
        entries = read_manifest(features)["clips"]
        ids, audio_rows, face_rows = [], [], []
        for entry in entries:
            if entry["id"] not in record["clips"]:
                continue
            with np.load(features / entry["file"]) as data:
                audio_rows.append(audio_statistics(data["audio"].astype(np.float32)))
                face_rows.append(face_statistics(data["face"].astype(np.float32), data["face_valid"].astype(bool)))
            ids.append(entry["id"])
        stats = {"audio": np.array(audio_rows), "face": np.array(face_rows)}
        planned = {i: record["clips"][i] for i in ids}
        source = f"features {features}"
    else:
        parser.error("pass --features FEATURES_DIR or --render-actors N")

    actors = np.array([i.split("_")[0] for i in ids])
    labels = np.array([EMOTIONS.index(i.split("_")[2]) for i in ids])
    speakers = {a: make_actor(int(a), seed) for a in set(actors)}
    rel = [planned[i]["cues"] for i in ids]
    absolute = [absolute_cues(c, speakers[a]) for c, a in zip(rel, actors)]
    result = {"corpus": str(args.corpus), "version": settings.get("version"), "source": source, "clips": len(ids),
              "actors": int(len(set(actors))), "folds": k, "visible_r2": args.visible, "modalities": {}}
    groups = {"audio": "voice", "face": "face"}
    for modality, group in groups.items():
        if modality not in stats:
            continue
        names = [n for n, cue in CUES.items() if cue.modality == group]
        x_rel = np.array([[c[n] for n in names] for c in rel])
        x_abs = np.array([[c[n] for n in names] for c in absolute])
        r2 = {n: readout_r2(stats[modality], x_abs[:, j], actors, k, fold_seed) for j, n in enumerate(names)}
        visible = [j for j, n in enumerate(names) if r2[n] >= args.visible]
        entry = {"cue_observer": observer_accuracy(x_rel, labels, actors, k, fold_seed),
                 "speaker_blind_observer": observer_accuracy(x_abs, labels, actors, k, fold_seed),
                 "readout_r2": r2, "visible_cues": [names[j] for j in visible],
                 "visible_cue_observer": observer_accuracy(x_abs[:, visible], labels, actors, k, fold_seed)
                 if visible else None,
                 "drop_one_speaker_blind": {n: observer_accuracy(np.delete(x_abs, j, axis=1), labels, actors, k,
                                                                 fold_seed)["mean"] for j, n in enumerate(names)}}
        result["modalities"][modality] = entry
        print(f"--- {modality} ({group} cues), {len(ids)} clips, {len(set(actors))} actors, {k} actor folds")
        print(f"  cue observer (rendered, actor-relative cues)    {entry['cue_observer']['mean']:.3f}")
        print(f"  speaker-blind observer (cues as the media carry) {entry['speaker_blind_observer']['mean']:.3f}")
        print("  R^2 of a linear read-out from the features' per-clip statistics:")
        for n in names:
            print(f"    {n:8s} {r2[n]:6.3f}   speaker-blind observer without it: {entry['drop_one_speaker_blind'][n]:.3f}")
        if visible:
            print(f"  speaker-blind observer on the visible cues (R^2 >= {args.visible}: "
                  f"{', '.join(entry['visible_cues'])}) {entry['visible_cue_observer']['mean']:.3f}")
    result["seconds"] = round(time.time() - started, 1)
    if args.out:
        from edge_ladder.atomic import atomic_write_json
        atomic_write_json(Path(args.out), result)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
