"""Optimization-profile shapes for the five named inputs (pure functions, no TensorRT).

Flags follow trtexec: `--min-shapes audio:1x100x80,face:1x10x1x48x48`. Only the free axes matter
(batch B, audio frames T_a, video frames T_v); the other inputs' shapes follow from them, so a user
may give just `audio` and `face` and the masks and presence are derived:

    audio (B, T_a, 80)  audio_mask (B, T_a)  face (B, T_v, 1, 48, 48)  face_mask (B, T_v)  presence (B, 2)
"""
from __future__ import annotations

from ..errors import EdgeLadderError
from ..features import INPUT_NAMES

# Defaults when neither the flags nor export.json say otherwise: 0.1 s .. 2 s (opt) .. 10 s.
DEFAULT_PROFILE = {
    "min": {"batch": 1, "audio_frames": 10, "video_frames": 1},
    "opt": {"batch": 1, "audio_frames": 198, "video_frames": 20},
    "max": {"batch": 8, "audio_frames": 1000, "video_frames": 100},
}


class ShapeError(EdgeLadderError, ValueError):
    """A --min/--opt/--max-shapes value is malformed or inconsistent."""


def parse_shapes(text: str, flag: str = "--shapes") -> dict[str, tuple[int, ...]]:
    """'audio:1x300x80,face:1x30x1x48x48' -> {'audio': (1, 300, 80), 'face': (1, 30, 1, 48, 48)}."""
    shapes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise ShapeError(f"{flag}: expected NAME:DxDxD (e.g. audio:1x300x80); got {item!r}")
        if name not in INPUT_NAMES:
            raise ShapeError(f"{flag}: unknown input {name!r}; the model's inputs are {', '.join(INPUT_NAMES)}")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise ShapeError(f"{flag}: dimensions of {name} must be integers joined by 'x'; got {dims!r}") from None
        if any(d <= 0 for d in shape):
            raise ShapeError(f"{flag}: dimensions of {name} must be positive; got {dims!r}")
        if name in shapes:
            raise ShapeError(f"{flag}: {name} given twice")
        shapes[name] = shape
    return shapes


def format_shapes(shapes: dict[str, tuple[int, ...]]) -> str:
    """Inverse of parse_shapes (trtexec syntax)."""
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def axes_from_shapes(shapes: dict[str, tuple[int, ...]], flag: str = "--shapes",
                     n_mels: int = 80, face_size: int = 48) -> dict[str, int]:
    """The free axes {'batch', 'audio_frames', 'video_frames'} named by a set of input shapes;
    every input given must agree with the others and with the fixed sizes."""
    expected_rank = {"audio": 3, "audio_mask": 2, "face": 5, "face_mask": 2, "presence": 2}
    seen: dict[str, tuple[int, str]] = {}

    def claim(axis: str, value: int, source: str):
        if axis in seen and seen[axis][0] != value:
            raise ShapeError(f"{flag}: {axis} is {seen[axis][0]} from {seen[axis][1]} but {value} from {source}")
        seen[axis] = (value, source)

    for name, shape in shapes.items():
        if len(shape) != expected_rank[name]:
            raise ShapeError(f"{flag}: {name} has {expected_rank[name]} dimensions; got {'x'.join(map(str, shape))}")
        claim("batch", shape[0], name)
        if name in ("audio", "audio_mask"):
            claim("audio_frames", shape[1], name)
        if name in ("face", "face_mask"):
            claim("video_frames", shape[1], name)
    fixed = {"audio": (2, n_mels), "presence": (1, 2)}
    for name, (axis, size) in fixed.items():
        if name in shapes and shapes[name][axis] != size:
            raise ShapeError(f"{flag}: {name} dimension {axis} must be {size}; got {shapes[name][axis]}")
    if "face" in shapes and shapes["face"][2:] != (1, face_size, face_size):
        raise ShapeError(f"{flag}: face must be Bx T_v x1x{face_size}x{face_size}; got {'x'.join(map(str, shapes['face']))}")
    return {axis: value for axis, (value, _) in seen.items()}


def shapes_from_axes(axes: dict[str, int], n_mels: int = 80, face_size: int = 48) -> dict[str, tuple[int, ...]]:
    """The five input shapes for given free axes."""
    b, ta, tv = axes["batch"], axes["audio_frames"], axes["video_frames"]
    return {"audio": (b, ta, n_mels), "audio_mask": (b, ta), "face": (b, tv, 1, face_size, face_size),
            "face_mask": (b, tv), "presence": (b, 2)}


def resolve_profile(min_text: str | None, opt_text: str | None, max_text: str | None,
                    defaults: dict | None = None) -> dict[str, dict[str, tuple[int, ...]]]:
    """{'min': shapes, 'opt': shapes, 'max': shapes} for all five inputs. Flags override the
    defaults (export.json's 'profile', else DEFAULT_PROFILE) axis by axis; min <= opt <= max."""
    defaults = defaults or DEFAULT_PROFILE
    axes = {}
    for key, text in (("min", min_text), ("opt", opt_text), ("max", max_text)):
        flag = f"--{key}-shapes"
        given = axes_from_shapes(parse_shapes(text, flag), flag) if text else {}
        axes[key] = {**defaults[key], **given}
    for axis in ("batch", "audio_frames", "video_frames"):
        low, mid, high = axes["min"][axis], axes["opt"][axis], axes["max"][axis]
        if not low <= mid <= high:
            raise ShapeError(f"profile {axis}: need min <= opt <= max; got {low}, {mid}, {high}. "
                             f"Adjust --min-shapes/--opt-shapes/--max-shapes.")
    return {key: shapes_from_axes(value) for key, value in axes.items()}
