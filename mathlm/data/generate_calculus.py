"""Synthetic calculus Q/A pairs: derivatives and integrals with short worked solutions,
every answer checked with sympy before it is kept.

    python -m mathlm.data.generate_calculus                      # 12,000 train + 500 test, then tokenize
    python -m mathlm.data.generate_calculus --preset tiny --text_only   # 2,000 + 200, text only

Reads:  math_tokenizer/ (unless --text_only)
Writes: calculus.jsonl, calculus_test.jsonl (one JSON object per line, keys sorted)
        + calculus.bin / .meta.json / .idx.npy (unless --text_only), all through
        mathlm.data.qa_io.write_qa_dataset, which also drops train pairs overlapping any
        *_test.jsonl already in out_dir (GSM8K, MATH)

Topics (one eighth each): power_rule, chain_rule, product_rule, quotient_rule, trig, exp_log,
indefinite_integral, definite_integral. Each record:
    question  one of several phrasings per topic; the expression is written in the answer syntax
    answer    1-4 lines of worked solution, last line "#### <final>"
    final     the string after "#### "
    kind      how to check it: "expr" (equal as expressions), "antiderivative" (its derivative equals
              the integrand; finals carry no "+ C", the line above says it), "number" (exact rational)
    topic, var (the variable letter), params ({"f": expression[, "a", "b": bounds]}; each string
              appears verbatim in the question, so a checker can recompute from it)
Answer syntax (what `final` and the question expressions use): sympy's str with `^` for powers,
explicit `*`, functions sin cos tan exp log sqrt, constants pi; numbers are integers or a/b.
Read it back with sympy.parse_expr(s.replace("^", "**")) — only on trusted text like this file's.

Deterministic: one random.Random(seed) drives everything; sympy printing is canonical.
Questions are unique by their maths (the expression with the variable renamed to x), so the
held-out split cannot hold the same problem phrased differently.
"""
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import sympy as sp
from sympy.printing.str import StrPrinter

from mathlm.common import die, parse_config


@dataclass
class Config:
    n: int = 12000                  # train pairs
    n_test: int = 500               # held-out test pairs (no question shared with train)
    seed: int = 1234                # drives generation and the train/test split
    out_dir: str = "."              # where calculus.jsonl, calculus_test.jsonl (and .bin) go
    text_only: bool = False         # write the jsonl only; no tokenizer needed
    tokenizer: str = "math_tokenizer"  # tokenizer folder (not needed with --text_only)


PRESETS = {"tiny": dict(n=2000, n_test=200)}
NAME = "calculus"
TOPICS = ["power_rule", "chain_rule", "product_rule", "quotient_rule", "trig", "exp_log",
          "indefinite_integral", "definite_integral"]

# -----------------------------------------------------------------------------
# printing: the one answer syntax


class _Printer(StrPrinter):
    def _print_Pow(self, expr, rational=False):
        # sympy writes a lone x**-2 as x**(-2); 1/x^2 is what people (and the model) write
        if expr.exp.is_Rational and expr.exp.is_negative and expr.exp != -1:
            return "1/" + self.parenthesize(sp.Pow(expr.base, -expr.exp), 50)
        return super()._print_Pow(expr, rational)

    def _print_Exp1(self, expr):
        return "exp(1)"   # not sympy's E: one spelling of e, and a parser needs no constant names


_PRINTER = _Printer()


def fmt(e):
    """sympy expression → answer syntax: 6*x^2 + cos(x), (3*x + 1)^4, 1/x^2."""
    return _PRINTER.doprint(e).replace("**", "^")


def paren(s):
    """Wrap a printed expression in parentheses when it is a sum, so `s * 3` reads right."""
    return f"({s})" if (" + " in s or " - " in s or s.startswith("-")) else s


def fmt_num(q):
    """Exact rational → '5', '-7/3'."""
    q = Fraction(q)
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def to_x(s, v):
    """The expression with its variable renamed to x: the dedup key of a problem."""
    return s if v == "x" else re.sub(rf"\b{v}\b", "x", s)


