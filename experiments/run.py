"""One run, in this order: validate -> load -> adapt -> train -> evaluate ->
measure -> record."""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import random
import re
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from peftbench.experiments import (checkpoint, config_check, distributed, fields, forgetting, meters, metric_spec, outcomes, precision,
                                   provenance, record, reuse)
from peftbench.experiments.data import build_task, validate_task
from peftbench.experiments.meters import MemoryMeter, serving
from peftbench.experiments.meters.contention import CpuShare, Share, loadavg_1m
from peftbench.experiments.meters.latency import LatencyBench, latency_figures
from peftbench.experiments.models import build_model_info, load_model, load_tokenizer
from peftbench.experiments.progress import Progress
from peftbench.experiments.signals import Interrupted, signals_interrupt
from peftbench.experiments.cores import core_slots, usable_cores
from peftbench.experiments.train import Diverged, Trained, train
from peftbench.methods import available, get
from peftbench.methods.base import ConfigError, Method, ModelInfo, positive_int

PRECISIONS = precision.PRECISIONS


@dataclass
class Plan:
    """Everything decided before a model is loaded."""

    config: dict[str, Any]
    method: Method
    info: ModelInfo
    run_id: str
    path: Path
    device: torch.device
    threads: int
    lr: float
    world: distributed.World = distributed.SINGLE
    resolution: precision.Resolution | None = None  # how `precision` was chosen (auto or set)


# -- validate -----------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", name):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is visible; use device=cpu or device=auto")
    return torch.device(name)


