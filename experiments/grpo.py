"""objective=grpo: reinforcement learning with verifiable rewards, through trl's GRPOTrainer.

The model the method wrapped is trl's policy, so every method that applies to a causal LM trains
under GRPO by its YAML alone. The task supplies the prompts of its training split and scores each
completion by its own first declared metric (exact answer correctness on the procedural task and
GSM8K): that score is the reward, plus `format_reward` for a completion that ended on its own.
The reference for the KL term is the model before training. For a PEFT model whose adapters
start as the identity (LoRA, DoRA, ...) that is the model with its adapters disabled (trl's own
way, no second copy); where disabling them does not give the model before training (PiSSA,
OLoRA, CorDA and LoftQ change the base weights at initialisation, which a probe of the logits
finds) and for every other model (full fine-tuning, our bottleneck adapters) it is a frozen copy
taken here before the first step; trl would otherwise reload it from a hub id, which an offline
or converted model does not have.

What a step records (`objective` in the record): the group's mean reward and its spread, the share
of groups whose rewards did not vary (no signal), the KL to the reference, the completions' mean
length, and the time spent generating and scoring. The step timer brackets trl's whole step
(generation included) with the tokens trl counts (prompts and completions); no FLOP model covers
generation, so such a run's MFU is unknown and says why.

Checkpoints (`checkpoint_every_steps: N`) are trl's own: the trainer saves its weights, optimizer,
schedule, random state and logged history every N steps into
`<results_dir>/.checkpoints/<run id>/checkpoint-<step>/`, and a stopped run's next start resumes
from the newest complete one. A checkpoint is complete once its `peftbench.json` (the run id, the
training time and the generation times so far) is written after trl's own files; a folder a kill
cut short is passed over.
"""
from __future__ import annotations

import copy
import json
import math
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from peftbench.experiments import record
from peftbench.experiments.meters import MemoryMeter, StepTimer
from peftbench.experiments.train import Diverged, Trained
from peftbench.methods.base import ConfigError

# trl's per-step log names -> the record's (`objective.<name>` lists, one value per step)
LOGGED = {"reward": "reward_mean", "reward_std": "reward_std", "frac_reward_zero_std": "groups_without_signal_frac",
          "kl": "kl_to_reference", "completions/mean_length": "completion_tokens_mean"}


def check(config: Mapping[str, Any], task_kind: str, model_kind: str, world_size: int) -> None:
    """What GRPO needs, said before anything loads."""
    o = config["objective"]
    if model_kind != "causal_lm" or task_kind != "generation":
        raise ConfigError(f"objective=grpo samples completions and rewards them: it needs a generation task on a causal LM "
                          f"(e.g. model=smollm2-135m task=procedural); got task {config['task']['name']} on model "
                          f"{config['model']['name']}")
    if world_size > 1:
        raise ConfigError("objective=grpo runs in one process here; leave distributed at none")
    for key in ("num_generations", "max_completion_length"):
        if not isinstance(o.get(key), int) or isinstance(o.get(key), bool) or o[key] < (2 if key == "num_generations" else 1):
            raise ConfigError(f"objective.{key} must be a whole number >= {2 if key == 'num_generations' else 1} "
                              f"(a group needs 2 completions to compare), got {o.get(key)!r}")
    for key in ("temperature", "beta", "format_reward"):
        if not isinstance(o.get(key), (int, float)) or isinstance(o.get(key), bool) or o[key] < 0:
            raise ConfigError(f"objective.{key} must be a number >= 0, got {o.get(key)!r}")
    if o["temperature"] == 0:
        raise ConfigError("objective.temperature must be above 0: a group of greedy completions is one completion")


