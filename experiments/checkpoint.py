"""Training checkpoints, so that a run stopped by a scheduler (a preemption, a time limit, a lost
node) resumes at its last checkpoint instead of at step 0, and ends with the same numbers as a run
that was never stopped.

`checkpoint_every_steps: N` saves, after every N-th optimizer step, what the rest of training
depends on: the trainable weights, the optimizer and schedule, the method's own state between steps
(AdaLoRA's importance scores), the losses so far and the random state that dropout draws from. The
batches are a seeded stream, so resuming skips the ones already used. A checkpoint is one file,
`<results_dir>/.checkpoints/<run id>.pt` (dot-named: reports never read it), written atomically and
removed once the run has its final record; a stopped run keeps it for its next start. A GRPO run's
checkpoints are trl's own, in the folder `<results_dir>/.checkpoints/<run id>/` (experiments/grpo.py).

A distributed run keeps the same one file, written by rank 0, with every rank's random state in it
(each rank draws its own dropout masks). Under DDP the replicas are whole and equal: rank 0's own
weights and optimizer state are the run's, and on resuming every rank reads them from the file (a
multi-node run needs its results folder shared, as its ranks' error notes already do). Under FSDP
no process ever holds the whole state: each rank writes its own shards of the trainable weights and
the optimizer state (torch.distributed.checkpoint) into a folder beside the file,
`<run id>.step<N>.dcp/`, and reads them back on resuming. The folder is written under a temporary
name and renamed once every rank has finished; the file, which names it, is replaced after that, and
only then is the previous step's folder removed, so a kill at any moment leaves one complete
checkpoint. A method that builds its own optimizer is refused there (distributed.validate): no test
restores one from shards. `distributed.*` is part of the run id, so another world size
is another run, with its own checkpoint.

The per-step timing and memory figures of a resumed run cover the steps it ran after resuming
(the record says from which step: `checkpoint.resumed_from_step`, and the training time before
it: `checkpoint.train_s_before_resume`).
"""
from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from peftbench.experiments.distributed import SINGLE, World, agree, barrier, gather
from peftbench.experiments.meters.rng import random_state, set_random_state

FOLDER = ".checkpoints"


