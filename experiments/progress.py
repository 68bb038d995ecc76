"""A live line per run (step, loss, tokens/s, ETA) on stderr, and per-step hooks.

`LISTENERS` get (step, loss, dt) of every step of every run, whether or not the line is shown:
experiments/tracking.py adds one to log the loss curve live (e.g. to W&B). The sweep-level line
(done / failed / remaining runs) is experiments.sweep.progress_line, printed after each run."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from experiments.meters import StepTimer

LISTENERS: list[Callable[[int, float, float], None]] = []


class Progress:
    def __init__(self, label: str, steps: int, timer: "StepTimer | None" = None, enabled: bool = True):
        self.label, self.steps, self.timer = label, steps, timer
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.every = 1 if self.tty else max(1, steps // 5)
        self.t0 = time.perf_counter()

    def __call__(self, step: int, loss: float, dt: float) -> None:
        for listener in LISTENERS:
            listener(step, loss, dt)
        done = step + 1
        if not self.enabled or (done % self.every and done != self.steps):
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.steps - done)
        tokens = self.timer.tokens[-1] if self.timer is not None and self.timer.tokens else 0
        line = f"[{self.label}] step {done}/{self.steps} loss {loss:.4f} {tokens / dt:,.0f} tok/s ETA {eta:.0f}s"
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if done == self.steps else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(f"[{self.label}] {text}\n")
            sys.stderr.flush()
