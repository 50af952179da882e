"""`edge-ladder prepare DIR --out FEATURES --unlabelled`: your own recordings (a robot's logs,
no CREMA-D names, no labels) -> an unlabelled features directory for `train --unlabelled`.

Recordings are found recursively under DIR (hidden files and folders are passed over):
    NAME.wav + NAME.{flv,mp4,avi,mkv}, same folder and stem: audio from the WAV (the pair rule wins
                                  over the video's own audio track), faces from the video;
    NAME.{flv,mp4,avi,mkv} alone: audio from the video's own track, faces from its frames;
    NAME.wav alone:               audio-only clips with no face frames (face (0, 48, 48),
                                  face_valid (0,)), as `edge-ladder infer` treats a WAV without a
                                  video: the model sees the face as absent (presence[:, 1] = 0);
    a video without an audio track and without NAME.wav is skipped with that reason, as are
    several videos sharing one NAME.wav (which one goes with it is unknown).
Audio of any format (WAV, AAC, Opus, ..., any rate, any channels) is decoded and resampled to the
front-end's 16 kHz mono by PyAV (media.audio_chunks); video frames by OpenCV, resampled to
10 fps by the labelled path's nearest-timestamp rule (media.video_ticks). Both stream: a worker
holds one clip of samples and frames, never a whole recording.

Cutting: clip c covers [c L, (c + 1) L) seconds (L = --clip-seconds), counted from each stream's
first sample and frame: audio samples [round(c L 16000), round((c + 1) L 16000)), face ticks
k = ceil(c L 10) ... ceil((c + 1) L 10) - 1. A recording lasts as long as its shorter stream (a
second or more left in the other is reported: a pair's files out of step); the last partial
clip is kept when it lasts at least half of L (both streams trimmed to it), else dropped (the
report counts the dropped seconds). Clip id: the recording's path relative to DIR,
without the suffix, in safe characters, + _00000, _00001, ...; actor: that relative name (train
never splits one recording's clips across roles); "source" and "start_s" say where a clip came from.

Features are the labelled path's: frontend.log_mel of the clip's samples, and the face crops of
media.face_features(frames, detector.track(frames)) on the clip's frames, with a fresh tracker
per clip exactly as `prepare` runs it per CREMA-D clip.

Broken files never stop the run: a recording that gives no clip is skipped with a category and
reason (prepare_report.json); one that breaks part-way keeps the clips before the damage and the
report says where it stopped (warnings). Resumable: a finished recording is listed in
OUT/recordings/ID.json with its files' sizes and mtimes and L, so a re-run decodes nothing for it;
an unfinished or changed one is decoded again, and each clip file that exists with the expected
shapes is reused, not rewritten. Recordings are processed in parallel (one task per recording,
longest first); every file is written atomically.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

from . import EMOTIONS, features, frontend
from ._deps import require
from .argtypes import Range
from .errors import EdgeLadderError
from .parallel import run_parallel
from .prepare import BAD_AUDIO, BAD_VIDEO, FAILED, LFS, _get_detector, _skip

AUDIO_SUFFIXES = (".wav",)
VIDEO_SUFFIXES = (".flv", ".mp4", ".avi", ".mkv")
DEFAULT_CLIP_SECONDS = 3.0      # about a CREMA-D sentence (1.3-5 s, median 2.5 s)
MIN_CLIP_SECONDS = 1.0 / frontend.VIDEO_FPS   # the model's shortest input: one face tick (10 audio frames)
CLIP_SECONDS = Range(float, minimum=MIN_CLIP_SECONDS,
                     why=f"the model needs one face frame, 1/{frontend.VIDEO_FPS:g} s, per clip")
KEEP_PARTIAL = 0.5              # the last partial clip is kept when it lasts at least this share of a clip

# skip categories of --unlabelled, besides prepare's LFS, BAD_AUDIO, BAD_VIDEO and FAILED
NO_AUDIO = "video without an audio track or a .wav beside it"
AMBIGUOUS = "several videos share one name"
TOO_SHORT = "shorter than half of --clip-seconds"


def safe_name(name: str) -> str:
    """A relative recording name ('day 1/kitchen') -> file-name characters ('day_1_kitchen')."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return re.sub(r"^\.+", "_", safe) or "recording"