# -----------------------------------------------------------------------------
# verification: independent of the rule code that produced the answer

_POINTS = [sp.Rational(7, 10), sp.Rational(13, 10), sp.Rational(29, 10)]  # x > 0: log and sqrt are real


def same(a, b, v):
    """a == b as functions of v, checked at three points to 30 digits."""
    d = a - b
    if d == 0:
        return True
    for p in _POINTS:
        val = sp.N(d.subs(v, p), 30)
        if not val.is_number or val.has(sp.zoo, sp.nan) or abs(val) > 1e-20:
            return False
    return True


def quad_equals(f, v, lo, hi, val):
    """∫_lo^hi f dv == val, by sympy for polynomials and by 30-digit mpmath quadrature
    otherwise (sympy.integrate takes ~0.1 s on exp/trig integrands: minutes over 12k pairs)."""
    if f.is_polynomial(v):
        F = sp.Poly(f, v).integrate()
        return F.eval(hi) - F.eval(lo) == val
    import mpmath
    with mpmath.workdps(30):
        q = mpmath.quad(sp.lambdify(v, f, "mpmath"), [sp.N(lo, 30), sp.N(hi, 30)])
        return abs(q - mpmath.mpf(val.p) / val.q) < mpmath.mpf(10) ** -20


# -----------------------------------------------------------------------------
# atoms: a*x^n, a*sin(b*x), ... with their derivative and antiderivative written by rule
# (not by sympy.diff / integrate, which are used only to check them)

def atom(kind, a, b, v):
    """(expr, derivative, antiderivative or None) of one term."""
    a, b = sp.Integer(a) if isinstance(a, int) else a, sp.Integer(b) if isinstance(b, int) else b
    if kind == "pow":    # a*v^b
        anti = a * sp.log(v) if b == -1 else a * v ** (b + 1) / (b + 1)
        return a * v ** b, a * b * v ** (b - 1), anti
    if kind == "sin":
        return a * sp.sin(b * v), a * b * sp.cos(b * v), -a / b * sp.cos(b * v)
    if kind == "cos":
        return a * sp.cos(b * v), -a * b * sp.sin(b * v), a / b * sp.sin(b * v)
    if kind == "tan":
        return a * sp.tan(b * v), a * b / sp.cos(b * v) ** 2, None
    if kind == "exp":
        return a * sp.exp(b * v), a * b * sp.exp(b * v), a / b * sp.exp(b * v)
    if kind == "log":    # a*log(b*v): the b drops out of the derivative
        return a * sp.log(b * v), a / v, None
    if kind == "logpow":  # a*log(v^b)
        return a * sp.log(v ** b), a * b / v, None
    if kind == "base":   # a*b^v
        return a * b ** v, a * b ** v * sp.log(b), a * b ** v / sp.log(b)
    raise ValueError(kind)


def nz(rng, lo, hi):
    """A random non-zero integer in [lo, hi]."""
    while True:
        k = rng.randint(lo, hi)
        if k:
            return k


def coef(rng):
    """Mostly 1, sometimes a small integer: the coefficient in front of a composite term."""
    return rng.choice([1, 1, 1, 1, 2, 3, 4, 5, -1, -2, -3])


def pick_var(rng):
    return rng.choice(["x"] * 7 + ["t", "t", "u"])


def sub_name(v):
    """The substitution letter: u, or w when the variable is itself u."""
    return "w" if str(v) == "u" else "u"


def term_lines(atoms, v):
    """'d/dx(3*x^4) = 12*x^3, d/dx(5) = 0' for a term-by-term solution."""
    return ", ".join(f"d/d{v}({fmt(e)}) = {fmt(d)}" for e, d, _ in atoms)


