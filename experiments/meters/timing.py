"""Per-step wall times of training and their spread."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from peftbench.experiments.meters.device import synchronizer


def spread(xs: list[float]) -> dict[str, float]:
    """Median and 10th/90th percentiles (numpy's linear interpolation between order statistics)."""
    if not xs:
        return {"median": float("nan"), "p10": float("nan"), "p90": float("nan")}
    p10, median, p90 = np.percentile(np.asarray(xs, dtype=float), [10, 50, 90])
    return {"median": float(median), "p10": float(p10), "p90": float(p90)}


class StepTimer:
    """Per-step wall times of forward+backward+optimizer step, synchronised on CUDA.

    Batches are sliced and moved to the device before `start`, so data loading is excluded.
    """

    def __init__(self, device: torch.device):
        self.sync = synchronizer(device)
        self.times: list[float] = []
        self.tokens: list[int] = []  # tokens in each step's batch (padded width, as computed)
        self.samples: list[int] = []
        self._t0 = 0.0

    def start(self) -> None:
        self.sync()
        self._t0 = time.perf_counter()

    def stop(self, tokens: int, samples: int) -> float:
        self.sync()
        dt = time.perf_counter() - self._t0
        self.times.append(dt)
        self.tokens.append(tokens)
        self.samples.append(samples)
        return dt

    def mean_tokens(self) -> float:
        return sum(self.tokens) / max(len(self.tokens), 1)

    def summary(self, warmup: int) -> dict[str, Any]:
        """Warm-up steps are excluded when the run has more steps than that; the record says how
        many were excluded (0 for a run too short to spare them)."""
        start = warmup if len(self.times) > warmup else 0
        kept = self.times[start:]
        step = spread(kept)
        tok = spread([n / t for n, t in zip(self.tokens[start:], kept)])
        smp = spread([n / t for n, t in zip(self.samples[start:], kept)])
        return {
            "step_time_ms_median": step["median"] * 1e3,
            "step_time_ms_p10": step["p10"] * 1e3,
            "step_time_ms_p90": step["p90"] * 1e3,
            "train_tokens_per_s_median": tok["median"],
            "train_tokens_per_s_p10": tok["p10"],
            "train_tokens_per_s_p90": tok["p90"],
            "train_samples_per_s_median": smp["median"],
            "train_samples_per_s_p10": smp["p10"],
            "train_samples_per_s_p90": smp["p90"],
            "throughput_steps_counted": len(kept),
            "throughput_warmup_steps_excluded": len(self.times) - len(kept),
        }
