"""`edge-ladder prepare`: a CREMA-D directory -> a features directory (edge_ladder.features format).

For every clip found on disk (AudioWAV/*.wav + VideoFlash/*.flv, optionally under data/):
    name -> actor, emotion (crema.parse_name); label from the name or from summaryTable.csv
    WAV + FLV -> log-mel (T_a, 80), face crops (T_v, 48, 48), face_valid (media.clip_features,
                 the same function `edge-ladder infer` uses)
Bad clips are skipped with a per-file reason and the run goes on: Git LFS pointer stubs, empty
or unreadable audio, videos without frames, unknown codes, clips over --max-seconds, missing
labels. Clips are processed in parallel; clips already written are not redone (resumable); every
file is written atomically. Splits are by actor (features.actor_folds), never by clip.

Outputs: FEATURES_DIR/manifest.json, splits.json, clips/ID.npz and prepare_report.json (every
skipped file and why).

`prepare DIR --out FEATURES --unlabelled` takes any folder of your own recordings instead (no
CREMA-D names, no labels, no splits; long recordings cut into --clip-seconds clips): see
edge_ladder.prepare_unlabelled.
"""
from __future__ import annotations

import argparse
import time
import wave
from collections import Counter
from pathlib import Path

import numpy as np

from . import EMOTIONS, crema, features, frontend
from .argtypes import FOLDS, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT
from .errors import EdgeLadderError
from .parallel import run_parallel

LABEL_CHOICES = ("filename", "voice", "face", "multimodal")

# skip categories (the summary groups skipped files by these)
LFS = "Git LFS pointer stub"
BAD_NAME = "bad file name or code"
NO_LABEL = "no usable perceived label"
MISSING = "missing audio or video file"
BAD_AUDIO = "empty or unreadable audio"
BAD_VIDEO = "video without frames or unreadable"
TOO_LONG = "longer than --max-seconds"
FAILED = "unexpected error"

_detector = None


def _get_detector(cascade=None):
    """One Haar detector per worker process (loading the cascade takes ~50 ms)."""
    global _detector
    if _detector is None:
        from .faces import FaceDetector
        _detector = FaceDetector(cascade=cascade)
    return _detector


def _wav_seconds(path: Path) -> float:
    """Duration from the WAV header, without decoding (a cheap check before the real work)."""
    try:
        with wave.open(str(path), "rb") as handle:
            return handle.getnframes() / float(handle.getframerate() or 1)
    except (wave.Error, EOFError, OSError):
        return 0.0      # read_wav below reports the real reason


def process_clip(task: dict) -> dict:
    """Worker: one clip's files -> features written to out_dir/clips/ID.npz.
    -> {"id", "status": "kept" | "resumed" | "skipped", "reason", "category", counts...}"""
    from . import media
    clip_id, out_file = task["id"], Path(task["out_file"])
    result = {"id": clip_id, "status": "kept", "category": None, "reason": None}
    if out_file.exists():
        try:
            with np.load(out_file) as data:
                result.update(status="resumed", audio_frames=int(data["audio"].shape[0]),
                              video_frames=int(data["face"].shape[0]), face_frames=int(data["face_valid"].sum()))
            return result
        except (OSError, ValueError, KeyError):
            pass        # unreadable leftover (should not happen with atomic writes): redo it
    wav, flv = Path(task["wav"]), Path(task["flv"])
    try:
        # LFS stubs first, for a clear reason even when both files are stubs
        for path in (wav, flv):
            if crema.is_lfs_pointer(path):
                raise crema.LfsPointerError(f"{path.name} is a Git LFS pointer stub, not media. {crema.LFS_HINT}")
        seconds = _wav_seconds(wav)
        if seconds > task["max_seconds"]:
            return _skip(result, TOO_LONG, f"audio lasts {seconds:.1f} s > --max-seconds {task['max_seconds']:g}")
        try:
            audio = media.audio_features(wav)
        except media.MediaError as error:
            return _skip(result, BAD_AUDIO, str(error))
        if audio.shape[0] == 0:
            return _skip(result, BAD_AUDIO, f"{wav.name}: shorter than one {frontend.WIN}-sample frame")
        try:
            frames, _ = media.read_video(flv, frontend.VIDEO_FPS)
        except media.MediaError as error:
            return _skip(result, BAD_VIDEO, str(error))
        if frames.shape[0] / frontend.VIDEO_FPS > task["max_seconds"]:
            return _skip(result, TOO_LONG, f"video lasts {frames.shape[0] / frontend.VIDEO_FPS:.1f} s > "
                                           f"--max-seconds {task['max_seconds']:g}")
        face, face_valid = media.face_features(frames, _get_detector(task.get("cascade")).track(frames))
    except crema.LfsPointerError as error:
        return _skip(result, LFS, str(error))
    except Exception as error:  # noqa: BLE001  one broken file must not stop 7,442: report it, go on
        return _skip(result, FAILED, f"{type(error).__name__}: {error}")
    features.write_clip(out_file, audio, face, face_valid)
    result.update(audio_frames=int(audio.shape[0]), video_frames=int(face.shape[0]),
                  face_frames=int(face_valid.sum()))
    return result


