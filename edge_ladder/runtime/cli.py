"""`edge-ladder infer`: run a model on clips (WAV + video), print JSON or write a CSV.

    edge-ladder infer MODEL --audio clip.wav --video clip.flv [--backend B] [--json]
    edge-ladder infer MODEL --input CREMA_D_DIR_OR_FLAT_DIR --csv predictions.csv
    edge-ladder infer MODEL --audio take.wav --video take.mp4 --window 2.0 --hop 0.5 \
        [--csv windows.csv] [--json] [--plot take.png]

Whole clips: features come from edge_ladder.media.clip_features, the same offline front-end
`prepare` uses. With --window: the recording runs through the live Stream offline
(runtime.recording), one row per window (t_start, t_end, label, probs, presence), the last one
partial. Never imports torch.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

from .. import EMOTIONS
from ..argtypes import NON_NEGATIVE_INT, POSITIVE_INT
from ..errors import EdgeLadderError

AUDIO_SUFFIXES = (".wav",)
VIDEO_SUFFIXES = (".flv", ".mp4", ".avi", ".mkv", ".mov")


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("model", metavar="MODEL", help="model.onnx (ONNX Runtime) or model.engine (TensorRT)")
    command.add_argument("--audio", metavar="WAV", help="16 kHz mono WAV of one clip")
    command.add_argument("--video", metavar="VIDEO", help="video of the same clip (FLV, MP4, ...)")
    command.add_argument("--input", metavar="DIR", help="a CREMA-D-like directory (AudioWAV/ + VideoFlash/) or a "
                                                       "flat directory of NAME.wav + NAME.flv pairs")
    command.add_argument("--csv", metavar="OUT", help="with --input: write one row per clip to this CSV; with "
                                                     "--window: one row per window")
    command.add_argument("--window", type=float, default=None, metavar="S",
                        help="predictions over time: run the live Stream offline with this window (seconds, a "
                             "multiple of 0.1); one row per window, the last one partial")
    command.add_argument("--hop", type=float, default=None, metavar="S",
                        help="with --window: seconds between windows (default 0.5, or the window if shorter)")
    command.add_argument("--plot", metavar="OUT.png", default=None,
                        help="with --window and one recording: draw the probabilities over time (needs matplotlib)")
    command.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default=None,
                        help="default: from the file suffix (.onnx -> onnxruntime, .engine -> tensorrt)")
    command.add_argument("--json", action="store_true", help="print JSON (one object per clip)")
    command.add_argument("--threads", type=POSITIVE_INT, default=None, help="onnxruntime intra-op threads (default min(4, cores))")
    command.add_argument("--device", type=NON_NEGATIVE_INT, default=0, help="tensorrt: CUDA device index (default 0)")
    command.add_argument("--use-cuda-graph", action="store_true", help="tensorrt: replay each input shape as a CUDA graph")
    command.add_argument("--no-verify-sidecar", action="store_true",
                        help="tensorrt: load an engine without MODEL.engine.json checks (trusted engines only)")
    command.add_argument("--cascade", metavar="PATH", default=None,
                        help="Haar cascade XML for the face detector (default: $EDGE_LADDER_CASCADE, else "
                             "haarcascade_frontalface_default.xml from cv2.data or /usr/share/opencv4/haarcascades)")


def model_options(args) -> dict:
    """CLI flags -> runtime.load options; flags of the other backend are errors, never ignored."""
    from . import backend_for
    backend = backend_for(args.model, args.backend)
    trt_flags = [flag for flag, used in (("--device", args.device != 0), ("--use-cuda-graph", args.use_cuda_graph),
                                         ("--no-verify-sidecar", args.no_verify_sidecar)) if used]
    if backend == "onnxruntime":
        if trt_flags:
            raise EdgeLadderError(f"{', '.join(trt_flags)} apply to TensorRT engines; {args.model} runs on onnxruntime.")
        return {"intra_op_threads": args.threads} if args.threads else {}
    if args.threads:
        raise EdgeLadderError("--threads applies to onnxruntime; TensorRT engines run on the GPU.")
    return {"device": args.device, "use_cuda_graph": args.use_cuda_graph, "verify_sidecar": not args.no_verify_sidecar}


def find_pairs(directory: Path) -> list:
    """-> [(clip id, wav path or None, video path or None)] from a CREMA-D layout or a flat directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EdgeLadderError(f"--input {directory} is not a directory. Pass a CREMA-D folder (AudioWAV/, "
                              f"VideoFlash/) or a folder of NAME.wav + NAME.flv pairs.")
    if any((root / sub).is_dir() for root in (directory, directory / "data") for sub in ("AudioWAV", "VideoFlash")):
        from ..crema import index_files
        return [(clip.id, clip.wav, clip.flv) for clip in index_files(directory).values()]
    pairs = {}
    for path in sorted(directory.iterdir()):
        suffix = path.suffix.lower()
        if path.name.startswith(".") or suffix not in AUDIO_SUFFIXES + VIDEO_SUFFIXES:
            continue
        wav, video = pairs.get(path.stem, (None, None))
        pairs[path.stem] = (path, video) if suffix in AUDIO_SUFFIXES else (wav, path)
    if not pairs:
        raise EdgeLadderError(f"--input {directory} holds no clips: expected AudioWAV/ + VideoFlash/ or files "
                              f"NAME.wav / NAME{'/'.join(VIDEO_SUFFIXES)}.")
    return [(stem, wav, video) for stem, (wav, video) in pairs.items()]


