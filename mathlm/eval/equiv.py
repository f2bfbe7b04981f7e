"""When two answers are equal: numbers as a grader reads them, expressions by a stated numerical rule.

    from mathlm.eval.equiv import exprs_equivalent, read_number, answers_match
    exprs_equivalent("2x\\cos(x^{2})", "2*x*cos(x^2)")                            # True
    exprs_equivalent("\\ln|x| + C", "\\ln x", up_to_constant=True)              # True
    exprs_equivalent("10^{40}", "x^3/3", up_to_constant=True)                   # False
    read_number("2\\cdot10^{3}"), read_number("5-3"), read_number("72/1.0000001")  # 2000, 2, not 72

The rule. Both sides are parsed by mathlm.eval.safe_math (model text never reaches sympify or
eval). Two constants that are both exact rationals (numbers, + * and integer powers) compare
exactly. Otherwise every variable is sampled at 16 fixed points that cover both signs and four
magnitude bands (0.1-0.5, 0.5-2, 2-6, 6-20), each variable on its own shuffle, and the pred p
matches the gold g when |p − g| ≤ 1e-40 · max(1, |g|) at every point where both have a finite
value, with at least 6 such points: a relative tolerance against the gold, with the gold's unit
scale as the absolute floor — never the pred's size, so a huge pred cannot widen it. Values are
principal-branch complex numbers (√(x−3) is compared for x < 3 too); a point where the gold is not
real but the pred is, is skipped: the pred must match the gold wherever the gold is real, but need
not share its branch convention elsewhere (∛(x²) for x^{2/3}, ln(x²) for 2 ln x). An
antiderivative (up_to_constant) is compared through its partial derivatives, central differences
at each point, by the same test, so any added constant — 10^{40}, e^{99}, a different one on each
side of a pole, the iπ between ln x and ln|x| — cancels and cannot dominate; two constants are
still compared as values. Every nonzero value inside the pred and the
gold must lie within [1e-30, 1e30] in magnitude (safe_math's window): 10^{40}, e^{-100} and
tan(π/2) are not answers, and no admissible constant is small enough to hide under the 1e-40
tolerance, which is also tighter than any 30-digit literal (MAX_DIGITS) can approximate π.
Arithmetic is 100-digit mpmath, so cancellation and the derivative step (h = 1e-30·|x|) leave
errors far below the tolerance. Numbers (read_number): a plain number or number words first (see
mathlm.eval.extract), else the value of a constant expression by the same parser and window — exact
when rational, else rounded to 40 significant digits — so 5-3 is 2, 72e-3 is 0.072, 0^{-1} and log 0
are no number. Time is bounded (a deadline, default 1 s); nothing prints, writes or raises.
"""
import functools
import random
import re
import time
from fractions import Fraction

from mathlm.eval.extract import canonical, numbers_equal, plain_number
from mathlm.eval.safe_math import Invalid, evaluate, exact_value, mp_context, parse_math

TOL = 1e-40                 # relative to the gold, floor 1 (its unit scale); 100-digit arithmetic leaves ~1e-60
MIN_POINTS = 6              # of the 16: fewer valid points is "not shown equal"
_BANDS = ((0.1, 0.5), (0.5, 2.0), (2.0, 6.0), (6.0, 20.0))
_CELLS = [(sign, band) for sign in (1, -1) for band in _BANDS for _ in range(2)]  # 16 (sign, band) cells
_H = 1e-30                  # derivative step, times max(1, |x|)


def _drop_constant(s):
    """"x^3/3 + C" → "x^3/3"; "C + x^3/3" → "x^3/3"."""
    s = re.sub(r"\+\s*C\s*\.?\s*$", "", s.strip())
    return re.sub(r"^\s*C\s*\+", "", s)


def _points(symbols):
    """16 points {Symbol: mpf}: each variable visits every (sign, band) cell twice, in its own seeded order,
    so |x| ≠ x is seen and x, y are not always of one sign together. Fixed: the same answer, the same reward."""
    mp, rng = mp_context(), random.Random(1234)
    columns = []
    for _ in symbols:
        cells = list(_CELLS)
        if columns:
            rng.shuffle(cells)
        columns.append([mp.mpf(sign * rng.uniform(*band)) for sign, band in cells])
    return [{s: col[k] for s, col in zip(symbols, columns)} for k in range(len(_CELLS))]


def _in_window(node, deadline):
    """Every constant subtree of node evaluates inside safe_math's WINDOW (or to 0)."""
    if node.free_symbols:
        return all(_in_window(a, deadline) for a in node.args)
    try:
        evaluate(node, {}, deadline, window=True)
        return True
    except Invalid:
        return False


