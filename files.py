"""Every file a run, a launcher or a summary writes: whole or not at all, a failure in one line.

A file is written to <name>.tmp beside it, flushed and synced to the disk, then
renamed over <name>: a crash, a kill or a full disk leaves the old file or the
new one, never half of one, and a write that fails removes its temporary file
(a temporary file left by a killed process is removed when its run starts
again: remove_temporaries). A write that fails for lack of space (ENOSPC), of
quota (EDQUOT) or of permission (EROFS, EACCES, EPERM) is a WriteFailed: one
line naming the path, the cause in plain words and what to do.

torch.save reports a short write as RuntimeError("... unexpected pos ..."), not
as the OSError behind it. It is given a file object that keeps the OSError its
writes raise; an error that carries none (from C++ code writing on its own, say)
on a file system with less than FULL_BELOW bytes free counts as a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
from pathlib import Path

import torch

from errors import UserError

TEMPORARY = ".tmp"  # <name>.tmp: <name> being written; renamed to <name> once complete
FULL_BELOW = 1 << 20  # bytes free: a file system with less, after a failed write, is full
# The causes of a failed write that the user can remove, in plain words, and the remedy.
CAUSES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
          errno.EROFS: "the file system is read-only", errno.EACCES: "no permission to write",
          errno.EPERM: "no permission to write"}
REMEDIES = {errno.ENOSPC: "free space on that disk",
            errno.EDQUOT: "free space within your quota (or have it raised)",
            errno.EROFS: "make that file system writable again",
            errno.EACCES: "make that folder writable for you",
            errno.EPERM: "make that folder writable for you"}
# Causes that stop every run writing to the same file system, not only this one.
SHARED = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
STOPPED = tuple(CAUSES[code] for code in SHARED)  # how such a failure's line begins
RERUN = "run the same command again"


class WriteFailed(UserError):
    """A file that could not be written (the previous one, if any, is kept).

    Its text is one line: the cause in plain words, the path, the OS's own
    words, what to do, and `then`: what to run afterwards (see advise).
    """

    def __init__(self, path: Path, error: OSError, *, kept: bool, then: str = RERUN):
        self.path, self.error, self.kept, self.then = Path(path), error, kept, then
        self.errno = error.errno
        super().__init__(self.line())

    def __reduce__(self):  # pickled as it was made (multiprocessing, submitit)
        return _write_failed, (self.path, self.error, self.kept, self.then)

    @property
    def shared(self) -> bool:
        """The whole file system is full or read-only: every run writing there stops too."""
        return self.errno in SHARED

    def line(self) -> str:
        reason = self.error.strerror or str(self.error)
        kept = "; the previous one is kept" if self.kept else ""
        if self.errno not in CAUSES:  # a folder where the file should be, say
            return f"cannot write {self.path}: {reason}{kept}"
        return (f"{CAUSES[self.errno]}: cannot write {self.path} ({reason}{kept}); "
                f"{REMEDIES[self.errno]}, then {self.then}")

    def advise(self, then: str) -> WriteFailed:
        """The same failure, saying `then` what to run once the cause is removed."""
        return WriteFailed(self.path, self.error, kept=self.kept, then=then)


def _write_failed(path: Path, error: OSError, kept: bool, then: str) -> WriteFailed:
    return WriteFailed(path, error, kept=kept, then=then)


class RecordingFile(io.BufferedIOBase):
    """A binary file that keeps the OSError of a failed write or flush (torch.save turns
    it into a RuntimeError without its errno)."""

    def __init__(self, file):
        super().__init__()
        self.file = file
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as error:
            self.error = error
            raise

    def tell(self) -> int:
        return self.file.tell()

    @property
    def mode(self) -> str:  # pandas asks, to write bytes
        return self.file.mode


def disk_cause(error: Exception, file: RecordingFile | None, folder: Path) -> OSError | None:
    """The OSError behind a failed write, if it has one (None: a failure of another kind).

    An error with no OSError in it (torch.save's RuntimeError) counts as a full disk when
    the file system holds less than FULL_BELOW bytes free (checked before the temporary
    file is removed: the space it took is then still taken).
    """
    if isinstance(error, OSError):
        return error
    if file is not None and file.error is not None:
        return file.error
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free >= FULL_BELOW:
        return None
    return OSError(errno.ENOSPC, f"a short write ({type(error).__name__}) with {free:,} bytes "
                                 "left on that file system")


def write_atomically(path: Path, write) -> None:
    """write(file) into path's temporary file, flushed and synced to the disk, then renamed
    to path: a crash leaves the old file or the new one.

    Args:
        write: writes the content into the open binary file it is given.
    Raises:
        WriteFailed: the write failed for an OS reason (ENOSPC, EDQUOT, EROFS, EACCES,
            ...); the temporary file is removed and the old file kept. Any other
            error is raised as it is, the temporary file removed as well.
    """
    path = Path(path)
    temporary = path.with_name(path.name + TEMPORARY)
    file = None
    try:
        with open(temporary, "wb") as raw:
            file = RecordingFile(raw)
            write(file)
            file.flush()
            os.fsync(raw.fileno())  # a write error may surface only here (NFS, quotas)
        os.replace(temporary, path)
    except BaseException as error:
        cause = disk_cause(error, file, path.parent) if isinstance(error, Exception) else None
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if cause is None:
            raise
        raise WriteFailed(path, cause, kept=path.is_file()) from None


def write_text(text: str, path: Path) -> None:
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))


def write_csv(frame, path: Path) -> None:
    """A pandas DataFrame as CSV without its index."""
    write_atomically(path, lambda file: frame.to_csv(file, index=False))


def save(obj, path: Path) -> None:
    """torch.save, whole or not at all; a short write is a WriteFailed naming its cause."""
    write_atomically(path, lambda file: torch.save(obj, file))


def save_figure(figure, path: Path, **options) -> None:
    """A matplotlib figure, its format from the path's suffix (heatmap.png: PNG)."""
    path = Path(path)
    write_atomically(path, lambda file: figure.savefig(file, format=path.suffix[1:],
                                                       **options))


def remove_temporaries(folder: Path) -> list[str]:
    """Remove the temporary files a killed writer left in folder; return their names.

    Only for a folder no other process writes into at the time (a run folder
    under its lock): a temporary file there is never read, only written anew.
    """
    removed = []
    for path in sorted(Path(folder).glob("*" + TEMPORARY)):
        if path.is_file():
            with contextlib.suppress(OSError):  # left in place, it is still never read
                path.unlink()
                removed.append(path.name)
    return removed


def size_text(size: float) -> str:
    """Bytes for people: "512 kB", "3.4 MB", "1.7 GB" (powers of 1000, as df -H)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(size) < 1000:
            return f"{size:.0f} {unit}" if unit in ("bytes", "kB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
