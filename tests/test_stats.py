"""Eval statistics against hand computations and the textbook definitions."""
import itertools
import math

import pytest

from mathlm.eval.stats import majority_vote, mcnemar_exact, pass_at_k, wilson_interval


def _wilson_by_formula(k, n, z):
    p = k / n
    denom = 1 + z ** 2 / n
    center = (p + z ** 2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2)) / denom
    return center - half, center + half


@pytest.mark.parametrize("k,n,want", [
    (45, 100, (0.3561, 0.5475)),  # hand-computed reference
    (0, 10, (0.0, 0.2775)),       # k=0: the interval still has width, unlike p ± z*se
    (10, 10, (0.7225, 1.0)),
    (660, 1319, (0.4735, 0.5273)),  # a GSM8K-test-sized eval
])
def test_wilson_reference_values(k, n, want):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(want[0], abs=1e-4) and hi == pytest.approx(want[1], abs=1e-4)
    assert (lo, hi) == pytest.approx(_wilson_by_formula(k, n, 1.96), abs=1e-12)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(45, 100, z=2.576)  # 99% is wider than 95%
    lo95, hi95 = wilson_interval(45, 100)
    assert lo < lo95 and hi > hi95
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def _mcnemar_by_definition(b, c):
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


@pytest.mark.parametrize("b,c,want", [
    (10, 2, 2 * (1 + 12 + 66) / 4096),  # = 0.0385742..., by hand
    (2, 10, 2 * (1 + 12 + 66) / 4096),  # symmetric
    (0, 0, 1.0),                         # no discordant pairs: no evidence
    (5, 5, 1.0),                         # 2 * P(X <= 5 | n=10) > 1: capped
    (0, 6, 2 / 64),
    (1, 0, 1.0),
])
def test_mcnemar_exact(b, c, want):
    assert mcnemar_exact(b, c) == pytest.approx(want, rel=1e-12)
    assert mcnemar_exact(b, c) == pytest.approx(_mcnemar_by_definition(b, c), rel=1e-12)


def test_mcnemar_big_counts_stay_exact_and_small():
    p = mcnemar_exact(600, 500)
    assert 0 < p < 0.01 and p == pytest.approx(_mcnemar_by_definition(600, 500), rel=1e-9)


def _pass_at_k_by_enumeration(n, c, k):
    """Fraction of all k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(10, 3, 5), (10, 0, 3), (10, 10, 1), (8, 1, 1), (8, 2, 7), (6, 3, 4), (5, 1, 5)])
def test_pass_at_k_matches_combinatorial_definition(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_by_enumeration(n, c, k), abs=1e-12)


def test_pass_at_1_is_the_sample_accuracy():
    assert pass_at_k(200, 37, 1) == pytest.approx(37 / 200)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))  # 0.9166...
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


@pytest.mark.parametrize("answers,want", [
    (["72", "72.0", "8"], "72"),
    (["8", "72", "$72", "8", "72"], "72"),
    (["7", "8"], "7"),                    # tie: first seen
    (["8", "7", "7", "8"], "8"),          # tie: first seen
    ([None, None, "3"], "3"),             # None is not a vote
    (["1/2", "0.5", "0.25"], "0.5"),      # compared by value, returned canonical
    (["x^2", "x^2 ", "2x"], "x^2"),       # non-numbers compared as stripped text
    ([None, None], None),
    ([], None),
])
def test_majority_vote(answers, want):
    assert majority_vote(answers) == want
