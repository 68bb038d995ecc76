"""Metrics and statistics come from sklearn, numpy, scipy and rouge_score: each wrapper here is
checked against the library (and against a value worked by hand, so a wrong call to the right
library fails too)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import f1_score

from peftbench.experiments import meters
from peftbench.experiments.data.base import _binary_f1, _macro_f1


def test_macro_and_binary_f1_match_sklearn():
    gold = torch.tensor([0, 0, 1, 1, 2, 2, 1, 0])
    pred = torch.tensor([0, 1, 1, 1, 2, 0, 0, 0])
    # by hand: class 0 tp2 fp2 fn1 -> 4/7; class 1 tp2 fp1 fn1 -> 4/6; class 2 tp1 fp0 fn1 -> 2/3
    assert _macro_f1(pred, gold, 3) == pytest.approx((4 / 7 + 4 / 6 + 2 / 3) / 3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        g, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
        assert _macro_f1(torch.tensor(p), torch.tensor(g), 5) == pytest.approx(f1_score(g, p, labels=sorted(set(g) | set(p)), average="macro"))
        gb, pb = g % 2, p % 2
        assert _binary_f1(torch.tensor(pb), torch.tensor(gb)) == pytest.approx(f1_score(gb, pb))
    assert _binary_f1(torch.tensor([0, 0]), torch.tensor([0, 0])) == 0.0  # no positives anywhere: 0, not a warning


def test_spread_is_numpy_percentile():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0]
    s = meters.spread(xs)
    assert (s["p10"], s["median"], s["p90"]) == tuple(np.percentile(xs, [10, 50, 90]))
    assert s["median"] == 4.0 and s["p10"] == pytest.approx(1.6)


def test_median_ci_is_the_exact_order_statistic_interval():
    rng = np.random.default_rng(1)
    for n in (6, 11, 20, 40):
        xs = list(rng.normal(10, 1, n))
        lo, hi = meters.median_ci(xs)
        ci = stats.quantile_test(np.asarray(xs), p=0.5).confidence_interval(0.95)
        assert (lo, hi) == (ci.low, ci.high)
        # the interval [x(j), x(k)] covers the median with probability >= 95% (binomial count of
        # values below the median), which the old normal approximation did not guarantee
        s = sorted(xs)
        j, k = s.index(lo) + 1, s.index(hi) + 1
        coverage = stats.binom.cdf(k - 1, n, 0.5) - stats.binom.cdf(j - 1, n, 0.5)
        assert coverage >= 0.95, (n, coverage)
    # too few repeats for 95%: the widest interval the data allow, never NaN
    assert meters.median_ci([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)
    assert meters.latency_summary([3.0, 1.0, 2.0, 5.0, 4.0])["noise_rel"] == pytest.approx(4 / 3)
