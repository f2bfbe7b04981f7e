"""Small statistics for eval reports: how sure is an accuracy, is model A really better than B.

    from mathlm.eval.stats import wilson_interval, mcnemar_exact, pass_at_k, majority_vote
    wilson_interval(45, 100)          # (0.3561, 0.5475): 95% interval for 45/100 correct
    mcnemar_exact(10, 2)              # 0.0386: A right/B wrong on 10 items, the reverse on 2
    pass_at_k(n=10, c=3, k=5)         # 0.9167: P(at least one of 5 drawn of the 10 samples is right)
    majority_vote(["72", "72.0", "8"])  # "72"

Pure functions of counts; exact integer arithmetic where the formula allows it.
"""
import math
from fractions import Fraction

from mathlm.eval.answers import majority_key


def wilson_interval(k, n, z=1.96):
    """Wilson score interval for k successes in n trials (z=1.96: 95%). n=0 → (0, 1): nothing is known.
    Unlike the normal interval it stays inside [0, 1] and is sane at k=0 or k=n."""
    if n == 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k} n={n}")
    p = k / n
    z2 = z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar_exact(b, c):
    """Two-sided exact McNemar p-value on paired results of models A and B on the same items.
    b = items A got right and B wrong, c = the reverse. Under "A and B are equally good" each discordant
    item is a fair coin, so p = 2 * P(Binomial(b+c, 1/2) <= min(b, c)), capped at 1; p = 1 when b+c = 0."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b={b} c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = Fraction(sum(math.comb(n, i) for i in range(min(b, c) + 1)), 2 ** n)  # exact
    return float(min(Fraction(1), 2 * tail))


def pass_at_k(n, c, k):
    """Unbiased pass@k (Chen et al. 2021): n samples drawn per problem, c of them correct.
    1 - C(n-c, k) / C(n, k): the chance that k samples drawn without replacement include a correct one."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)  # int / int: correctly rounded, no overflow


def majority_vote(answers):
    """The most common answer (numbers compared by value: "72", "72.0" and "$72" are one vote), as its
    canonical string; None answers are not votes; ties go to the answer seen first. None if no votes."""
    counts = {}  # dict keeps first-seen order, so max() below breaks ties by first occurrence
    for a in answers:
        key = majority_key(a)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return None
    return max(counts, key=counts.get)
