"""The device's measured peak matmul rate, cached per machine behind a lock (MFU's denominator).

A peak measured while other work used the cores is too low, and every MFU divided by it too high
(one such figure gave 222% to every later run). So the probe repeats its measurement and keeps
the best, checks that the cores were free while it ran, and caches nothing otherwise. The cache
key (experiments.meters.cache.machine_key) holds the CPU model, its kernel flags, the torch build
and the thread count.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from peftbench.experiments.meters.cache import cache_dir, machine_key
from peftbench.experiments.meters.contention import CpuShare
from peftbench.experiments.meters.device import synchronizer

ROUNDS = 3          # separate measurements; the best is kept
ROUND_S = 0.35      # each one takes the best single matmul over this long


def _peak_cache() -> Path:
    return cache_dir() / "peak_flops.json"


def peak_key(device: torch.device, dtype: torch.dtype) -> str:
    # the dtype sits right after the device type, as `peftbench reproduce --list` reads it
    name, kind, rest = machine_key(device).split("|", 2)
    return f"{name}|{kind}|{dtype}|{rest}"


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, refresh: bool | None = None) -> dict[str, Any]:
    """The device's measured peak dense matmul rate in `dtype`, measured once per machine key,
    then cached, so every run of a sweep divides by the same peak and their MFUs compare.
    `refresh` (or PEFTBENCH_REFRESH_PEAK=1) measures again and keeps the better of old and new."""
    key = peak_key(device, dtype)
    path = _peak_cache()
    if refresh is None:
        refresh = os.environ.get("PEFTBENCH_REFRESH_PEAK") == "1"
    # One process measures while the others wait on the lock (idle, so the measurement has the
    # cores to itself); they then read its figure. Parallel jobs of a sweep share one peak.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            cache = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            cache = {}
        previous = cache.get(key)
        if previous is not None and not refresh:
            return {**previous, "peak_cached": True, "peak_this_run_flops_per_s": None, "peak_contended": False}
        return _measure_peak(device, dtype, key, path, cache, previous)


def _best_matmul(a: torch.Tensor, b: torch.Tensor, n: int, sync, seconds: float) -> float:
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def _measure_peak(device: torch.device, dtype: torch.dtype, key: str, path: Path, cache: dict, previous: dict | None) -> dict[str, Any]:
    n = 4096 if device.type == "cuda" else 1024
    # its own generator: the first run on a machine (empty cache) must train on the same random
    # stream as every later one (cache filled)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    sync = synchronizer(device)
    for _ in range(3):
        a @ b
    best, best_busy, contended = 0.0, 0.0, False
    for _ in range(ROUNDS):
        with CpuShare(torch.get_num_threads()) as share:
            got = _best_matmul(a, b, n, sync, ROUND_S)
        # on a GPU the host's other work does not slow the device's matmul
        busy = device.type == "cpu" and share.result.contended  # type: ignore[union-attr]
        contended = contended or busy
        best, best_busy = (best, max(best_busy, got)) if busy else (max(best, got), best_busy)
    if best == 0.0:  # every round contended: the figure stands for this run only, never cached
        best = best_busy
    kept = previous is not None and previous["peak_flops_per_s"] >= best
    entry = previous if kept else {"peak_flops_per_s": best, "peak_matmul_n": n, "peak_key": key}
    if not contended or kept:
        cache[key] = entry
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    return {**entry, "peak_cached": kept, "peak_this_run_flops_per_s": best, "peak_contended": contended}
