"""A full disk, told apart from every other failure to write, however it reaches the driver.

    is_disk_full(error)                   -> whether ``error`` is a full disk, or wraps one
    disk_full(error, where, needed, what) -> that full disk as a DiskFullError
    free_bytes(where)                     -> the bytes free on the local disk holding ``where``

A full disk arrives as an ``OSError`` with errno ENOSPC (Python's; pyarrow's, whose text says
"No space left on device" too), as a :class:`DiskFullError` that a Ray worker raised, or as
either wrapped by Ray: a ``RayTaskError`` whose ``cause`` it is, which Ray Data chains to its
own ``SystemException``. :func:`disk_full` finds it in all of them and makes a fresh error of
it, with the free bytes measured now: after the caller removed what it had written.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from cae_ray.storage.errors import DiskFullError

__all__ = ["disk_full", "free_bytes", "is_disk_full"]

NO_SPACE = "No space left on device"


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a full disk, or wraps one (:func:`disk_full` makes it typed)."""
    return _found(error) is not None


def free_bytes(where: str) -> int | None:
    """The bytes free on the local disk holding ``where`` (or the nearest directory above it
    that is there); None for an object store's URI."""
    if "://" in where:
        return None
    path = Path(where)
    for directory in (path, *path.parents):
        if directory.exists():
            try:
                return shutil.disk_usage(directory).free
            except OSError:
                return None
    return None


def disk_full(
    error: BaseException, where: str, needed: int | None = None, what: str | None = None
) -> DiskFullError:
    """The full disk behind ``error`` (:func:`is_disk_full`) as a fresh :class:`DiskFullError`:
    the file a DiskFullError named, else ``where`` (an OSError's ``filename`` is not trusted:
    Ray's retries put their own message there), its bytes free now, ``needed`` bytes for
    ``what`` (else what it said itself)."""
    found = _found(error)
    if isinstance(found, DiskFullError):
        said = needed if needed is not None else found.needed
        return DiskFullError(found.path, said, free_bytes(found.path), what or found.what)
    return DiskFullError(where, needed, free_bytes(where), what or "writing it")


def _found(error: BaseException) -> BaseException | None:
    """The DiskFullError or ENOSPC OSError in ``error`` or the errors it wraps: a
    RayTaskError's ``cause``, then ``__cause__`` and ``__context__``."""
    queue, seen = [error], set()
    while queue:
        found = queue.pop(0)
        if id(found) in seen:
            continue
        seen.add(id(found))
        cause = vars(found).get("cause")  # a RayTaskError's (its __getattr__ forwards to it)
        if isinstance(cause, BaseException):
            queue.insert(0, cause)
            continue
        if isinstance(found, DiskFullError) or _no_space(found):
            return found
        queue += [e for e in (found.__cause__, found.__context__) if e is not None]
    return None


def _no_space(error: BaseException) -> bool:
    return isinstance(error, OSError) and (error.errno == errno.ENOSPC or NO_SPACE in str(error))
