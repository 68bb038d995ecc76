"""Measurements that leave the training's random state as they found it."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np
import torch


def random_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every global random state a run draws from: torch's CPU generator, the CUDA device's (all
    devices when none is named), Python's `random` and numpy's."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def rng_isolated(device: torch.device | None = None) -> Iterator[None]:
    """Run measurement code without touching the training's random state: torch's CPU (and the
    device's) generator, Python's `random` and numpy's global state are restored on exit, so a
    measurement that draws (or a library that reseeds, like lm-eval) changes no later number."""
    state = random_state(device if device is not None else torch.device("cpu"))
    try:
        yield
    finally:
        set_random_state(state)
