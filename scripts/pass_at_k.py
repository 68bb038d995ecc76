"""How often a model's sampled completions solve a generation task before any training, the
figure that says whether GRPO has a signal to learn from (a group of completions all wrong or all
right carries none): `python scripts/pass_at_k.py [OVERRIDES...]`, e.g. model=smollm2-135m
task=procedural. Samples objective.num_generations completions of each validation prompt at
objective.temperature, rewards each by the task's own score (experiments/grpo.py), and prints
pass@1 (mean reward), pass@k (a prompt with at least one correct completion) and the share of
groups with a spread: for the procedural task, weekday questions and the rest apart (its answers
say which), then all together.
"""
from __future__ import annotations

import sys
import torch


def main(overrides: list[str]) -> None:
    from peftbench.experiments.bench import compose_config
    from peftbench.experiments.data.procedural import DAYS
    from peftbench.experiments.grpo import reward_function
    from peftbench.experiments.quiet import quiet
    from peftbench.experiments.run import load_for, prepare, seed_everything

    quiet()
    cfg = compose_config(["objective=grpo", "precision=fp32", *overrides])
    plan = prepare(cfg)
    seed_everything(int(cfg["seed"]))
    tok, task, model = load_for(plan)
    model.eval()
    o = cfg["objective"]
    k, reward = int(o["num_generations"]), reward_function(task, 0.0, tok.eos_token_id)
    rows = []
    for ex in task.examples["validation"]:
        ids = tok(ex.prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, do_sample=True, temperature=float(o["temperature"]), top_p=1.0, top_k=0,
                                 max_new_tokens=int(o["max_completion_length"]), num_return_sequences=k,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(out[:, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        r = reward([ex.prompt] * k, texts, [ex.reference] * k)  # trl's decoding: no special tokens
        kind = "weekday" if ex.reference in DAYS else "other"
        rows.append((kind, sum(r) / k, max(r) > 0, min(r) != max(r)))
    print(f"{cfg['model']['name']} on {cfg['task']['name']}: {len(rows)} validation prompts x {k} completions, "
          f"temperature {o['temperature']}, {o['max_completion_length']} tokens")
    for kind in sorted({r[0] for r in rows}) + ["all"]:
        sel = [r for r in rows if kind in ("all", r[0])]
        print(f"  {kind:8s} n={len(sel):3d}  pass@1 {100 * sum(r[1] for r in sel) / len(sel):5.1f}%  "
              f"pass@{k} {100 * sum(r[2] for r in sel) / len(sel):5.1f}%  groups with a spread {100 * sum(r[3] for r in sel) / len(sel):5.1f}%")


if __name__ == "__main__":
    main(sys.argv[1:])
