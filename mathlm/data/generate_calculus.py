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

--calls writes the integer arithmetic of a scratchpad as calculator calls (mathlm/format.py), each
right before the number it computes: a coefficient times an exponent or inner constant
("d/dx(3*x^4) = <|calc|>4*3<|result|>12<|/result|>12*x^3"), a coefficient over n+1 in an
antiderivative, the constant of a quotient's numerator, the last sum of F(a) and F(b) - F(a). A call
is written only where the calculator prints exactly the number that follows it (so 7/3 is not one),
and strip_calls gives back the text without --calls character for character: the same problems,
the same split. The tiny preset turns it on: with calls its SFT model gets the last sums right that
it otherwise gets wrong on almost every sample (definite integrals 9% without calls; see README).

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

from mathlm.common import SEED_MAX, check_range, cli, die, parse_config
from mathlm.format import calc_call, strip_calls


@dataclass
class Config:
    n: int = 12000                  # train pairs
    n_test: int = 500               # held-out test pairs (no question shared with train)
    seed: int = 1234                # drives generation and the train/test split
    out_dir: str = "."              # where calculus.jsonl, calculus_test.jsonl (and .bin) go
    text_only: bool = False         # write the jsonl only; no tokenizer needed
    tokenizer: str = "math_tokenizer"  # tokenizer folder (not needed with --text_only)
    levels: str = "1,2,3"           # difficulty levels to draw from (1 = the ladder's first rung, 3 = the full mix)
    casual: float = 0.3             # fraction of questions phrased as people type them (3x^2, d/dx, e^x)
    corpus: int = 0                 # worked examples written as prose to calculus_corpus.txt (pretraining text)
    n_typed_test: int = 0           # held-out questions in phrasings never trained on → calculus_typed_test.jsonl
    n_rl: int = 0                   # questions kept for GRPO only → calculus_rl.jsonl (never in SFT or pretraining)
    workers: int = 0                # generator processes; 0 = one per CPU
    calls: bool = False             # integer arithmetic steps as calculator calls (on in --preset tiny: see above)


# tiny: the first two levels only (what a 3M model learns in minutes), a 1,000-problem test set
PRESETS = {"tiny": dict(n=16000, n_test=1000, n_typed_test=300, corpus=16000, levels="1,2", casual=0.4, calls=True,
                     n_rl=4000),
           "smoke": dict(n=400, n_test=40)}  # the smoke pipeline: does every stage run?
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


def call_for(expr, value, text):
    """The call computing `value` from `expr`, written right before `text` (the number it produces),
    or "" unless the calculator prints the value exactly as `text`."""
    from mathlm.calculator import format_number
    value = sp.Rational(value)
    shown = format_number(Fraction(int(value.p), int(value.q)))
    return calc_call(expr, shown) if shown == text else ""


def coef_call(e, d):
    """The call for d's integer coefficient from e's: 3*x^4 → 12*x^3 is 4*3, 5*cos(2*x) → -10*sin(2*x)
    is -2*5, ∫ 12*x^3 = 3*x^4 is 12/4; "" where no integer step makes it."""
    ce, cd = sp.S(e).as_coeff_Mul()[0], sp.S(d).as_coeff_Mul()[0]
    if not (ce.is_Integer and cd.is_Integer) or abs(ce) == 1 or abs(cd) == 1 or cd in (0, ce):
        return ""
    r = cd / ce
    expr = f"{r}*{paren(str(ce))}" if r.is_Integer else f"{paren(str(ce))}/{1 / r}" if (1 / r).is_Integer else None
    s = fmt(d)
    if expr is None or not s.startswith(str(cd)) or s[len(str(cd)):][:1].isdigit():
        return ""
    return call_for(expr, cd, str(cd))


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


def join_terms(terms):
    """Printed terms in the order given, with their signs: ['3*x^2', '-2*x', '0', '5'] → '3*x^2 - 2*x + 5'.
    The model writes terms in the order the question and the worked lines give them, so the final
    answer keeps that order instead of sympy's canonical one (which reorders sums of functions)."""
    out = ""
    for t in terms:
        if t == "0":
            continue
        if not out:
            out = t
        else:
            out += f" - {t[1:]}" if t.startswith("-") else f" + {t}"
    return out or "0"


def term_lines(atoms, v):
    """'d/dx(3*x^4) = 12*x^3, d/dx(5) = 0' for a term-by-term solution."""
    return ", ".join(f"d/d{v}({fmt(e)}) = {coef_call(e, d)}{fmt(d)}" for e, d, _ in atoms)


def poly_atoms(rng, v, n_terms, max_deg=5, allow_neg=False):
    degs = sorted(rng.sample(range(0, max_deg + 1), n_terms), reverse=True)
    if allow_neg and rng.random() < 0.25:
        degs[-1] = -rng.randint(1, 3)
    if all(d == 0 for d in degs):
        degs[0] = 1
    return [atom("pow", nz(rng, -9, 9), d, v) for d in degs]


def terms_e(atoms):
    return join_terms([fmt(t[0]) for t in atoms])


def terms_d(atoms):
    return join_terms([fmt(t[1]) for t in atoms])


# -----------------------------------------------------------------------------
# question phrasings. Formal ones write the expression in the answer syntax, verbatim; casual
# ones write it the way people type (3x^2 + 2x, e^(2x), no `*`). TYPED_* phrasings are never
# used for training: they make the held-out "typed" test set (calculus_typed_test.jsonl).

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
# Casual questions are composed: an opening, a core naming the task and the expression, an ending.
# The 40-odd cores times openings and endings give thousands of phrasings, so what the model learns
# is to find the task word and the expression wherever they sit, not a dozen templates (a tiny SFT
# model read casual questions of the trained templates at 83% but unseen templates at 65%). The
# typed templates below stay out: compose() redraws any phrasing equal to one of them, and their
# words "whats", "wrt", "take", "please" and "between" are not used here at all.
CASUAL_DIFF_NOUN = ["derivative of {e}", "d/d{v} of {e}", "derivative of {fn}({v}) = {e}",
                    "derivative of y = {e}", "first derivative of {e}", "{v}-derivative of {e}"]
