"""Small measuring objects the run calls: step timing, training-phase memory, latency, FLOPs.

Each figure's method is documented in the README ("How each figure is measured").
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn


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


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


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


# -- memory -------------------------------------------------------------------------------------

def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _reset_peak_rss() -> bool:
    """Linux resets VmHWM (peak RSS) when 5 is written to clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class MemoryMeter(AbstractContextManager):
    """Peak memory of the training phase only: entered right before the first step, left right
    after the last one, so evaluation and latency runs are outside it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.result: dict[str, Any] = {}
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._peak_kb = 0

    def __enter__(self) -> "MemoryMeter":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base_alloc = torch.cuda.memory_allocated(self.device)
            return self
        _malloc_trim()  # hand freed arenas back so the baseline is what is really live
        self._base_kb = _proc_status_kb("VmRSS") or 0
        self._hwm_reset = _reset_peak_rss()
        if not self._hwm_reset:  # fall back to sampling RSS every 5 ms
            self._peak_kb = self._base_kb
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak_kb = max(self._peak_kb, _proc_status_kb("VmRSS") or 0)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.result = {
                "memory_kind": "cuda_peak_allocated",
                "peak_train_mem_bytes": int(torch.cuda.max_memory_allocated(self.device)),
                "peak_train_reserved_bytes": int(torch.cuda.max_memory_reserved(self.device)),
                "peak_train_mem_growth_bytes": int(torch.cuda.max_memory_allocated(self.device) - self._base_alloc),
            }
            return
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            peak_kb, how = self._peak_kb, "cpu_rss_sampled_5ms"
        else:
            peak_kb, how = _proc_status_kb("VmHWM") or 0, "cpu_rss_hwm"
        self.result = {
            "memory_kind": how,
            "peak_train_mem_growth_bytes": max(peak_kb - self._base_kb, 0) * 1024,
            "peak_train_rss_bytes": peak_kb * 1024,
        }


def _param_bytes(p: torch.Tensor) -> int:
    n = p.numel() * p.element_size()
    qs = getattr(p, "quant_state", None)
    if qs is not None:  # bitsandbytes keeps absmax (and nested stats) beside the packed weight
        for v in qs.as_dict(packed=False).values() if hasattr(qs, "as_dict") else []:
            if torch.is_tensor(v):
                n += v.numel() * v.element_size()
    return n


def weight_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers as stored (4-bit weights counted as packed)."""
    return sum(_param_bytes(p) for p in model.parameters()) + sum(b.numel() * b.element_size() for b in model.buffers())


def logical_numel(p: torch.Tensor) -> int:
    qs = getattr(p, "quant_state", None)
    if qs is not None and getattr(qs, "shape", None) is not None:
        return int(torch.Size(qs.shape).numel())
    return p.numel()


