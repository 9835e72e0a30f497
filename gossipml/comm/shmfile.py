"""Shared-memory segment files: create one safely, open one suspiciously, read one exactly.

The file-level half of the same-host path (:mod:`gossipml.comm.shm` builds the pool and the
handles on it). A segment is a file in the segment directory (:func:`segment_dir`). Creation is
``O_EXCL`` with mode 0600 set again by ``fchmod`` (the umask cannot widen it) and the space
reserved by ``posix_fallocate``: a full directory is an ``ENOSPC`` here (``no_space``), never a
SIGBUS later on a page fault of a sparse mapping. Opening for reading refuses anything that is not
exactly such a file (``not_ours``: a FIFO, a symlink, another uid's file, group/other bits) or not
the size the handle says (``truncated``); reading copies with ``preadv``, so a file truncated under
us is a short read (``truncated``), never a signal.
"""

from __future__ import annotations

import errno
import os
import stat

import numpy as np

__all__ = ["ShmError", "segment_dir", "create_segment", "open_segment", "read_exact",
           "SHM_DIR_ENV"]

#: Environment variable naming the segment directory (default ``/dev/shm``); read when a writer,
#: reader or probe is made, never at import.
SHM_DIR_ENV = "GOSSIPML_SHM_DIR"

_NO_SPACE = {errno.ENOSPC, errno.ENOMEM, errno.EFBIG, errno.EDQUOT}
_CHUNK_BYTES = 1 << 30  # one preadv moves at most ~2 GiB on Linux


class ShmError(ValueError):
    """A shared-memory handle, segment or release was refused; ``reason`` is a slug."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def segment_dir(directory: str | None = None) -> str:
    """The segment directory: ``directory``, else ``$GOSSIPML_SHM_DIR``, else ``/dev/shm``."""
    return directory or os.environ.get(SHM_DIR_ENV) or "/dev/shm"


def create_segment(path: str, size: int) -> int:
    """A new file at ``path``: O_EXCL, mode 0600 whatever the umask, ``size`` bytes reserved.
    Returns its fd; ShmError('no_space') when the space is not there, ('create_failed') else."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.posix_fallocate(fd, 0, size)  # reserve now: ENOSPC here, not SIGBUS on a page fault
        return fd
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        reason = "no_space" if exc.errno in _NO_SPACE else "create_failed"
        raise ShmError(reason, f"cannot reserve {size} bytes for {path}: {exc.strerror}; "
                       "send over the socket (or give the segment directory more space)") from None


def open_segment(directory: str, name: str, size: int) -> int:
    """Open a segment to read, refusing anything that is not exactly what we create: a regular
    file owned by our uid, no group/other bits, ``size`` bytes. Returns the fd (close it)."""
    path = os.path.join(directory, name)
    try:  # O_NONBLOCK: a FIFO planted under the name must not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ShmError("no_segment", f"segment {name} does not exist in {directory} (the sender "
                       "is on another host or namespace, or closed it)") from None
    except OSError as exc:
        raise ShmError("not_ours" if exc.errno == errno.ELOOP else "no_segment",
                       f"cannot open segment {name}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        problem = ("it is not a regular file" if not stat.S_ISREG(st.st_mode) else
                   f"it belongs to uid {st.st_uid}, not {os.geteuid()}"
                   if st.st_uid != os.geteuid() else
                   f"its mode {stat.S_IMODE(st.st_mode):04o} lets others in"
                   if st.st_mode & 0o077 else "")
        if problem:
            raise ShmError("not_ours", f"segment {name} refused: {problem}")
        if st.st_size != size:
            raise ShmError("truncated", f"segment {name} has {st.st_size} bytes, the handle "
                           f"says {size}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_exact(fd: int, offset: int, nbytes: int, name: str) -> np.ndarray:
    """``nbytes`` from ``offset`` into fresh memory; a short read is ShmError('truncated')."""
    out = np.empty(nbytes, dtype=np.uint8)
    view, done = memoryview(out), 0
    while done < nbytes:
        try:
            got = os.preadv(fd, [view[done:done + _CHUNK_BYTES]], offset + done)
        except OSError as exc:
            raise ShmError("truncated", f"reading segment {name} failed: {exc.strerror}") from None
        if got == 0:
            raise ShmError("truncated", f"segment {name} ended at {offset + done} bytes, the "
                           f"handle says {offset + nbytes}: it was truncated")
        done += got
    return out
