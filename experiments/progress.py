"""A live line per run (step, loss, tokens/s, ETA) on stderr, and per-step hooks.

`LISTENERS` get (step, loss, dt) of every step of every run, whether or not the line is shown:
experiments/tracking.py adds one to log the loss curve live (e.g. to W&B). The sweep-level line
(done / failed / remaining runs) is experiments.sweep.progress_line, printed after each run."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from peftbench.experiments.meters import StepTimer

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

    def phase(self, name: str, key: str) -> "_Phase":
        """A context that prints a phase's start (with its ETA where known) and its duration."""
        return _Phase(self, name, key)

    def note(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(f"[{self.label}] {text}\n")
            sys.stderr.flush()


def _phase_cache():
    from peftbench.experiments.meters.cache import cache_dir

    return cache_dir() / "phase_s.json"


def _phase_estimates() -> dict[str, float]:
    import json

    try:
        return json.loads(_phase_cache().read_text())
    except (OSError, ValueError):
        return {}


def _remember_phase(key: str, seconds: float) -> None:
    import json
    import os

    est = _phase_estimates()
    est[key] = round(seconds, 2)
    path = _phase_cache()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(est, indent=0, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # an estimate is a convenience: a read-only cache costs only the ETA
        pass


class _Phase:
    """Prints `[label] NAME (est. Ns)...` on entry and `[label] NAME: Ns` on exit. The estimate is
    the last duration of the same phase for the same key on this machine (only a display aid:
    nothing measured depends on it)."""

    def __init__(self, progress: "Progress", name: str, key: str):
        self.p, self.name, self.key = progress, name, f"{key}|{name}"

    def __enter__(self) -> "_Phase":
        if self.p.enabled:
            est = _phase_estimates().get(self.key)
            self.p.note(f"{self.name}..." + (f" (ETA {est:.0f}s)" if est is not None else ""))
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        took = time.perf_counter() - self.t0
        if exc_type is None and self.p.enabled:
            _remember_phase(self.key, took)
            self.p.note(f"{self.name}: {took:.1f}s")