def _gradient(node, env, symbols, deadline):
    """Partial derivatives of node at env by central differences, one per symbol."""
    out = []
    for s in symbols:
        h = _H * max(1, abs(env[s]))
        up, down = dict(env), dict(env)
        up[s], down[s] = env[s] + h, env[s] - h
        out.append((evaluate(node, up, deadline) - evaluate(node, down, deadline)) / (2 * h))
    return out


def _real(v):
    return abs(v.imag) <= TOL * max(1, abs(v))


def _agree(p, g):
    """True/False: the values match or not; None: skip this point — the gold is not real there but the
    pred is, so the gold's principal branch is a convention the pred need not share (x^{2/3} vs ∛(x²))."""
    if not _real(g) and _real(p):
        return None
    return abs(p - g) <= TOL * max(1, abs(g))


def exprs_equivalent(a, b, timeout=1.0, up_to_constant=False):
    """True when pred a matches gold b by the module's rule (up_to_constant: as antiderivatives); False
    when they differ, either is unreadable, or time runs out."""
    deadline = time.perf_counter() + timeout
    try:
        if up_to_constant and isinstance(a, str) and isinstance(b, str):
            a, b = _drop_constant(a), _drop_constant(b)
        ea, eb = parse_math(a), parse_math(b)
        if ea is None or eb is None:
            return False
        symbols = sorted(ea.free_symbols | eb.free_symbols, key=str)
        if not symbols:
            # two constants: compared as values even with up_to_constant, or "0" would be the
            # antiderivative of everything whose gold happens to be a constant
            up_to_constant = False
            xa, xb = exact_value(ea), exact_value(eb)
            if xa is not None and xb is not None:
                return xa == xb
        if not (_in_window(ea, deadline) and _in_window(eb, deadline)):
            return False
        valid = 0
        for env in (_points(symbols) if symbols else [{}]):
            try:
                if up_to_constant:
                    pairs = zip(_gradient(ea, env, symbols, deadline), _gradient(eb, env, symbols, deadline))
                else:
                    pairs = [(evaluate(ea, env, deadline), evaluate(eb, env, deadline))]
                pairs = list(pairs)
            except Invalid:
                if time.perf_counter() > deadline:
                    return False
                continue
            verdicts = [_agree(p, g) for p, g in pairs]
            if False in verdicts:
                return False
            valid += None not in verdicts
        return valid >= (MIN_POINTS if symbols else 1)
    except Exception:  # noqa: BLE001 — untrusted input: any failure means "not shown equal"
        return False


def read_number(s, timeout=0.5):
    """An answer string → its value as a Fraction, as a grader reads it, or None. A plain number, unit
    words or number words first ("$1,234.50", "72 clips", "twenty-five"); else a constant expression
    ("5-3", "2\\cdot10^{3}", "1.5e3", "\\log_2 8"): exact when rational, else rounded to 40 significant
    digits; None when it has a variable, no finite real value, or a constant outside the window."""
    f = plain_number(s)
    if f is not None or not isinstance(s, str):
        return f
    deadline = time.perf_counter() + timeout
    try:
        node = parse_math(s)
        if node is None or node.free_symbols:
            return None
        f = exact_value(node)
        if f is not None:
            return f
        v = evaluate(node, {}, deadline, window=True)
        mp = mp_context()
        if mp.im(v) != 0:
            return None
        return Fraction(mp.nstr(mp.re(v), 40))  # Fraction reads "1.5e-05" too
    except Exception:  # noqa: BLE001 — untrusted input
        return None


def _normalize_text(s):
    return re.sub(r"\s+", "", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")


def answers_match(pred, gold, up_to_constant=False):
    """Two final-answer strings: equal as numbers, else equivalent expressions, else (for answers the
    grammar does not cover, like "(1, 2)") equal after whitespace is removed."""
    if not isinstance(pred, str) or not isinstance(gold, str) or len(pred) > 1000:
        return False
    return _answers_match(pred, gold, bool(up_to_constant))


@functools.lru_cache(maxsize=8192)
def _answers_match(pred, gold, up_to_constant):
    """answers_match on two strings, remembered: the verdict is a function of them (fixed points, fixed
    precision), and a GRPO group's samples mostly end on the same answer, whose check (16 points of
    100-digit arithmetic, central differences for an antiderivative) is repeated: scoring one tiny GRPO
    rollout round of 320 completions took 714 ms unremembered, 132 ms remembered (bench/bench_grpo_step)."""
    if not up_to_constant and numbers_equal(pred, gold):
        return True
    if exprs_equivalent(pred, gold, up_to_constant=up_to_constant):
        return True
    return bool(pred.strip()) and _normalize_text(pred) == _normalize_text(gold)


def canonical_number(s):
    """read_number's value as normalize_number's canonical string, or None."""
    f = read_number(s)
    return None if f is None else canonical(f)
