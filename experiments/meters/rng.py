"""Measurements that leave the training's random state as they found it."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def rng_isolated(device: torch.device | None = None) -> Iterator[None]:
    """Run measurement code without touching the training's random state: torch's CPU (and the
    device's) generator, Python's `random` and numpy's global state are restored on exit, so a
    measurement that draws (or a library that reseeds, like lm-eval) changes no later number."""
    import random

    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [device] if device is not None and device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
