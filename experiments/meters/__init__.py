"""Measuring objects the run calls, one room each:

- `timing`: the step timer and the spread of its times;
- `memory`: the training-phase memory meter and weight bytes;
- `estimate`: the analytic memory estimate;
- `latency`: interleaved inference latency and the noise of a median;
- `flops`: analytic FLOPs per step;
- `peak`: the measured peak matmul rate, its per-machine cache and lock;
- `device`: device names and synchronisation;
- `disk`: bytes of a saved folder;
- `rng`: running a measurement without touching the training's random state;
- `shapes`: what the others need to know about a model's layers;
- `serving`: what serving the trained adapter costs (imported as `experiments.meters.serving`).

Each figure's method is documented in the README ("How each figure is measured").
"""
from peftbench.experiments.meters.device import device_name, synchronizer
from peftbench.experiments.meters.disk import dir_bytes
from peftbench.experiments.meters.estimate import estimate_train_memory
from peftbench.experiments.meters.flops import train_flops_per_step
from peftbench.experiments.meters.latency import latency_summary, measure_latency, measure_latency_interleaved, median_ci
from peftbench.experiments.meters.memory import MemoryMeter, logical_numel, weight_bytes
from peftbench.experiments.meters.peak import peak_matmul_flops
from peftbench.experiments.meters.rng import rng_isolated
from peftbench.experiments.meters.shapes import is_shadow_copy
from peftbench.experiments.meters.timing import StepTimer, spread

__all__ = [
    "MemoryMeter", "StepTimer", "device_name", "dir_bytes", "estimate_train_memory", "is_shadow_copy",
    "latency_summary", "logical_numel", "measure_latency", "measure_latency_interleaved", "median_ci",
    "peak_matmul_flops", "rng_isolated", "spread", "synchronizer", "train_flops_per_step", "weight_bytes",
]
