"""Evaluate a checkpoint on a split: `edge-ladder evaluate CHECKPOINT FEATURES_DIR --split test`.

Runs the inference path (clean encoders, running BN statistics) of the checkpoint on the clips
of one split and prints edge_ladder.metrics.classification_report; --json writes it.
`--presence audio` / `--presence video` evaluate with the other modality flagged absent
(mic muted / face lost), which is how the missing-modality robustness is measured.

Held out means held out: the checkpoint records the actors of its train and dev splits and the
features' identity; a split that holds any of them is refused (`--allow-overlap` scores it
anyway and the report says so), except the checkpoint's own train/dev split asked for by name.
The JSON records the checkpoint (path, sha256, epoch), the features (path, manifest/splits
sha256), the split and its actors, the presence flags and that check.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .argtypes import TORCH_DEVICES, check_torch_device, torch_device
from .errors import EdgeLadderError
from .features import atomic_write_json, load_split
from .paths import checkpoint_argument

PRESENCE_MODES = {"data": None, "av": (1.0, 1.0), "audio": (1.0, 0.0), "video": (0.0, 1.0)}


def evaluate(checkpoint, features_dir, split: str = "test", presence=None, device: str = "cpu",
             batch_size: int = 64, allow_overlap: bool = False) -> dict:
    """classification_report of the checkpoint on `split` of `features_dir` (see evaluate_recorded)."""
    return evaluate_recorded(checkpoint, features_dir, split, presence, device, batch_size, allow_overlap)[0]


def evaluate_recorded(checkpoint, features_dir, split: str = "test", presence=None, device: str = "cpu",
                      batch_size: int = 64, allow_overlap: bool = False) -> tuple:
    """-> (classification_report, record): what was scored, and on what.

    presence: None (from the data: a clip without any face is face-absent), one of
    "av" | "audio" | "video", a pair (audio, face) applied to every clip, or an (N, 2) array.
    A checkpoint trained with --modalities audio (video) always has the other modality flagged absent.
    A split holding actors the checkpoint was trained on or picked its best epoch on (train / dev,
    recorded in the checkpoint) is refused unless it is that very split asked for by name or
    `allow_overlap`; the record's "held_out" says which actors overlap.
    """
    from .metrics import classification_report
    from .model import load_checkpoint
    from .train import predict, resolve_device

    check_torch_device("--device", device)
    torch_device = resolve_device(device, amp=False)
    model, saved = load_checkpoint(checkpoint, map_location=torch_device)
    # an audio-only / video-only model is evaluated the way it was trained (as metrics.json is)
    modalities = saved.get("train_config", {}).get("modalities", "av")
    clips = load_split(features_dir, split)
    if not clips:
        raise EdgeLadderError(f"{features_dir}: split {split!r} has no clips; choose another --split.")
    held_out = held_out_check(saved, checkpoint, features_dir, split, {c.actor for c in clips}, allow_overlap)
    presence_name = presence if isinstance(presence, str) or presence is None else "given"
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
    from .runtime.sidecar import sha256_file
    from .train import features_identity
    record = {
        "checkpoint": {"path": str(Path(checkpoint).resolve()), "sha256": sha256_file(checkpoint),
                       "epoch": saved.get("epoch"), "modalities": modalities},
        "features": features_identity(features_dir),
        "split": split, "clips": len(clips), "actors": sorted({c.actor for c in clips}),
        "presence": presence_name or "data",
        "presence_flags": {"audio": float(override[:, 0].mean()), "face": float(override[:, 1].mean())}
        if override is not None else "from the data (a clip without any detected face is face-absent)",
        "held_out": held_out,
    }
    return report, record


def held_out_check(saved: dict, checkpoint, features_dir, split: str, actors: set, allow_overlap: bool) -> dict:
    """Which of `actors` the checkpoint trained on / selected on, from its "data" record; raises
    unless none, or `split` is the checkpoint's own train/dev split asked for by name, or allow_overlap."""
    from .train import features_identity
    data = saved.get("data")
    if not data:
        return {"verified": False, "reason": "the checkpoint does not record its train/dev actors (written by an "
                                             "older edge-ladder): held-out not verified"}
    identity = features_identity(features_dir)
    same = all(data["features"].get(key) == identity[key] for key in ("manifest_sha256", "splits_sha256"))
    overlap = {name: sorted(actors & set(data["actors"].get(name, []))) for name in ("train", "dev")}
    own_split = same and split in ("train", "dev")
    result = {"verified": True, "held_out": not any(overlap.values()), "overlap": overlap,
              "same_features": same, "own_split": own_split, "allow_overlap": bool(allow_overlap),
              "trained_on": data["features"].get("features_dir")}
    if any(overlap.values()) and not own_split and not allow_overlap:
        used = "; ".join(f"{USED_FOR[name]}: {', '.join(found)}" for name, found in overlap.items() if found)
        other = ("" if same else f" (it was trained on {data['features'].get('features_dir')}; if these are other "
                                 f"people who share the actor IDs, --allow-overlap is right)")
        raise EdgeLadderError(f"split {split!r} of {features_dir} holds actors {checkpoint} has seen ({used}){other}: "
                              f"its scores would not be held out. Evaluate on a split without them (on the features "
                              f"it was trained on: --split test), or pass --allow-overlap to score anyway (the report "
                              f"then says so).")
    return result


USED_FOR = {"train": "trained on", "dev": "picked its best epoch on"}


def overlap_note(held_out: dict) -> str:
    """'' for a held-out score, else one line saying why it is not one."""
    if not held_out.get("verified"):
        return f"note: {held_out['reason']}"
    if held_out["held_out"]:
        return ""
    used = " and ".join(f"{USED_FOR[name]} actors {', '.join(found)}" for name, found in held_out["overlap"].items()
                        if found)
    why = "scored with --allow-overlap" if held_out["allow_overlap"] and not held_out["own_split"] else "its own split"
    return f"NOT A HELD-OUT SCORE ({why}): the checkpoint {used}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=checkpoint_argument("evaluate"),
                        help="RUN_DIR/checkpoint.pt from `edge-ladder train` (or RUN_DIR)")
    parser.add_argument("features_dir", metavar="FEATURES_DIR")
    parser.add_argument("--split", choices=("train", "dev", "test", "all"), default="test")
    parser.add_argument("--presence", choices=tuple(PRESENCE_MODES), default="data",
                        help="data: from the clips; audio: face flagged absent; video: audio flagged absent")
    parser.add_argument("--device", type=torch_device, default="cpu", help=TORCH_DEVICES)
    parser.add_argument("--allow-overlap", action="store_true",
                        help="score a split that holds actors the checkpoint was trained or selected on "
                             "(refused otherwise); the report says so")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON, with what was evaluated: "
                                                      "checkpoint, features, split, presence, held-out check")


def run(args: argparse.Namespace) -> int:
    from .metrics import format_report
    report, record = evaluate_recorded(args.checkpoint, args.features_dir, split=args.split,
                                       presence=args.presence, device=args.device, allow_overlap=args.allow_overlap)
    note = overlap_note(record["held_out"])
    print(format_report(report, f"{args.checkpoint} on {args.features_dir} [{args.split}, presence {args.presence}]"
                                + (f"\n{note}" if note else "")))
    if args.json:
        atomic_write_json(Path(args.json), {**record, **report})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))

