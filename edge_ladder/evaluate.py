"""Evaluate a checkpoint on a split: `edge-ladder evaluate CHECKPOINT FEATURES_DIR --split test`.

Runs the inference path (clean encoders, running BN statistics) of the checkpoint on the clips
of one split and prints edge_ladder.metrics.classification_report; --json writes it.
`--presence audio` / `--presence video` evaluate with the other modality flagged absent
(mic muted / face lost), which is how the missing-modality robustness is measured.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .errors import EdgeLadderError
from .features import atomic_write_json, load_split
from .paths import checkpoint_argument

PRESENCE_MODES = {"data": None, "av": (1.0, 1.0), "audio": (1.0, 0.0), "video": (0.0, 1.0)}


def evaluate(checkpoint, features_dir, split: str = "test", presence=None, device: str = "cpu",
             batch_size: int = 64) -> dict:
    """classification_report of the checkpoint on `split` of `features_dir`.

    presence: None (from the data: a clip without any face is face-absent), one of
    "av" | "audio" | "video", a pair (audio, face) applied to every clip, or an (N, 2) array.
    A checkpoint trained with --modalities audio (video) always has the other modality flagged absent.
    """
    from .metrics import classification_report
    from .model import load_checkpoint
    from .train import predict, resolve_device

    torch_device = resolve_device(device, amp=False)
    model, saved = load_checkpoint(checkpoint, map_location=torch_device)
    # an audio-only / video-only model is evaluated the way it was trained (as metrics.json is)
    modalities = saved.get("train_config", {}).get("modalities", "av")
    clips = load_split(features_dir, split)
    if not clips:
        raise EdgeLadderError(f"{features_dir}: split {split!r} has no clips; choose another --split.")
    if isinstance(presence, str):
        if presence not in PRESENCE_MODES:
            raise EdgeLadderError(f"presence must be one of {', '.join(PRESENCE_MODES)}; got {presence!r}")
        presence = PRESENCE_MODES[presence]
    override = None
    if presence is not None:
        override = np.asarray(presence, np.float32)
        if override.shape == (2,):
            override = np.broadcast_to(override, (len(clips), 2))
        if override.shape != (len(clips), 2):
            raise EdgeLadderError(f"presence must be (audio, face) or ({len(clips)}, 2); got shape {override.shape}")
        if ((override != 0) & (override != 1)).any():
            raise EdgeLadderError("presence flags must be 0 or 1")
    logits = predict(model, clips, torch_device, batch_size, presence=override, modalities=modalities)
    report = classification_report([c.label for c in clips], logits.argmax(axis=1))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=checkpoint_argument("evaluate"),
                        help="RUN_DIR/checkpoint.pt from `edge-ladder train` (or RUN_DIR)")
    parser.add_argument("features_dir", metavar="FEATURES_DIR")
    parser.add_argument("--split", choices=("train", "dev", "test", "all"), default="test")
    parser.add_argument("--presence", choices=tuple(PRESENCE_MODES), default="data",
                        help="data: from the clips; audio: face flagged absent; video: audio flagged absent")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON")


def run(args: argparse.Namespace) -> int:
    from .metrics import format_report
    report = evaluate(args.checkpoint, args.features_dir, split=args.split, presence=args.presence,
                      device=args.device)
    print(format_report(report, f"{args.checkpoint} on {args.features_dir} [{args.split}, presence {args.presence}]"))
    if args.json:
        atomic_write_json(Path(args.json), report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))

