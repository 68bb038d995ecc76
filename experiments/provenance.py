"""Where a number came from: package versions, git commit and dirty flag, hardware, threads."""
from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from peftbench.experiments.meters import device_name
from peftbench.experiments.meters.cache import cpu_flags as all_cpu_flags
from peftbench.experiments.meters.cache import kernel_isa

PACKAGES = ["torch", "transformers", "peft", "bitsandbytes", "datasets", "hydra-core", "lm-eval", "accelerate", "numpy"]
ROOT = Path(__file__).resolve().parents[1]


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_flags() -> list[str]:
    """The CPU flags a reader of the record needs to place its speed figures."""
    return sorted(all_cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})


def collect(device: torch.device) -> dict[str, Any]:
    # records a sweep writes into results/ are outputs, not a change to the code that made them
    status = _git("status", "--porcelain", "--", ".", ":(exclude)results")
    return {
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "device": str(device),
        "device_name": device_name(device),
        "cpu_model": device_name(torch.device("cpu")),
        "cpu_flags": cpu_flags(),
        "cpu_kernel_isa": kernel_isa(),  # what torch's kernels ran with (an ISA cap in the environment shows here)
        "cpu_count": __import__("os").cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "argv": sys.argv,
    }