def poly_atoms(rng, v, n_terms, max_deg=5, allow_neg=False):
    degs = sorted(rng.sample(range(0, max_deg + 1), n_terms), reverse=True)
    if allow_neg and rng.random() < 0.25:
        degs[-1] = -rng.randint(1, 3)
    if all(d == 0 for d in degs):
        degs[0] = 1
    return [atom("pow", nz(rng, -9, 9), d, v) for d in degs]


# -----------------------------------------------------------------------------
# question phrasings (≥ 3 per topic; the expression always appears verbatim)

DIFF_Q = [
    "Differentiate {fn}({v}) = {e}.",
    "What is the derivative of {e} with respect to {v}?",
    "Find d/d{v} of {e}.",
    "Let {fn}({v}) = {e}. Find {fn}'({v}).",
    "If y = {e}, what is dy/d{v}?",
    "Compute the derivative of {fn}({v}) = {e}.",
]
RULE_Q = ["Use the {rule} to differentiate {fn}({v}) = {e}.",
          "Using the {rule}, find the derivative of {e} with respect to {v}."]
INDEF_Q = [
    "Find the indefinite integral ∫ ({e}) d{v}.",
    "Integrate {e} with respect to {v}.",
    "Find an antiderivative of {fn}({v}) = {e}.",
    "What is ∫ ({e}) d{v}?",
    "Compute ∫ {pe} d{v}.",
]
DEF_Q = [
    "Evaluate the integral of {e} from {v} = {a} to {v} = {b}.",
    "Compute ∫ ({e}) d{v} from {a} to {b}.",
    "What is the definite integral of {fn}({v}) = {e} over [{a}, {b}]?",
    "Find the value of ∫ {pe} d{v} with lower limit {a} and upper limit {b}.",
]


def diff_question(rng, e, v, rule=None):
    fn = rng.choice(["f", "f", "g", "h"])
    pool = DIFF_Q + (RULE_Q if rule else [])
    return rng.choice(pool).format(fn=fn, v=v, e=fmt(e), rule=rule)


# -----------------------------------------------------------------------------
# derivative topics: each returns (question, answer lines, expression, claimed derivative)

def gen_power_rule(rng, v):
    atoms = poly_atoms(rng, v, rng.randint(2, 4), allow_neg=True)
    if rng.random() < 0.15:  # a root term: a*sqrt(x) → a/(2*sqrt(x))
        a = nz(rng, -6, 6)
        atoms.append((a * sp.sqrt(v), sp.Rational(a, 2) / sp.sqrt(v), None))
    e = sp.Add(*[t[0] for t in atoms])
    d = sp.Add(*[t[1] for t in atoms])
    lines = [f"Power rule d/d{v}(a*{v}^n) = n*a*{v}^(n-1), term by term: {term_lines(atoms, v)}."]
    return diff_question(rng, e, v, "power rule"), lines, e, d


OUTERS = ["pow", "pow", "sin", "cos", "exp", "log", "sqrt"]


def outer_fn(name, n, u):
    """(outer(u), outer'(u))."""
    if name == "pow":
        return u ** n, n * u ** (n - 1)
    if name == "sin":
        return sp.sin(u), sp.cos(u)
    if name == "cos":
        return sp.cos(u), -sp.sin(u)
    if name == "exp":
        return sp.exp(u), sp.exp(u)
    if name == "log":
        return sp.log(u), 1 / u
    if name == "sqrt":
        return sp.sqrt(u), 1 / (2 * sp.sqrt(u))
    raise ValueError(name)


def inner_fn(rng, v, positive, monomial_derivative=False):
    """(inner, inner') with a non-trivial inside: a*v + b, a*v^2 + b, a*v^3 + b, v^2 + b*v."""
    lo = 1 if positive else -5
    m = rng.choice([1, 1, 2, 2, 3] + ([] if monomial_derivative else [4]))
    if m == 4:  # v^2 + b*v (+ c)
        b, c = rng.randint(1, 5), rng.randint(1 if positive else -4, 4)
        return v ** 2 + b * v + c, 2 * v + b
    a = rng.randint(1, 5) if positive else nz(rng, -3, 5)
    b = nz(rng, lo, 5)
    return a * v ** m + b, a * m * v ** (m - 1)