def _skip(result: dict, category: str, reason: str) -> dict:
    result.update(status="skipped", category=category, reason=reason)
    return result


def plan(crema_dir: Path, labels: str = "filename") -> tuple[list[dict], list[dict]]:
    """Index the files on disk -> (clips to process, skipped entries). Cheap: no media decoding."""
    if labels not in LABEL_CHOICES:
        raise EdgeLadderError(f"--labels must be one of {', '.join(LABEL_CHOICES)}; got {labels!r}.")
    index = crema.index_files(crema_dir)
    table = crema.read_summary_table(crema.summary_table_path(crema_dir)) if labels != "filename" else None
    todo, skipped = [], []
    for clip_id, files in index.items():
        try:
            name = crema.parse_name(clip_id)
        except crema.CremaError as error:
            skipped.append({"id": clip_id, "category": BAD_NAME, "reason": str(error)})
            continue
        if files.wav is None or files.flv is None:
            have = files.wav or files.flv
            missing = "VideoFlash/" + clip_id + ".flv" if files.flv is None else "AudioWAV/" + clip_id + ".wav"
            skipped.append({"id": clip_id, "category": MISSING, "reason": f"have {have.name}, no {missing}"})
            continue
        emotion = name.emotion
        if table is not None:
            try:
                emotion = crema.perceived_label(table, clip_id, labels)
            except crema.CremaError as error:
                skipped.append({"id": clip_id, "category": NO_LABEL, "reason": str(error)})
                continue
        todo.append({"id": clip_id, "actor": name.actor, "label": EMOTIONS.index(emotion),
                     "wav": str(files.wav), "flv": str(files.flv)})
    if not index:
        raise crema.CremaError(f"{crema.find_root(crema_dir)} has AudioWAV/ or VideoFlash/ but no .wav/.flv files in "
                               f"them.")
    return todo, skipped


