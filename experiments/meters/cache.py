"""Where machine-level measurements are cached, and the key that says which machine took them.

A figure measured on one machine must never be read on another: the key holds the device's
name, the CPU flags that change which kernels run, the torch build and the thread count.
"""
from __future__ import annotations

import hashlib
import os

import torch

# the torch-free half (CPU flags, caps, the cache folder) is shared with what reads it without torch
from peftbench.experiments.machine import ISA_ENV, KERNEL_FLAGS, cache_dir, cpu_flags
from peftbench.experiments.meters.device import device_name

__all__ = ["ISA_ENV", "KERNEL_FLAGS", "cache_dir", "cpu_flags", "kernel_isa", "machine_key"]


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
