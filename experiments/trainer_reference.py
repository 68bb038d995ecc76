"""The reference side of `peftbench bench trainer`: the same run through transformers' Trainer.

Same model, method (via the same peft wrapping), data, batch, steps, lr schedule, precision and
threads; Trainer does its own loop, data loading and evaluation. Prints per-step time as JSON.
"""
from __future__ import annotations

import json
import sys
import time

import torch


def main(config_json: str) -> None:
    from peftbench.experiments.quiet import quiet

    quiet()
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from peftbench.experiments.run import load_for, prepare, seed_everything

    config = json.loads(config_json)
    plan = prepare(config)
    torch.set_num_threads(plan.threads)
    seed_everything(int(config["seed"]))
    _, task, model = load_for(plan)
    model = plan.method.wrap(model, plan.info)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, split):
            self.d = task.splits[split]

        def __len__(self):
            return len(self.d["labels"])

        def __getitem__(self, i):
            return {k: v[i] for k, v in self.d.items()}

    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    args = TrainingArguments(
        output_dir="/tmp/peftbench-trainer-ref", max_steps=int(config["steps"]), per_device_train_batch_size=int(config["batch_size"]),
        per_device_eval_batch_size=int(config["eval_batch_size"]), learning_rate=plan.lr, weight_decay=float(config["weight_decay"]),
        warmup_steps=int(config["warmup_ratio"] * int(config["steps"])), lr_scheduler_type="linear", max_grad_norm=float(config["grad_clip"]),
        bf16=config["precision"] == "bf16", use_cpu=plan.device.type == "cpu", report_to=[], save_strategy="no",
        logging_strategy="no", dataloader_num_workers=0, seed=int(config["seed"]), disable_tqdm=True,
    )
    optimizer = plan.method.optimizer(model, plan.lr, float(config["weight_decay"]))
    trainer = Trainer(model=model, args=args, train_dataset=Rows("train"), optimizers=(optimizer, None), callbacks=[StepTimes()])
    trainer.train()
    # the same evaluation work as the suite: validation and test splits
    acc = {}
    for split in ("validation", "test"):
        preds = trainer.predict(Rows(split))
        acc[split] = float((torch.tensor(preds.predictions).argmax(-1) == task.splits[split]["labels"]).float().mean())
    warm = int(config["measure"]["warmup_steps"])
    kept = sorted(times[warm:] or times)
    print(json.dumps({"step_time_ms_median": kept[len(kept) // 2] * 1e3, "accuracy": acc, "steps": len(times)}))


if __name__ == "__main__":
    main(sys.argv[1])