def estimate_train_memory(model: nn.Module, batch: int, seq: int, act_bytes: int) -> dict[str, int]:
    """Analytic estimate: weights + grads + AdamW states + activations (Korthikanti et al. 2022,
    s*b*h*(34 + 5*a*s/h) bytes per layer at 2 bytes per value, scaled to `act_bytes`), plus the
    bf16 copies of linear weights that autocast caches for the step."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    cfg = _base_config(model)
    h, layers, heads = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    body_trains = any(p.requires_grad for n, p in model.named_parameters() if _in_body(n))
    per_layer = seq * batch * h * (34 + 5 * heads * seq / h) * act_bytes / 2
    # without gradients through the body (linear probe) nothing is saved for backward, but one
    # layer's activations are alive at a time during the forward
    activations = int(per_layer * layers) if body_trains else int(per_layer)
    est = {
        "est_weight_bytes": weight_bytes(model),
        "est_grad_bytes": n_train * 4,
        "est_optimizer_bytes": n_train * 8,
        "est_activation_bytes": activations,
        # bf16 copies of linear weights made by autocast live until backward where input
        # gradients flow (saved for grad_input = grad_out @ W), else only for trainable ones
        # (4-bit layers dequantise per call and keep no bf16 copy)
        "est_autocast_cache_bytes": (sum(d for n, d, t in _linear_dims(model) if (body_trains or t) and not _is_4bit(model, n)) * 2) if act_bytes == 2 else 0,
    }
    est["est_train_mem_bytes"] = sum(est.values())
    est["est_train_mem_growth_bytes"] = est["est_train_mem_bytes"] - est["est_weight_bytes"]
    return est


def _is_4bit(model: nn.Module, name: str) -> bool:
    return type(model.get_submodule(name)).__name__ == "Linear4bit"


def _base_config(model: nn.Module):
    return model.config if hasattr(model, "config") else model.base_model.model.config


def _in_body(name: str) -> bool:
    return not any(k in name for k in ("classifier", "score", "modules_to_save"))


# -- latency ------------------------------------------------------------------------------------

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


# -- compute ------------------------------------------------------------------------------------

def is_shadow_copy(name: str) -> bool:
    """peft's `modules_to_save` keeps the untrained head beside the trained copy it runs; the
    shadow never computes, so it is not counted as parameters or FLOPs."""
    return ".original_module." in f".{name}."


def _linear_dims(model: nn.Module) -> list[tuple[str, int, bool]]:
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and not is_shadow_copy(name):
            out.append((name, m.in_features * m.out_features, m.weight.requires_grad))
    return out


def train_flops_per_step(model: nn.Module, batch: int, seq: float) -> dict[str, float]:
    """Analytic FLOPs of one training step.

    Forward: 2 FLOPs per weight per token for every linear layer (frozen, 4-bit, adapter) plus
    attention scores and mixing (4*b*s^2*h per layer). Backward: input gradients (2x weights
    per token) wherever any body parameter trains, weight gradients (2x) only for trainable
    layers: LoRA skips the weight gradients of its frozen layers, a linear probe backpropagates
    into its head alone. Embedding lookups, norms and softmax are not counted.
    """
    tokens = batch * seq
    cfg = _base_config(model)
    attn = 4 * batch * seq * seq * cfg.hidden_size * cfg.num_hidden_layers
    dims = _linear_dims(model)
    total = sum(d for _, d, _ in dims)
    trainable = sum(d for _, d, t in dims if t)
    body_trains = any(p.requires_grad for n, p in model.named_parameters() if _in_body(n))
    forward = 2 * tokens * total + attn
    backward_input = (2 * tokens * total + 2 * attn) if body_trains else 0
    backward_weight = 2 * tokens * trainable
    return {"flops_per_step": float(forward + backward_input + backward_weight), "flops_forward": float(forward)}


def _peak_cache() -> Path:
    return Path(os.environ.get("PEFTBENCH_CACHE", Path.home() / ".cache" / "peftbench")) / "peak_flops.json"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, refresh: bool | None = None) -> dict[str, Any]:
    """The device's measured peak dense matmul rate in `dtype`, measured once per machine, dtype
    and thread count, then cached, so every run of a sweep divides by the same peak and their
    MFUs compare. The one measurement takes the best single matmul over 1 s. `refresh` (or
    PEFTBENCH_REFRESH_PEAK=1) measures again and keeps the better of old and new: for a cache
    first filled while the machine was busy."""
    key = f"{device_name(device)}|{device.type}|{dtype}|threads={torch.get_num_threads()}"
    path = _peak_cache()
    path.parent.mkdir(parents=True, exist_ok=True)
    if refresh is None:
        refresh = os.environ.get("PEFTBENCH_REFRESH_PEAK") == "1"
    # One process measures while the others wait on the lock (idle, so the measurement has the
    # cores to itself); they then read its figure. Parallel jobs of a sweep share one peak.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            cache = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            cache = {}
        previous = cache.get(key)
        if previous is not None and not refresh:
            return {**previous, "peak_cached": True, "peak_this_run_flops_per_s": None}
        return _measure_peak(device, dtype, key, path, cache, previous)


def _measure_peak(device: torch.device, dtype: torch.dtype, key: str, path: Path, cache: dict, previous: dict | None) -> dict[str, Any]:
    n = 4096 if device.type == "cuda" else 1024
    # its own generator: the first run on a machine (empty cache) must train on the same random
    # stream as every later one (cache filled)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    sync = synchronizer(device)
    for _ in range(3):
        a @ b
    best, deadline = 0.0, time.perf_counter() + 1.0
    while time.perf_counter() < deadline:
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    kept = previous is not None and previous["peak_flops_per_s"] >= best
    entry = previous if kept else {"peak_flops_per_s": best, "peak_matmul_n": n, "peak_key": key}
    cache[key] = entry
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)
    return {**entry, "peak_cached": kept, "peak_this_run_flops_per_s": best}


def dir_bytes(path: Path) -> int:
    """Bytes of the weights and configs in a saved folder; the model card peft writes beside them
    (README.md) is documentation, not adapter."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and f.suffix != ".md")
