"""A paired bootstrap over seeds and test items: the interval of a comparison of two methods that
counts both sources of noise, where a t interval over seed means counts only one.

Each record keeps its per-item test outcomes (experiments/outcomes.py). Two runs that scored the
same test set (the same item digest) pair item by item. One bootstrap replicate draws seeds with
replacement (the seeds both methods share), then test items with replacement (the same items for
both methods, as the test set is shared), and recomputes the statistic from the drawn items of the
drawn seeds. The interval is the replicates' 2.5th and 97.5th percentiles; it stays inside the
statistic's range because every replicate is a value the statistic can take.

Decisions read the replicates directly: the evidence holds at level 0.05 when fewer than 2.5% of
the replicates fall outside the region on either side, the same rule as reading the 95% interval,
and the p-values `p_holds` / `p_fails` (twice the tail beyond the nearest bound) are what Holm's
correction adjusts (analysis.verdicts).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

REPLICATES = 4000
SEED = 20261206  # the bootstrap's own generator: never the training's, never numpy's global one


def outcomes_of(runs: Any, metric: str) -> dict[int, tuple[str, np.ndarray]] | None:
    """{seed: (item digest, per-item outcomes)} of a configuration's runs at one lr, or None when a
    run keeps no outcomes (records from before they were kept) or keeps those of another metric."""
    from peftbench.experiments.outcomes import decode

    out = {}
    for seed, entry in zip(runs["seed"], runs.get("items.test", [None] * len(runs))):
        if not isinstance(entry, Mapping) or "n" not in entry or entry.get("metric") != metric:
            return None
        out[int(seed)] = (str(entry.get("digest")), decode(entry))
    return out or None


def paired(a: Mapping[int, tuple[str, np.ndarray]], b: Mapping[int, tuple[str, np.ndarray]]) -> tuple[list[int], np.ndarray, np.ndarray] | None:
    """The shared seeds and their outcome matrices (seeds x items), or None when the two sides did
    not score one and the same test set."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    digests = {a[s][0] for s in seeds} | {b[s][0] for s in seeds}
    sizes = {len(a[s][1]) for s in seeds} | {len(b[s][1]) for s in seeds}
    if len(digests) != 1 or len(sizes) != 1:
        return None
    return seeds, np.stack([a[s][1] for s in seeds]), np.stack([b[s][1] for s in seeds])


DIFF: Callable[[np.ndarray, np.ndarray], np.ndarray] = lambda x, y: x - y  # noqa: E731
RATIO: Callable[[np.ndarray, np.ndarray], np.ndarray] = lambda x, y: np.divide(x, y, out=np.full_like(x, np.nan), where=y != 0)  # noqa: E731


def replicate(xa: np.ndarray, xb: np.ndarray, stat: Callable[[np.ndarray, np.ndarray], np.ndarray],
              replicates: int = REPLICATES) -> np.ndarray:
    """`stat(mean of a, mean of b)` over `replicates` draws of seeds, then of items."""
    rng = np.random.default_rng(SEED)
    k, n = xa.shape
    out = np.empty(replicates)
    for r in range(replicates):
        seeds = rng.integers(0, k, size=k)
        items = rng.integers(0, n, size=n)
        out[r] = stat(np.array([xa[seeds][:, items].mean()]), np.array([xb[seeds][:, items].mean()]))[0]
    return out


def summary(estimate: float, reps: np.ndarray, region: tuple[float, float], n_seeds: int, n_items: int) -> dict[str, Any]:
    """Estimate, percentile 95% interval, and the two decision p-values against `region`."""
    reps = reps[~np.isnan(reps)]
    if len(reps) == 0:
        return {"estimate": estimate, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "n": float(n_seeds)}
    lo, hi = region

    def tail_beyond(bound: float, below: bool) -> float:
        return float(np.mean(reps < bound) if below else np.mean(reps > bound))

    inside = [2 * tail_beyond(lo, True)] if math.isfinite(lo) else []
    inside += [2 * tail_beyond(hi, False)] if math.isfinite(hi) else []
    outside = [2 * tail_beyond(lo, False)] if math.isfinite(lo) else []
    outside += [2 * tail_beyond(hi, True)] if math.isfinite(hi) else []
    # (count + 1) / (B + 1): a bootstrap p-value is never 0, and Holm can multiply it
    floor = 2.0 / (len(reps) + 1)
    return {"estimate": estimate, "ci_low": float(np.percentile(reps, 2.5)), "ci_high": float(np.percentile(reps, 97.5)),
            "p": math.nan, "n": float(n_seeds), "items": float(n_items), "interval": "bootstrap",
            "se": float(np.std(reps, ddof=1)), "p_holds": min(1.0, max(floor, max(inside) if inside else 0.0)),
            "p_fails": min(1.0, max(floor, min(outside) if outside else 1.0))}


# Resampling few seeds understates their spread (3 seeds give 10 distinct draws and no t penalty):
# below this the t interval over seeds decides.
MIN_SEEDS = 8


def compare(a: Mapping[int, tuple[str, np.ndarray]], b: Mapping[int, tuple[str, np.ndarray]], region: tuple[float, float],
            ratio: bool = False, sign: float = 1.0) -> dict[str, Any] | None:
    """The paired bootstrap of a's mean over b's (ratio) or of their difference, oriented by `sign`
    (+1: higher is better), against `region`; None when the two sides do not pair item by item, or
    share fewer than MIN_SEEDS seeds."""
    pair = paired(a, b)
    if pair is None or len(pair[0]) < MIN_SEEDS:
        return None
    seeds, xa, xb = pair
    if ratio:
        stat = RATIO if sign > 0 else (lambda x, y: RATIO(y, x))
    else:
        stat = lambda x, y: sign * DIFF(x, y)  # noqa: E731
    estimate = float(stat(np.array([xa.mean()]), np.array([xb.mean()]))[0])
    return summary(estimate, replicate(xa, xb, stat), region, len(seeds), xa.shape[1])