def gen_chain_rule(rng, v):
    name = rng.choice(OUTERS)
    n = rng.randint(2, 5)
    inner, dinner = inner_fn(rng, v, positive=name in ("log", "sqrt"))
    c = coef(rng)
    u = sp.Symbol(sub_name(v))
    f_u, df_u = outer_fn(name, n, u)
    e = c * f_u.subs(u, inner)
    d = c * df_u.subs(u, inner) * dinner
    un = sub_name(v)
    lines = [f"Let {un} = {fmt(inner)}, so d{un}/d{v} = {fmt(dinner)}. "
             f"Then d/d{un}({fmt(c * f_u)}) = {fmt(c * df_u)}.",
             f"Chain rule: {fmt(c * df_u.subs(u, inner))} * {paren(fmt(dinner))} = {fmt(d)}."]
    return diff_question(rng, e, v, "chain rule"), lines, e, d


def gen_product_rule(rng, v):
    k = rng.choice([1, 1, 2, 3, 4, 5])
    second = rng.choice([("sin", 1, k), ("cos", 1, k), ("exp", 1, rng.choice([1, 1, 2, 3, -1, -2])),
                         ("log", 1, rng.randint(1, 4)), ("sqrt",)])
    r = rng.random()
    if r < 0.2 and second[0] in ("sin", "cos"):   # two transcendental factors: exp(x)*sin(x), ...
        p = atom("exp", nz(rng, -3, 3), rng.choice([1, 1, 2, 3, -1]), v)
    elif r < 0.55 and second[0] != "sqrt":  # p = a*v^n (x^n*sqrt(x) would merge into one power)
        p = atom("pow", nz(rng, -6, 6), rng.randint(1, 4), v)
    else:                                   # p = a*v^n + b
        a, n, b = nz(rng, -5, 5), rng.choice([1, 1, 2]), nz(rng, -9, 9)
        p = (a * v ** n + b, a * n * v ** (n - 1), None)
    q = (sp.sqrt(v), 1 / (2 * sp.sqrt(v)), None) if second[0] == "sqrt" else atom(*second, v)
    (pe, dp, _), (qe, dq, _) = p, q
    e = pe * qe
    d = dp * qe + pe * dq
    lines = [f"Product rule with p = {fmt(pe)}, q = {fmt(qe)}: p' = {fmt(dp)}, q' = {fmt(dq)}.",
             f"(p*q)' = p'*q + p*q' = {fmt(d)}."]
    return diff_question(rng, e, v, "product rule"), lines, e, d


def gen_quotient_rule(rng, v):
    while True:
        num_kind = rng.choice(["lin", "lin", "pow", "quad", "sin", "cos", "exp", "log", "const"])
        a, b = nz(rng, -5, 5), nz(rng, -6, 6)
        if num_kind == "lin":
            p, dp = a * v + b, sp.Integer(a)
        elif num_kind == "pow":
            n = rng.randint(1, 3)
            p, dp = a * v ** n, a * n * v ** (n - 1)
        elif num_kind == "quad":
            p, dp = a * v ** 2 + b, 2 * a * v
        elif num_kind == "const":
            p, dp = sp.Integer(a), sp.Integer(0)
        else:
            p, dp, _ = atom(num_kind, rng.choice([1, 1, 1, 2, 3, -1, -2]), rng.choice([1, 1, 2, 3]), v)
        den_kind = rng.choice(["lin", "quad", "quad", "quad2", "pow"])
        c, d0 = rng.randint(1, 5), rng.randint(1, 9)
        if den_kind == "lin":
            q, dq = c * v + d0, sp.Integer(c)
        elif den_kind == "quad":   # positive coefficients: no zero of q at the check points
            c = rng.choice([1, 1, 2, 3])
            q, dq = c * v ** 2 + d0, 2 * c * v
        elif den_kind == "quad2":
            q, dq = v ** 2 + c * v + d0, 2 * v + c
        else:
            n = rng.randint(1, 3)
            q, dq = v ** n, n * v ** (n - 1)
        if num_kind == "pow" and den_kind == "pow":
            continue  # a monomial over a monomial is just a power
        if p.is_polynomial(v) and sp.degree(sp.gcd(p, q), v) > 0:
            continue  # a common factor would cancel
        break
    e = p / q
    num = sp.expand(dp * q - p * dq)
    d = sp.Mul(num, sp.Pow(q, -2))
    lines = [f"Quotient rule with p = {fmt(p)}, q = {fmt(q)}: p' = {fmt(dp)}, q' = {fmt(dq)}.",
             f"(p/q)' = (p'*q - p*q')/q^2 = {fmt(d)}."]
    return diff_question(rng, e, v, "quotient rule"), lines, e, d