def find_recordings(root: Path, out_dir: Path | None = None) -> tuple[list[dict], list[dict]]:
    """Index DIR (recursively; no decoding) -> (recordings, skipped). A recording is
    {"name": relative path without suffix (posix), "id": its safe clip-id stem,
     "wav": path or None, "video": path or None}; skipped entries are {"id", "category", "reason"}."""
    root = Path(root)
    if not root.is_dir():
        raise EdgeLadderError(f"recordings folder {root} does not exist (or is not a folder). Pass the folder your "
                              f"recorder writes to: `edge-ladder prepare recordings/ --out FEATURES --unlabelled`.")
    skip_dir = Path(out_dir).resolve() if out_dir is not None else None
    groups: dict = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if skip_dir is not None and skip_dir in path.resolve().parents:
            continue            # --out inside DIR: our own output is not a recording
        suffix = path.suffix.lower()
        if suffix in AUDIO_SUFFIXES + VIDEO_SUFFIXES:
            groups.setdefault(relative.with_suffix("").as_posix(), []).append(path)
    if not groups:
        from .paths import is_corpus
        hint = (" It looks like CREMA-D: prepare it without --unlabelled, then pass that features directory to "
                "`train --unlabelled` (its labels are not used)." if is_corpus(root) else "")
        raise EdgeLadderError(f"no recordings under {root}: expected NAME.wav and/or NAME.{{flv,mp4,avi,mkv}} files "
                              f"(searched recursively).{hint}")
    recordings, skipped = [], []
    for name, paths in groups.items():
        wavs = [p for p in paths if p.suffix.lower() in AUDIO_SUFFIXES]
        videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
        if len(wavs) > 1 or (wavs and len(videos) > 1):
            skipped.append({"id": name, "category": AMBIGUOUS,
                            "reason": f"{', '.join(p.name for p in paths)} share one name: which video goes with "
                                      f"which audio is unknown. Rename them so each NAME.wav has one NAME.<video>."})
        elif len(videos) > 1:   # no WAV: each video is its own recording, named with its suffix
            recordings += [{"name": f"{name}{p.suffix}", "wav": None, "video": p} for p in videos]
        else:
            recordings.append({"name": name, "wav": wavs[0] if wavs else None, "video": videos[0] if videos else None})
    ids = Counter(safe_name(r["name"]) for r in recordings)
    for recording in recordings:
        stem = safe_name(recording["name"])
        if ids[stem] > 1:       # 'a b' and 'a_b' both become 'a_b': tell them apart by their names' hash
            stem += "-" + hashlib.sha1(recording["name"].encode()).hexdigest()[:8]
        recording["id"] = stem
    return recordings, skipped


