"""Data of the project's own lm-eval task `peftbench_arith` (peftbench_arith.yaml).

Every question is made here from numbers and a fixed sentence pattern: no third-party text.
`rows()` is deterministic; peftbench_arith.jsonl holds its output (regenerate with
`python conf/lm_eval_tasks/peftbench_utils.py`), and a test checks that the two agree.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "peftbench_arith.jsonl"
OPS = [("plus", lambda a, b: a + b), ("minus", lambda a, b: a - b), ("times", lambda a, b: a * b)]


def rows(n: int = 40, seed: int = 6) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        word, fn = OPS[i % len(OPS)]
        a, b = rng.randint(2, 19), rng.randint(2, 9)
        right = fn(a, b)
        wrong = set()
        while len(wrong) < 3:
            w = right + rng.choice([-3, -2, -1, 1, 2, 3, 10, -10])
            if w != right:
                wrong.add(w)
        choices = [str(x) for x in sorted(wrong | {right})]
        out.append({"question": f"What is {a} {word} {b}?", "choices": choices, "answer": choices.index(str(right))})
    return out


def load(**kwargs):
    """lm-eval `custom_dataset`: the JSONL beside this file, as a DatasetDict with a test split."""
    import datasets

    return datasets.load_dataset("json", data_files={"test": str(DATA)})


if __name__ == "__main__":
    DATA.write_text("".join(json.dumps(r) + "\n" for r in rows()))
