"""The small progress file through which Ray workers reach the driver's display.

Ray Train's reports go to its controller, not to the driver, and only every poll; so rank 0
writes its last epoch record to a file (:func:`write_progress`) and the driver watches it
(:func:`watching_progress`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cae_ray import storage

logger = logging.getLogger(__name__)

OnProgress = Callable[[dict[str, Any]], None]


REMOTE_PROGRESS_EVERY_S = 1.0
"""On an object store the progress file is written and read at most once a second: a write
is three requests (a PUT of a partial key, a copy, a DELETE) on the training path, and a
progress bar needs no more."""


def progress_every_s(where: str) -> float:
    """The least time between two writes (and two reads) of the progress file ``where``: none
    for a local file (rank 0 writes every epoch, the driver reads every 0.5 s), else
    :data:`REMOTE_PROGRESS_EVERY_S`."""
    return REMOTE_PROGRESS_EVERY_S if storage.is_remote(where) else 0.0


def write_progress(where: str, record: dict[str, Any]) -> None:
    """The last epoch, for the driver's progress bar: a few bytes, replaced atomically, where
    the run dir is (the driver and the rank-0 worker may be on different machines)."""
    try:
        storage.write_bytes(where, json.dumps(record).encode())
    except (OSError, storage.StorageError) as e:  # a nicety: never fail training over it
        logger.debug("cannot write progress to %s: %s", where, e)


@contextmanager
def watching_progress(
    where: str, on_progress: OnProgress | None, every_s: float = 0.5
) -> Iterator[None]:
    """Call ``on_progress(record)`` from a background thread whenever ``where`` changes."""
    if on_progress is None:
        yield
        return
    storage.remove(where)  # a progress file from an earlier attempt is stale
    every_s = max(every_s, progress_every_s(where))
    stop = threading.Event()

    def poll() -> None:
        seen = None
        while not stop.wait(every_s):
            try:
                text = storage.read_text(where)
            except (OSError, storage.StorageError):
                continue
            if text is None:
                continue
            if text != seen:
                seen = text
                on_progress(json.loads(text))

    thread = threading.Thread(target=poll, name="cae-ray-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
