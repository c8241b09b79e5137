"""Atomic file writes: a temp file in the target folder, then ``os.replace``.

A reader never sees a half-written file, and an interrupted write leaves the
previous version in place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

from .errors import FileFormatError


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise FileFormatError(f"cannot write {path}: {exc.strerror or exc}; choose a writable path.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file, turning every failure into one :class:`FileFormatError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileFormatError(f"{what} file {path} does not exist; check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"cannot read {what} file {path}: {exc}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileFormatError(
            f"{what} file {path} is not valid JSON (line {exc.lineno}: {exc.msg}); was it written by bossflow?"
        ) from None