def gen_trig(rng, v):
    kinds = rng.sample(["sin", "cos", "tan"] if rng.random() < 0.3 else ["sin", "cos"], 1 if rng.random() < 0.15 else 2)
    atoms = [atom(k, nz(rng, -6, 6), rng.choice([1, 1, 2, 3, 4, 5, 6]), v) for k in kinds]
    if rng.random() < 0.3:
        atoms.append(atom("pow", nz(rng, -6, 6), rng.randint(1, 3), v))
    e = sp.Add(*[t[0] for t in atoms])
    d = sp.Add(*[t[1] for t in atoms])
    lines = [f"Use sin' = cos, cos' = -sin, tan' = 1/cos^2 (times the inner constant), term by term: "
             f"{term_lines(atoms, v)}."]
    return diff_question(rng, e, v), lines, e, d


def gen_exp_log(rng, v):
    pool = ["exp", "exp", "log", "logpow", "base"]
    kinds = rng.sample(pool, 1 if rng.random() < 0.2 else 2)
    if kinds == ["exp", "exp"]:
        kinds = ["exp"]
    atoms = []
    for k in kinds:
        a = nz(rng, -6, 6)
        b = {"exp": rng.choice([1, 2, 3, 4, -1, -2, -3]), "log": rng.randint(1, 6),
             "logpow": rng.randint(2, 4), "base": rng.choice([2, 3, 5, 10])}[k]
        atoms.append(atom(k, a, b, v))
    if rng.random() < 0.4:
        atoms.append(atom("pow", nz(rng, -6, 6), rng.randint(1, 3), v))
    e = sp.Add(*[t[0] for t in atoms])
    d = sp.Add(*[t[1] for t in atoms])
    lines = [f"Use exp(k*{v})' = k*exp(k*{v}), log(k*{v})' = 1/{v}, (b^{v})' = b^{v}*log(b), term by term: "
             f"{term_lines(atoms, v)}."]
    return diff_question(rng, e, v), lines, e, d


# -----------------------------------------------------------------------------
# indefinite integrals: the antiderivative is built first, by rule; the check differentiates it

