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

The per-step timing and memory figures of a resumed run cover the steps it ran after resuming
(the record says from which step: `checkpoint.resumed_from_step`, and the training time before
it: `checkpoint.train_s_before_resume`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from peftbench.experiments.meters.rng import random_state, set_random_state

FOLDER = ".checkpoints"


def path_for(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / FOLDER / f"{run_id}.pt"


def trainer_folder_for(results_dir: str | Path, run_id: str) -> Path:
    """The folder of a run trained by a library's trainer (objective=grpo: trl), which writes its
    own checkpoints (experiments/grpo.py)."""
    return Path(results_dir) / FOLDER / run_id


def save(path: Path, *, run_id: str, step: int, losses: list[float], model: nn.Module,
         optimizer: torch.optim.Optimizer, scheduler: Any, method_state: Mapping[str, Any], train_s: float) -> None:
    """Everything training needs to go on after `step` completed steps, written atomically (a
    kill during the write leaves the previous checkpoint). `train_s`: the training time so far,
    which a resumed run's record adds to its own."""
    state = {
        "run_id": run_id,
        "step": step,
        "train_s": train_s,
        "losses": list(losses),
        "weights": {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "method": dict(method_state),
        "rng": random_state(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    for torn in path.parent.glob(f"{path.name}.*.tmp"):  # a write of this run that was killed (one process runs a run)
        torn.unlink(missing_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
    return state


def fits(state: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """None when the checkpoint's trainable weights and optimizer groups are the model's, else
    what differs (a checkpoint from other code): such a run starts over rather than fail at every start."""
    trainable = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    saved = {n: tuple(t.shape) for n, t in state["weights"].items()}
    if saved != trainable:
        return f"its {len(saved)} trainable tensors are not the model's {len(trainable)}"
    groups = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    if groups != [len(g["params"]) for g in optimizer.param_groups]:
        return "its optimizer groups are not the method's"
    return None


def restore(state: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Put the saved weights, optimizer, schedule and random state back (the method's own state is
    the method's to restore). Check `fits` first."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["weights"].items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_random_state(state["rng"])


def remove(results_dir: str | Path, run_id: str) -> None:
    """Every checkpoint of the run: its file, or its trainer's folder."""
    import shutil

    path_for(results_dir, run_id).unlink(missing_ok=True)
    shutil.rmtree(trainer_folder_for(results_dir, run_id), ignore_errors=True)
