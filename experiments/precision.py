"""Which precision a run computes in. `precision: auto` (the default) resolves per machine.

bf16 autocast only pays where the hardware computes bf16 natively: CUDA devices that support it,
and CPUs with AVX512-BF16 or AMX. Elsewhere (AVX2-only CPUs: most laptops and CI runners) torch
emulates bf16 matmuls, and training in bf16 is some 30x slower than in fp32. So `auto` resolves to:

* bf16 where the model's weights are stored in bf16 (the run computes in them anyway);
* on CUDA, bf16 where `torch.cuda.is_bf16_supported()`, else fp32;
* on a CPU with bf16 instructions, bf16 when a short probe (one MLP layer's forward and backward,
  best of several, alternating) measures bf16 autocast at least as fast as fp32; else fp32;
* fp32 everywhere else, without a probe.

The probe's ratio is cached per CPU model, flags, torch build and thread count, but never when
other work kept the cores busy while it ran. The resolved precision replaces `auto` in the config
before the run id is taken, so the record, the Setting and every table show what ran; runs at
different resolved precisions have different ids and are never pooled as seeds.

`PEFTBENCH_BF16_PROBE=fast|slow` stubs the probe (tests of both paths on any machine).
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from peftbench.experiments.cores import usable_cores
from peftbench.experiments.machine import BF16_CPU_FLAGS, STUB_ENV, auto_key, remember_auto
from peftbench.experiments.meters.cache import cache_dir, cpu_flags, machine_key
from peftbench.experiments.meters.contention import CpuShare
from peftbench.methods.base import ConfigError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
REQUESTABLE = ("auto", *PRECISIONS)
STUB_RATIOS = {"fast": 2.0, "slow": 1 / 30}
_warned: set[str] = set()


@dataclass(frozen=True)
class Resolution:
    precision: str               # fp32 | bf16: what the run computes in
    requested: str               # auto | fp32 | bf16: what the config asked for
    reason: str                  # why, in words
    bf16_speedup: float | None   # fp32 time / bf16 time of the probe (>1: bf16 faster); None: not probed


def cpu_has_bf16() -> bool:
    """The CPU has bf16 instructions, and torch's kernels may use them (an ISA cap in the
    environment can hold them back; then the probe decides)."""
    return any(f in cpu_flags() for f in BF16_CPU_FLAGS)


def _probe_once(dtype_autocast: bool, layer: torch.nn.Module, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype_autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        layer(x).float().pow(2).mean().backward()
    return time.perf_counter() - t0


def _measure_bf16_speedup() -> tuple[float, bool]:
    """fp32 time / bf16 time of one transformer-sized MLP layer's forward and backward on the
    CPU, best of several rounds each, alternating so that drift hits both. Its own generator:
    the probe never draws from the training's random state. Returns (ratio, contended)."""
    gen = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(usable_cores())
    try:
        return _timed_probe(gen)
    finally:
        torch.set_num_threads(before)


def _timed_probe(gen: torch.Generator) -> tuple[float, bool]:
    layer = torch.nn.Sequential(torch.nn.Linear(512, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 512))
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    x = torch.randn(256, 512, generator=gen)
    best = {False: float("inf"), True: float("inf")}
    with CpuShare(torch.get_num_threads()) as share:
        for use_bf16 in (False, True):  # warm-up: first calls pay for kernel selection
            _probe_once(use_bf16, layer, x)
        deadline = time.perf_counter() + 0.6
        rounds = 0
        while rounds < 3 or (time.perf_counter() < deadline and rounds < 20):
            for use_bf16 in (False, True):
                best[use_bf16] = min(best[use_bf16], _probe_once(use_bf16, layer, x))
            rounds += 1
            if best[True] > 20 * best[False] and rounds >= 2:  # emulated bf16: no need to wait
                break
    return best[False] / best[True], share.result.contended  # type: ignore[union-attr]


