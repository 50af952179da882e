"""What a path argument names, for the commands that take one (stdlib only: the runtime uses it).

    checkpoint_file(path, command)   CHECKPOINT of evaluate / export: a RUN_DIR holding
                                     checkpoint.pt is accepted; an exported model or an export
                                     directory is refused with `did you mean RUN_DIR/checkpoint.pt?`
    model_file(path)                 MODEL of infer / bench / runtime.load: a directory holding one
                                     model file is accepted; several are named
    corpus_hint(path)                FEATURES_DIR that is really a corpus: the prepare command

Each error says what the path is, what the command expected, and the command that fixes it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .errors import EdgeLadderError

CHECKPOINT = "checkpoint.pt"
EXPORTED_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")   # what `export` / `build-engine` write
EXPORT_FILES = ("export.json", "model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.engine")
CORPUS_FOLDERS = ("AudioWAV", "VideoFlash")


class PathError(EdgeLadderError):
    """A path argument names the wrong kind of file or directory."""


def _checkpoint_of_export(export_json: Path) -> Optional[Path]:
    """The checkpoint an export.json says it was exported from, when that file still exists."""
    try:
        recorded = json.loads(export_json.read_text())["checkpoint"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(recorded) if Path(recorded).is_file() else None


def _sibling_checkpoints(directory: Path) -> list:
    """RUN_DIR/checkpoint.pt files next to `directory` (demo_out/export -> demo_out/run/checkpoint.pt)."""
    parent = directory.resolve().parent
    return sorted(p for p in parent.glob(f"*/{CHECKPOINT}") if p.parent != directory.resolve())


def did_you_mean_checkpoint(near: Path) -> str:
    """' Did you mean X/checkpoint.pt? (...)' for an exported file or an export directory, or ''."""
    directory = near if near.is_dir() else near.parent
    recorded = _checkpoint_of_export(directory / "export.json")
    if recorded is not None:
        return f" Did you mean {recorded}? ({directory / 'export.json'} was exported from it.)"
    siblings = _sibling_checkpoints(directory)
    if len(siblings) == 1:
        return f" Did you mean {siblings[0]}?"
    return " Did you mean RUN_DIR/checkpoint.pt?"


def checkpoint_file(path, command: str) -> Path:
    """CHECKPOINT argument of `command` (evaluate, export) -> the checkpoint file to load."""
    path = Path(path)
    takes = f"`edge-ladder {command}` takes RUN_DIR/{CHECKPOINT}, written by `edge-ladder train FEATURES_DIR --out RUN_DIR`"
    if path.is_dir():
        if (path / CHECKPOINT).is_file():
            return path / CHECKPOINT                   # RUN_DIR: the file it holds
        held = [name for name in EXPORT_FILES if (path / name).exists()]
        if held:
            raise PathError(f"{path} is an export directory (it holds {', '.join(held)}), not a training run: "
                            f"{takes}.{did_you_mean_checkpoint(path)}")
        raise PathError(f"{path} is a directory without {CHECKPOINT}: {takes}.")
    if path.suffix.lower() in EXPORTED_SUFFIXES:
        if command == "export":
            onward = (f" To build a TensorRT engine from it: `edge-ladder build-engine {path} --out MODEL.engine`."
                      if path.suffix.lower() == ".onnx" else "")
            raise PathError(f"{path} is already an exported model ({path.suffix}); {takes}."
                            f"{did_you_mean_checkpoint(path)}{onward}")
        raise PathError(f"{path} is an exported model ({path.suffix}), not a training checkpoint: {takes}."
                        f"{did_you_mean_checkpoint(path)} Exported models are scored with `edge-ladder infer {path} "
                        f"--input CORPUS_DIR` and timed with `edge-ladder bench {path}`.")
    if not path.exists():
        raise PathError(f"checkpoint {path} does not exist: {takes}.")
    return path


def checkpoint_argument(command: str):
    """argparse `type=` for a CHECKPOINT positional of `command` (checkpoint_file at parse time;
    its PathError is not a ValueError, so argparse lets the message through unchanged)."""
    def checkpoint(path: str) -> Path:
        return checkpoint_file(path, command)
    return checkpoint


def model_file(path) -> Path:
    """MODEL argument (infer, bench, runtime.load) -> the model file: a directory holding exactly
    one exported model is accepted; otherwise the error names what it holds."""
    path = Path(path)
    if not path.is_dir():
        return path
    models = sorted(p for p in path.iterdir() if p.suffix.lower() in EXPORTED_SUFFIXES and p.is_file()
                    and not p.name.startswith("."))
    if len(models) == 1:
        return models[0]
    if models:
        first = next((p for p in models if p.name == "model.onnx"), models[0])
        raise PathError(f"{path} is a directory holding {len(models)} models ({', '.join(p.name for p in models)}); "
                        f"MODEL is one file. Did you mean {first}?")
    if (path / CHECKPOINT).is_file():
        raise PathError(f"{path} is a training run (it holds {CHECKPOINT}), not an exported model; export it first: "
                        f"`edge-ladder export {path / CHECKPOINT} --out EXPORT_DIR`, then pass EXPORT_DIR/model.onnx.")
    raise PathError(f"{path} is a directory without a model file (.onnx, .engine); pass MODEL.onnx from "
                    f"`edge-ladder export` or MODEL.engine from `edge-ladder build-engine`.")


def is_corpus(path) -> bool:
    """A CREMA-D-layout directory (AudioWAV/ or VideoFlash/, possibly under data/)."""
    path = Path(path)
    return any((root / sub).is_dir() for root in (path, path / "data") for sub in CORPUS_FOLDERS)


def corpus_hint(path) -> str:
    """For a corpus passed where a features directory belongs: the prepare command, writing beside it."""
    path = Path(path)
    features = path.with_name(f"{path.name}-features")
    return (f"{path} is a corpus (AudioWAV/, VideoFlash/), not a features directory: prepare it first, writing the "
            f"features next to it: `edge-ladder prepare {path} --out {features}`, then pass {features} as FEATURES_DIR.")