CASUAL_DIFF_CORE = ["d/d{v} {e}", "d/d{v} ({e})", "d/d{v}[{e}]", "(d/d{v}) {e}", "differentiate {e}",
                    "differentiate y = {e}", "diff {e}", "{fn}({v}) = {e}, {fn}'({v}) = ?", "y = {e}. y'?",
                    "y = {e}, dy/d{v} = ?", "dy/d{v} for y = {e}", "{fn}'({v}) if {fn}({v}) = {e}",
                    "{fn}({v}) = {e}; find {fn}'", "{e} -> derivative", "{e}, derivative?", "d/d{v}: {e}",
                    "how do I differentiate {e}", "help me differentiate {e}", "could you differentiate {e}",
                    "differentiate {e} with respect to {v}", "differentiate {e} w.r.t. {v}", "derive {e}"]
CASUAL_INDEF_NOUN = ["integral of {e}", "antiderivative of {e}", "indefinite integral of {e}",
                     "anti-derivative of {e}", "primitive of {e}", "integral of {fn}({v}) = {e}"]
CASUAL_INDEF_CORE = ["integrate {e}", "integrate {e} d{v}", "∫ {e} d{v}", "∫ ({e}) d{v}", "∫({e})d{v}",
                     "∫ ({e}) d{v} = ?", "integrate y = {e}", "integrate {e} with respect to {v}",
                     "integrate {e} w.r.t. {v}", "{e} -> antiderivative", "{e}, integral?", "∫ {e}",
                     "how do I integrate {e}", "help me integrate {e}", "could you integrate {e}",
                     "F'({v}) = {e}, F({v}) = ?", "antidifferentiate {e}"]
CASUAL_DEF_NOUN = ["integral of {e} from {a} to {b}", "definite integral of {e}, {v} from {a} to {b}",
                   "integral from {a} to {b} of {e}", "integral of {e} on [{a}, {b}]",
                   "integral of {e} over [{a}, {b}]", "value of ∫ {e} d{v} from {a} to {b}",
                   "integral of {e} for {v} in [{a}, {b}]", "integral of {e} with {v} going from {a} to {b}",
                   "definite integral of {fn}({v}) = {e} from {v} = {a} to {v} = {b}"]
CASUAL_DEF_CORE = ["integrate {e} from {a} to {b}", "∫_{a}^{b} {e} d{v}", "∫_{a}^{b} ({e}) d{v}",
                   "∫ {e} d{v} from {a} to {b} = ?", "∫ from {a} to {b} of {e} d{v}", "integrate {e} over [{a}, {b}]",
                   "integrate {e} on [{a},{b}]", "integrate {e} for {v} = {a} to {b}", "integrate {e}, {v}={a}..{b}",
                   "integrate {e} from {v}={a} to {v}={b}", "∫ {e} d{v}, lower limit {a}, upper limit {b}",
                   "how do I integrate {e} from {a} to {b}", "could you integrate {e} from {a} to {b}",
                   "integrate {e} with limits {a} and {b}", "integrate {e} d{v} from {a} to {b}"]
NOUN_OPEN = ["", "", "", "", "what's the ", "what is the ", "find the ", "compute the ", "calculate the ", "get the ",
             "need the ", "i need the ", "give me the ", "so what is the ", "hey, ", "quick: ", "q: what's the "]
CORE_OPEN = ["", "", "", "", "", "pls ", "hey ", "quick: ", "ok ", "now ", "hi, ", "hello! "]
CASUAL_END = ["", "", "", "", "?", " ?", "??", " pls", " thanks", " thx", ".", " (show steps)", " step by step",
              " for me", " now", "!"]


def compose(rng, family, fmt_args):
    """One casual phrasing: opening + core + ending, never one of the held-out typed templates."""
    noun, core = {"diff": (CASUAL_DIFF_NOUN, CASUAL_DIFF_CORE), "indef": (CASUAL_INDEF_NOUN, CASUAL_INDEF_CORE),
                  "def": (CASUAL_DEF_NOUN, CASUAL_DEF_CORE)}[family]
    while True:
        if rng.random() < 0.4:
            t = rng.choice(NOUN_OPEN) + rng.choice(noun)
        else:
            t = rng.choice(CORE_OPEN) + rng.choice(core)
        t += rng.choice(CASUAL_END) if not t.endswith("?") else ""
        if rng.random() < 0.2:
            t = t[0].upper() + t[1:]
        if t not in TYPED_TEMPLATES:
            return t.format(**fmt_args)


TYPED_DIFF_Q = ["whats d/d{v} of {e}", "can you differentiate {e} for me", "derivative: {e}",
                "take the derivative of {e}", "differentiate {e} wrt {v}", "d({e})/d{v} = ?"]
TYPED_INDEF_Q = ["whats the antiderivative of {e}", "integrate: {e}", "compute the integral of {e} wrt {v}",
                 "find ∫ {e} d{v} please"]
TYPED_DEF_Q = ["evaluate the integral of {e} between {v}={a} and {v}={b}", "integrate {e} between {a} and {b}",
               "what's ∫ {e} d{v} for {v} from {a} to {b}"]
TYPED_Q = {"diff": TYPED_DIFF_Q, "indef": TYPED_INDEF_Q, "def": TYPED_DEF_Q}
TYPED_TEMPLATES = set(TYPED_DIFF_Q + TYPED_INDEF_Q + TYPED_DEF_Q)  # what compose() never returns


