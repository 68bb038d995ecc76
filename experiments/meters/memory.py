"""Memory of the training phase as measured, and the bytes a model's weights take."""
from __future__ import annotations

import ctypes
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn


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