def gen_indefinite(rng, v):
    fn = rng.choice(["f", "g", "h"])
    family = rng.choice(["poly", "poly", "basic", "basic", "sub", "sub", "parts"])
    if family == "poly":
        degs = sorted(rng.sample(range(0, 5), rng.randint(1, 4)), reverse=True)
        if rng.random() < 0.15:
            degs.append(-rng.randint(1, 3))
        # a coefficient divisible by n+1 keeps the antiderivative's coefficients whole, most of the time
        atoms = [atom("pow", nz(rng, -4, 4) * (d + 1 if d >= 0 and rng.random() < 0.7 else 1), d, v)
                 for d in degs]
        lines = [f"Integrate term by term with ∫ {v}^n d{v} = {v}^(n+1)/(n+1): "
                 + ", ".join(f"∫ {fmt(e)} d{v} = {fmt(F)}" for e, _, F in atoms) + "."]
    elif family == "basic":
        kinds = rng.sample(["exp", "sin", "cos", "recip"], rng.randint(1, 2))
        atoms = []
        for k in kinds:
            if k == "recip":
                atoms.append(atom("pow", nz(rng, -6, 6), -1, v))
                continue
            b = rng.choice([1, 1, 2, 3, 4] + ([-1, -2] if k == "exp" else []))
            a = nz(rng, -4, 4) * (b if rng.random() < 0.6 else 1)
            atoms.append(atom(k, a, b, v))
        if rng.random() < 0.3:
            d = rng.randint(0, 3)
            atoms.append(atom("pow", nz(rng, -4, 4) * (d + 1), d, v))
        lines = [f"Integrate term by term (∫ exp(k*{v}) = exp(k*{v})/k, ∫ sin(k*{v}) = -cos(k*{v})/k, "
                 f"∫ cos(k*{v}) = sin(k*{v})/k, ∫ 1/{v} = log({v})): "
                 + ", ".join(f"∫ {fmt(e)} d{v} = {fmt(F)}" for e, _, F in atoms) + "."]
    if family in ("poly", "basic"):
        f = sp.Add(*[t[0] for t in atoms])
        F = sp.Add(*[t[2] for t in atoms])
    elif family == "sub":
        name = rng.choice(["pow", "sin", "cos", "exp", "log", "sqrt"])
        inner, dinner = inner_fn(rng, v, positive=name in ("log", "sqrt"), monomial_derivative=True)
        c = coef(rng)
        un = sub_name(v)
        u = sp.Symbol(un)
        F_u, f_u = outer_fn(name, rng.randint(2, 4), u)
        F = c * F_u.subs(u, inner)
        f = c * f_u.subs(u, inner) * dinner
        lines = [f"Substitute {un} = {fmt(inner)}, so d{un} = {paren(fmt(dinner))} d{v} "
                 f"and the integral becomes ∫ {fmt(c * f_u)} d{un} = {fmt(c * F_u)}."]
    else:  # by parts
        a = nz(rng, -3, 5)
        kind = rng.choice(["exp", "sin", "cos", "log"])
        if kind == "log":  # ∫ a*x^n*log(x): p = log(x), dq = a*x^n dx
            n = rng.randint(0, 3)
            q = a * v ** (n + 1) / (n + 1)
            rest = a * v ** (n + 1) / (n + 1) ** 2   # ∫ q * (1/x) dx
            f = a * v ** n * sp.log(v)
            F = sp.log(v) * q - rest
            lines = [f"By parts with p = log({v}), dq = {fmt(a * v ** n)} d{v}: q = {fmt(q)}, p' = 1/{v}.",
                     f"∫ p dq = p*q - ∫ q*p' d{v} = {fmt(sp.log(v) * q)} - ∫ {fmt(q / v)} d{v} = {fmt(F)}."]
        else:              # ∫ (a*x + c)*h(b*x): p = a*x + c, dq = h(b*x) dx
            b = rng.choice([1, 1, 2, 3, 4] + ([-1, -2] if kind == "exp" else []))
            c = rng.choice([0, 0, 0] + [nz(rng, -5, 5)])
            p = a * v + c
            h = atom(kind, 1, b, v)[0]
            _, _, q = atom(kind, 1, b, v)
            _, _, rest = atom(*({"exp": ("exp", a / sp.Integer(b), b), "sin": ("cos", -a / sp.Integer(b), b),
                                 "cos": ("sin", a / sp.Integer(b), b)}[kind]), v)  # ∫ a*q dx
            f = p * h
            F = p * q - rest
            lines = [f"By parts with p = {fmt(p)}, dq = {fmt(h)} d{v}: q = {fmt(q)}, p' = {a}.",
                     f"∫ p dq = p*q - ∫ q*p' d{v} = {fmt(p * q)} - ∫ {fmt(a * q)} d{v} = {fmt(F)}."]
    lines.append(f"So the antiderivative is {fmt(F)} + C.")
    q_text = rng.choice(INDEF_Q).format(fn=fn, v=v, e=fmt(f), pe=paren(fmt(f)))
    return q_text, lines, f, F


