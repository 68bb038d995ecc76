"""Inference latency: interleaved medians and the noise of each median."""
from __future__ import annotations

import copy
import time
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from peftbench.experiments.meters.device import synchronizer
from peftbench.experiments.meters.timing import spread


@torch.no_grad()
def measure_latency_interleaved(
    models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor], warmup: int, repeats: int,
    device: torch.device, autocast,
) -> dict[str, dict[str, Any]]:
    """Inference forward latency of several models on one fixed batch, measured interleaved.

    Every model gets `warmup` untimed calls, then each of the `repeats` rounds times one call of
    every model, in an order that rotates from round to round. Machine drift (a neighbour on a
    shared VM, frequency changes) then hits every model alike instead of whichever happened to be
    measured during it: timed one after the other, the same MiniLM measured twice differed by 17%
    on a shared 2-core CI machine, more than the spread within either series.

    Each call enters autocast on its own, as a served request would, and every weight is frozen
    while measuring: autocast caches low-precision copies of weights that require grad and not of
    frozen ones, so a model whose weights require grad (full fine-tuning, the head) and one whose
    weights do not (LoRA's base layers) would differ in speed for that alone (29 vs 25 ms for the
    same MiniLM on 2 cores)."""
    sync = synchronizer(device)
    batch = {k: v.to(device) for k, v in batch.items()}
    unique = list({id(m): m for m in models.values()}.values())
    grad_flags = [(p, p.requires_grad) for m in unique for p in m.parameters()]
    modes = [(m, m.training) for m in unique]
    for m in unique:
        m.requires_grad_(False)
        m.eval()
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    try:
        for name in names:
            for _ in range(warmup):
                with autocast():
                    models[name](**batch)
        for i in range(repeats):
            for name in names[i % len(names):] + names[: i % len(names)]:
                sync()
                t0 = time.perf_counter()
                with autocast():
                    models[name](**batch)
                sync()
                times[name].append((time.perf_counter() - t0) * 1e3)
    finally:
        for m, mode in modes:
            m.train(mode)
        for p, flag in grad_flags:
            p.requires_grad_(flag)
    return {name: latency_summary(ts) for name, ts in times.items()}


def measure_latency(
    model: nn.Module, batch: dict[str, torch.Tensor], warmup: int, repeats: int, device: torch.device, autocast
) -> dict[str, Any]:
    """Latency of one model alone (see `measure_latency_interleaved`)."""
    return measure_latency_interleaved({"model": model}, batch, warmup, repeats, device, autocast)["model"]


def latency_summary(times_ms: list[float]) -> dict[str, Any]:
    """Median, p10/p90 and the noise of the median: the relative width of its 95% confidence
    interval, i.e. how far the median itself could move on a repeat of the same measurement."""
    s = spread(times_ms)
    lo, hi = median_ci(times_ms)
    return {"median_ms": s["median"], "p10_ms": s["p10"], "p90_ms": s["p90"], "median_ci95_ms": [lo, hi],
            "noise_rel": (hi - lo) / s["median"], "repeats": len(times_ms)}


def median_ci(xs: list[float]) -> tuple[float, float]:
    """Exact distribution-free 95% confidence interval of the median, from order statistics
    (scipy.stats.quantile_test): how far the median itself can move, which is what an overhead of
    one median over another must exceed. With too few repeats for 95% coverage (n < 6) scipy
    gives no bound: the whole range is then the interval, the widest the data allow."""
    from scipy import stats

    ci = stats.quantile_test(np.asarray(xs, dtype=float), p=0.5).confidence_interval(confidence_level=0.95)
    lo = ci.low if np.isfinite(ci.low) else min(xs)
    hi = ci.high if np.isfinite(ci.high) else max(xs)
    return float(lo), float(hi)


class LatencyBench:
    """Latency of the base, unmerged and merged models on one fixed batch.

    With `keep_base` a frozen copy of the base model is kept, and each adapted model is measured
    interleaved with it (`meters.measure_latency_interleaved`): an overhead is then the ratio of
    two medians taken over the same seconds, so machine drift cancels. Without it (models too
    large to hold twice) the base is measured alone before adaptation and drift is not controlled;
    `latency_protocol` in the record says which was done.
    """

    def __init__(self, base: nn.Module, batch: dict, m: Mapping[str, Any], device: torch.device, autocast, keep_base: bool):
        self.batch, self.m, self.device, self.autocast = batch, m, device, autocast
        self.base = copy.deepcopy(base).requires_grad_(False) if keep_base else None
        self.base_alone = None if keep_base else self._measure({"model": base})["model"]
        self.protocol = "interleaved_with_base" if keep_base else "base_before_training"

    def _measure(self, models: dict[str, nn.Module]) -> dict[str, dict[str, Any]]:
        return measure_latency_interleaved(
            models, self.batch, self.m["latency_warmup"], self.m["latency_repeats"], self.device, self.autocast)

    def against_base(self, model: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
        """(base, model) latency series, measured together where the base copy is kept."""
        if self.base is None:
            return self.base_alone, self._measure({"model": model})["model"]
        out = self._measure({"base": self.base, "model": model})
        return out["base"], out["model"]


def latency_figures(unmerged: tuple[dict, dict], merged: tuple[dict, dict] | None, can_merge: bool, protocol: str) -> dict[str, Any]:
    """Each overhead is against the base series measured with it. The noise is the widest 95%
    confidence interval of any median behind an overhead, relative to that median."""
    base, adapted = unmerged
    series = [base, adapted] + (list(merged) if merged else [])
    out = {
        "latency_protocol": protocol,
        "latency_ms_base": base["median_ms"],
        "latency_ms_base_p10": base["p10_ms"],
        "latency_ms_base_p90": base["p90_ms"],
        "latency_noise_frac": max(x["noise_rel"] for x in series),
        "latency_repeats": base["repeats"],
        "latency_ms_unmerged": adapted["median_ms"],
        "latency_ms_unmerged_p10": adapted["p10_ms"],
        "latency_ms_unmerged_p90": adapted["p90_ms"],
        "latency_overhead_unmerged_frac": adapted["median_ms"] / base["median_ms"] - 1,
        "can_merge": can_merge,
        "latency_ms_merged": None,
        "latency_overhead_merged_frac": None,
    }
    if merged is not None:
        base_m, merged_m = merged
        out.update({
            "latency_ms_merged": merged_m["median_ms"],
            "latency_ms_merged_p10": merged_m["p10_ms"],
            "latency_ms_merged_p90": merged_m["p90_ms"],
            "latency_overhead_merged_frac": merged_m["median_ms"] / base_m["median_ms"] - 1,
        })
        if base_m is not base:  # measured again beside the merged model (interleaved protocol)
            out.update({
                "latency_ms_base_beside_merged": base_m["median_ms"],
                # how far the base itself moved between the two measurements: why each overhead
                # is taken against its own base series
                "latency_base_drift_rel": abs(base_m["median_ms"] - base["median_ms"]) / base["median_ms"],
            })
    return out
