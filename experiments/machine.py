"""What this machine is, read without torch: the CPU's name and flags, the instruction-set caps in
the environment, the cache folder, and what `precision: auto` last resolved to here.

`peftbench reproduce --list` estimates a study's time by the precision its runs will compute in;
reading that from here spares it importing torch (about 2 s) on every call. Only a run (which
imports torch anyway) resolves `auto` (experiments.precision) and writes the answer; a reader that
finds none resolves it the full way.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# CPU flags that decide which matmul kernels torch runs (and so every speed figure)
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
# Environment that caps which instructions torch's kernels use (e.g. ATEN_CPU_CAPABILITY=avx2 makes
# an AVX-512 machine compute as an AVX2-only one does): part of the key, as the flags are.
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
AUTO_FILE = "auto_precision.json"
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
STUB_ENV = "PEFTBENCH_BF16_PROBE"  # fast|slow: stubs experiments.precision's probe (tests)


def cache_dir() -> Path:
    path = Path(os.environ.get("PEFTBENCH_CACHE", Path.home() / ".cache" / "peftbench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def may_have_cuda() -> bool:
    """False only where no NVIDIA driver is loaded: then `device: auto` is the CPU for certain."""
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()


def auto_key(device: str, weights: str, threads: int) -> str:
    """One CPU, its kernel flags and caps, one torch build, one thread count, one weight dtype."""
    flags = ",".join(f for f in KERNEL_FLAGS if f in cpu_flags())
    caps = ",".join(f"{k}={os.environ[k]}" for k in ISA_ENV if os.environ.get(k))
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "?"
    digest = hashlib.sha256(f"{flags}|{caps}".encode()).hexdigest()[:8]
    return f"{cpu_name()}|{device}|weights={weights}|threads={threads}|torch={torch_version}|flags={digest}"


def remembered_auto(key: str) -> str | None:
    """What `precision: auto` resolved to under this key, where a run wrote it."""
    try:
        return json.loads((cache_dir() / AUTO_FILE).read_text()).get(key)
    except (OSError, ValueError):
        return None


def remember_auto(key: str, precision: str) -> None:
    path = cache_dir() / AUTO_FILE
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if known.get(key) == precision:
        return
    known[key] = precision
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(known, indent=1))
    os.replace(tmp, path)


def known_auto(device: str, weights: str, threads: int) -> str | None:
    """What `precision: auto` resolves to on this machine, where that is known without torch (the
    rules of experiments.precision.resolve that need no measurement, or a run's remembered
    answer); None where only resolving it can tell (a CUDA device may be present, a stubbed probe,
    a bf16-capable CPU no run has probed yet)."""
    if weights != "fp32":
        return "bf16"
    if os.environ.get(STUB_ENV) or not (device == "cpu" or (device == "auto" and not may_have_cuda())):
        return None
    if not any(f in cpu_flags() for f in BF16_CPU_FLAGS):
        return "fp32"
    return remembered_auto(auto_key("cpu", weights, threads))
