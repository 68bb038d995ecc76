"""Where machine-level measurements are cached, and the key that says which machine took them.

A figure measured on one machine must never be read on another: the key holds the device's
name, the CPU flags that change which kernels run, the torch build and the thread count.
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import torch

from peftbench.experiments.meters.device import device_name

# CPU flags that decide which matmul kernels torch runs (and so every speed figure)
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


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


# Environment that caps which instructions torch's kernels use (e.g. ATEN_CPU_CAPABILITY=avx2 makes
# an AVX-512 machine compute as an AVX2-only one does): part of the key, as the flags are.
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def kernel_isa() -> str:
    """The instruction set torch's CPU kernels run with here: its own dispatch level, plus any
    caps set in the environment."""
    caps = [f"{k}={os.environ[k]}" for k in ISA_ENV if os.environ.get(k)]
    return ",".join([torch.backends.cpu.get_cpu_capability(), *caps])


def machine_key(device: torch.device, threads: int | None = None) -> str:
    """`name|type|threads=N|torch=V|flags=H`: one machine, one build, one thread count."""
    flags = ",".join(f for f in KERNEL_FLAGS if f in cpu_flags())
    digest = hashlib.sha256(f"{flags}|{kernel_isa()}".encode()).hexdigest()[:8]
    threads = torch.get_num_threads() if threads is None else threads
    return f"{device_name(device)}|{device.type}|threads={threads}|torch={torch.__version__}|flags={digest}"