def reward_function(task: Any, format_reward: float, eos_id: int | None) -> Callable[..., list[float]]:
    """trl's reward signature: the task's own score of each completion against its reference.
    trl decodes completions without special tokens, so whether one ended on its own is read from
    its token ids (`completion_ids`, which trl passes), not from its text."""
    example_type = type(task.examples["train"][0])

    def reward(prompts: list[str], completions: list[str], reference: list[str], completion_ids: list[list[int]] | None = None,
               **_: Any) -> list[float]:
        out = []
        for i, (text, ref) in enumerate(zip(completions, reference)):
            ended = eos_id is not None and completion_ids is not None and eos_id in list(completion_ids[i])
            answer = task.cut(text)
            score = task.score([answer], [example_type("", "", ref)])[task.outcome_metric]
            out.append(float(score) + (format_reward if ended else 0.0))
        return out

    reward.__name__ = f"{task.raw.name}_{task.outcome_metric}"
    return reward


def prompts_of(task: Any):
    from datasets import Dataset

    examples = task.examples["train"]
    return Dataset.from_dict({"prompt": [e.prompt for e in examples], "reference": [e.reference for e in examples]})


CHECKPOINT_NOTE = "peftbench.json"


def last_checkpoint(folder: Path | None, run_id: str, steps: int) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint of this run in `folder` with steps left to run, and our note
    beside it; None when there is none (the run then starts at step 0, which is always right)."""
    if folder is None or not folder.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))),
                   reverse=True)
    for step, path in found:
        try:
            note = json.loads((path / CHECKPOINT_NOTE).read_text())
        except (OSError, ValueError):
            continue  # cut short by a kill: an older one may be whole
        if note.get("run_id") == run_id and note.get("step") == step and 0 < step < steps:
            return path, note
    return None


def save_settings(every: int) -> dict[str, Any]:
    """trl's saving: every `every` steps, the two newest kept (the older stays until the newer has
    its note), or none at all. Any other save strategy makes trl save a whole checkpoint when
    training ends too, which a run that asked for none would pay for in its training time."""
    return {"save_strategy": "steps", "save_steps": every, "save_total_limit": 2} if every else {"save_strategy": "no"}


def train(config: Mapping[str, Any], method: Any, model: nn.Module, task: Any, device: torch.device, lr: float,
          params: dict[str, Any], progress: Any, checkpoints: Path | None = None, run_id: str = "") -> Trained:
    """`checkpoints`: the folder for this run's checkpoints, where `checkpoint_every_steps` asks
    for them (see the module's docstring)."""
    from transformers import PrinterCallback, TrainerCallback, get_linear_schedule_with_warmup
    from trl import GRPOConfig, GRPOTrainer

    o, steps, prompts_per_step = config["objective"], int(config["steps"]), int(config["batch_size"])
    every = int(config.get("checkpoint_every_steps", 0)) if checkpoints is not None else 0
    resume = last_checkpoint(checkpoints, run_id, steps) if every and not config.get("force") else None
    if every and resume is None and checkpoints.exists():
        shutil.rmtree(checkpoints)  # starting over (force, or nothing whole to resume): trl's rotation must not keep older runs' folders
    before_s = float(resume[1]["train_s"]) if resume else 0.0
    timer, generation_s = StepTimer(device), list(resume[1]["generation_s"]) if resume else []
    progress.timer = timer  # the progress line's tokens/s: trl's count of the step's prompt and completion tokens
    began = time.perf_counter()

    class Timed(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):  # trl's sampling and rewarding of one step
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            generation_s.append(time.perf_counter() - t0)
            return out

    class StepClock(TrainerCallback):
        seen = 0

        def on_step_begin(self, args, state, control, **kw):
            timer.start()

        def on_step_end(self, args, state, control, **kw):
            tokens = int(state.num_input_tokens_seen) - self.seen
            self.seen = int(state.num_input_tokens_seen)
            timer.stop(tokens=tokens, samples=prompts_per_step * int(o["num_generations"]))

        def on_log(self, args, state, control, logs=None, **kw):  # our progress line, not trl's log dicts
            if logs and "loss" in logs and timer.times:
                progress(int(state.global_step) - 1, float(logs["loss"]), timer.times[-1])

        def on_save(self, args, state, control, **kw):  # after trl's files: the checkpoint is whole
            record.write_atomic(Path(args.output_dir) / f"checkpoint-{state.global_step}" / CHECKPOINT_NOTE,
                                {"run_id": run_id, "step": int(state.global_step),
                                 "train_s": before_s + time.perf_counter() - began, "generation_s": generation_s})

    scratch = None if every else tempfile.mkdtemp(prefix="peftbench-grpo-")  # trl needs an output folder even when it saves nothing
    args = GRPOConfig(
        output_dir=str(checkpoints) if every else scratch, **save_settings(every),
        max_steps=steps, learning_rate=lr, seed=int(config["seed"]),
        per_device_train_batch_size=prompts_per_step * int(o["num_generations"]), num_generations=int(o["num_generations"]),
        max_completion_length=int(o["max_completion_length"]), temperature=float(o["temperature"]),
        beta=0.0,  # set below, once the reference is in place (trl would load it from a hub id)
        max_grad_norm=float(config["grad_clip"]) if float(config["grad_clip"]) > 0 else 1e9,
        logging_steps=1, report_to="none", disable_tqdm=True,
        use_cpu=device.type == "cpu", bf16=config["precision"] == "bf16", fp16=config["precision"] == "fp16",
        weight_decay=float(config["weight_decay"]), remove_unused_columns=False, dataloader_num_workers=0,
        # as the supervised loop: checkpointing changes speed and memory, so every objective takes the run's setting
        gradient_checkpointing=bool(config.get("gradient_checkpointing", False)))
    optimizer = method.optimizer(model, lr, float(config["weight_decay"]))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config["warmup_ratio"] * steps), steps)
    tok = task.tokenizer
    trainer = Timed(model=model, reward_funcs=reward_function(task, float(o["format_reward"]), tok.eos_token_id),
                    args=args, train_dataset=prompts_of(task), processing_class=tok, callbacks=[StepClock()],
                    optimizers=(optimizer, scheduler))
    trainer.remove_callback(PrinterCallback)
    trainer.beta = float(o["beta"])
    reference_kind = "none (beta=0)"
    if trainer.beta:
        if _is_peft(model) and _disabled_adapters_are_the_start(model, tok, device):
            reference_kind = "disabled adapters"
        else:
            trainer.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
            reference_kind = "frozen copy"
    if resume:
        progress.note(f"resumed at step {resume[1]['step']} from {resume[0]}")
    try:
        with MemoryMeter(device) as memory:
            trainer.train(resume_from_checkpoint=str(resume[0]) if resume else None)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    logs = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
    losses = [float(h["loss"]) for h in logs]
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        raise Diverged(bad, losses[bad], losses[:bad])
    figures = {name: [float(h[key]) for h in logs if key in h] for key, name in LOGGED.items()}
    figures.update({"generation_s": [round(t, 4) for t in generation_s], "generation_s_total": round(sum(generation_s), 3),
                    "num_generations": int(o["num_generations"]), "prompts_per_step": prompts_per_step,
                    "reference": reference_kind,
                    "trl_version": _version("trl")})
    return Trained(losses, timer, dict(memory.result), params, model, objective=figures, flops_known=False,
                   resumed_from_step=int(resume[1]["step"]) if resume else 0, train_s_before_resume=before_s)


@torch.no_grad()
def _disabled_adapters_are_the_start(model: nn.Module, tokenizer: Any, device: torch.device) -> bool:
    """Whether the model with its adapters disabled is the model as it starts training: true for
    adapters that start as the identity, false for methods that rewrite the base weights at
    initialisation (the residual of PiSSA, OLoRA, CorDA, LoftQ's quantised base)."""
    batch = {k: v.to(device) for k, v in tokenizer("Question: What day is it?", return_tensors="pt").items()}
    was_training = model.training
    model.eval()
    on = model(**batch).logits.float()
    with model.disable_adapter():
        off = model(**batch).logits.float()
    model.train(was_training)
    return bool(torch.allclose(on, off, rtol=0.0, atol=1e-4 * max(1.0, float(on.abs().max()))))


def _is_peft(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)
