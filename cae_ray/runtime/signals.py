"""SIGTERM and SIGINT stop a command cleanly: Ray shut down, the interrupted step recorded,
:class:`~cae_ray.errors.RunInterruptedError` with exit code 143 or 130.

SIGTERM is how Kubernetes, Airflow and Dagster stop a task. Left alone it met the handler that
Ray's core worker installs when a driver connects, which prints a stack and aborts (exit 134),
with nothing recorded. Inside :func:`stopping_on_signals` both signals raise
``KeyboardInterrupt`` in the main thread, the one exception Ray lets out of a blocking
``ray.get`` as itself; the context turns it into ``RunInterruptedError`` once Ray is shut down.
A second signal while stopping is ignored, so the clean-up finishes (a scheduler's SIGKILL
still ends it).

Two things would take the signals back, and are undone here: ``ray.init`` installs Ray's
handlers (:func:`reinstall` runs after it), and Ray Train's ``fit()`` in the main thread
installs a SIGINT handler that aborts the training and exits 0, as if it had finished
(:func:`fit_interruptibly` runs it in a thread of its own).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

from cae_ray.errors import RunInterruptedError

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []
_active: list[bool] = []
_stopping: list[bool] = []

T = TypeVar("T")


def _stop(signum: int, frame: FrameType | None) -> None:
    if _stopping:  # let the clean-up finish
        logger.warning("%s received while stopping; still stopping", signal.Signals(signum).name)
        return
    _received.append(signum)
    raise KeyboardInterrupt


def active() -> bool:
    """Whether a :func:`stopping_on_signals` block is running (in the main thread)."""
    return bool(_active)


def interrupted_by() -> str:
    """What stopped the block, for the record: "SIGTERM", or "SIGINT" (also for Ctrl-C
    outside :func:`stopping_on_signals`)."""
    return signal.Signals(_received[0] if _received else signal.SIGINT).name


def reinstall() -> None:
    """Take SIGTERM and SIGINT back after ``ray.init`` installed Ray's own handlers."""
    if active():
        for number in SIGNALS:
            signal.signal(number, _stop)


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT stop it: Ray is shut down and
    :class:`RunInterruptedError` raised. Outside the main thread (where Python delivers
    signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread() or active():
        yield
        return
    before = {number: signal.getsignal(number) for number in SIGNALS}
    _active.append(True)
    reinstall()
    try:
        yield
    except KeyboardInterrupt as e:
        name = interrupted_by()
        _stopping.append(True)
        logger.warning("stopping on %s: shutting Ray down", name)
        shutdown_ray()
        raise RunInterruptedError(name) from e
    finally:
        _active.clear()
        _received.clear()
        _stopping.clear()
        for number, handler in before.items():
            signal.signal(number, handler)


def shutdown_ray() -> None:
    """Disconnect from Ray, stopping this driver's trainings and tasks (and the local cluster,
    when this process started it)."""
    import sys

    ray: Any = sys.modules.get("ray")  # never imported: nothing to shut down
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def fit_interruptibly(fit: Callable[[], T]) -> T:
    """``fit()`` (a Ray Train trainer's), in a thread of its own inside
    :func:`stopping_on_signals`, so that Ray Train installs no SIGINT handler of its own and a
    signal reaches this (main) thread as it waits; elsewhere, in this thread."""
    if not active():
        return fit()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fit()
        except BaseException as e:  # handed to the main thread below
            outcome["error"] = e

    thread = threading.Thread(target=run, name="cae-ray-train-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(timeout=0.5)  # a signal's handler runs between these waits
    except BaseException:
        _stopping.append(True)
        shutdown_ray()  # the controller and its workers go with the driver
        thread.join(timeout=60)
        raise
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["result"]
    return result