def predict_files(model, wav, video, detector=None) -> dict:
    """One clip's files -> a JSON-able dict: label, probs by emotion, presence and evidence (the
    rule of edge_ladder.presence, as Stream applies it), timings (ms)."""
    from ..features import batch_inputs
    from ..media import clip_features, read_wav
    from ..presence import audio_present, evidence, face_present
    start = time.perf_counter()
    audio, face, face_valid = clip_features(wav, video, detector)
    present = (audio_present(read_wav(wav)[0]) if wav else False, face_present(face_valid))
    preprocess_ms = (time.perf_counter() - start) * 1e3
    feeds = batch_inputs([audio], [face], [face_valid], audio_present=[present[0]], face_present=[present[1]])
    result = model.predict(feeds, preprocess_ms=preprocess_ms)
    out = result.to_json()[0]
    out.update({"audio": str(wav) if wav else None, "video": str(video) if video else None,
                "presence": {"audio": present[0], "face": present[1]}, "evidence": evidence(*present),
                "frames": {"audio": int(audio.shape[0]), "face": int(face.shape[0]), "face_valid": int(face_valid.sum())},
                "backend": result.backend, "timings_ms": {k: round(v, 3) for k, v in result.timings.items()}})
    return out


def _write_csv(path, rows) -> None:
    from ..features import atomic_write_bytes
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(Path(path), text.getvalue().encode())


def _csv_row(row: dict) -> dict:
    return {key: (f"{value:.6f}" if key in EMOTIONS else int(value) if isinstance(value, bool) else value)
            for key, value in row.items()}


def run_windows(args, model, detector) -> int:
    """infer --window: one row per window of each recording (runtime.recording)."""
    from .recording import plot_timeline, stream_recording, window_rows
    if args.input:
        recordings = find_pairs(Path(args.input))
    else:
        recordings = [(Path(args.audio or args.video).stem, args.audio, args.video)]
    all_rows = []
    for clip_id, wav, video in recordings:
        predictions = stream_recording(model, wav, video, window_s=args.window, hop_s=args.hop, detector=detector)
        rows = window_rows(predictions)
        if args.input:
            rows = [{"id": clip_id, **row} for row in rows]
        all_rows += rows
        if args.json:
            print(json.dumps({"id": clip_id, "audio": str(wav) if wav else None, "video": str(video) if video else None,
                              "window_s": args.window, "hop_s": args.hop, "windows": rows}))
        elif not args.csv:
            for row in rows:
                probs = "  ".join(f"{code} {row[code]:.3f}" for code in EMOTIONS)
                presence = "".join(("A" if row["audio_present"] else "-", "F" if row["face_present"] else "-"))
                print(f"{clip_id + '  ' if args.input else ''}{row['t_start']:8.2f} {row['t_end']:8.2f}  "
                      f"{row['label']}  {presence}  {probs}{'  (partial)' if row['partial'] else ''}")
        if args.plot:
            plot_timeline(args.plot, rows, title=f"{clip_id}: window {args.window:g} s, hop {args.hop:g} s")
    if args.csv and all_rows:
        _write_csv(args.csv, [_csv_row(row) for row in all_rows])
    if not args.json:
        notes = [f"{len(all_rows)} windows of {len(recordings)} recording{'s' if len(recordings) != 1 else ''}"]
        notes += [f"wrote {path}" for path in (args.csv, args.plot) if path]
        print("; ".join(notes))
    return 0


