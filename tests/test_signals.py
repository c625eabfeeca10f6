"""SIGTERM and SIGINT inside `stopping_on_signals` end in RunInterruptedError (exit 143 / 130)
and leave the process's own handlers as they were. The whole path on a real Ray run, resume
included, is in test_fault_tolerance.py."""

from __future__ import annotations

import os
import signal
import time

import pytest

from cae_ray.errors import RunInterruptedError, exit_code
from cae_ray.pipeline import stopping_on_signals
from cae_ray.runtime.signals import fit_interruptibly


@pytest.mark.parametrize(("number", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_block_with_its_exit_code(number: int, code: int) -> None:
    before = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(RunInterruptedError) as raised, stopping_on_signals():
        os.kill(os.getpid(), number)
        time.sleep(5)  # the handler raises before this ends
    assert exit_code(raised.value) == code
    assert f"stopped by {signal.Signals(number).name}" in str(raised.value)
    assert "Fix: run the same command" in str(raised.value)
    assert {n: signal.getsignal(n) for n in before} == before


def test_a_signal_reaches_the_main_thread_while_a_fit_runs_in_its_own() -> None:
    """Ray Train's fit() runs in a thread of its own, so the signal still stops the command."""

    def fit() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(3)

    started = time.monotonic()
    with pytest.raises(RunInterruptedError), stopping_on_signals():
        fit_interruptibly(fit)
    assert time.monotonic() - started < 3


def test_outside_the_block_a_fit_runs_in_this_thread() -> None:
    assert fit_interruptibly(lambda: 42) == 42