def casual(s, rng):
    """Answer syntax → how people type it: 3*x^2 + 2*x → 3x^2 + 2x, exp(2*x) → e^(2x), sometimes
    x^2 sin(x) for x^2*sin(x) and 3x^2+2x without spaces. Equal maths, other characters."""
    s = re.sub(r"(?<![\w^])(\d+)\*(?=[a-z(])", r"\1", s)     # 3*x → 3x, 2*(x + 1) → 2(x + 1), not 2^3*x
    if rng.random() < 0.5:
        s = re.sub(r"exp\(([^()]*)\)", r"e^(\1)", s)          # exp(2x) → e^(2x)
        s = s.replace("e^(x)", "e^x").replace("e^(t)", "e^t").replace("e^(u)", "e^u")
    if rng.random() < 0.4:
        s = re.sub(r"(?<=[a-z0-9)])\*(?=[a-z(])", " ", s)     # x^2*sin(x) → x^2 sin(x)
    if rng.random() < 0.3:
        s = s.replace(" + ", "+").replace(" - ", "-")
    return s


def phrase(rng, family, e, v, a=None, b=None, rule=None, style="formal"):
    """A question for expression string `e` (answer syntax). family: diff | indef | def."""
    fn = rng.choice(["f", "f", "g", "h"])
    if style == "formal":
        pool = {"diff": DIFF_Q + (RULE_Q if rule else []), "indef": INDEF_Q, "def": DEF_Q}[family]
        return rng.choice(pool).format(fn=fn, v=v, e=e, pe=paren(e), a=a, b=b, rule=rule)
    e = casual(e, rng)
    args = dict(fn=fn, v=v, e=e, pe=paren(e), a=a, b=b, rule=rule)
    if style == "casual":
        return compose(rng, family, args)
    return rng.choice(TYPED_Q[family]).format(**args)


FAMILY = {"indefinite_integral": "indef", "definite_integral": "def"}


# -----------------------------------------------------------------------------
# derivative topics at three levels. Each returns (family kwargs, answer lines, expression,
# claimed derivative, printed expression, printed final). Level 1 is the ladder's first rung
# (polynomials; sin, cos, exp of k*x; polynomial antiderivatives), level 2 one idea more
# (a linear inner function, a product of two simple factors, fractions), level 3 the full mix.

def gen_power_rule(rng, v, level):
    if level == 1:   # up to x^6: "derivative of x^5?" is a first-rung question
        atoms = poly_atoms(rng, v, rng.randint(1, 3), max_deg=6)
    else:
        # up to x^6 here too: with x^6 only in level 1, the tiny model read x^6 as x^5 (issue 13)
        atoms = poly_atoms(rng, v, rng.randint(2, 4), max_deg=6, allow_neg=True)
    if level == 3 and rng.random() < 0.15:  # a root term: a*sqrt(x) → a/(2*sqrt(x))
        a = nz(rng, -6, 6)
        atoms.append((a * sp.sqrt(v), sp.Rational(a, 2) / sp.sqrt(v), None))
    e = sp.Add(*[t[0] for t in atoms])
    d = sp.Add(*[t[1] for t in atoms])
    # the expression is restated in the answer's syntax before its terms are taken one by one: each next
    # term is then the one after the last in this line, written in the same tokens (a 2M model copying
    # straight from a casually typed question dropped, repeated and invented terms: issue 13)
    lines = [f"Power rule d/d{v}(a*{v}^n) = n*a*{v}^(n-1), term by term on {terms_e(atoms)}: {term_lines(atoms, v)}."]
    return dict(rule="power rule"), lines, e, d, terms_e(atoms), terms_d(atoms)


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


def inner_fn(rng, v, positive, monomial_derivative=False, linear=False):
    """(inner, inner') with a non-trivial inside: a*v + b, a*v^2 + b, a*v^3 + b, v^2 + b*v."""
    lo = 1 if positive else -5
    m = 1 if linear else rng.choice([1, 1, 2, 2, 3] + ([] if monomial_derivative else [4]))
    if m == 4:  # v^2 + b*v (+ c)
        b, c = rng.randint(1, 5), rng.randint(1 if positive else -4, 4)
        return v ** 2 + b * v + c, 2 * v + b
    a = rng.randint(1, 5) if positive else nz(rng, -3, 5)
    b = nz(rng, lo, 5)
    return a * v ** m + b, a * m * v ** (m - 1)


def gen_chain_rule(rng, v, level):
    name = rng.choice(["pow", "pow", "sin", "cos", "exp"] if level == 1 else OUTERS)
    n = rng.randint(2, 4 if level == 1 else 5)
    inner, dinner = inner_fn(rng, v, positive=name in ("log", "sqrt"), linear=level < 3)
    c = 1 if level == 1 else coef(rng)
    u = sp.Symbol(sub_name(v))
    f_u, df_u = outer_fn(name, n, u)
    e = c * f_u.subs(u, inner)
    d = c * df_u.subs(u, inner) * dinner
    un = sub_name(v)
    lines = [f"Let {un} = {fmt(inner)}, so d{un}/d{v} = {fmt(dinner)}. "
             f"Then d/d{un}({fmt(c * f_u)}) = {fmt(c * df_u)}.",
             f"Chain rule: {fmt(c * df_u.subs(u, inner))} * {paren(fmt(dinner))} = {fmt(d)}."]
    return dict(rule="chain rule"), lines, e, d, fmt(e), fmt(d)