def true_label(clip_id: str):
    from ..crema import CremaError, parse_name
    try:
        return parse_name(clip_id).emotion
    except CremaError:
        return None


def run(args: argparse.Namespace) -> int:
    from . import load
    if args.input and (args.audio or args.video):
        raise EdgeLadderError("use either --input DIR or --audio/--video for one clip, not both.")
    if not args.input and not (args.audio or args.video):
        raise EdgeLadderError("nothing to run: pass --audio WAV and/or --video VIDEO, or --input DIR.")
    if args.csv and not args.input and args.window is None:
        raise EdgeLadderError("--csv needs --input DIR (it writes one row per clip) or --window (one row per window).")
    if args.window is None and (args.hop is not None or args.plot):
        flags = [flag for flag, used in (("--hop", args.hop is not None), ("--plot", args.plot)) if used]
        raise EdgeLadderError(f"{', '.join(flags)} need{'s' if len(flags) == 1 else ''} --window S (predictions over "
                              f"time), e.g. --window 2.0 --hop 0.5.")
    if args.plot and args.input:
        raise EdgeLadderError("--plot draws one recording; use it with --audio/--video, not --input DIR.")
    if args.plot and not str(args.plot).lower().endswith(".png"):
        raise EdgeLadderError(f"--plot writes a PNG; got {args.plot!r}. Name it e.g. probabilities.png.")
    if args.window is not None:
        args.hop = min(0.5, args.window) if args.hop is None else args.hop
    model = load(args.model, args.backend, **model_options(args))
    from ..faces import FaceDetector
    # built before any clip runs, so a missing cascade is one clear error (audio-only runs need none)
    detector = FaceDetector(cascade=args.cascade) if args.video or args.input else None
    if args.window is not None:
        return run_windows(args, model, detector)
    if not args.input:
        out = predict_files(model, args.audio, args.video, detector)
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            probs = "  ".join(f"{code} {p:.3f}" for code, p in out["probs"].items())
            if out["evidence"] == "none":
                from ..presence import NO_EVIDENCE
                print(f"{NO_EVIDENCE} ({out['label']}  ({probs}))  {out['timings_ms']['total']:.1f} ms")
            else:
                print(f"{out['label']}  ({probs})  evidence {out['evidence']}  {out['timings_ms']['total']:.1f} ms")
        return 0

    from tqdm import tqdm
    pairs = find_pairs(Path(args.input))
    rows, correct, labelled = [], 0, 0
    for clip_id, wav, video in tqdm(pairs, desc="infer", unit="clip", disable=True if args.json else None):
        out = predict_files(model, wav, video, detector)
        truth = true_label(clip_id)
        if truth is not None:
            labelled += 1
            correct += truth == out["label"]
        rows.append({"id": clip_id, "label": out["label"], "true": truth or "",
                     **{code: f"{out['probs'][code]:.6f}" for code in EMOTIONS},
                     "audio_present": int(out["presence"]["audio"]), "face_present": int(out["presence"]["face"]),
                     "evidence": out["evidence"],
                     "total_ms": f"{out['timings_ms']['total']:.3f}"})
        if args.json:
            print(json.dumps({"id": clip_id, **out}))
    if args.csv:
        _write_csv(args.csv, rows)
    if not args.json:
        summary = f"{len(rows)} clips"
        none = [row["id"] for row in rows if row["evidence"] == "none"]
        if none:
            summary += f" ({len(none)} with no evidence, neither audio nor a face: {', '.join(none[:5])}" \
                       f"{', ...' if len(none) > 5 else ''})"
        if labelled:
            summary += f", accuracy vs file-name labels {correct / labelled:.3f} ({correct}/{labelled})"
        print(summary + (f"; wrote {args.csv}" if args.csv else ""))
    return 0
