"""A run in flight that gets SIGTERM (a scheduler's preemption, a user's kill) is recorded as
interrupted instead of vanishing: `signals_interrupt` turns the signal into `Interrupted`."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator


class Interrupted(BaseException):
    """SIGTERM (or SIGINT, as KeyboardInterrupt) arrived while a run was in flight."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM into Interrupted while a run is in flight, so that the run is recorded as
    interrupted instead of vanishing (SIGINT already raises KeyboardInterrupt)."""
    def handler(signum, frame):
        raise Interrupted(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals to the process that owns them
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