def gen_product_rule(rng, v, level):
    k = rng.choice([1, 1, 2, 3, 4, 5])
    if level == 1:
        second = rng.choice([("sin", 1, k), ("cos", 1, k), ("exp", 1, rng.choice([1, 1, 2, 3, -1, -2]))])
    else:
        second = rng.choice([("sin", 1, k), ("cos", 1, k), ("exp", 1, rng.choice([1, 1, 2, 3, -1, -2])),
                             ("log", 1, rng.randint(1, 4)), ("sqrt",)])
    r = rng.random()
    if level == 3 and r < 0.2 and second[0] in ("sin", "cos"):   # two transcendental factors: exp(x)*sin(x)
        p = atom("exp", nz(rng, -3, 3), rng.choice([1, 1, 2, 3, -1]), v)
    elif (level == 1 or r < 0.55) and second[0] != "sqrt":  # p = a*v^n (x^n*sqrt(x) would merge into one power)
        p = atom("pow", nz(rng, -6, 6) if level > 1 else rng.choice([1, 1, 2, 3, -1]), rng.randint(1, 3), v)
    else:                                   # p = a*v^n + b
        a, n, b = nz(rng, -5, 5), rng.choice([1, 1, 2]), nz(rng, -9, 9)
        p = (a * v ** n + b, a * n * v ** (n - 1), None)
    q = (sp.sqrt(v), 1 / (2 * sp.sqrt(v)), None) if second[0] == "sqrt" else atom(*second, v)
    (pe, dp, _), (qe, dq, _) = p, q
    e = pe * qe
    d = dp * qe + pe * dq
    final = join_terms([fmt(dp * qe), fmt(pe * dq)])
    lines = [f"Product rule with p = {fmt(pe)}, q = {fmt(qe)}: p' = {fmt(dp)}, q' = {fmt(dq)}.",
             f"(p*q)' = p'*q + p*q' = {final}."]
    return dict(rule="product rule"), lines, e, d, fmt(e), final


def gen_quotient_rule(rng, v, level):
    if level < 3:   # a/(c*v + d) or (a*v + b)/(c*v + d): the derivative is (a*d - b*c)/(c*v + d)^2
        while True:
            a, b = nz(rng, -6, 6), nz(rng, -6, 6)
            c, d0 = rng.randint(1, 5), nz(rng, -6, 9)
            p, dp = (sp.Integer(a), 0) if level == 1 else (a * v + b, a)
            q = c * v + d0
            num = dp * d0 - (a if level == 1 else b) * c
            if num != 0 and not (level == 2 and sp.degree(sp.gcd(p, q), v) > 0):
                break
        d = sp.Integer(num) / q ** 2
        final = fmt(d)
        lines = [f"Quotient rule with p = {fmt(p)}, q = {fmt(q)}: p' = {dp}, q' = {c}."]
        if level == 2:   # the numerator expanded, so the x terms visibly cancel
            lines.append(f"p'*q = {dp}*{paren(fmt(q))} = {fmt(sp.expand(dp * q))}, "
                         f"p*q' = {paren(fmt(p))}*{c} = {fmt(sp.expand(p * c))}.")
            call = call_for(f"{dp * d0}-{paren(str(b * c))}", num, final.split("/")[0])
            lines.append(f"(p/q)' = (p'*q - p*q')/q^2 = ({fmt(sp.expand(dp * q))} - {paren(fmt(sp.expand(p * c)))})"
                         f"/{paren(fmt(q))}^2 = {call}{final}.")
        else:
            call = call_for(f"{dp}*{paren(str(d0))}-{paren(str(a))}*{c}", num, final.split("/")[0])
            lines.append(f"(p/q)' = (p'*q - p*q')/q^2 = ({dp}*{paren(fmt(q))} - {paren(fmt(p))}*{c})/{paren(fmt(q))}^2"
                         f" = {call}{final}.")
        return dict(rule="quotient rule"), lines, p / q, d, fmt(p / q), final
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
    return dict(rule="quotient rule"), lines, e, d, fmt(e), fmt(d)


def linear_atom(rng, kind, v):
    """a*sin(b*v + c), a*cos(b*v + c) or a*exp(b*v + c): the ladder's first rung, a linear argument."""
    a, b = nz(rng, -9, 9), nz(rng, -6, 9) if kind == "exp" else rng.randint(1, 9)
    c = 0 if rng.random() < 0.5 else nz(rng, -5, 5)
    fn, dfn = {"sin": (sp.sin, sp.cos), "cos": (sp.cos, lambda w: -sp.sin(w)), "exp": (sp.exp, sp.exp)}[kind]
    return a * fn(b * v + c), a * b * dfn(b * v + c), None


def gen_trig(rng, v, level):
    if level == 1:
        atoms = [linear_atom(rng, rng.choice(["sin", "cos"]), v)]
        lines = [f"Use sin' = cos, cos' = -sin (times the inner constant): {term_lines(atoms, v)}."]
        return {}, lines, atoms[0][0], atoms[0][1], terms_e(atoms), terms_d(atoms)
    else:
        pool = ["sin", "cos", "tan"] if level == 3 and rng.random() < 0.3 else ["sin", "cos"]
        kinds = rng.sample(pool, 1 if rng.random() < 0.15 else 2)
    atoms = [atom(k, nz(rng, -6, 6), rng.choice([1, 1, 2, 3, 4, 5, 6]), v) for k in kinds]
    if level > 1 and rng.random() < 0.3:
        atoms.append(atom("pow", nz(rng, -6, 6), rng.randint(1, 3), v))
    e = sp.Add(*[t[0] for t in atoms])
    d = sp.Add(*[t[1] for t in atoms])
    lines = [f"Use sin' = cos, cos' = -sin, tan' = 1/cos^2 (times the inner constant), term by term: "
             f"{term_lines(atoms, v)}."]
    return {}, lines, e, d, terms_e(atoms), terms_d(atoms)


