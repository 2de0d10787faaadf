"""Faults of the machine, as opposed to faults of a clip.

A full disk, an I/O error, a folder that cannot be written or a read-only file system say
nothing about the clip being processed: such an error is never recorded as the clip's
failure. A stage that meets one stops, keeps everything finished so far, and ends its job with
one line that says what to fix (:class:`MachineError`); a plain rerun then redoes what is left.
The download stage's own failure classes (a video gone, a rate limit) are in
:mod:`audiosetflow.acquisition.classify`.
"""

from __future__ import annotations

import errno
import os
import re

__all__ = [
    "InputError",
    "MACHINE_ERRNOS",
    "MachineError",
    "machine_error",
    "machine_error_in_message",
]


class InputError(ValueError):
    """A problem with the user's inputs or settings that a job cannot work around.

    The message is one line that names what is wrong and what to change (e.g. ``label Music:
    the val part has no clip: ...; lower training.val_fraction or select more clips``). A
    script adapter ends its job with that line (:func:`audiosetflow.smk.stage_job`), not a
    traceback.
    """


#: errno values that are faults of the machine (disk, file system, permissions, resources).
MACHINE_ERRNOS: frozenset[int] = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
    }
)

# What tools that are not Python (ffmpeg, libsndfile, yt-dlp's messages) print when the disk is
# full or read-only. Only these: ffmpeg's decoders also answer corrupt input with EPERM, ENOMEM
# or EIO ("Operation not permitted", "Cannot allocate memory", "Input/output error"), which
# would make a broken clip read as a fault of the machine.
_MESSAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
_MESSAGES = {os.strerror(e).lower(): e for e in _MESSAGE_ERRNOS}
_MESSAGE_RE = re.compile("|".join(re.escape(m) for m in sorted(_MESSAGES, key=len, reverse=True)))

_ADVICE = {
    errno.ENOSPC: "free disk space",
    errno.EDQUOT: "free space within your disk quota",
    errno.EIO: "check the disk (I/O error)",
    errno.EACCES: "fix the permissions",
    errno.EPERM: "fix the permissions",
    errno.EROFS: "make the results folder writable",
    errno.EMFILE: "raise the open-files limit (ulimit -n)",
    errno.ENFILE: "raise the system's open-files limit",
    errno.ENOMEM: "free memory or run fewer jobs at once",
}


class MachineError(OSError):
    """A fault of the machine met while processing a clip; never the clip's failure.

    Parameters
    ----------
    errno_ : int
        One of :data:`MACHINE_ERRNOS`.
    where : str
        The file (or the clip) being processed.
    detail : str
        The original message.
    """

    def __init__(self, errno_: int, where: str, detail: str = ""):
        super().__init__(errno_, os.strerror(errno_))
        self.where = where
        self.detail = detail

    @property
    def code(self) -> str:
        """The errno's symbolic name (``ENOSPC``)."""
        return errno.errorcode.get(self.errno, str(self.errno))

    def line(self, stage: str) -> str:
        """One line for the job's log: what happened, where, and what to do next."""
        advice = _ADVICE.get(self.errno, "fix it")
        return (
            f"{stage}: {self.strerror} ({self.code}) at {self.where}: a fault of the machine, "
            f"not of the clip; {advice} and rerun the same command (finished clips are kept)"
        )

    def __str__(self) -> str:
        return f"{self.strerror} ({self.code}) at {self.where}"


def machine_error(exc: BaseException, where: str = "") -> MachineError | None:
    """The :class:`MachineError` that ``exc`` (or anything it wraps) is, or ``None``.

    Python ``OSError`` s are read by errno (any of :data:`MACHINE_ERRNOS`), a ``MemoryError``
    is ``ENOMEM``; other errors
    (ffmpeg's, libsndfile's) by their message, and then only for a full or read-only disk
    (``"No space left on device"``, ``"Disk quota exceeded"``, ``"Read-only file system"``):
    ffmpeg reports corrupt input with the other codes' messages too.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MachineError):
            return e
        if isinstance(e, MemoryError):  # out of memory: the machine's (or the job's limit)
            return MachineError(errno.ENOMEM, where, f"MemoryError {e}".strip())
        if isinstance(e, OSError) and e.errno in MACHINE_ERRNOS:
            return MachineError(e.errno, where or str(e.filename or ""), str(e))
        found = machine_error_in_message(str(e))
        if found is not None:
            return MachineError(found, where, str(e))
        e = e.__cause__ or e.__context__
    return None


def machine_error_in_message(text: str) -> int | None:
    """The errno of a full or read-only disk named in a message (``"... No space left on
    device"``), or ``None``."""
    m = _MESSAGE_RE.search(text.lower())
    return _MESSAGES[m.group(0)] if m else None