def _stats(paths) -> list:
    """[[name, size, mtime_ns], ...] of a recording's files: the resume index's proof they are unchanged."""
    return [[Path(p).name, Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for p in paths if p is not None]


class _Samples:
    """audio_chunks -> exact-length pieces, holding at most one piece plus one chunk."""

    def __init__(self, chunks):
        self.chunks, self.buffer, self.error = chunks, np.zeros(0, np.int16), None

    def take(self, n: int) -> np.ndarray:
        """The next n samples (fewer at the end, or where decoding failed: then self.error)."""
        pieces, held = [self.buffer], self.buffer.size
        while held < n and self.error is None:
            try:
                chunk = next(self.chunks, None)
            except _media_errors() as error:
                self.error = error
                break
            if chunk is None:
                break
            pieces.append(chunk)
            held += chunk.size
        joined = np.concatenate(pieces)
        self.buffer = joined[n:]
        return joined[:n]


def _take_frames(ticks, n: int) -> tuple[list, Exception | None]:
    """The next n frames of a video_ticks iterator (fewer at its end) and the MediaError that
    ended it, if one did (the frames before it are good)."""
    frames = []
    if n <= 0:
        return frames, None
    try:
        for frame in ticks:
            frames.append(frame)
            if len(frames) == n:
                break
    except _media_errors() as error:
        return frames, error
    return frames, None


def _media_errors() -> tuple:
    """What a broken file raises (a Git LFS stub is a CremaError, not a MediaError)."""
    from .crema import LfsPointerError
    from .media import MediaError
    return (MediaError, LfsPointerError)


def _category(error, stream: str) -> tuple[str, str]:
    from .crema import LfsPointerError
    from .media import NoAudioTrackError
    if isinstance(error, LfsPointerError):
        return LFS, str(error)
    if isinstance(error, NoAudioTrackError):
        return NO_AUDIO, (f"{error} An unlabelled clip needs its sound: record with the microphone on, or put the "
                          f"recording's audio beside it as NAME.wav (same folder, same name).")
    return (BAD_AUDIO if stream == "audio" else BAD_VIDEO), str(error)


def _reusable(out_file: Path, audio_frames: int, video_frames: int) -> dict | None:
    """An existing clip file with the expected shapes -> its counts (resume), else None."""
    if not out_file.exists():
        return None
    try:
        with np.load(out_file) as data:
            if data["audio"].shape[0] == audio_frames and data["face"].shape[0] == video_frames:
                return {"audio_frames": audio_frames, "video_frames": video_frames,
                        "face_frames": int(data["face_valid"].sum())}
    except (OSError, ValueError, KeyError):
        pass            # unreadable leftover (should not happen with atomic writes): redo it
    return None


def process_recording(task: dict) -> dict:
    """Worker: one recording -> its clips written to out_dir/clips/ID_NNNNN.npz.
    -> {"name", "status": "kept" | "resumed" | "skipped", "category", "reason", "clips": [manifest
        entries], "resumed_clips", "warnings", "dropped_seconds", "seconds"}"""
    from . import media
    result = {"name": task["name"], "status": "kept", "category": None, "reason": None, "clips": [],
              "resumed_clips": 0, "warnings": [], "dropped_seconds": 0.0, "seconds": 0.0}
    out_dir, length = Path(task["out_dir"]), float(task["clip_seconds"])
    wav, video = (Path(task[k]) if task[k] else None for k in ("wav", "video"))
    index_file = out_dir / "recordings" / f"{task['id']}.json"
    try:
        stats = _stats([wav, video])
        done = _read_index(index_file, out_dir, stats, length)
        if done is not None:
            result.update(done, status="resumed", resumed_clips=len(done["clips"]))
            return result
        detector = _get_detector(task.get("cascade"))
        audio = _Samples(media.audio_chunks(wav if wav is not None else video))
        ticks = media.video_ticks(video, frontend.VIDEO_FPS) if video is not None else None
        rate, fps = frontend.SAMPLE_RATE, frontend.VIDEO_FPS
        source = {"source": task["video_rel"] or task["wav_rel"]}
        if task["video_rel"] and task["wav_rel"]:
            source["audio_source"] = task["wav_rel"]
        video_error, decoded = None, {"audio": 0.0, "video": 0.0}     # seconds read of each stream
        for c in itertools.count():
            start, end = c * length, (c + 1) * length
            want_audio = round(end * rate) - round(start * rate)
            want_video = math.ceil(end * fps - 1e-9) - math.ceil(start * fps - 1e-9)
            frames = []
            if ticks is not None and video_error is None:      # video first: a broken video is named as such
                frames, video_error = _take_frames(ticks, want_video)
            pcm = audio.take(want_audio)
            decoded["audio"] += pcm.size / rate
            decoded["video"] += len(frames) / fps
            seconds = min(pcm.size / rate, len(frames) / fps if ticks is not None else math.inf)
            if pcm.size < want_audio or (ticks is not None and len(frames) < want_video):   # the last, partial clip
                if seconds < max(KEEP_PARTIAL * length, MIN_CLIP_SECONDS):
                    result["dropped_seconds"] = round(seconds, 3)
                    break
                pcm = pcm[:round(seconds * rate)]
                frames = frames[:math.ceil(seconds * fps - 1e-9)]
                last = True
            else:
                last = False
            clip_id = f"{task['id']}_{c:05d}"
            out_file = out_dir / "clips" / f"{clip_id}.npz"
            counts = _reusable(out_file, frontend.n_audio_frames(pcm.size), len(frames))
            if counts is not None:
                result["resumed_clips"] += 1
            else:
                counts = _write_clip(out_file, pcm, frames, detector, ticks is not None)
            result["clips"].append({"id": clip_id, "actor": task["name"], "label": features.UNLABELLED,
                                    "file": f"clips/{clip_id}.npz", **counts, **source,
                                    "start_s": round(start, 6), "seconds": round(seconds if last else length, 6)})
            if last:
                break
        if ticks is not None and video_error is None and audio.error is None:
            # one stream ends first; a second or more left in the other one is worth saying (a .wav and a
            # video that did not start and stop together put voice and face out of step)
            more = {"audio": audio.take(rate).size / rate, "video": len(_take_frames(ticks, int(fps))[0]) / fps}
            for stream, other in (("audio", "video"), ("video", "audio")):
                if more[stream] >= 1.0:
                    result["warnings"].append(f"{task['name']}: the {stream} goes on at least 1 s past the end of "
                                              f"the {other} ({decoded[other]:.1f} s); only the time both cover was "
                                              f"used. Do its files start and stop together?")
        for stream, error in (("video", video_error), ("audio", audio.error)):
            if error is not None and result["clips"]:
                result["warnings"].append(f"{task['name']}: the {stream} stops decoding after "
                                          f"{decoded[stream]:.1f} s; kept the {len(result['clips'])} clips before "
                                          f"it: {error}")
        if not result["clips"]:
            if video_error is not None or audio.error is not None:
                return _skip(result, *(_category(video_error, "video") if video_error is not None else
                                       _category(audio.error, "audio")))
            if pcm.size == 0:       # the loop stopped at clip 0: pcm is all the audio there is
                return _skip(result, BAD_AUDIO, f"{(wav or video).name}: the audio track holds no samples")
            return _skip(result, TOO_SHORT, f"lasts {result['dropped_seconds']:.2f} s, less than half of "
                                            f"--clip-seconds {length:g}; pass a smaller --clip-seconds to keep it")
    except Exception as error:  # noqa: BLE001  one broken recording must not stop the others: report it, go on
        return _skip(result, FAILED, f"{type(error).__name__}: {error}")
    result["seconds"] = round(sum(clip["seconds"] for clip in result["clips"]), 6)
    features.atomic_write_json(index_file, {"clip_seconds": length, "files": stats,
                                            **{k: result[k] for k in ("clips", "warnings", "dropped_seconds",
                                                                      "seconds")}})
    return result


def _write_clip(out_file: Path, pcm: np.ndarray, frames: list, detector, has_video: bool) -> dict:
    """One clip's samples (n,) int16 and frames [(H, W, 3) uint8 BGR] -> features written; counts.
    The labelled path's front-end: log-mel, and face crops with a fresh tracker for the clip."""
    from . import media
    audio = frontend.log_mel(pcm)                                             # (T_a, 80)
    if has_video:
        face, face_valid = media.face_features(frames, detector.track(frames))   # (T_v, 48, 48), (T_v,)
    else:   # audio-only recording: no face frames at all (the model's face presence is 0)
        face = np.zeros((0, frontend.FACE_SIZE, frontend.FACE_SIZE), np.float32)
        face_valid = np.zeros(0, bool)
    features.write_clip(out_file, audio, face, face_valid)
    return {"audio_frames": int(audio.shape[0]), "video_frames": int(face.shape[0]),
            "face_frames": int(face_valid.sum())}


def _read_index(index_file: Path, out_dir: Path, stats: list, length: float) -> dict | None:
    """A finished recording's index when its files, --clip-seconds and clip files are unchanged."""
    import json
    if not index_file.exists():
        return None
    try:
        done = json.loads(index_file.read_text())
    except (OSError, ValueError):
        return None
    if done.get("files") != stats or done.get("clip_seconds") != length:
        return None
    if not all((out_dir / clip["file"]).exists() for clip in done.get("clips", [])):
        return None
    return {k: done[k] for k in ("clips", "warnings", "dropped_seconds", "seconds")}


def prepare_unlabelled(recordings_dir, out_dir, workers: int | None = None,
                       clip_seconds: float = DEFAULT_CLIP_SECONDS, progress: bool = False, cascade=None) -> dict:
    """A folder of recordings -> an unlabelled features directory. Returns the summary written
    to prepare_report.json: {"recordings": n found, "recordings_kept": n, "kept": clips,
    "resumed": clips reused, "hours": of kept clips, "skipped": [{"id", "category", "reason"}],
    "by_category", "warnings": [...], "dropped_seconds", "face_detected_fraction", "seconds"}."""
    started = time.perf_counter()
    root, out_dir = Path(recordings_dir), Path(out_dir)
    CLIP_SECONDS.check("--clip-seconds", clip_seconds)
    require("av")       # every recording's audio goes through PyAV: say so once, not per recording
    recordings, skipped = find_recordings(root, out_dir)
    from .faces import FaceDetector
    cascade = str(FaceDetector(cascade=cascade).cascade_path)   # found and loadable, before any recording

    def relative(path):
        return path.relative_to(root).as_posix() if path is not None else None

    tasks = [{"name": r["name"], "id": r["id"], "wav": str(r["wav"]) if r["wav"] else None,
              "video": str(r["video"]) if r["video"] else None, "wav_rel": relative(r["wav"]),
              "video_rel": relative(r["video"]), "out_dir": str(out_dir), "clip_seconds": float(clip_seconds),
              "cascade": cascade} for r in recordings]
    # longest first (file size as the proxy): the last task to finish is a short one
    tasks.sort(key=lambda t: -sum(Path(t[k]).stat().st_size for k in ("wav", "video") if t[k]))
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    (out_dir / "recordings").mkdir(exist_ok=True)
    results = run_parallel(process_recording, tasks, workers, progress, "prepare --unlabelled")

    entries, warnings, resumed, dropped, face_frames, video_frames, kept = [], [], 0, 0.0, 0, 0, 0
    for result in sorted(results, key=lambda r: r["name"]):
        if result["status"] == "skipped":
            skipped.append({"id": result["name"], "category": result["category"], "reason": result["reason"]})
            continue
        kept += 1
        entries += result["clips"]
        warnings += result["warnings"]
        resumed += result["resumed_clips"]
        dropped += result["dropped_seconds"]
        face_frames += sum(c["face_frames"] for c in result["clips"])
        video_frames += sum(c["video_frames"] for c in result["clips"])
    by_category = dict(Counter(s["category"] for s in skipped).most_common())
    if not entries:
        raise EdgeLadderError(f"no usable recordings in {root}: skipped {len(skipped)} "
                              f"({', '.join(f'{n} {c}' for c, n in by_category.items())}). "
                              f"First reason: {skipped[0]['reason'] if skipped else 'none found'}")
    features.atomic_write_json(out_dir / "manifest.json", {
        "format": features.FORMAT, "version": features.VERSION, "unlabelled": True, "labels": list(EMOTIONS),
        "n_mels": frontend.N_MELS, "face_size": frontend.FACE_SIZE,
        "audio_fps": frontend.SAMPLE_RATE / frontend.HOP, "video_fps": frontend.VIDEO_FPS,
        "source": f"prepare --unlabelled {root.resolve()}", "label_source": None,
        "clip_seconds": float(clip_seconds), "clips": entries})
    summary = {"recordings_dir": str(root), "out_dir": str(out_dir), "unlabelled": True,
               "clip_seconds": float(clip_seconds), "recordings": len(recordings) + len(
                   [s for s in skipped if s["category"] == AMBIGUOUS]),
               "recordings_kept": kept, "kept": len(entries), "resumed": resumed,
               "hours": round(sum(e["seconds"] for e in entries) / 3600, 4),
               "face_detected_fraction": face_frames / max(1, video_frames),
               "dropped_seconds": round(dropped, 3), "by_category": by_category,
               "skipped": sorted(skipped, key=lambda s: s["id"]), "warnings": warnings,
               "seconds": round(time.perf_counter() - started, 2)}
    features.atomic_write_json(out_dir / "prepare_report.json", summary)
    return summary


def format_summary(summary: dict, max_lines: int = 20) -> str:
    lines = [f"kept {summary['kept']} unlabelled clips of {summary['clip_seconds']:g} s "
             f"({60 * summary['hours']:.1f} min) from {summary['recordings_kept']} of {summary['recordings']} "
             f"recordings ({summary['resumed']} clips already done); faces found in "
             f"{100 * summary['face_detected_fraction']:.1f} % of video frames; "
             f"{summary['dropped_seconds']:.1f} s of short tails dropped; {summary['seconds']:.1f} s"]
    for warning in summary["warnings"][:max_lines]:
        lines.append(f"  warning: {warning}")
    from .prepare import skipped_lines
    return "\n".join(lines + skipped_lines(summary, "recordings", max_lines))
