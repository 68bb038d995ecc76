"""One run over several processes: torch's DistributedDataParallel or FSDP2 (`fully_shard`),
one process per device, started by torchrun (or by anything that sets torchrun's environment:
`accelerate launch`, SLURM through torchrun).

The training loop does not change: each rank trains on its slice of the same global batch the
one-process run would draw, the loss it records is the mean over ranks, and rank 0 alone
evaluates, measures latency, merges and writes the record. `peftbench run distributed=ddp` that
is not yet inside torchrun starts torchrun itself (`launch`).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import nn

from peftbench.experiments.meters import StepTimer
from peftbench.experiments.signals import signals_interrupt
from peftbench.methods.base import ConfigError, Method

# environment torchrun (and accelerate launch, and torchrun under SLURM) gives each worker
LAUNCHED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
ERRORS_DIR = ".rank-errors"


@dataclass(frozen=True)
class World:
    """This process's place in the run: strategy, rank, and how many ranks there are."""

    strategy: str = "none"
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str | None = None
    timeout_s: int = 1800

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Parameters, gradients and optimizer states split over ranks (FSDP)."""
        return self.strategy == "fsdp"

    @property
    def initialized(self) -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()


SINGLE = World()


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    return dict(config.get("distributed") or {"strategy": "none", "nproc_per_node": 1, "nnodes": 1})


def configured_size(config: Mapping[str, Any]) -> int:
    d = settings(config)
    return 1 if d["strategy"] == "none" else int(d.get("nproc_per_node", 1)) * int(d.get("nnodes", 1))


def launched() -> bool:
    """This process is a worker that torchrun (or a launcher like it) started."""
    return all(k in os.environ for k in LAUNCHED_ENV[:2])


def needs_launch(config: Mapping[str, Any]) -> bool:
    """A distributed run asked for from a plain `peftbench run`: this process starts torchrun."""
    return settings(config)["strategy"] != "none" and not launched()


def resolve_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return name


def world_for(config: Mapping[str, Any], device: torch.device) -> World:
    """This process's World from the config and torchrun's environment. Raises ConfigError when
    they disagree (before any weights load)."""
    d = settings(config)
    strategy, want = str(d["strategy"]), configured_size(config)
    env_size = int(os.environ["WORLD_SIZE"]) if launched() else None
    if strategy == "none":
        if env_size is not None and env_size > 1:
            raise ConfigError(f"started as {env_size} processes (WORLD_SIZE={env_size}) but distributed=none; "
                              f"add distributed=ddp or distributed=fsdp with distributed.nproc_per_node={env_size}")
        return SINGLE
    backend = resolve_backend(str(d.get("backend", "auto")), device)
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError(f"distributed.backend=nccl needs CUDA devices but device={device}; use distributed.backend=gloo (or auto)")
    if env_size is None:  # the parent that will start torchrun: it is no rank itself
        return World(strategy, 0, want, 0, int(d.get("nproc_per_node", 1)), backend, int(d.get("timeout_s", 1800)))
    if env_size != want:
        raise ConfigError(f"started as {env_size} processes but distributed.nproc_per_node x distributed.nnodes = {want}; "
                          f"set distributed.nproc_per_node (and distributed.nnodes) to match the launcher")
    return World(strategy, int(os.environ["RANK"]), env_size, int(os.environ.get("LOCAL_RANK", 0)),
                 int(os.environ.get("LOCAL_WORLD_SIZE", env_size)), backend, int(d.get("timeout_s", 1800)))


def validate(config: Mapping[str, Any], method: Method, info: Any, world: World) -> None:
    """Combinations that cannot work, refused with one line before anything loads."""
    if world.size == 1 and world.strategy == "none":
        return
    nnodes = int(settings(config).get("nnodes", 1))
    if nnodes > 1 and not launched():
        raise ConfigError(f"distributed.nnodes={nnodes}: a run over several nodes starts from a launcher on every node "
                          f"(torchrun --nnodes {nnodes} --rdzv-endpoint HOST:PORT -m peftbench run ...); see the README")
    bs = int(config["batch_size"])
    if bs % world.size:
        raise ConfigError(f"batch_size={bs} does not split evenly over {world.size} processes; "
                          f"use a multiple of {world.size} (the global batch is batch_size, each rank gets batch_size / world size)")
    if world.sharded:
        extra = method.load_kwargs(torch.bfloat16, info)
        if extra.get("quantization_config") is not None:
            raise ConfigError(f"method {config['method']['name']} loads quantised (bitsandbytes) weights, which FSDP cannot shard here "
                              f"(bitsandbytes' FSDP path needs CUDA and a bf16 quant storage); use distributed=ddp, or a method without quantised weights")
        if type(method).on_step is not Method.on_step:
            raise ConfigError(f"method {config['method']['name']} changes its parameters after every step (on_step), which needs whole "
                              f"parameters on every rank; FSDP shards them: use distributed=ddp")
        if int(config.get("checkpoint_every_steps", 0)) and type(method).optimizer is not Method.optimizer:
            raise ConfigError(f"method {config['method']['name']} builds its own optimizer, which FSDP's sharded checkpoints are not tested "
                              f"to restore here; use distributed=ddp, or checkpoint_every_steps=0")


# -- the process group --------------------------------------------------------------------------

def start(world: World, device: torch.device) -> torch.device:
    """Join the process group (once per process); return this rank's device."""
    if (world.size == 1 and world.strategy == "none") or not launched():  # one process, or torchrun's parent
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not world.initialized:
        torch.distributed.init_process_group(world.backend, timeout=timedelta(seconds=world.timeout_s))
    return device