def gen_exp_log(rng, v, level):
    if level == 1:
        atoms = [linear_atom(rng, "exp", v)]
        lines = [f"Use exp(k*{v} + c)' = k*exp(k*{v} + c): {term_lines(atoms, v)}."]
        return {}, lines, atoms[0][0], atoms[0][1], terms_e(atoms), terms_d(atoms)
    else:
        pool = ["exp", "exp", "log", "logpow"] + (["base"] if level == 3 else [])
        kinds = rng.sample(pool, 1 if rng.random() < 0.2 else 2)
        if kinds == ["exp", "exp"]:
            kinds = ["exp"]
    atoms = []
    for k in kinds:
        a = nz(rng, -6, 6)
        b = {"exp": rng.choice([1, 2, 3, 4, -1, -2, -3]), "log": rng.randint(1, 6),
             "logpow": rng.randint(2, 4), "base": rng.choice([2, 3, 5, 10])}[k]
        atoms.append(atom(k, a, b, v))
    if level > 1 and rng.random() < 0.4:
        atoms.append(atom("pow", nz(rng, -6, 6), rng.randint(1, 3), v))
    e = sp.Add(*[t[0] for t in atoms])
    d = sp.Add(*[t[1] for t in atoms])
    lines = [f"Use exp(k*{v})' = k*exp(k*{v}), log(k*{v})' = 1/{v}, (b^{v})' = b^{v}*log(b), term by term: "
             f"{term_lines(atoms, v)}."]
    return {}, lines, e, d, terms_e(atoms), terms_d(atoms)


# -----------------------------------------------------------------------------
# indefinite integrals: the antiderivative is built first, by rule; the check differentiates it

def gen_indefinite(rng, v, level):
    family = {1: "poly", 2: rng.choice(["poly", "basic", "basic"])}.get(
        level, rng.choice(["poly", "basic", "sub", "sub", "parts"]))
    if family == "poly":
        degs = sorted(rng.sample(range(0, 5), rng.randint(1, 3 if level == 1 else 4)), reverse=True)
        if level > 1 and rng.random() < 0.15:
            degs.append(-rng.randint(1, 3))
        # a coefficient divisible by n+1 keeps the antiderivative's coefficients whole (always at level 1)
        atoms = [atom("pow", nz(rng, -4, 4) * (d + 1 if d >= 0 and (level == 1 or rng.random() < 0.7) else 1), d, v)
                 for d in degs]
        lines = [f"Integrate term by term with ∫ {v}^n d{v} = {v}^(n+1)/(n+1), on {terms_e(atoms)}: "
                 + ", ".join(f"∫ {fmt(e)} d{v} = {coef_call(e, F)}{fmt(F)}" for e, _, F in atoms) + "."]
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
                 f"∫ cos(k*{v}) = sin(k*{v})/k, ∫ 1/{v} = log({v})), on {terms_e(atoms)}: "
                 + ", ".join(f"∫ {fmt(e)} d{v} = {coef_call(e, F)}{fmt(F)}" for e, _, F in atoms) + "."]
    if family in ("poly", "basic"):
        f = sp.Add(*[t[0] for t in atoms])
        F = sp.Add(*[t[2] for t in atoms])
        e_s, F_s = join_terms([fmt(t[0]) for t in atoms]), join_terms([fmt(t[2]) for t in atoms])
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
        e_s, F_s = fmt(f), fmt(F)
    elif family == "parts":
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
        e_s, F_s = fmt(f), fmt(F)
    lines.append(f"So the antiderivative is {F_s} + C.")
    return {}, lines, f, F, e_s, F_s


# -----------------------------------------------------------------------------
# definite integrals: exact rational values

def poly_value_line(F_atoms, v, at):
    """'F(-2) = 2*(-2)^3 + 3*(-2) = 2*(-8) - 6 = -16 - 6 = -22': the substitution, then the powers,
    then the products, for an integer polynomial F — one operation a step, as a small model needs it."""
    x = sp.Symbol(v)
    arg = f"({at})" if at < 0 else str(at)
    subst = join_terms([fmt(F).replace(v, arg) for F in F_atoms])
    powers = []
    for F in F_atoms:
        c, n = F.as_coeff_exponent(x)
        if n >= 2:
            pw = fmt_num(sp.Integer(at) ** n)
            powers.append(pw if c == 1 else f"-{paren(pw)}" if c == -1 else f"{fmt_num(c)}*{paren(pw)}")
        else:
            powers.append(fmt_num(F.subs(x, at)))
    vals = [F.subs(x, at) for F in F_atoms]
    steps = [subst, join_terms(powers), join_terms([fmt_num(y) for y in vals]), fmt_num(sum(vals))]
    if len(vals) > 1:   # the sum of the terms' values: "-16 - 6" is itself the calculator's expression
        steps[3] = call_for(steps[2], sum(vals), steps[3]) + steps[3]
    out = [steps[0]] + [b for a, b in zip(steps, steps[1:]) if strip_calls(b) != strip_calls(a)]
    return f"F({at}) = " + " = ".join(out)