# -----------------------------------------------------------------------------
# definite integrals: exact rational values

def gen_definite(rng, v):
    fn = rng.choice(["f", "g", "h"])
    family = rng.choice(["poly"] * 6 + ["trig"] * 3 + ["exp"] * 2 + ["recip"])
    if family == "poly":
        degs = sorted(rng.sample(range(0, 4), rng.randint(1, 3)), reverse=True)
        atoms = [atom("pow", nz(rng, -6, 6), d, v) for d in degs]
        lo = rng.randint(-3, 2)
        hi = lo + rng.randint(1, 3)
        lo, hi = sp.Integer(lo), sp.Integer(hi)
    elif family == "trig":
        kind = rng.choice(["sin", "cos"])
        k = rng.choice([1, 1, 2, 3])
        atoms = [atom(kind, nz(rng, -6, 6), k, v)]
        # bounds at multiples of pi/(2k) keep sin and cos of k*bound in {0, ±1}
        lo_m, span = rng.choice([(0, 1), (0, 2), (1, 1), (0, 4), (1, 2), (2, 2)])
        lo, hi = sp.pi * lo_m / (2 * k), sp.pi * (lo_m + span) / (2 * k)
    elif family == "exp":  # from log(J) to log(K): exp(m*log K) = K^m
        m = rng.choice([1, 1, 2, 3])
        atoms = [atom("exp", nz(rng, -6, 6) * m, m, v)]
        j = rng.choice([1, 1, 2, 3])
        lo, hi = sp.log(j), sp.log(rng.randint(j + 1, 7))
    else:                  # a/x from exp(j) to exp(k): a*(k - j)
        atoms = [atom("pow", nz(rng, -6, 6), -1, v)]
        j = rng.choice([0, 0, 1, 2])
        lo, hi = sp.exp(j), sp.exp(j + rng.randint(1, 4))
    f = sp.Add(*[t[0] for t in atoms])
    F = sp.Add(*[t[2] for t in atoms])
    Fb, Fa = F.subs(v, hi), F.subs(v, lo)
    val = Fb - Fa
    if not val.is_Rational:
        return None
    Fa_s = fmt_num(Fa) if Fa.is_Rational else fmt(Fa)
    Fb_s = fmt_num(Fb) if Fb.is_Rational else fmt(Fb)
    lines = [f"An antiderivative is F({v}) = {fmt(F)}.",
             f"F({fmt(hi)}) - F({fmt(lo)}) = {Fb_s} - {paren(Fa_s)} = {fmt_num(val)}."]
    q_text = rng.choice(DEF_Q).format(fn=fn, v=v, e=fmt(f), pe=paren(fmt(f)), a=fmt(lo), b=fmt(hi))
    return q_text, lines, f, (lo, hi, val)


GENERATORS = {"power_rule": gen_power_rule, "chain_rule": gen_chain_rule, "product_rule": gen_product_rule,
              "quotient_rule": gen_quotient_rule, "trig": gen_trig, "exp_log": gen_exp_log,
              "indefinite_integral": gen_indefinite, "definite_integral": gen_definite}


# -----------------------------------------------------------------------------
# one checked pair, then many

