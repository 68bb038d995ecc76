"""The one training loop, shared by every method. Read it top to bottom."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from peftbench.experiments.distributed import mean_over_ranks
from peftbench.experiments.meters import StepTimer


@dataclass
class Trained:
    losses: list[float]
    timer: StepTimer
    memory: dict[str, Any]  # each rank's peak and their max (distributed.memory_figures)
    params: dict[str, Any]
    model: nn.Module | None  # whole, on rank 0; None on the other ranks
    # what an objective other than the supervised loss records per step (objective=grpo: rewards,
    # KL to the reference, generation time); None under supervised training
    objective: dict[str, Any] | None = None
    flops_known: bool = True  # False where no FLOP model covers a step (GRPO's generation)
    resumed_from_step: int = 0  # > 0: the run went on from a checkpoint (experiments/checkpoint.py)
    train_s_before_resume: float = 0.0  # training time before that checkpoint, in earlier starts


class Diverged(Exception):
    """The loss became NaN or inf: training stops at that step, and the run is recorded as
    diverged with the losses before it."""

    def __init__(self, step: int, loss: float, losses: list[float]):
        super().__init__(f"diverged: loss {loss} at step {step} (0-based); lower the learning rate, or clip gradients (grad_clip=1.0)")
        self.step, self.loss, self.losses = step, loss, losses


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    autocast: Callable,
    grad_clip: float,
    timer: StepTimer,
    on_step: Callable[[int, float, float], None],
    after_update: Callable[[nn.Module, int], None] = lambda model, step: None,
    start: int = 0,
    losses: list[float] | None = None,
    save_every: int = 0,
    save: Callable[[int, list[float]], None] = lambda steps_done, losses: None,
) -> list[float]:
    """Run the steps; return the loss of every step. Raises Diverged at a NaN/inf loss.
    `after_update` is the method's per-step hook (Method.on_step), called while the step's
    gradients still exist. A resumed run passes the step it resumes at (`batches` then begins
    there) and the losses before it; `save` is called after every `save_every`-th step."""
    params = [p for p in model.parameters() if p.requires_grad]
    losses = list(losses or [])
    model.train()
    for step, batch in enumerate(batches, start=start):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        timer.start()
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        after_update(model, step)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        dt = timer.stop(tokens=batch["input_ids"].numel(), samples=batch["input_ids"].shape[0])
        value = mean_over_ranks(loss)  # loss.item(), averaged over ranks when there are several
        if not math.isfinite(value):
            raise Diverged(step, value, losses)
        losses.append(value)
        on_step(step, losses[-1], dt)
        if save_every and (step + 1) % save_every == 0:
            save(step + 1, losses)
    return losses
