"""The device's measured peak matmul rate, cached per machine behind a lock (MFU's denominator)."""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from experiments.meters.device import device_name, synchronizer


def _peak_cache() -> Path:
    return Path(os.environ.get("PEFTBENCH_CACHE", Path.home() / ".cache" / "peftbench")) / "peak_flops.json"



def peak_matmul_flops(device: torch.device, dtype: torch.dtype, refresh: bool | None = None) -> dict[str, Any]:
    """The device's measured peak dense matmul rate in `dtype`, measured once per machine, dtype
    and thread count, then cached, so every run of a sweep divides by the same peak and their
    MFUs compare. The one measurement takes the best single matmul over 1 s. `refresh` (or
    PEFTBENCH_REFRESH_PEAK=1) measures again and keeps the better of old and new: for a cache
    first filled while the machine was busy."""
    key = f"{device_name(device)}|{device.type}|{dtype}|threads={torch.get_num_threads()}"
    path = _peak_cache()
    path.parent.mkdir(parents=True, exist_ok=True)
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
            return {**previous, "peak_cached": True, "peak_this_run_flops_per_s": None}
        return _measure_peak(device, dtype, key, path, cache, previous)


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
    best, deadline = 0.0, time.perf_counter() + 1.0
    while time.perf_counter() < deadline:
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    kept = previous is not None and previous["peak_flops_per_s"] >= best
    entry = previous if kept else {"peak_flops_per_s": best, "peak_matmul_n": n, "peak_key": key}
    cache[key] = entry
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)
    return {**entry, "peak_cached": kept, "peak_this_run_flops_per_s": best}
