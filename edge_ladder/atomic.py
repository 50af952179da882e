"""The one atomic file writer: every file edge-ladder writes goes through here (stdlib only, the
runtime uses it too).

    atomic_write_bytes(path, data)        bytes -> path
    atomic_write_json(path, obj)          indented JSON -> path
    atomic_write_png(path, fig)           a matplotlib figure as PNG -> path (closes the figure)
    with atomic_path(path) as tmp:        for writers that need a file name (OpenCV's
        library_writes(tmp)               VideoWriter, ONNX Runtime's quantizer)

The data goes to a hidden temporary file beside `path` (same directory, so the rename cannot cross
file systems), is fsynced, and then renamed over `path`; the directory is fsynced after the rename.
A reader sees the old file or the new one, never half of one; an interrupted or failed write leaves
no temporary file behind and the old file untouched.

The file gets the mode any ordinary write would give it: 0o666 less the process umask (0644 under
umask 022), and the directory's default ACL where it has one, because the temporary file is created
by open(2) with mode 0o666 and the kernel applies both. (tempfile.mkstemp creates 0600 files, which
a robot's service account then cannot read.) The temporary name keeps the target's suffix, so a
writer that picks its format from the file name (VideoWriter: .flv) picks the right one.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

FILE_MODE = 0o666       # before the umask, as open(2), shells and Python's open() create files


def _create_beside(path: Path) -> Path:
    """Create an empty, new, hidden file next to `path` with FILE_MODE (the kernel applies the
    umask) and return its name."""
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), FILE_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}: 100 names were taken.")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary file name beside `path` (the file exists, empty, with the umask's mode);
    when the block ends without an exception, fsync it and rename it over `path`. On an exception
    the temporary file is removed and `path` is left as it was. Parent directories are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def atomic_write_json(path, obj) -> None:
    """`obj` as indented JSON (keys in insertion order, trailing newline), written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_png(path, fig, **savefig_options) -> Path:
    """A matplotlib figure rendered as PNG and written atomically; the figure is closed."""
    import io
    import matplotlib.pyplot as plt           # the caller has imported matplotlib (lazily) already
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig_options)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
