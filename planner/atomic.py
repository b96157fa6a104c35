"""Writing the user's files: atomic writes (a temp file in the target's folder, renamed over it,
so a reader never sees half a file and a failed write leaves the old one intact), the checks
before a write (a folder or a write-protected file is refused; a symlink is written through to
its target, the link kept), a lock for read-merge-write appends, and one-line errors for every
failed write (docs/cli.md#files)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from planner.errors import PlannerError


@contextlib.contextmanager
def write_errors(path: Path | str) -> Iterator[None]:
    """Turn an OSError raised while writing `path` into a one-line PlannerError."""
    try:
        yield
    except OSError as e:
        raise PlannerError(f"cannot write {path}: {e.strerror or e}") from None


def target(path: Path) -> Path:
    """The file a write to `path` replaces: a symlink's final target (the link stays a link).
    Refuses a folder and a write-protected file (by its mode bits too: root ignores them)."""
    real = Path(os.path.realpath(path))
    try:
        st = real.stat()
    except FileNotFoundError:
        return real
    except OSError as e:
        raise PlannerError(f"cannot write {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise PlannerError(f"cannot write {path}: it is a folder; give a file name")
    if stat.S_ISREG(st.st_mode) and (not os.access(real, os.W_OK) or not st.st_mode & 0o222):
        raise PlannerError(f"cannot write {path}: the file is write-protected (make it writable to replace it)")
    return real


def write_atomic(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` (through a symlink), atomically; any failure is a one-line
    PlannerError and leaves the old file as it was. A device or pipe (/dev/stdout) is written
    to directly, never replaced."""
    real = target(Path(path))
    with write_errors(path):
        if real.exists() and not real.is_file():
            with open(real, "w", encoding=encoding, newline="") as f:
                f.write(text)
            return
        real.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding=encoding, newline="") as f:  # text as given
                f.write(text)
                f.flush()
                os.fsync(f.fileno())  # a full disk shows here at the latest, before the rename
            os.chmod(tmp, _mode(real))
            os.replace(tmp, real)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-merge-write of `path`: flock on a sibling lock file
    `.NAME.lock` (kept afterwards: deleting it would let a third writer lock a new file while a
    second waits on the old one). Writers through a symlink lock the target's lock file."""
    real = Path(os.path.realpath(path))
    lock = real.parent / f".{real.name}.lock"
    with write_errors(path):
        real.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the other writer is done
        yield
    finally:
        os.close(fd)  # releases the lock


def _mode(path: Path) -> int:
    """An existing file keeps its permissions; a new one gets the umask's default (mkstemp makes 0600)."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
