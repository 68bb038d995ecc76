"""The built-in task: compositional sentiment, generated deterministically from a seed.

Every sentence is made here from small word lists; the repository holds no third-party text.
The label depends on composition, not on bag-of-words: negation and "i doubt that" flip a
clause, "but" keeps the second clause, "although" keeps the first, and "and"/"while" give
"mixed" when the clauses disagree. A frozen encoder with a linear head sees the words but not
their scope, so it scores clearly below fine-tuning. Label noise is applied to the training split
only: validation and test labels are the rule's, so test accuracy measures what was learned.
"""
from __future__ import annotations

import random
from typing import Any, Mapping

from peftbench.experiments.data.base import RawClassification, task_builder

SUBJECTS = ["the food", "the service", "the movie", "the plot", "the staff", "the hotel", "the room",
            "the music", "the ending", "the price", "the app", "the battery", "the screen", "the team",
            "the game", "the book", "the trip", "the coffee", "the lecture", "the design"]
POSITIVE = ["good", "great", "excellent", "wonderful", "pleasant", "superb", "lovely", "brilliant",
            "delightful", "fantastic", "charming", "solid"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "dreadful", "boring", "bland", "horrible",
            "disappointing", "mediocre", "clumsy", "weak"]
VERBS = ["was", "is", "seemed", "felt"]
NEGATORS = ["not", "never", "hardly"]
INTENSIFIERS = ["", "", "very", "really", "quite", "rather", "truly"]
LABELS = ["negative", "positive", "mixed"]


def _clause(rng: random.Random) -> tuple[str, int]:
    positive = rng.random() < 0.5
    adjective = rng.choice(POSITIVE if positive else NEGATIVE)
    polarity = 1 if positive else -1
    words = [rng.choice(SUBJECTS), rng.choice(VERBS)]
    if rng.random() < 0.4:
        words.append(rng.choice(NEGATORS))
        polarity = -polarity
    intensifier = rng.choice(INTENSIFIERS)
    if intensifier:
        words.append(intensifier)
    words.append(adjective)
    if rng.random() < 0.15:
        words.insert(0, "i doubt that")
        polarity = -polarity
    return " ".join(words), polarity


def _label(polarity: int) -> int:
    return 1 if polarity > 0 else 0


def _example(rng: random.Random) -> tuple[str, int]:
    text1, p1 = _clause(rng)
    form = rng.random()
    if form < 0.2:
        return text1, _label(p1)
    text2, p2 = _clause(rng)
    if form < 0.45:
        return f"{text1} but {text2}", _label(p2)
    if form < 0.65:
        return f"{text1} although {text2}", _label(p1)
    connector = "and" if form < 0.85 else "while"
    return f"{text1} {connector} {text2}", _label(p1) if p1 == p2 else 2


def generate(n: int, rng: random.Random, seen: set[str], label_noise: float) -> tuple[list[tuple[str]], list[int]]:
    texts, labels = [], []
    while len(texts) < n:
        text, label = _example(rng)
        if text in seen:
            continue
        seen.add(text)
        if rng.random() < label_noise:
            label = rng.choice([x for x in range(len(LABELS)) if x != label])
        texts.append((text,))
        labels.append(label)
    return texts, labels


@task_builder("synthetic_sentiment")
def synthetic_sentiment(cfg: Mapping[str, Any]) -> RawClassification:
    rng = random.Random(int(cfg.get("data_seed", 1234)))
    seen: set[str] = set()
    noise = float(cfg.get("label_noise", 0.05))
    splits = {split: generate(int(cfg[f"n_{split}"]), rng, seen, noise if split == "train" else 0.0)
              for split in ("train", "validation", "test")}
    return RawClassification(label_names=list(LABELS), splits=splits)
