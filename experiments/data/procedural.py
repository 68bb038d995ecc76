"""A generation task that needs no data files: procedurally generated questions with one exact
answer (conf/task/procedural.yaml), generated from task.data_seed so that every method and every
training seed sees the same examples, and no test question appears in training.

Kinds (task.kinds, mixed in equal parts):
  * weekday: "It is Monday. Go forward 3 days, then back 5 days. What day is it now?" -> Friday.
    Composition of 1..task.max_steps shifts of 1..9 days (modular arithmetic in words).
  * sort: "Sort from smallest to largest: 42, 7, 19, 88" -> "7, 19, 42, 88" (3..task.max_items
    numbers from 1 to 99).
Scored by exact match of the greedy generation (whitespace collapsed). Prompts are
`Question: ...\nAnswer:`; the training target is ` <answer>` then eos.

How the splits are drawn (task.data_draw):
  * per_split (the shipped default): every question belongs to one split by a hash of its text
    (test 1/10 of the question space, validation 1/10, train the rest), and each split is drawn by
    its own generator. The training examples then depend on n_train and data_seed alone: changing
    the validation or test size moves no training example, and the splits are disjoint by
    construction.
  * sequential (records made before per_split; a config without the key): one generator draws
    test, then validation, then train, skipping repeats, so that the training draw moves with the
    held-out sizes. Kept so that those records' configs still give their numbers.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Callable, Mapping

from peftbench.experiments.data.base import task_builder, task_validator
from peftbench.experiments.data.generation import Example, RawGeneration
from peftbench.methods.base import ConfigError

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PROMPT = "Question: {q}\nAnswer:"


def weekday(rng: random.Random, cfg: Mapping[str, Any]) -> tuple[str, str]:
    start = rng.randrange(7)
    shifts = [rng.choice([-1, 1]) * rng.randint(1, 9) for _ in range(rng.randint(1, int(cfg.get("max_steps", 3))))]
    words = [f"{'forward' if s > 0 else 'back'} {abs(s)} day{'s' if abs(s) > 1 else ''}" for s in shifts]
    q = f"It is {DAYS[start]}. Go {', then '.join(words)}. What day is it now?"
    return q, DAYS[(start + sum(shifts)) % 7]


def sort(rng: random.Random, cfg: Mapping[str, Any]) -> tuple[str, str]:
    nums = rng.sample(range(1, 100), rng.randint(3, int(cfg.get("max_items", 5))))
    return f"Sort from smallest to largest: {', '.join(map(str, nums))}", ", ".join(map(str, sorted(nums)))


KINDS: dict[str, Callable[[random.Random, Mapping[str, Any]], tuple[str, str]]] = {"weekday": weekday, "sort": sort}


def _kinds(cfg: Mapping[str, Any]) -> list[str]:
    kinds = cfg.get("kinds") or list(KINDS)
    kinds = [kinds] if isinstance(kinds, str) else [str(k) for k in kinds]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"task.kinds: unknown {unknown}; choose from {sorted(KINDS)}")
    return kinds


@task_validator("procedural")
def validate(cfg: Mapping[str, Any]) -> None:
    _kinds(cfg)
    if cfg.get("data_draw", "sequential") not in ("per_split", "sequential"):
        raise ConfigError(f"task.data_draw must be per_split or sequential, got {cfg.get('data_draw')!r}")
    for key in ("n_train", "n_validation", "n_test", "max_new_tokens", "max_steps", "max_items"):
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"task.{key} must be a positive integer, got {v!r}")
    if cfg["max_items"] < 3:
        raise ConfigError(f"task.max_items must be at least 3, got {cfg['max_items']}")


SLICES = {"test": (0,), "validation": (1,), "train": tuple(range(2, 10))}  # hash(question) % 10 -> split


def slice_of(question: str) -> int:
    return int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % 10


def _draw(rng: random.Random, cfg: Mapping[str, Any], kinds: list[str], split: str, want: int,
          keep: Callable[[str], bool]) -> list[Example]:
    out: list[Example] = []
    seen: set[str] = set()
    tries = 0
    limit = 500 * want + 10_000  # a split keeps about 1 draw in 10 (test, validation) or 8 in 10 (train)
    while len(out) < want:
        tries += 1
        if tries > limit:
            raise ConfigError(f"task {cfg.get('name')}: cannot generate {want} distinct {split} questions; "
                              "lower task.n_* or raise task.max_steps / task.max_items")
        q, a = KINDS[kinds[len(out) % len(kinds)]](rng, cfg)
        if q in seen or not keep(q):
            continue
        seen.add(q)
        out.append(Example(PROMPT.format(q=q), " " + a, a))
    return out


@task_builder("procedural", metrics=("exact_match",))
def procedural(cfg: Mapping[str, Any]) -> RawGeneration:
    kinds = _kinds(cfg)
    seed = int(cfg.get("data_seed", 1234))
    if cfg.get("data_draw") == "per_split":
        splits = {split: _draw(random.Random(f"{seed}:{split}"), cfg, kinds, split, int(cfg[f"n_{split}"]),
                               lambda q, own=SLICES[split]: slice_of(q) in own)
                  for split in ("train", "validation", "test")}
        return RawGeneration(name=str(cfg.get("name", "procedural")), scorer="exact", splits=splits,
                             max_new_tokens=int(cfg["max_new_tokens"]), stop=list(cfg.get("stop") or ["\n"]))
    rng = random.Random(seed)
    kinds, seen = _kinds(cfg), set()
    splits: dict[str, list[Example]] = {}
    # held-out splits first, so that their questions are fixed whatever n_train is
    for split in ("test", "validation", "train"):
        out: list[Example] = []
        want, tries = int(cfg[f"n_{split}"]), 0
        while len(out) < want:
            tries += 1
            if tries > 50 * want + 1000:
                raise ConfigError(f"task {cfg.get('name')}: cannot generate {want} distinct {split} questions; "
                                  "lower task.n_* or raise task.max_steps / task.max_items")
            q, a = KINDS[kinds[len(out) % len(kinds)]](rng, cfg)
            if q in seen:
                continue
            seen.add(q)
            out.append(Example(PROMPT.format(q=q), " " + a, a))
        splits[split] = out
    return RawGeneration(name=str(cfg.get("name", "procedural")), scorer="exact", splits=splits,
                         max_new_tokens=int(cfg["max_new_tokens"]), stop=list(cfg.get("stop") or ["\n"]))