def gen_definite(rng, v, level):
    x, v = v, str(v)
    family = "poly" if level < 3 else rng.choice(["poly"] * 6 + ["trig"] * 3 + ["exp"] * 2 + ["recip"])
    if family == "poly":
        if level == 1:   # integer antiderivative, from 0: F(0) = 0
            degs = sorted(rng.sample(range(0, 3), rng.randint(1, 2)), reverse=True)
            atoms = [atom("pow", nz(rng, -3, 3) * (d + 1), d, x) for d in degs]
            lo, hi = sp.Integer(0), sp.Integer(rng.randint(1, 3))
        elif level == 2:  # integer antiderivative, any small limits
            degs = sorted(rng.sample(range(0, 4), rng.randint(1, 3)), reverse=True)
            atoms = [atom("pow", nz(rng, -3, 3) * (d + 1), d, x) for d in degs]
            lo = rng.randint(-2, 2)
            hi = lo + rng.randint(1, 2)
            lo, hi = sp.Integer(lo), sp.Integer(hi)
        else:
            degs = sorted(rng.sample(range(0, 4), rng.randint(1, 3)), reverse=True)
            atoms = [atom("pow", nz(rng, -6, 6), d, x) for d in degs]
            lo = rng.randint(-3, 2)
            hi = lo + rng.randint(1, 3)
            lo, hi = sp.Integer(lo), sp.Integer(hi)
    elif family == "trig":
        kind = rng.choice(["sin", "cos"])
        k = rng.choice([1, 1, 2, 3])
        atoms = [atom(kind, nz(rng, -6, 6), k, x)]
        # bounds at multiples of pi/(2k) keep sin and cos of k*bound in {0, ±1}
        lo_m, span = rng.choice([(0, 1), (0, 2), (1, 1), (0, 4), (1, 2), (2, 2)])
        lo, hi = sp.pi * lo_m / (2 * k), sp.pi * (lo_m + span) / (2 * k)
    elif family == "exp":  # from log(J) to log(K): exp(m*log K) = K^m
        m = rng.choice([1, 1, 2, 3])
        atoms = [atom("exp", nz(rng, -6, 6) * m, m, x)]
        j = rng.choice([1, 1, 2, 3])
        lo, hi = sp.log(j), sp.log(rng.randint(j + 1, 7))
    else:                  # a/x from exp(j) to exp(k): a*(k - j)
        atoms = [atom("pow", nz(rng, -6, 6), -1, x)]
        j = rng.choice([0, 0, 1, 2])
        lo, hi = sp.exp(j), sp.exp(j + rng.randint(1, 4))
    f = sp.Add(*[t[0] for t in atoms])
    F = sp.Add(*[t[2] for t in atoms])
    Fb, Fa = F.subs(x, hi), F.subs(x, lo)
    val = Fb - Fa
    if not val.is_Rational:
        return None
    F_s = join_terms([fmt(t[2]) for t in atoms])
    if family == "poly" and all(t[2].is_polynomial(x) and all(c.is_Integer for c in sp.Poly(t[2], x).coeffs())
                                for t in atoms):
        lines = [f"An antiderivative is F({v}) = {F_s}.", poly_value_line([t[2] for t in atoms], v, int(hi)) + ".",
                 poly_value_line([t[2] for t in atoms], v, int(lo)) + ".",
                 f"F({fmt(hi)}) - F({fmt(lo)}) = {fmt_num(Fb)} - {paren(fmt_num(Fa))} = "
                 f"{call_for(f'{fmt_num(Fb)}-{paren(fmt_num(Fa))}', val, fmt_num(val))}{fmt_num(val)}."]
        if lo == 0:
            lines[2:] = [f"F(0) = 0, so the integral is {fmt_num(val)}."]
    else:
        Fa_s = fmt_num(Fa) if Fa.is_Rational else fmt(Fa)
        Fb_s = fmt_num(Fb) if Fb.is_Rational else fmt(Fb)
        call = call_for(f"{Fb_s}-{paren(Fa_s)}", val, fmt_num(val)) if Fa.is_Rational and Fb.is_Rational else ""
        lines = [f"An antiderivative is F({v}) = {F_s}.",
                 f"F({fmt(hi)}) - F({fmt(lo)}) = {Fb_s} - {paren(Fa_s)} = {call}{fmt_num(val)}."]
    return dict(a=fmt(lo), b=fmt(hi)), lines, f, (lo, hi, val), join_terms([fmt(t[0]) for t in atoms]), fmt_num(val)


GENERATORS = {"power_rule": gen_power_rule, "chain_rule": gen_chain_rule, "product_rule": gen_product_rule,
              "quotient_rule": gen_quotient_rule, "trig": gen_trig, "exp_log": gen_exp_log,
              "indefinite_integral": gen_indefinite, "definite_integral": gen_definite}
LEVELS = (1, 2, 3)


# -----------------------------------------------------------------------------
# one checked pair, then many

def _read(s, v):
    """Our own printed text (trusted, never model output) back into sympy, to check what is written."""
    from sympy.parsing.sympy_parser import parse_expr
    return parse_expr(s.replace("^", "**"), local_dict={v: sp.Symbol(v), "exp": sp.exp, "log": sp.log})


def make_pair(rng, topic, level=3, casual_frac=0.0, calls=False):
    """One verified record, or None when the sample fails its check (or is degenerate).
    What is checked is the text written: the final string is read back and compared, exactly
    for polynomials (sp.expand) and at three points to 30 digits otherwise."""
    v = pick_var(rng)
    x = sp.Symbol(v)
    out = GENERATORS[topic](rng, x, level)
    if out is None:
        return None
    extra, lines, f, claim, e_s, final = out
    params = {"f": e_s}
    family = FAMILY.get(topic, "diff")
    if topic == "definite_integral":
        lo, hi, val = claim
        if not quad_equals(f, x, lo, hi, val):
            return None
        params.update(a=extra["a"], b=extra["b"])
        kind = "number"
    else:
        written, shown = _read(final, v), _read(e_s, v)
        kind = "antiderivative" if topic == "indefinite_integral" else "expr"
        if f.is_polynomial(x) and written.is_polynomial(x):   # exact and ~20x cheaper than diff + subs
            fp, wp = sp.Poly(f, x), sp.Poly(written, x)
            ok = sp.Poly(shown, x) == fp and (wp.diff(x) == fp if kind == "antiderivative" else wp == fp.diff(x))
        else:
            ok = same(shown, f, x) and (same(sp.diff(written, x), f, x) if kind == "antiderivative"
                                        else same(written, sp.diff(f, x), x))
        if not ok:
            return None
    style = "casual" if rng.random() < casual_frac else "formal"
    q = phrase(rng, family, e_s, v, a=params.get("a"), b=params.get("b"), rule=extra.get("rule"), style=style)
    answer = "\n".join(lines + [f"#### {final}"])
    if not calls:   # the generators write every call; without --calls the text is exactly as before them
        answer = strip_calls(answer)
    return {"question": q, "answer": answer, "final": final, "kind": kind, "topic": topic, "level": level,
            "var": v, "params": params, "style": style}