def _sharded_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # the frozen base is the model's, loaded again at every start: putting the trainable tensors
    # back is not strict about the rest (`fits` has checked the trainable ones)
    return StateDictOptions(ignore_frozen_params=True, strict=False)


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, world: World,
                   with_state: set[str] | None = None) -> dict[str, Any]:
    """This rank's shards of what the run trains: the trainable tensors (torch keeps a frozen tied
    weight under its second name, and every buffer, even with ignore_frozen_params) and the
    optimizer state, of the parameters named in `with_state` where given (those that had state
    when it was saved: one that never had a gradient has none)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optim = get_state_dict(model, optimizer, options=_sharded_options())
    trainable = _trainable_shapes(model, world)
    weights = {k: v for k, v in weights.items() if k in trainable}
    if with_state is not None:
        optim = {**optim, "state": {k: v for k, v in optim["state"].items() if k in with_state}}
    return {"weights": weights, "optimizer": optim}


def path_for(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / FOLDER / f"{run_id}.pt"


def trainer_folder_for(results_dir: str | Path, run_id: str) -> Path:
    """The folder of a run trained by a library's trainer (objective=grpo: trl), which writes its
    own checkpoints (experiments/grpo.py)."""
    return Path(results_dir) / FOLDER / run_id


def save(path: Path, *, run_id: str, step: int, losses: list[float], model: nn.Module,
         optimizer: torch.optim.Optimizer, scheduler: Any, method_state: Mapping[str, Any], train_s: float,
         world: World = SINGLE) -> None:
    """Everything training needs to go on after `step` completed steps, written atomically (a
    kill during the write leaves the previous checkpoint). `train_s`: the training time so far,
    which a resumed run's record adds to its own. With several processes every rank calls it: under
    DDP rank 0 writes its replica, under FSDP every rank writes its own shards and rank 0 the file."""
    state: dict[str, Any] = {
        "run_id": run_id,
        "step": step,
        "train_s": train_s,
        "losses": list(losses),
        "scheduler": scheduler.state_dict(),
        "method": dict(method_state),
    }
    if world.initialized and world.sharded:  # every rank writes its own shards
        shards, with_state = _save_shards(path, run_id, step, model, optimizer, world)
        rngs = gather(random_state(), world)
        if not world.is_main:
            return
        state.update({"world_size": world.size, "shards": shards.name, "shapes": _trainable_shapes(model, world),
                      "groups": [len(g["params"]) for g in optimizer.param_groups], "with_state": with_state,
                      "rng_per_rank": rngs})
    elif world.initialized:
        rngs = gather(random_state(), world)
        if not world.is_main:
            return
        # DDP: rank 0's replica is every rank's
        state.update({"world_size": world.size, "weights": _trainable(model), "optimizer": optimizer.state_dict(),
                      "rng_per_rank": rngs})
    else:
        state.update({"weights": _trainable(model), "optimizer": optimizer.state_dict(), "rng": random_state()})
    path.parent.mkdir(parents=True, exist_ok=True)
    for torn in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):  # a write of this run that was killed (one process runs a run)
        torn.unlink(missing_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    if "shards" in state:  # the file names the new folder now: the older ones are no checkpoint's
        for old in _shard_folders(path, run_id):
            if old.name != state["shards"]:
                shutil.rmtree(old, ignore_errors=True)


def _shard_folders(path: Path, run_id: str) -> list[Path]:
    """Every shard folder of the run beside its file, finished or torn."""
    return [p for p in path.parent.glob(f"{glob.escape(run_id)}.step*.dcp*") if p.is_dir()]


def _save_shards(path: Path, run_id: str, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                 world: World) -> tuple[Path, list[str]]:
    """Each rank's shards of the trainable weights and the optimizer state, in one folder that has
    its final name only once every rank has written its part; and the parameters whose optimizer
    state it holds."""
    import torch.distributed.checkpoint as dcp

    final = path.with_name(f"{run_id}.step{step}.dcp")
    tmp = final.with_name(final.name + ".tmp")
    if world.is_main:  # a torn write of this step (killed before its rename) must not mix in
        shutil.rmtree(tmp, ignore_errors=True)
    barrier(world)
    # before get_state_dict, which gives a parameter without optimizer state a zero one
    with_state = sorted(name for name, p in model.named_parameters(remove_duplicate=False) if p in optimizer.state)
    shards = _sharded_state(model, optimizer, world)
    dcp.save(shards, checkpoint_id=tmp)  # collective: returns once every rank has written
    if world.is_main:
        shutil.rmtree(final, ignore_errors=True)  # a folder renamed by a save killed before it replaced the file
        os.replace(tmp, final)
    barrier(world)
    return final, with_state


def _trainable_shapes(model: nn.Module, world: World) -> dict[str, tuple[int, ...]]:
    """Every trainable tensor's whole shape (an FSDP parameter's shape is its unsharded one). FSDP's
    state dicts name a trainable tied weight under each of its names; named_parameters() names it
    once unless asked."""
    every_name = world.sharded and world.initialized
    return {n: tuple(p.shape) for n, p in model.named_parameters(remove_duplicate=not every_name) if p.requires_grad}


def load(path: Path, run_id: str, steps: int) -> dict[str, Any] | None:
    """The checkpoint of this run, or None when there is none, it is another run's, it has no step
    left to run, or it cannot be read (a run then starts at step 0, which is always right)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a torn or foreign file: starting over is correct, resuming from it is not
        return None
    if not isinstance(state, dict) or state.get("run_id") != run_id or not 0 < int(state.get("step", 0)) < steps:
        return None
    if "shards" in state:
        state["_folder"] = path.parent / str(state["shards"])
    return state