def prepare(crema_dir, out_dir, workers: int | None = None, folds: int = 5, fold: int = 0,
            labels: str = "filename", max_seconds: float = 10.0, seed: int = 0, progress: bool = False,
            cascade=None) -> dict:
    """CREMA-D directory -> features directory. Returns the summary written to prepare_report.json:
    {"kept": n, "resumed": n, "skipped": [{"id", "category", "reason"}, ...], "by_category": {...},
     "actors": n, "splits": {"train": n_actors, "dev": ..., "test": ...}, "seconds": s}.
    cascade: the Haar cascade file (faces.find_cascade; None: $EDGE_LADDER_CASCADE or the default)."""
    start = time.perf_counter()
    crema_dir, out_dir = Path(crema_dir), Path(out_dir)
    if not max_seconds > 0:
        raise EdgeLadderError(f"--max-seconds must be positive; got {max_seconds}.")
    todo, skipped = plan(crema_dir, labels)
    check_actors(todo, crema_dir)
    from .faces import FaceDetector
    cascade = str(FaceDetector(cascade=cascade).cascade_path)   # found and loadable, before any clip
    tasks = [{"id": c["id"], "wav": c["wav"], "flv": c["flv"], "max_seconds": float(max_seconds),
              "out_file": str(out_dir / "clips" / f"{c['id']}.npz"), "cascade": cascade} for c in todo]
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    results = run_parallel(process_clip, tasks, workers, progress, "prepare")

    entries, resumed, face_frames, video_frames = [], 0, 0, 0
    for clip, result in zip(todo, results):
        if result["status"] == "skipped":
            skipped.append({"id": clip["id"], "category": result["category"], "reason": result["reason"]})
            continue
        resumed += result["status"] == "resumed"
        face_frames += result["face_frames"]
        video_frames += result["video_frames"]
        entries.append({"id": clip["id"], "actor": clip["actor"], "label": clip["label"],
                        "file": f"clips/{clip['id']}.npz", "audio_frames": result["audio_frames"],
                        "video_frames": result["video_frames"], "face_frames": result["face_frames"]})
    by_category = dict(Counter(s["category"] for s in skipped).most_common())
    if not entries:
        if by_category.get(LFS) and not set(by_category) - {LFS, BAD_NAME}:
            raise crema.LfsPointerError(
                f"every media file in {crema_dir} is a Git LFS pointer stub (~130 bytes of text), so there is "
                f"nothing to prepare. {crema.LFS_HINT}")
        raise EdgeLadderError(f"no usable clips in {crema_dir}: skipped {len(skipped)} "
                              f"({', '.join(f'{n} {c}' for c, n in by_category.items())}). "
                              f"First reason: {skipped[0]['reason'] if skipped else 'no clips found'}")

    actors = sorted({e["actor"] for e in entries})
    splits = features.actor_folds(actors, k=folds, fold=fold, seed=seed)
    features.atomic_write_json(out_dir / "manifest.json", {
        "format": features.FORMAT, "version": features.VERSION, "labels": list(EMOTIONS),
        "n_mels": frontend.N_MELS, "face_size": frontend.FACE_SIZE,
        "audio_fps": frontend.SAMPLE_RATE / frontend.HOP, "video_fps": frontend.VIDEO_FPS,
        "source": f"prepare {crema_dir.resolve()}", "label_source": labels, "clips": entries})
    features.atomic_write_json(out_dir / "splits.json", splits)
    summary = {"crema_dir": str(crema_dir), "out_dir": str(out_dir), "labels": labels,
               "kept": len(entries), "resumed": resumed, "actors": len(actors),
               "splits": {name: len(splits[name]) for name in ("train", "dev", "test")},
               "face_detected_fraction": face_frames / max(1, video_frames),
               "by_category": by_category, "skipped": sorted(skipped, key=lambda s: s["id"]),
               "seconds": round(time.perf_counter() - start, 2)}
    features.atomic_write_json(out_dir / "prepare_report.json", summary)
    return summary


def check_actors(todo: list, crema_dir: Path) -> None:
    """Before any clip is processed: the train/dev/test splits need MIN_SPLIT_ACTORS actors."""
    actors = sorted({c["actor"] for c in todo})
    if todo and len(actors) < features.MIN_SPLIT_ACTORS:
        raise EdgeLadderError(
            f"{crema_dir} holds clips of {len(actors)} actor{'s' if len(actors) != 1 else ''} ({', '.join(actors)}); "
            f"prepare splits train/dev/test by actor and needs at least {features.MIN_SPLIT_ACTORS}. Nothing was "
            f"processed. Add recordings of more actors (a generated corpus: `edge-ladder make-corpus DIR --actors "
            f"{features.MIN_SPLIT_ACTORS}` or more); to run a model on these clips, use `edge-ladder infer MODEL "
            f"--input {crema_dir}`.")


def format_summary(summary: dict, max_lines: int = 20) -> str:
    lines = [f"kept {summary['kept']} clips from {summary['actors']} actors ({summary['resumed']} already done); "
             f"faces found in {100 * summary['face_detected_fraction']:.1f} % of video frames; "
             f"splits by actor: {summary['splits']}; {summary['seconds']:.1f} s"]
    return "\n".join(lines + skipped_lines(summary, "files", max_lines))


def skipped_lines(summary: dict, what: str, max_lines: int = 20) -> list[str]:
    """The report's skipped entries (what: "files", "recordings"), at most max_lines of them."""
    skipped = summary["skipped"]
    if not skipped:
        return []
    lines = [f"skipped {len(skipped)} {what}: " + ", ".join(f"{n} {c}" for c, n in summary["by_category"].items())]
    lines += [f"  {entry['id']}: {entry['category']}: {entry['reason']}" for entry in skipped[:max_lines]]
    if len(skipped) > max_lines:
        lines.append(f"  ... and {len(skipped) - max_lines} more")
    lines.append(f"  (all of them in {Path(summary['out_dir']) / 'prepare_report.json'})")
    return lines