def stop() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(world: World) -> None:
    if world.initialized:
        torch.distributed.barrier()


def agree(value: Any, world: World) -> Any:
    """Rank 0's value, on every rank."""
    if not world.initialized:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, world: World) -> list[Any]:
    """Every rank's value, in rank order (on every rank)."""
    if not world.initialized:
        return [value]
    out: list[Any] = [None] * world.size
    torch.distributed.all_gather_object(out, value)
    return out


def mean_over_ranks(loss: torch.Tensor) -> float:
    """The step's loss as one number for the record: the mean of every rank's loss (each rank's
    is the mean over its equal slice of the global batch)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return loss.item()
    total = loss.detach().float().clone()
    torch.distributed.all_reduce(total)  # a sum: gloo has no average
    return total.item() / torch.distributed.get_world_size()


# -- data and timing ----------------------------------------------------------------------------

def shard_batches(batches: Iterable[dict[str, torch.Tensor]], world: World) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's contiguous slice of each global batch: every rank draws the same batches the
    one-process run draws (same seed), so together they train on exactly that run's data."""
    for batch in batches:
        n = next(iter(batch.values())).shape[0]
        per = n // world.size
        yield {k: v[world.rank * per:(world.rank + 1) * per] for k, v in batch.items()}


class SyncedStepTimer(StepTimer):
    """Step times across ranks: every rank waits at a barrier before the clock starts and before
    it stops, so a step's time is the slowest rank's. Tokens and samples count the whole job's
    (each rank's equal slice times the world size)."""

    def __init__(self, device: torch.device, world: World):
        super().__init__(device)
        self.world = world
        device_sync = self.sync
        self.sync = lambda: (device_sync(), barrier(world))

    def stop(self, tokens: int, samples: int) -> float:
        return super().stop(tokens * self.world.size, samples * self.world.size)


def step_timer(device: torch.device, world: World) -> StepTimer:
    return SyncedStepTimer(device, world) if world.initialized else StepTimer(device)


# -- wrapping -----------------------------------------------------------------------------------

def _layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks transformers declares unsplittable (decoder/encoder layers): FSDP's
    sharding units."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def _dtype(name: Any) -> torch.dtype | None:
    return None if name is None else {"fp32": torch.float32, "bf16": torch.bfloat16}[str(name)]


def wrap(model: nn.Module, world: World, config: Mapping[str, Any], device: torch.device) -> nn.Module:
    """The module the loop trains: the model itself (one process), DDP around it, or the model
    sharded in place by FSDP2. Build the optimizer after this (FSDP swaps in sharded params)."""
    if not world.initialized:
        return model
    d = settings(config)
    if world.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # gradients live in the communication buckets: no second copy of them
        return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True,
                                       find_unused_parameters=bool(d.get("find_unused_parameters", False)))
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=_dtype(d.get("param_dtype")), reduce_dtype=_dtype(d.get("reduce_dtype")))
    reshard = str(d.get("sharding", "full_shard")) == "full_shard"
    for layer in _layers(model):
        fully_shard(layer, reshard_after_forward=reshard, mp_policy=policy)
    fully_shard(model, reshard_after_forward=reshard, mp_policy=policy)
    return model


def skeleton(model: nn.Module, world: World) -> nn.Module | None:
    """Before FSDP shards the model: a weightless copy of it (parameters on the meta device,
    buffers copied: rotary tables are not in a state dict), into which rank 0 later loads the
    gathered full state to evaluate and measure alone."""
    if not (world.initialized and world.sharded):
        return None
    memo: dict[int, Any] = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
                            for p in model.parameters()}
    memo.update({id(b): b.detach().clone() for b in model.buffers()})
    return copy.deepcopy(model, memo)


