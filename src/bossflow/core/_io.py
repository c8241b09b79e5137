"""Atomic file writes: a temp file in the target folder, then ``os.replace``; and a lock per cache.

A reader never sees a half-written file, and an interrupted write leaves the
previous version in place; two runs never write one cache at once (:func:`exclusive`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from .errors import BossflowError, FileFormatError


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


def check_writable(path: str | os.PathLike, *, kind: str, option: str) -> None:
    """Raise unless ``path`` can be written as a ``kind`` (``"file"`` or ``"folder"``), before any work is done.

    Probes for real: creates the missing parent folders and a temp file in the folder that
    would hold the output, then removes both, so the reason given is the operating system's
    (permissions, read-only or virtual filesystems, a file in the way).

    Raises:
        FileFormatError: naming ``option`` and the reason.
    """
    path = Path(path)
    if path.is_dir() and kind == "file":
        raise FileFormatError(f"{option} {path} is a folder; give a file path.")
    if path.exists() and not path.is_dir() and kind == "folder":
        raise FileFormatError(f"{option} {path} is a file; give a folder path.")
    folder = path if kind == "folder" else (path.parent if str(path.parent) else Path("."))
    missing = []
    ancestor = folder
    while not ancestor.exists():
        missing.append(ancestor)
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FileFormatError(f"{option} {path}: {ancestor} is a file, not a folder; choose another path.")
    made: list[Path] = []
    try:
        for created in reversed(missing):
            _probe_mkdir(created, option, path)
            made.append(created)
        try:
            fd, probe = tempfile.mkstemp(prefix=".bossflow-probe.", dir=folder)
        except OSError as exc:
            raise FileFormatError(f"{option} {path} cannot be written: {exc.strerror or exc} in {folder}; "
                                  "choose a writable path.") from None
        os.close(fd)
        os.unlink(probe)
    finally:
        for created in reversed(made):
            try:
                created.rmdir()
            except OSError:
                pass


def _probe_mkdir(folder: Path, option: str, path: Path) -> None:
    try:
        folder.mkdir()
    except OSError as exc:
        raise FileFormatError(f"{option} {path} cannot be written: cannot create folder {folder} "
                              f"({exc.strerror or exc}); choose a writable path.") from None


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``path`` (``filelock``) while inside, so that two runs never write one cache at once.

    A second run does not wait: it stops at once with one sentence, and the first run's file
    stays whole. The hidden lock file is left behind (empty); it is harmless and reused.

    Args:
        path: the cache file or folder being written.
        what: how the error names it (``"--cache"``, ``"pairs folder"``).

    Raises:
        BossflowError: another process holds the lock.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path), timeout=0)
        lock.acquire()
    except Timeout:
        raise BossflowError(f"another run is writing the {what} {path} (it holds {lock_path}); wait for it to finish, "
                            f"or give this run another {what}.") from None
    except OSError as exc:
        raise FileFormatError(f"cannot lock {path}: {exc.strerror or exc}; choose a writable path.") from None
    try:
        yield
    finally:
        lock.release()