# CREMA-D-only flags and their defaults (None on the command line: `--unlabelled` refuses them when given)
LABELLED_DEFAULTS = {"folds": 5, "fold": 0, "labels": "filename", "max_seconds": 10.0, "seed": 0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .prepare_unlabelled import CLIP_SECONDS, DEFAULT_CLIP_SECONDS
    parser.add_argument("crema_dir", metavar="DIR", help="CREMA-D root (AudioWAV/, VideoFlash/, or under data/); "
                                                         "with --unlabelled, any folder of recordings")
    parser.add_argument("--out", required=True, metavar="FEATURES_DIR", help="features directory to write")
    parser.add_argument("--workers", type=POSITIVE_INT, default=None, help="processes (default: all cores)")
    parser.add_argument("--folds", type=FOLDS, default=None, help="actor folds k, >= 3 (default 5)")
    parser.add_argument("--fold", type=NON_NEGATIVE_INT, default=None, help="which fold is the test set; the next is dev (default 0)")
    parser.add_argument("--labels", choices=LABEL_CHOICES, default=None,
                        help="intended emotion from the file name (default) or perceived labels from "
                             "processedResults/summaryTable.csv (VoiceVote, FaceVote, MultiModalVote; ties skipped)")
    parser.add_argument("--max-seconds", type=POSITIVE, default=None,
                        help="skip clips longer than this (default 10; CREMA-D's 1064_IEO_DIS_MD lasts about a minute)")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=None, help="seed of the actor shuffle for the folds (default 0)")
    parser.add_argument("--unlabelled", action="store_true",
                        help="DIR is any folder of your own recordings (NAME.wav + NAME.{flv,mp4,avi,mkv} pairs, "
                             "videos with their own audio track, searched recursively): unlabelled clips for "
                             "`train --unlabelled`, no labels, no splits")
    parser.add_argument("--clip-seconds", type=CLIP_SECONDS, default=None,
                        help=f"with --unlabelled: cut recordings into clips of this length (default "
                             f"{DEFAULT_CLIP_SECONDS:g}); a last partial clip is kept if it lasts at least half of it")
    parser.add_argument("--cascade", metavar="PATH", default=None,
                        help="Haar cascade XML for the face detector (default: $EDGE_LADDER_CASCADE, else "
                             "haarcascade_frontalface_default.xml from cv2.data or /usr/share/opencv4/haarcascades)")


def run(args: argparse.Namespace) -> int:
    given = [f"--{name.replace('_', '-')}" for name in LABELLED_DEFAULTS if getattr(args, name) is not None]
    if args.unlabelled:
        from . import prepare_unlabelled as unlabelled
        if given:
            raise EdgeLadderError(
                f"{', '.join(given)} do{'es' if len(given) == 1 else ''} not apply to --unlabelled: unlabelled "
                f"recordings have no labels to read (--labels) and no actor splits (--folds, --fold, --seed; "
                f"`train --unlabelled` uses every clip), and long recordings are cut into --clip-seconds clips "
                f"instead of skipped (--max-seconds). Drop {', '.join(given)}.")
        summary = unlabelled.prepare_unlabelled(
            args.crema_dir, args.out, workers=args.workers, progress=True, cascade=args.cascade,
            clip_seconds=args.clip_seconds if args.clip_seconds is not None else unlabelled.DEFAULT_CLIP_SECONDS)
        print(unlabelled.format_summary(summary))
        return 0
    if args.clip_seconds is not None:
        raise EdgeLadderError("--clip-seconds cuts your own recordings into clips with --unlabelled; CREMA-D clips "
                              "are used whole (--max-seconds skips long ones). Add --unlabelled or drop --clip-seconds.")
    options = {name: getattr(args, name) if getattr(args, name) is not None else default
               for name, default in LABELLED_DEFAULTS.items()}
    summary = prepare(args.crema_dir, args.out, workers=args.workers, progress=True, cascade=args.cascade, **options)
    print(format_summary(summary))
    return 0