def _block(args):
    """Candidates of one seeded block: one Random per block, so the output does not depend on the worker count.
    `buckets` are the (topic, level) pairs still worth drawing from, taken in turn."""
    seed, block, size, buckets, casual_frac, calls = args
    rng = random.Random(f"{seed}/{block}")
    return [make_pair(rng, *buckets[i % len(buckets)], casual_frac, calls) for i in range(size)]


def generate(n, seed, progress=False, stats=None, levels=(3,), casual_frac=0.0, workers=1, calls=False):
    """n verified pairs, unique by their maths, each topic an equal share. Same (n, seed, levels) → same
    list, for any number of workers: candidates come in rounds of 4 seeded blocks of 256, and between
    rounds a full topic stops being drawn, as does a (topic, level) whose round was ≥ 95% duplicates
    (the first rungs are small spaces; drawing on from them only burns verification time)."""
    from tqdm import tqdm
    pairs, seen, dropped, dups = [], set(), 0, 0
    per_topic = {t: 0 for t in TOPICS}
    need = -(-n // len(TOPICS))
    buckets = [(t, lv) for t in TOPICS for lv in levels]
    bar = tqdm(total=n, desc=f"generating {NAME}", disable=None if progress else True, unit="pair")
    block, size, per_round = 0, 256, 4
    pool = None
    if workers > 1:
        import multiprocessing as mp
        pool = mp.get_context("fork").Pool(workers)
    try:
        while len(pairs) < n:
            buckets = [b for b in buckets if per_topic[b[0]] < need]
            if not buckets:
                raise RuntimeError(f"{NAME}: cannot find {n} unique checked pairs at levels {levels}"
                                   f" ({dropped} failed, {dups} duplicates; per topic "
                                   + ", ".join(f"{t} {c}" for t, c in per_topic.items()) + "); ask for fewer or add levels")
            jobs = [(seed, block + j, size, tuple(buckets), casual_frac, calls) for j in range(per_round)]
            block += per_round
            tried, dup = Counter(), Counter()
            for recs in (pool.map(_block, jobs) if pool else map(_block, jobs)):
                for rec in recs:
                    if rec is None:
                        dropped += 1
                        continue
                    b = (rec["topic"], rec["level"])
                    tried[b] += 1
                    key = (rec["topic"], to_x(rec["params"]["f"], rec["var"]), rec["params"].get("a"),
                           rec["params"].get("b"))
                    if key in seen:
                        dups += 1
                        dup[b] += 1
                        continue
                    if per_topic[rec["topic"]] >= need:
                        continue
                    seen.add(key)
                    per_topic[rec["topic"]] += 1
                    pairs.append(rec)
                    bar.update(1)
            buckets = [b for b in buckets if not (tried[b] >= 50 and dup[b] >= 0.95 * tried[b])]
    finally:
        if pool:
            pool.close()
    bar.close()
    # rounds fill topics in parallel; keep the order that does not depend on where the last round stopped
    pairs = pairs[:n]
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


# -----------------------------------------------------------------------------
# the pretraining corpus: the same maths as prose — rules, worked examples, bare equations —
# so the base model learns calculus before SFT teaches it the Q/A format

TITLES = {"power_rule": "The power rule", "chain_rule": "The chain rule", "product_rule": "The product rule",
          "quotient_rule": "The quotient rule", "trig": "Derivatives of sine and cosine",
          "exp_log": "Derivatives of exponentials and logarithms",
          "indefinite_integral": "Antiderivatives", "definite_integral": "Definite integrals"}
RULES = {
    "power_rule": "The derivative of a*x^n is n*a*x^(n-1): multiply by the exponent and lower it by one. "
                  "The derivative of a constant is 0, and a sum is differentiated term by term.",
    "chain_rule": "For a composite function f(g(x)) the derivative is f'(g(x))*g'(x): differentiate the outer "
                  "function at the inner one, then multiply by the derivative of the inner function.",
    "product_rule": "The derivative of a product p*q is p'*q + p*q'.",
    "quotient_rule": "The derivative of a quotient p/q is (p'*q - p*q')/q^2.",
    "trig": "The derivative of sin(k*x) is k*cos(k*x) and the derivative of cos(k*x) is -k*sin(k*x).",
    "exp_log": "The derivative of exp(k*x) is k*exp(k*x), and the derivative of log(k*x) is 1/x.",
    "indefinite_integral": "An antiderivative of x^n is x^(n+1)/(n+1) for n other than -1; of exp(k*x) it is "
                           "exp(k*x)/k; of sin(k*x) it is -cos(k*x)/k; of cos(k*x) it is sin(k*x)/k. Add a "
                           "constant C for the general antiderivative.",
    "definite_integral": "To evaluate a definite integral from a to b, find an antiderivative F and compute "
                         "F(b) - F(a).",
}


def corpus_example(rec, rng):
    """One worked example as prose, in one of four shapes."""
    v, e, final, body = rec["var"], rec["params"]["f"], rec["final"], rec["answer"].rsplit("\n####", 1)[0]
    if rec["topic"] == "definite_integral":
        eq = f"∫ ({e}) d{v} from {rec['params']['a']} to {rec['params']['b']} = {final}"
    elif rec["topic"] == "indefinite_integral":
        eq = f"∫ ({e}) d{v} = {final} + C"
    else:
        eq = f"d/d{v}({e}) = {final}"
    shape = rng.randrange(4)
    if shape == 0:
        return f"Example. {rec['question']}\nSolution. {body}\nAnswer: {final}"
    if shape == 1:
        return f"{rec['question']}\n{body}\nSo the answer is {final}."
    if shape == 2:
        return f"{body.replace(chr(10), ' ')} Therefore {eq}."
    return eq


def write_corpus(path, recs, seed):
    """Sections of 3-8 examples of one topic, each led by its title and rule; documents
    separated by two blank lines (the build_pretrain convention). Returns the document count."""
    from mathlm.common import atomic_write
    rng = random.Random(f"{seed}/corpus")
    by_topic = {}
    for r in recs:
        by_topic.setdefault(r["topic"], []).append(r)
    docs = []
    for topic, rs in by_topic.items():
        rs = rs + rng.sample(rs, len(rs))  # every example twice, in two shapes and two sections
        i = 0
        while i < len(rs):
            k = rng.randint(3, 8)
            head = f"{TITLES[topic]}\n{RULES[topic]}" if rng.random() < 0.7 else TITLES[topic]
            docs.append(head + "\n\n" + "\n\n".join(corpus_example(r, rng) for r in rs[i:i + k]))
            i += k
    rng.shuffle(docs)
    atomic_write(path, "\n\n\n".join(docs) + "\n")
    return len(docs)


def parse_levels(text, allowed, example):
    """--levels "1,2" → [1, 2]; one line naming the allowed levels for anything else (both ladders' generators)."""
    try:
        levels = sorted({int(x) for x in str(text).split(",") if x.strip()})
    except ValueError:
        levels = []
    if not levels or any(lv not in allowed for lv in levels):
        die(f"--levels {text!r}: give a comma list from {', '.join(map(str, allowed))}, e.g. {example}")
    return levels


@cli
def main(argv=None):
    import os
    cfg = parse_config(Config, PRESETS, argv)
    check_range(cfg, "n", lo=1)
    for k in ("n_test", "corpus", "n_typed_test"):
        check_range(cfg, k, lo=0)
    check_range(cfg, "workers", lo=0, why="0 = one per CPU")
    check_range(cfg, "seed", lo=0, hi=SEED_MAX)
    levels = parse_levels(cfg.levels, LEVELS, "1,2")
    check_range(cfg, "casual", lo=0, hi=1)
    workers = cfg.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    from mathlm.data.qa_io import dataset_lock
    with dataset_lock(NAME, cfg.out_dir):  # a second run on this dataset stops here, before the generation
        return run(cfg, levels, workers)


def run(cfg, levels, workers):
    import os
    t0 = time.time()
    stats = {}
    total = cfg.n + cfg.n_test + cfg.n_typed_test + cfg.n_rl
    pairs = generate(total, cfg.seed, progress=True, stats=stats, levels=levels, casual_frac=cfg.casual,
                     workers=workers, calls=cfg.calls)
    # one seeded shuffle cuts the pool (unique by maths) into disjoint parts: no test problem is
    # trained on, as a Q/A pair or inside the corpus
    random.Random(cfg.seed).shuffle(pairs)
    test, typed = pairs[:cfg.n_test], pairs[cfg.n_test:cfg.n_test + cfg.n_typed_test]
    # GRPO's questions are problems SFT never saw: on its own train questions the SFT model is right
    # nearly always (all-right groups teach nothing), on new ones it errs as it does on the test set
    held = cfg.n_test + cfg.n_typed_test
    rl, train = pairs[held:held + cfg.n_rl], pairs[held + cfg.n_rl:]
    # the corpus works through train problems (never test ones) as prose: what pretraining reads
    # is the same maths SFT later asks as Q/A, in another form, as a textbook precedes its exercises
    corpus = [train[i % len(train)] for i in range(cfg.corpus)]
    rng = random.Random(f"{cfg.seed}/typed")
    for r in typed:  # re-asked in phrasings the generator never trains on
        r.update(question=phrase(rng, FAMILY.get(r["topic"], "diff"), r["params"]["f"], r["var"], r["params"].get("a"),
                                 r["params"].get("b"), style="typed"), style="typed")
    print(f"{NAME}: generated {len(train):,} train + {len(test):,} test + {len(typed):,} typed-test + {len(rl):,} RL pairs"
          f" + {len(corpus):,} corpus examples in {time.time() - t0:.1f}s | levels {','.join(map(str, levels))}"
          f" | {stats['dropped']} failed verification, {stats['duplicates']} duplicates skipped")
    print("topics: " + ", ".join(f"{k} {c}" for k, c in sorted(Counter(p["topic"] for p in pairs).items())))
    os.makedirs(cfg.out_dir, exist_ok=True)
    from mathlm.data.qa_io import write_jsonl
    if typed:
        path = os.path.join(cfg.out_dir, f"{NAME}_typed_test.jsonl")
        write_jsonl(path, typed)
        print(f"wrote {path} ({len(typed):,} held-out questions in typed phrasings; never trained on)")
    if rl:
        path = os.path.join(cfg.out_dir, f"{NAME}_rl.jsonl")
        write_jsonl(path, rl)
        print(f"wrote {path} ({len(rl):,} questions for GRPO; not in SFT, pretraining or the tests)")
    if corpus:
        path = os.path.join(cfg.out_dir, f"{NAME}_corpus.txt")
        n_docs = write_corpus(path, corpus, cfg.seed)
        print(f"wrote {path} ({n_docs:,} documents, {len(corpus):,} worked examples; the pretraining text)")
    from mathlm.data.qa_io import write_qa_dataset
    return write_qa_dataset(NAME, train, test, cfg.out_dir, cfg.tokenizer, cfg.text_only,
                            source_desc=f"mathlm.data.generate_{NAME} seed {cfg.seed} levels {cfg.levels}")


if __name__ == "__main__":
    main()