def fits(state: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, world: World = SINGLE) -> str | None:
    """None when the checkpoint's trainable weights and optimizer groups are the model's, and it
    was written by as many processes as this run has, else what differs (a checkpoint from other
    code, or another launch): such a run starts over rather than fail at every start."""
    saved_size = int(state.get("world_size", 1))
    if saved_size != world.size:
        return f"it was written by {saved_size} process(es), this run has {world.size}"
    trainable = _trainable_shapes(model, world)
    if ("shards" in state) != (world.sharded and world.initialized):
        return "it holds whole tensors where this run reads shards, or shards where it reads whole tensors"
    if "shards" in state:  # FSDP: the file holds the shapes and groups; the tensors are in the folder
        saved = {n: tuple(shape) for n, shape in state["shapes"].items()}
        groups = list(state["groups"])
        if not (path_folder := state.get("_folder")) or not (path_folder / ".metadata").exists():
            return "its shard folder is missing"
    else:
        saved = {n: tuple(t.shape) for n, t in state["weights"].items()}
        groups = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    if saved != trainable:
        return f"its {len(saved)} trainable tensors are not the model's {len(trainable)}"
    if groups != [len(g["params"]) for g in optimizer.param_groups]:
        return "its optimizer groups are not the method's"
    return None


def resume_state(path: Path, run_id: str, steps: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                 world: World = SINGLE) -> tuple[dict[str, Any] | None, str | None]:
    """The checkpoint to resume from (None: start at step 0) and, when one exists that cannot be
    used, why. With several processes every rank calls it: rank 0 reads and checks the file, and
    the others get what it decided, with everything but the weights and the optimizer state, which
    under DDP each rank then reads from the file itself and under FSDP `restore` reads from each
    rank's own shards."""
    if not world.initialized:
        state = load(path, run_id, steps)
        unfit = fits(state, model, optimizer) if state is not None else None
        return (None, unfit) if unfit else (state, None)
    state = load(path, run_id, steps) if world.is_main else None
    unfit = fits(state, model, optimizer, world) if state is not None else None
    small = None if state is None or unfit else {k: v for k, v in state.items() if k not in ("weights", "optimizer")}
    small, unfit = agree((small, unfit), world)
    if small is None:
        return None, unfit
    if world.is_main:
        return state, None
    if not world.sharded:  # whole replicas: each rank reads the weights and optimizer state itself
        whole = torch.load(path, map_location="cpu", weights_only=False)
        return {**small, "weights": whole["weights"], "optimizer": whole["optimizer"]}, None
    return small, None


def restore(state: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            world: World = SINGLE) -> None:
    """Put the saved weights, optimizer, schedule and random state back (the method's own state is
    the method's to restore). Check `fits` first (`resume_state` does). With several processes every
    rank calls it with what `resume_state` gave it."""
    if world.initialized and world.sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        # each rank reads its own shards into its own (sharded) state dicts, laid out as they are now
        shards = _sharded_state(model, optimizer, world, set(state["with_state"]))
        dcp.load(shards, checkpoint_id=state["_folder"])
        set_state_dict(model, optimizer, model_state_dict=shards["weights"], optim_state_dict=shards["optimizer"],
                       options=_sharded_options())
        scheduler.load_state_dict(state["scheduler"])
        set_random_state(state["rng_per_rank"][world.rank])
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["weights"].items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_random_state(state["rng_per_rank"][world.rank] if world.initialized else state["rng"])


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def remove(results_dir: str | Path, run_id: str) -> None:
    """Every checkpoint of the run: its file and its shard folders, or its trainer's folder."""
    path = path_for(results_dir, run_id)
    path.unlink(missing_ok=True)
    for folder in [*_shard_folders(path, run_id), trainer_folder_for(results_dir, run_id)]:
        shutil.rmtree(folder, ignore_errors=True)