def whole_model(model: nn.Module, shell: nn.Module | None, world: World, device: torch.device) -> nn.Module | None:
    """The trained model whole, on rank 0 (None on other ranks): DDP's replica as it is; under
    FSDP every rank takes part in gathering the full state, which rank 0 loads into `shell`."""
    if shell is None:
        return model if world.is_main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not world.is_main:
        return None
    buffers = {name: b.clone() for name, b in shell.named_buffers()}  # to_empty empties them too
    plain = shell.to_empty(device=device)
    for name, b in plain.named_buffers():
        b.copy_(buffers[name])
    plain.load_state_dict(full, strict=False)
    missing = [n for n, _ in plain.named_parameters() if n not in full]
    if missing:
        raise RuntimeError(f"the gathered FSDP state lacks {missing[:3]}: cannot rebuild the whole model")
    return plain


# -- the record ---------------------------------------------------------------------------------

def memory_figures(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Each rank's peak and the largest: the scalar figures become the max over ranks (what one
    device must hold), the lists keep each rank's in rank order."""
    out: dict[str, Any] = dict(per_rank[0])
    for key in ("peak_train_mem_growth_bytes", "peak_train_rss_bytes", "peak_train_mem_bytes", "peak_train_reserved_bytes"):
        values = [r.get(key) for r in per_rank]
        if all(isinstance(v, int) for v in values):
            out[key] = max(values)
            out[f"{key}_per_rank"] = values
    return out


def summary(world: World, config: Mapping[str, Any]) -> dict[str, Any]:
    d = settings(config)
    return {"strategy": world.strategy, "world_size": world.size, "backend": world.backend,
            "nproc_per_node": int(d.get("nproc_per_node", 1)), "nnodes": int(d.get("nnodes", 1))}


# -- failures -----------------------------------------------------------------------------------

def error_path(results_dir: str | Path, run_id: str, rank: int) -> Path:
    return Path(results_dir) / ERRORS_DIR / f"{run_id}.rank{rank}.txt"


def note_error(results_dir: str | Path, run_id: str, world: World, error: str) -> None:
    """A rank other than 0 that fails leaves its error where rank 0 (or the launching process)
    can put it in the failed record; written before the rank exits, so before torchrun stops
    the others."""
    path = error_path(results_dir, run_id, world.rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(error)


def peer_errors(results_dir: str | Path, run_id: str) -> list[str]:
    folder = Path(results_dir) / ERRORS_DIR
    return [f"rank {p.name.rsplit('.rank', 1)[1].removesuffix('.txt')}: {p.read_text().strip()}"
            for p in sorted(folder.glob(f"{run_id}.rank*.txt"))] if folder.exists() else []


def clear_errors(results_dir: str | Path, run_id: str) -> None:
    folder = Path(results_dir) / ERRORS_DIR
    for p in folder.glob(f"{run_id}.rank*.txt") if folder.exists() else []:
        p.unlink(missing_ok=True)


# -- launching ----------------------------------------------------------------------------------

def torchrun_command(config_file: Path, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "peftbench.experiments.distributed_worker", str(config_file)]


def launch(config: Mapping[str, Any], run_id: str, threads: int) -> tuple[int, float]:
    """Start torchrun with one worker per device on this node, each running the resolved
    `config`; return torchrun's exit code and when it started (epoch seconds). Several nodes
    start from a multi-node launcher instead (README: one run over several GPUs)."""
    d = settings(config)
    folder = Path(str(config["results_dir"])) / ".launch"
    folder.mkdir(parents=True, exist_ok=True)
    clear_errors(config["results_dir"], run_id)
    fd, name = tempfile.mkstemp(dir=folder, prefix=f"{run_id}.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    started = time.time()
    try:
        # each worker's thread count (set again by the run itself): torchrun's own default is 1
        proc = subprocess.Popen(torchrun_command(Path(name), int(d["nproc_per_node"])), env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        try:
            with signals_interrupt():
                code = proc.wait()
        except BaseException:
            # stopped here (SIGTERM, Ctrl-C): torchrun passes SIGTERM on to its ranks, each in a session
            # of its own, which then record the run as interrupted; killed outright, it would leave them
            # running, writing the checkpoint the next start reads
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    finally:
        Path(name).unlink(missing_ok=True)
    return code, started