def bf16_speedup_cpu() -> tuple[float, str]:
    """(fp32 time / bf16 time, where the figure came from) on this CPU, cached per machine key."""
    stub = os.environ.get(STUB_ENV)
    if stub:
        if stub not in STUB_RATIOS:
            raise ConfigError(f"{STUB_ENV} must be one of {sorted(STUB_RATIOS)}, got {stub!r}; unset it to probe")
        return STUB_RATIOS[stub], f"stubbed by {STUB_ENV}={stub}"
    path = cache_dir() / "bf16_probe.json"
    # one thread count for every process of a machine (a sweep's parent and its parallel jobs
    # resolve alike): all the cores this process may use
    key = machine_key(torch.device("cpu"), threads=usable_cores())
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            cache = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            cache = {}
        if key in cache:
            return float(cache[key]["bf16_speedup"]), "probe (cached)"
        ratio, contended = _measure_bf16_speedup()
        if not contended:  # a figure taken while others used the cores is never kept
            cache[key] = {"bf16_speedup": ratio}
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, path)
        return ratio, "probe" if not contended else "probe (cores busy: not cached)"


def _device_type(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.split(":")[0]


def resolve(requested: str, device: str, weights_dtype: str = "fp32") -> Resolution:
    """What `precision=requested` computes in on `device` (auto | cpu | cuda[:N] | mps)."""
    kind = _device_type(device)
    if requested not in REQUESTABLE:  # left for the config check to name
        return Resolution(requested, requested, "unknown", None)
    if requested != "auto":
        ratio = None
        if requested == "bf16" and kind == "cpu" and weights_dtype == "fp32":
            ratio, _ = bf16_speedup_cpu()  # measured once per machine, for the warning below
        return Resolution(requested, requested, f"precision={requested} was set", ratio)
    if weights_dtype != "fp32":
        return Resolution("bf16", "auto", f"the model's weights are {weights_dtype}", None)
    if kind == "cuda":
        # native bf16 from compute capability 8.0 (Ampere); older devices emulate it, which
        # torch.cuda.is_bf16_supported() counts as support by default
        index = int(device.split(":")[1]) if ":" in device else 0
        ok = torch.cuda.is_available() and torch.cuda.get_device_capability(index) >= (8, 0)
        return Resolution("bf16" if ok else "fp32", "auto",
                          "CUDA device " + ("computes bf16 natively" if ok else "before compute capability 8.0: bf16 emulated"), None)
    if kind != "cpu":
        return Resolution("fp32", "auto", f"{kind}: fp32", None)
    if not cpu_has_bf16() and not os.environ.get(STUB_ENV):
        return Resolution("fp32", "auto", "CPU without AVX512-BF16 or AMX: bf16 would be emulated", None)
    ratio, source = bf16_speedup_cpu()
    fast = ratio >= 1.0
    if source in ("probe", "probe (cached)"):  # never a stubbed or a contended figure
        # for readers without torch (peftbench reproduce --list: experiments.machine.known_auto)
        remember_auto(auto_key("cpu", weights_dtype, usable_cores()), "bf16" if fast else "fp32")
    return Resolution("bf16" if fast else "fp32", "auto",
                      f"{source}: bf16 {'%.2fx' % ratio} the speed of fp32 on this CPU", ratio)


def resolve_config(config: dict[str, Any]) -> Resolution:
    """Replace `precision: auto` in a resolved config by what it resolves to, in place, and keep
    what was asked for in `precision_requested` (not part of the run id), so that a config
    resolved once (by `peftbench run` before an lr search, say) resolves the same again."""
    weights = str((config.get("model") or {}).get("dtype", "fp32"))
    requested = str(config.get("precision_requested") or config.get("precision", "auto"))
    res = resolve(requested, str(config.get("device", "auto")), weights)
    config["precision"] = res.precision
    if requested in REQUESTABLE:
        config["precision_requested"] = requested
    return res


def warn_if_slow(res: Resolution, stream=None) -> None:
    """One line, once per process, when bf16 was forced on a machine that computes it slowly."""
    if res.requested != "bf16" or res.bf16_speedup is None or res.bf16_speedup >= 1.0 or "bf16" in _warned:
        return
    _warned.add("bf16")
    print(f"peftbench: warning: precision=bf16 on this CPU runs at {res.bf16_speedup:.2f}x the speed of fp32 "
          f"(measured, {1 / res.bf16_speedup:.0f}x slower): bf16 is emulated here; precision=auto picks fp32",
          file=stream or sys.stderr, flush=True)


def summary(res: Resolution) -> Mapping[str, Any]:
    """What the record keeps of the resolution (provenance)."""
    return {"precision_requested": res.requested, "precision_reason": res.reason, "bf16_speedup_ratio": res.bf16_speedup}