def make_pair(rng, topic):
    """One verified record, or None when the sample fails its check (or is degenerate)."""
    v = pick_var(rng)
    out = GENERATORS[topic](rng, sp.Symbol(v))
    if out is None:
        return None
    q, lines, f, claim = out
    x = sp.Symbol(v)
    params = {"f": fmt(f)}
    if topic == "definite_integral":
        lo, hi, val = claim
        if not quad_equals(f, x, lo, hi, val):
            return None
        params.update(a=fmt(lo), b=fmt(hi))
        final, kind = fmt_num(val), "number"
    elif topic == "indefinite_integral":
        if not same(sp.diff(claim, x), f, x):
            return None
        final, kind = fmt(claim), "antiderivative"
    else:
        if not same(claim, sp.diff(f, x), x):
            return None
        final, kind = fmt(claim), "expr"
    answer = "\n".join(lines + [f"#### {final}"])
    return {"question": q, "answer": answer, "final": final, "kind": kind, "topic": topic,
            "var": v, "params": params}


def generate(n, seed, progress=False, stats=None):
    """n verified pairs, unique by their maths, topics in turn. Same (n, seed) → same list."""
    from tqdm import tqdm
    rng = random.Random(seed)
    pairs, seen, dropped, dups = [], set(), 0, 0
    bar = tqdm(total=n, desc=f"generating {NAME}", disable=None if progress else True, unit="pair")
    i = 0
    while len(pairs) < n:
        if dropped + dups > 20 * n + 100:
            raise RuntimeError(f"{NAME}: cannot find {n} unique checked pairs ({dropped} failed, {dups} duplicates)")
        topic = TOPICS[i % len(TOPICS)]
        rec = make_pair(rng, topic)
        if rec is None:
            dropped += 1
            continue
        key = (topic, to_x(rec["params"]["f"], rec["var"]), rec["params"].get("a"), rec["params"].get("b"))
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        pairs.append(rec)
        bar.update(1)
        i += 1
    bar.close()
    if stats is not None:
        stats.update(dropped=dropped, duplicates=dups)
    return pairs


def norm_question(q):
    return " ".join(q.lower().split())


def split(pairs, n_test, seed):
    """(train, test): dedupe on the normalised question, then a seeded shuffle picks the test set.
    `n_test` is a count, or a fraction when < 1."""
    uniq, seen = [], set()
    for p in pairs:
        k = norm_question(p["question"])
        if k not in seen:
            seen.add(k)
            uniq.append(p)
    k = round(n_test * len(uniq)) if 0 < n_test < 1 else int(n_test)
    idx = list(range(len(uniq)))
    random.Random(seed).shuffle(idx)
    test_idx = set(idx[:k])
    train = [p for i, p in enumerate(uniq) if i not in test_idx]
    test = [p for i, p in enumerate(uniq) if i in test_idx]
    return train, test


def write_outputs(name, cfg, pairs, n_test, t0, stats):
    """Shared by both generators: split, then the one writer every dataset ends with
    (test jsonl, decontaminated train jsonl, and the .bin + index unless text_only)."""
    from mathlm.data.qa_io import write_qa_dataset
    train, test = split(pairs, n_test, cfg.seed)
    topics = Counter(p["topic"] for p in pairs)
    print(f"{name}: generated {len(train):,} train + {len(test):,} test pairs in {time.time() - t0:.1f}s "
          f"| {stats['dropped']} failed verification, {stats['duplicates']} duplicates skipped")
    print("topics: " + ", ".join(f"{k} {c}" for k, c in sorted(topics.items())))
    return write_qa_dataset(name, train, test, cfg.out_dir, cfg.tokenizer, cfg.text_only,
                            source_desc=f"mathlm.data.generate_{name} seed {cfg.seed}")


def main(argv=None):
    cfg = parse_config(Config, PRESETS, argv)
    if cfg.n < 1 or cfg.n_test < 0:
        die(f"--n must be ≥ 1 and --n_test ≥ 0 (got {cfg.n}, {cfg.n_test})")
    t0 = time.time()
    stats = {}
    pairs = generate(cfg.n + cfg.n_test, cfg.seed, progress=True, stats=stats)
    return write_outputs(NAME, cfg, pairs, cfg.n_test, t0, stats)


if __name__ == "__main__":
    main()