def resolve_threads(value: Any) -> int:
    if value in (None, "auto"):
        jobs = int(os.environ.get("PEFTBENCH_PARALLEL_JOBS", "1"))
        return max(1, usable_cores() // max(jobs, 1))
    if not positive_int(value):
        raise ConfigError(f"torch_threads must be 'auto' or a positive integer, got {value!r}")
    return value


def method_for(method_cfg: Mapping[str, Any]) -> Method:
    impl = method_cfg.get("impl") or method_cfg.get("name")
    try:
        return get(str(impl))(method_cfg)
    except KeyError:
        raise ConfigError(f"unknown method {impl!r}; available: {', '.join(available())}") from None


def prepare(config: dict[str, Any]) -> Plan:
    """Check the whole config and resolve names. Raises ConfigError; loads no weights."""
    config_check.check(config)  # type and range of every key the table knows
    # auto resolves here, in place, before the id is taken: the record names what ran
    resolution = precision.resolve_config(config)
    precision.warn_if_slow(resolution)
    if config["precision"] not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(precision.REQUESTABLE)}, got {config['precision']!r}")
    weights = str(config["model"].get("dtype", "fp32"))
    if config["precision"] == "fp32" and weights != "fp32":
        # the run would compute in the weights' dtype while every table labels it fp32
        raise ConfigError(f"precision=fp32 but model {config['model']['name']} loads {weights} weights; "
                          f"set model.dtype=fp32 too, or use precision=bf16")
    validate_task(config["task"], config)
    forgetting.validate(config)
    serving.validate(config)
    method = method_for(config["method"])
    lr = config.get("lr") if config.get("lr") is not None else config["method"].get("lr")
    if lr is None or float(lr) <= 0:
        raise ConfigError(f"learning rate must be > 0, got {lr!r}; set lr=... or method.lr=...")
    task_kind = config["task"].get("kind", "classification")
    info = build_model_info(config["model"], task_kind, num_labels=None)
    method.validate(info)
    device = resolve_device(str(config["device"]))
    world = distributed.world_for(config, device)
    distributed.validate(config, method, info, world)
    objective = OBJECTIVES.get(config["objective"]["name"])
    if objective is None:
        raise ConfigError(f"objective {config['objective']['name']!r} is not one of {', '.join(OBJECTIVES)}")
    objective.check(config, task_kind, info.kind, world.size)
    # The id hashes device as configured ("auto"), so that a SLURM sweep's parent (no GPU) and
    # its jobs agree on ids; the device that ran is in provenance, and the report keys rows by it.
    rid = record.run_id(config)
    return Plan(
        config=config,
        method=method,
        info=info,
        run_id=rid,
        path=record.result_path(config["results_dir"], rid),
        device=device,
        # processes of one run on one node share its cores as parallel jobs do
        threads=max(1, resolve_threads(config.get("torch_threads")) // (world.local_size if config.get("torch_threads") in (None, "auto") else 1)),
        lr=float(lr),
        world=world,
        resolution=resolution,
    )


# -- run ----------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def autocast_for(device: torch.device, precision: str) -> Callable:
    if precision == "fp32":
        return nullcontext
    return partial(torch.autocast, device_type=device.type, dtype=PRECISIONS[precision])


def count_params(model: nn.Module) -> dict[str, Any]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(meters.logical_numel(p) for n, p in model.named_parameters() if not meters.is_shadow_copy(n))
    return {"trainable": trainable, "total": total, "trainable_pct": 100.0 * trainable / total}


def adapter_bytes(method: Method, model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        method.save(model, Path(tmp) / "adapter")
        return meters.dir_bytes(Path(tmp) / "adapter")


def load_for(plan: Plan) -> tuple[Any, Any, nn.Module]:
    """Tokenizer, task data and the base model (not yet adapted), loaded as the method needs."""
    cfg = plan.config
    tokenizer = load_tokenizer(cfg["model"])
    task = build_task(cfg["task"], tokenizer, int(cfg["max_length"]))
    extra = plan.method.load_kwargs(PRECISIONS[cfg["precision"]], plan.info)
    model = load_model(cfg["model"], task.kind, task.num_labels, plan.device, extra, tokenizer.pad_token_id)
    plan.method.after_load(model)
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    return tokenizer, task, model


@dataclass
class Base:
    """What is measured on the base model before any adapter touches it."""

    peak: dict[str, Any]
    metrics_before: dict[str, dict[str, float]] | None
    lm_eval_before: Any
    forget: forgetting.ForgettingMeter | None
    fixed: dict[str, torch.Tensor]
    latency: LatencyBench | None
    serving_base: nn.Module | None = None  # the untouched base the serving step loads adapters onto
    copied_costs: dict[str, Any] | None = None  # seed/lr-independent costs another run measured (reuse.py)
    from_cache: bool = False  # the base's scores and probe pass came from the cache


def run_plan(plan: Plan) -> dict[str, Any]:
    """The ok part of the record, in this order: load, measure the base, adapt, train, evaluate,
    measure costs, measure serving, measure latency and merge. Every step after loading runs isolated from the
    training's random state except adapting and training themselves."""
    cfg, device, world = plan.config, plan.device, plan.world
    autocast = autocast_for(device, cfg["precision"])
    label = f"{cfg['method']['name']} s{cfg['seed']}"
    phases = Progress(label, 0, enabled=bool(cfg.get("progress", True)) and world.is_main)
    marks = {"start": time.perf_counter()}
    seed_everything(int(cfg["seed"]))

    with phases.phase("load", plan_key(plan)):
        tokenizer, task, model = load_for(plan)
    marks["loaded"] = time.perf_counter()
    base = None
    if world.is_main:  # with several processes rank 0 alone scores and measures; the others go on
        with meters.rng_isolated(device):
            base = measure_base(plan, model, tokenizer, task, autocast, phases)
    marks["prepare"] = time.perf_counter()
    model = adapt(plan, model, task)
    marks["adapted"] = time.perf_counter()
    load_before = loadavg_1m()
    try:
        with CpuShare(plan.threads) as train_share:
            trained = train_model(plan, model, task, autocast)
    except Diverged as d:  # recorded as diverged (no metrics, no cost); the sweep goes on
        return {"status": "diverged", "error": str(d), "diverged_at_step": d.step, "loss_curve": d.losses,
                "params": count_params(model), "lr": plan.lr, "timing": {"total_s": time.perf_counter() - marks["start"]}}
    marks["trained"] = time.perf_counter()
    if not world.is_main:  # rank 0 evaluates, measures and records
        return {"loss_curve": trained.losses}
    model = trained.model
    with meters.rng_isolated(device):  # evaluation and measurement leave the random state as they found it
        with phases.phase("evaluation", plan_key(plan)):
            evaluated = evaluate_tuned(plan, model, tokenizer, task, base, autocast)
        marks["evaluated"] = time.perf_counter()
        cost = measure_costs(plan, model, trained, base)
        if base.copied_costs is not None:  # timed by another run of this cost configuration
            with phases.phase("merge precision", plan_key(plan)):
                served, merge_diff = measure_weight_figures(plan, model, task, base, autocast)
            cost.update(base.copied_costs["cost"], merge_max_abs_logit_diff=merge_diff)
            timing_share = None
        else:
            with CpuShare(plan.threads) as share:
                with phases.phase("serving costs", plan_key(plan)):
                    served = measure_serving(plan, model, task, base, autocast)  # before the merge below
                with phases.phase("latency and merge", plan_key(plan)):
                    model, latency_cost = measure_latency_and_merge(plan, model, base, autocast)
            timing_share = share.result
            cost.update(latency_cost)
    marks["end"] = time.perf_counter()
    contention = contention_figures(train_share.result, timing_share, load_before, device.type == "cpu",
                                    bool(base.peak.get("peak_contended")))
    out = assemble(plan, base, trained, evaluated, cost, marks)
    out["measurement"].update(contention)
    out["measurement"]["costs_from"] = base.copied_costs["source_run_id"] if base.copied_costs else None
    out["measurement"]["base_from_cache"] = base.from_cache
    return {**out, "serving": served}


def plan_key(plan: Plan) -> str:
    """What a phase's duration depends on most, for its estimate: model, task, method and precision,
    the evaluation sets' sizes and what is measured (a measure=quick run skips what a full one times)."""
    cfg, task = plan.config, plan.config["task"]
    sizes = f"{task.get('n_validation')}/{task.get('n_test')}"
    measured = hashlib.sha256(json.dumps([cfg.get("measure"), cfg.get("forgetting")], sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cfg['model']['name']}|{task['name']}|{cfg['method']['name']}|{cfg['precision']}|{sizes}|{measured}"


def contention_figures(train: Share | None, timing: Share | None, load: float | None, on_cpu: bool = True,
                       peak_contended: bool = False) -> dict[str, Any]:
    """CPU share of training and of the timed measurements, the machine's load, and whether
    other work competed for the cores (experiments/meters/contention.py). A GPU run's timings are
    the device's: the host's load is recorded but does not flag them."""
    reasons = [r for r in (train.reason("training") if train else None, timing.reason("latency and serving timing") if timing else None) if r]
    if peak_contended:
        reasons.append("the peak FLOP/s probe ran while other processes used the cores (MFU's denominator is low)")
    if not on_cpu:
        reasons = []
    return {
        "cpu_share_train_frac": train.cpu_share_frac if train else None,
        "cpu_share_timing_frac": timing.cpu_share_frac if timing else None,
        "others_busy_train_frac": train.others_busy_frac if train else None,
        "others_busy_timing_frac": timing.others_busy_frac if timing else None,
        "loadavg_1m": load,
        "contended": bool(reasons),
        "contended_reason": "; ".join(reasons) or None,
    }


def measure_base(plan: Plan, model: nn.Module, tokenizer: Any, task: Any, autocast, phases: Progress) -> Base:
    """The device's peak, the base model's scores and forgetting probe, and the latency bench's
    base copy. Parallel jobs starting together measure these once, not while others train.
    Scores and the probe pass come from the cache when this base was scored before, and the
    latency copies are not taken when another run of this cost configuration measured them."""
    cfg, device, m = plan.config, plan.device, plan.config["measure"]
    with phases.phase("peak FLOP/s probe", "peak"):
        peak = meters.peak_matmul_flops(device, PRECISIONS[cfg["precision"]])
    copied = reuse.lookup_costs(cfg, device, plan.threads) if m["latency"] or m["adapter_size"] else None
    key = base_key(plan)
    cached = reuse.lookup_base(cfg, key)
    forget = None
    if forgetting.settings(cfg).get("enabled", True):
        forget = forgetting.ForgettingMeter(cfg, tokenizer, task.kind, device, autocast)
    if cached is not None:
        metrics_before, lm_eval_before = cached["metrics_before"], cached["lm_eval_before"]
        if forget is not None:
            forget.base, forget.ce_before = cached["forget_base"], cached["forget_ce_before"]
        phases.note("base scores: cached (same model, task, precision and evaluation set)")
    else:
        with phases.phase("base scores", plan_key(plan)):
            metrics_before, lm_eval_before = score_base(plan, model, tokenizer, task, autocast, forget)
        reuse.store_base(cfg, key, {"metrics_before": metrics_before, "lm_eval_before": lm_eval_before,
                                    "forget_base": forget.base if forget else None,
                                    "forget_ce_before": forget.ce_before if forget else None})
    fixed = task.fixed_batch(int(m["latency_batch"]), int(m["latency_length"]))
    keep = bool(m.get("latency_keep_base", True))
    # A run that copies its timings holds the same base copies through training as the run that
    # timed them, so that their memory figures compare; it only skips the timing itself.
    latency = None
    if m["latency"] and (copied is None or keep):
        latency = LatencyBench(model, fixed, m, device, autocast, keep)
    serving_base = serving.base_copy(model, latency.base if latency is not None else None, cfg)
    if copied is not None:
        phases.note(f"latency, serving timings and adapter size: copied from {copied['source_run_id']} (same config but seed and lr)")
    return Base(peak, metrics_before, lm_eval_before, forget, fixed, latency, serving_base, copied, cached is not None)


def base_key(plan: Plan) -> str:
    """The base-measurement cache key: what the base model's scores depend on (reuse.base_key)."""
    cfg = plan.config
    load = f"{plan.method.load_kwargs(PRECISIONS[cfg['precision']], plan.info)!r}|{type(plan.method).after_load.__qualname__}"
    return reuse.base_key(cfg, load, fresh_head=str(cfg["model"].get("kind")) == "classifier", device=plan.device, threads=plan.threads)


def score_base(plan: Plan, model: nn.Module, tokenizer: Any, task: Any, autocast, forget) -> tuple[Any, Any]:
    from peftbench.experiments.lm_eval_hook import run_lm_eval

    cfg, device = plan.config, plan.device
    metrics_before = evaluate_splits(task, model, cfg, device, autocast) if cfg["measure"].get("metrics_before", True) else None
    lm_eval_before = run_lm_eval(model, tokenizer, cfg, device)
    if forget is not None:
        forget.before(model)
    return metrics_before, lm_eval_before


def evaluate_splits(task: Any, model: nn.Module, cfg: Mapping[str, Any], device: torch.device, autocast) -> dict[str, dict[str, float]]:
    return {split: task.evaluate(model, split, int(cfg["eval_batch_size"]), device, autocast)
            for split in ("validation", "test") if task.size(split)}


def adapt(plan: Plan, model: nn.Module, task: Any) -> nn.Module:
    """The method's pass over training data (EVA, CorDA), then its wrapping of the model."""
    cfg = plan.config
    plan.method.prepare_with_data(model, plan.info, partial(task.train_batches, batch_size=int(cfg["batch_size"]), seed=int(cfg["seed"])))
    return plan.method.wrap(model, plan.info)


def train_model(plan: Plan, model: nn.Module, task: Any, autocast) -> Trained:
    """Train by the run's objective (conf/objective/): supervised by default, or GRPO."""
    return OBJECTIVES[plan.config["objective"]["name"]].train(plan, model, task, autocast)


def train_supervised(plan: Plan, model: nn.Module, task: Any, autocast) -> Trained:
    """The one training loop, timed per step, with the training phase's memory measured around it."""
    from transformers import get_linear_schedule_with_warmup

    cfg, world = plan.config, plan.world
    params = count_params(model)
    shell = distributed.skeleton(model, world)
    engine = distributed.wrap(model, world, cfg, plan.device)  # the model itself in one process
    optimizer = plan.method.optimizer(model, plan.lr, float(cfg["weight_decay"]))
    steps, bs = int(cfg["steps"]), int(cfg["batch_size"])
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg["warmup_ratio"] * steps), steps)
    timer = distributed.step_timer(plan.device, world)
    progress = Progress(f"{cfg['method']['name']} s{cfg['seed']}", steps, timer, enabled=bool(cfg.get("progress", True)) and world.is_main)
    batches = distributed.shard_batches(task.train_batches(steps, bs, seed=int(cfg["seed"])), world)
    every = int(cfg.get("checkpoint_every_steps", 0))
    saved_at = checkpoint.path_for(cfg["results_dir"], plan.run_id)
    resume, unfit = (checkpoint.resume_state(saved_at, plan.run_id, steps, model, optimizer, world)
                     if every and not cfg.get("force") else (None, None))
    if unfit and world.is_main:
        # said whether or not progress is shown: work thought saved is being redone
        print(f"[{cfg['method']['name']} s{cfg['seed']}] starting at step 0: the checkpoint {saved_at} does not fit this run ({unfit})",
              file=sys.stderr, flush=True)
    start, before_s = 0, 0.0
    if resume is not None:
        checkpoint.restore(resume, model, optimizer, scheduler, world)
        resume = {k: v for k, v in resume.items() if k not in ("weights", "optimizer")}  # restored: not held for the whole run
        plan.method.load_step_state(model, resume["method"])
        start, before_s = int(resume["step"]), float(resume.get("train_s", 0.0))
        batches = itertools.islice(batches, start, None)  # a seeded stream: the same batches from there on
        progress.note(f"resumed at step {start} from {saved_at}")
    began = time.perf_counter()

    def save(steps_done: int, losses: list[float]) -> None:
        if steps_done < steps:  # after the last step the record follows, not a checkpoint
            checkpoint.save(saved_at, run_id=plan.run_id, step=steps_done, losses=losses, model=model, optimizer=optimizer,
                            scheduler=scheduler, method_state=plan.method.step_state(model),
                            train_s=before_s + time.perf_counter() - began, world=world)

    if cfg.get("compile"):
        # dynamic shapes: generation batches are trimmed to their longest example
        engine = torch.compile(engine, dynamic=True)
    with MemoryMeter(plan.device) as memory:
        losses = train(engine, optimizer, scheduler, batches, plan.device, autocast, float(cfg["grad_clip"]), timer, progress,
                       lambda _, step: plan.method.on_step(model, step), start=start,
                       losses=resume["losses"] if resume is not None else None,
                       save_every=every, save=save)
    memory_figures = distributed.memory_figures(distributed.gather(memory.result, world))
    return Trained(losses, timer, memory_figures, params, distributed.whole_model(model, shell, world, plan.device),
                   resumed_from_step=start, train_s_before_resume=before_s)


def train_grpo(plan: Plan, model: nn.Module, task: Any, autocast) -> Trained:
    """GRPO through trl (experiments/grpo.py), timed and measured as the supervised loop is."""
    from peftbench.experiments import grpo

    progress = Progress(f"{plan.config['method']['name']} s{plan.config['seed']}", int(plan.config["steps"]),
                        enabled=bool(plan.config.get("progress", True)))
    trained = grpo.train(plan.config, plan.method, model, task, plan.device, plan.lr, count_params(model), progress,
                         checkpoint.trainer_folder_for(plan.config["results_dir"], plan.run_id), plan.run_id)
    trained.memory = distributed.memory_figures(distributed.gather(trained.memory, plan.world))
    return trained


def check_grpo(config: Mapping[str, Any], task_kind: str, model_kind: str, world_size: int) -> None:
    from peftbench.experiments import grpo

    grpo.check(config, task_kind, model_kind, world_size)


@dataclass(frozen=True)
class Objective:
    """How a run trains (conf/objective/NAME.yaml's `name`), and what it needs of the config,
    checked before anything loads."""

    train: Callable[..., Trained]
    check: Callable[[Mapping[str, Any], str, str, int], None] = lambda config, task_kind, model_kind, world_size: None


OBJECTIVES: dict[str, Objective] = {"sft": Objective(train_supervised), "grpo": Objective(train_grpo, check_grpo)}


def evaluate_tuned(plan: Plan, model: nn.Module, tokenizer: Any, task: Any, base: Base, autocast) -> dict[str, Any]:
    """Task metrics, forgetting and lm-eval scores of the trained model, adapter active."""
    from peftbench.experiments.lm_eval_hook import run_lm_eval

    metrics = evaluate_splits(task, model, plan.config, plan.device, autocast)
    items = outcomes.of_task(task, [s for s in ("validation", "test") if s in metrics])
    cfg = plan.config
    Progress(f"{cfg['method']['name']} s{cfg['seed']}", 0, enabled=bool(cfg.get("progress", True))).note(f"test {metrics['test']}")
    majority = task.majority_metrics() if hasattr(task, "majority_metrics") else None
    return {
        "metrics": metrics,
        "items": items,  # per-item outcomes of the trained model (experiments/outcomes.py)
        "metrics_majority": majority,  # the constant predictor of the most frequent training label
        "eval_items": {s: task.size(s) for s in metrics},
        "forgetting": base.forget.after(model) if base.forget is not None else None,
        "lm_eval": run_lm_eval(model, tokenizer, plan.config, plan.device),
    }


def measure_costs(plan: Plan, model: nn.Module, trained: Trained, base: Base) -> dict[str, Any]:
    """Memory (measured, and the analytic estimate beside it), throughput, FLOPs/MFU, adapter size."""
    cfg, m, world = plan.config, plan.config["measure"], plan.world
    bs, timer = int(cfg["batch_size"]), trained.timer
    cost: dict[str, Any] = {**trained.memory, "weight_bytes": meters.weight_bytes(model), "can_merge": bool(plan.method.can_merge)}
    act_bytes = 2 if cfg["precision"] == "bf16" else 4
    # memory is per device: each holds its slice of the batch, and under FSDP its shard
    cost.update(meters.estimate_train_memory(model, bs // world.size, round(timer.mean_tokens() / bs), act_bytes,
                                             shards=world.size if world.sharded else 1))
    measured = cost.get("peak_train_mem_growth_bytes")
    cost["mem_measured_over_estimated_ratio"] = (measured / cost["est_train_mem_growth_bytes"]) if measured and cost["est_train_mem_growth_bytes"] else None
    cost.update(timer.summary(int(m["warmup_steps"])))
    if trained.flops_known:
        # generation batches are trimmed to their longest example: FLOPs use the mean real width
        flops = meters.train_flops_per_step(model, bs, timer.mean_tokens() / bs)
        cost.update(flops)
        # the whole job's tokens and FLOPs (timer counts every rank's), over the peak of all its devices
        achieved = flops["flops_per_step"] / (cost["step_time_ms_median"] / 1e3)
        cost.update(mfu_figures(plan, base, achieved))
    else:
        cost.update({"flops_per_step": None, "mfu_frac": None,
                     "mfu_unknown_reason": f"objective {cfg['objective']['name']}: a step samples completions as well as "
                                           f"training on them, and no FLOP model here covers the sampling"})
    cost["train_tokens_per_s_per_device_median"] = cost["train_tokens_per_s_median"] / world.size
    if base.copied_costs is None:
        cost["adapter_bytes"] = adapter_bytes(plan.method, model) if m["adapter_size"] else None
    if plan.method.can_merge:
        # what the merge checks (merge_with_diff, serving's merge variants) compute in; records
        # without it compared under the run's own precision
        autocast = autocast_for(plan.device, cfg["precision"])
        cost["merge_compare_precision"] = "fp32" if serving.merge_compare_autocast(model, autocast) is not autocast else str(cfg["precision"])
    return cost


def mfu_figures(plan: Plan, base: Base, achieved_flops_per_s: float) -> dict[str, Any]:
    """MFU over the device's peak. Above 100% is impossible: the peak was measured too low (cores
    busy, or other kernels than training's), so the peak is measured again, keeping the better;
    if the MFU still exceeds 100% it is recorded as unknown, with the reason, never written."""
    world, peak_info = plan.world, base.peak
    mfu = achieved_flops_per_s / (peak_info["peak_flops_per_s"] * world.size)
    if mfu > 1.0:
        peak_info = meters.peak_matmul_flops(plan.device, PRECISIONS[plan.config["precision"]], refresh=True)
        mfu = achieved_flops_per_s / (peak_info["peak_flops_per_s"] * world.size)
    out = {"peak_flops_per_s": peak_info["peak_flops_per_s"] * world.size, "peak_flops_key": peak_info["peak_key"], "mfu_frac": mfu}
    if mfu > 1.0:
        out["mfu_frac"] = None
        out["mfu_unknown_reason"] = (f"measured {100 * mfu:.0f}% of the probed peak even after probing again: the "
                                     f"peak matmul probe does not bound this run's kernels here")
    return out


def measure_serving(plan: Plan, model: nn.Module, task: Any, base: Base, autocast) -> dict[str, Any] | None:
    """Serving costs of the trained, still unmerged adapter (experiments/meters/serving.py)."""
    return serving.measure(plan.method, plan.info, model, base.serving_base, task, plan.config, plan.device, autocast)


def measure_weight_figures(plan: Plan, model: nn.Module, task: Any, base: Base, autocast) -> tuple[dict[str, Any] | None, float | None]:
    """What a run that copies its timings still measures itself, on its own trained weights: how
    far each merge variant (serving) and the method's merge move the logits on the fixed batch."""
    copied = base.copied_costs["serving"]  # type: ignore[index]
    served = copied
    if isinstance(copied, Mapping):
        own = serving.measure(plan.method, plan.info, model, base.serving_base, task, plan.config, plan.device, autocast,
                              only=serving.WEIGHT_PARTS) or {}
        skipped = {k: v for k, v in (copied.get("skipped") or {}).items() if k not in serving.WEIGHT_PARTS}
        served = {**{k: v for k, v in copied.items() if not serving.depends_on_weights(k)},
                  **{k: v for k, v in own.items() if k not in ("skipped", "measure_s")},
                  "skipped": {**skipped, **own.get("skipped", {})}, "measure_s": own.get("measure_s", {})}
    merge_diff = None
    if plan.method.can_merge and base.fixed:  # on a copy: the run's own model stays unmerged
        _, merge_diff = merge_with_diff(plan, copy.deepcopy(model), base.fixed, autocast)
    return served, merge_diff


def merge_with_diff(plan: Plan, model: nn.Module, batch: Mapping[str, torch.Tensor], autocast) -> tuple[nn.Module, float]:
    """The method's merge of `model`, and how far merging moved its logits on `batch` (max abs),
    compared in fp32 where the weights are fp32 (meters.serving.merge_compare_autocast)."""
    compare = serving.merge_compare_autocast(model, autocast)
    before = _logits(model, batch, plan.device, compare)
    merged = plan.method.merge(model)
    return merged, (before - _logits(merged, batch, plan.device, compare)).abs().max().item()


def measure_latency_and_merge(plan: Plan, model: nn.Module, base: Base, autocast) -> tuple[nn.Module, dict[str, Any]]:
    """Latency unmerged, then merged where the method can merge (the model returned is the merged
    one then), each against the base measured beside it, and how far merging moved the logits."""
    if base.latency is None:
        return model, {}
    m = plan.config["measure"]
    unmerged = base.latency.against_base(model)
    merged, merge_diff = None, None
    if plan.method.can_merge:
        model, merge_diff = merge_with_diff(plan, model, base.fixed, autocast)
        merged = base.latency.against_base(model)
    out = latency_figures(unmerged, merged, plan.method.can_merge, base.latency.protocol)
    out["merge_max_abs_logit_diff"] = merge_diff
    out["latency_batch"], out["latency_length"] = int(m["latency_batch"]), int(m["latency_length"])
    return model, out


def assemble(plan: Plan, base: Base, trained: Trained, evaluated: dict[str, Any], cost: dict[str, Any],
             marks: dict[str, float]) -> dict[str, Any]:
    return {
        "distributed": distributed.summary(plan.world, plan.config),
        "params": trained.params,
        "metrics": evaluated["metrics"],
        "metric_spec": metric_spec.with_ranges(metric_spec.of_task(plan.config["task"])),  # what the report scores this run by
        "metrics_before": base.metrics_before,
        "metrics_majority": evaluated["metrics_majority"],
        "eval_items": evaluated["eval_items"],
        "items": evaluated["items"],
        "forgetting": evaluated["forgetting"],
        "lm_eval": evaluated["lm_eval"],
        "lm_eval_before": base.lm_eval_before,
        "loss_curve": trained.losses,
        **({"objective": trained.objective} if trained.objective is not None else {}),
        # a run stopped and resumed (experiments/checkpoint.py): its timing covers the steps after resuming
        **({"checkpoint": {"every_steps": int(plan.config["checkpoint_every_steps"]), "resumed_from_step": trained.resumed_from_step,
                           "train_s_before_resume": trained.train_s_before_resume}}
           if int(plan.config.get("checkpoint_every_steps", 0)) else {}),
        "lr": plan.lr,
        "timing": {
            "load_s": marks["loaded"] - marks["start"],
            "measure_base_s": marks["prepare"] - marks["loaded"],
            "prepare_data_s": marks["adapted"] - marks["prepare"],  # a method's pass over training data (EVA, CorDA) and its wrapping
            "train_s": marks["trained"] - marks["adapted"],
            "eval_s": marks["evaluated"] - marks["trained"],
            "measure_s": marks["end"] - marks["evaluated"],
            "total_s": marks["end"] - marks["start"],
        },
        # how it was measured and what the method can do are facts beside the costs, not costs
        "cost": {k: v for k, v in cost.items() if k not in fields.MEASUREMENT_KEYS + fields.METHOD_INFO_KEYS},
        "measurement": {k: cost[k] for k in fields.MEASUREMENT_KEYS if k in cost},
        "method_info": {k: cost[k] for k in fields.METHOD_INFO_KEYS if k in cost},
    }


@torch.no_grad()
def _logits(model: nn.Module, batch: Mapping[str, torch.Tensor], device: torch.device, autocast) -> torch.Tensor:
    model.eval()
    with autocast():
        return model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()


def base_record(plan_or_config: Plan | dict[str, Any], rid: str | None = None) -> dict[str, Any]:
    cfg = plan_or_config.config if isinstance(plan_or_config, Plan) else plan_or_config
    return {
        "schema_version": record.SCHEMA_VERSION,
        "run_id": rid or plan_or_config.run_id,
        "method": str(cfg["method"]["name"]),
        "model": str(cfg["model"]["name"]),
        "task": str(cfg["task"]["name"]),
        "seed": int(cfg["seed"]),
        "precision": str(cfg["precision"]),
        "config": cfg,
    }


def record_failure(config: dict[str, Any], error: str, rid: str | None = None) -> Path:
    """A failed record written for a run by someone other than the run (a config it could not
    start with, a worker that died before it recorded itself), so that a sweep goes on and the
    next start runs it again."""
    rid = rid or record.run_id(config)
    rec = base_record(config, rid)
    rec.update({"status": "failed", "error": error, "provenance": provenance.collect(resolve_device("cpu")),
                "finished_at": datetime.now(timezone.utc).isoformat()})
    path = record.result_path(config["results_dir"], rid)
    record.write_atomic(path, rec)
    print(f"FAILED ({error}): {path}", flush=True)
    return path


def execute(plan: Plan) -> dict[str, Any]:
    """Run a validated plan unless an ok result exists; always leave a record (ok, failed,
    diverged, or interrupted and then re-raise). The run's claim makes a second process that
    reaches the same run wait for it and then skip it. With several processes rank 0 holds the
    claim, decides for all, and alone writes the record."""
    plan.device = distributed.start(plan.world, plan.device)
    main = plan.world.is_main
    with record.claim(plan.path) if main else nullcontext():
        status, problem = record.existing(plan.path) if main else (None, None)
        if problem:
            print(f"rerun {plan.run_id}: the existing result {plan.path} is {problem}", flush=True)
        if distributed.agree(status == "ok" and not plan.config.get("force"), plan.world):
            if main:
                print(f"skip {plan.run_id}: result exists ({plan.path}); force=true to re-run", flush=True)
                # left by a process killed between writing the record and removing it
                checkpoint.remove(plan.config["results_dir"], plan.run_id)
            return record.read(plan.path)
        return _execute(plan)


def _execute(plan: Plan) -> dict[str, Any]:
    torch.set_num_threads(plan.threads)
    started = datetime.now(timezone.utc).isoformat()
    rec = base_record(plan)
    try:
        with signals_interrupt(), slots_for(plan):
            rec.update({"status": "ok", "error": None, **run_plan(plan)})  # run_plan may say diverged
    except (Interrupted, KeyboardInterrupt, SystemExit) as exc:
        name = exc.args[0] if isinstance(exc, Interrupted) else "SIGINT" if isinstance(exc, KeyboardInterrupt) else exit_reason(exc)
        peers = distributed.peer_errors(plan.config["results_dir"], plan.run_id) if plan.world.size > 1 else []
        # torchrun stops the other ranks with SIGTERM when one fails: that run failed
        rec.update({"status": "failed", "error": "; ".join(peers)} if peers else {"status": "interrupted", "error": f"interrupted by {name}"})
        _finish(plan, rec, started)
        raise
    except Exception as exc:  # one failed run is recorded and the sweep goes on
        error = failure_reason(exc, plan.config)
        if not plan.world.is_main:
            distributed.note_error(plan.config["results_dir"], plan.run_id, plan.world, error)
        peers = distributed.peer_errors(plan.config["results_dir"], plan.run_id) if plan.world.size > 1 else []
        rec.update({"status": "failed", "error": "; ".join([*peers, f"rank 0: {error}"]) if peers else error,
                    "traceback": traceback.format_exc()})
    if not plan.world.is_main:
        return rec
    _finish(plan, rec, started)
    status = rec["status"] if rec["status"] == "ok" else f"{rec['status'].upper()} ({rec['error']})"
    print(f"{status}: {plan.path}", flush=True)
    return rec


def slots_for(plan: Plan):
    """The machine-wide core slots a CPU run holds while it computes (experiments.cores)."""
    if plan.device.type != "cpu" or plan.world.size > 1:
        return nullcontext()
    return core_slots(plan.threads, f"[{plan.config['method']['name']} s{plan.config['seed']}] ")


def _finish(plan: Plan, rec: dict[str, Any], started: str) -> None:
    if not plan.world.is_main:  # rank 0 writes the run's one record
        return
    rec["provenance"] = provenance.collect(plan.device)
    if plan.resolution is not None:
        rec["provenance"].update(precision.summary(plan.resolution))
    distributed.clear_errors(plan.config["results_dir"], plan.run_id)
    rec["started_at"], rec["finished_at"] = started, datetime.now(timezone.utc).isoformat()
    record.write_atomic(plan.path, rec)
    if rec["status"] in ("ok", "diverged"):  # final: a stopped or failed run keeps its checkpoint for its next start
        checkpoint.remove(plan.config["results_dir"], plan.run_id)
    share_costs(plan, rec)


def exit_reason(exc: SystemExit) -> str:
    """Inside a SLURM job, SystemExit during a run is submitit requeuing the job (preempted, or at
    its time limit with requeues left); anywhere else, whatever exited."""
    if os.environ.get("SLURM_JOB_ID"):
        return "the scheduler: submitit requeued the job"
    return f"SystemExit({exc.code!r})"


def failure_reason(exc: Exception, config: Mapping[str, Any]) -> str:
    """The record's words for a failed run. submitit raises UncompletedJobError in the job when
    SLURM's time limit comes and the job is not requeued: say that, and how to finish the run."""
    if type(exc).__name__ == "UncompletedJobError":
        resume = ("its next start resumes from its last checkpoint" if int(config.get("checkpoint_every_steps", 0))
                  else "set checkpoint_every_steps=N so that its next start resumes instead of starting over")
        return ("stopped at the scheduler's time limit before it finished; raise hydra.launcher.timeout_min "
                f"or set hydra.launcher.max_num_timeout to requeue it, and start the sweep again: {resume}")
    return f"{type(exc).__name__}: {exc}"


def share_costs(plan: Plan, rec: Mapping[str, Any]) -> None:
    """Offer this run's seed- and lr-independent costs to the later runs of its configuration:
    only once its record is safely written (the cache names it as the source), only when it
    measured them itself, and never when other work competed for the cores while it did."""
    measurement = rec.get("measurement") or {}
    if rec.get("status") != "ok" or measurement.get("costs_from") or measurement.get("contended") or plan.world.size > 1:
        return
    figures = {**rec.get("cost", {}), **measurement, **(rec.get("method_info") or {})}
    try:
        reuse.store_costs(plan.config, plan.device, plan.threads, plan.run_id, figures, rec.get("serving"))
    except OSError:  # a cache that cannot be written costs later runs a measurement, nothing more
        pass
