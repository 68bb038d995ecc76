"""Which device a figure was measured on, and how to wait for it."""
from __future__ import annotations

from typing import Callable

import torch

from peftbench.experiments.machine import cpu_name


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()
