"""The safe parser and bounded evaluator for untrusted answer text (model completions).

    from mathlm.eval.safe_math import parse_math, evaluate, exact_value
    node = parse_math("\\frac{x^{3}}{3}")          # a sympy tree, built by hand, nothing computed
    exact_value(parse_math("2\\cdot10^{3}"))       # Fraction(2000)

Model text never reaches eval, exec, sympify or parse_expr. parse_math reads it with its own
tokenizer and recursive-descent parser over a small whitelist grammar, and builds the sympy tree
itself (evaluate=False, so construction computes nothing):
  numbers (≤ 30 digits, ASCII only; 1.5e3 and 72e-3 are scientific notation), single-letter
  variables (xy is x*y), pi, e, a few Greek letters, sin cos tan sec csc cot asin acos atan
  (arcsin ...) sinh cosh tanh exp log ln sqrt, \\log_b x, + - * / ^ ** ( ) [ ] { } |x|, implicit
  products 2x, x(x+1), sin x cos x, sin^2 x, sin^{-1} x, the LaTeX subset \\frac \\dfrac \\tfrac
  \\sqrt \\sqrt[n] \\cdot \\times \\left \\right \\pi \\sin ..., and the Unicode a model writes:
  x² x³ (superscripts), √x, ×, ·, −, π. Text after the last "=" is the answer ("y = 2x" is 2x);
  \\text{...}, $, ^\\circ and \\% are dropped.
Anything else is rejected: quotes, underscores (but \\log_2), commas, letter runs that are not a
name (import, lambda), unknown backslash commands, non-ASCII digits, text over max_len characters,
nesting over MAX_DEPTH, and any exponent that is a constant of magnitude over MAX_EXP — checked
bottom-up as the tree is built, so 9**9**9**9 and x^(10^100) die at their innermost offending
power before anything large is computed.

evaluate computes a tree at a point with mpmath at DPS digits in a private context per thread
(complex values are fine); a value over 1e300, a pole, log 0 or nan raises Invalid. Time is
bounded by construction, in any thread, with no signals or worker processes: input ≤ max_len
characters → at most a few hundred tree nodes; every operation is one mpmath call on a value
bounded by 1e300; evaluation also checks a wall-clock deadline per node. With window=True every
value in the tree must be 0 or within [1e-30, 1e30] in magnitude: how constants a grader would
never write (10^{40}, e^{-100}, tan(pi/2) ≈ 1e100) are refused. exact_value is the Fraction
value of a constant built from numbers, + * and integer powers, so those compare exactly.
"""
import re
import threading
import time
from fractions import Fraction

import mpmath
import sympy

MAX_LEN = 200     # characters of one answer expression
MAX_DEPTH = 30    # nesting of brackets, powers, unary signs and function calls (Python recursion ~6 frames each)
MAX_DIGITS = 30   # digits in one number literal
MAX_EXP = 100     # largest |constant exponent|

_FUNCS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan,
    "sec": sympy.sec, "csc": sympy.csc, "cot": sympy.cot,
    "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan,
    "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh,
    "exp": sympy.exp, "log": sympy.log, "ln": sympy.log, "sqrt": None,  # sqrt is built as a power
}
_INVERSE = {"sin": "asin", "cos": "acos", "tan": "atan"}  # sin^{-1} x is arcsin x
_GREEK = {"alpha", "beta", "theta", "phi"}
_LATEX = {"frac", "sqrt", "cdot", "times", "pi"} | set(_FUNCS) | _GREEK
_FUNC_PREFIX = sorted(_FUNCS, key=len, reverse=True)  # "sinx" reads as sin x: longest name first

# ASCII digits only: Python's \d also matches ٧٢ and ７２, which a grader does not expect in an answer
_TOKEN = re.compile(r"\s*(?:(?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3}(?![0-9]))?)"
                    r"|(?P<word>[A-Za-z]+)|\\(?P<cmd>[A-Za-z]+)|(?P<op>\*\*|[-+*/^()\[\]{}|_]))")
_SUPERSCRIPT = {"\u00b2": "2", "\u00b3": "3", "\u00b9": "1", "\u2070": "0", "\u2074": "4", "\u2075": "5",
                "\u2076": "6", "\u2077": "7", "\u2078": "8", "\u2079": "9", "\u207b": "-"}


class _Reject(Exception):
    """The text is outside the grammar or a limit; the answer is treated as unreadable."""


def _preprocess(s):
    s = s.replace("\u2212", "-").replace("\u00b7", "*").replace("\u00d7", "*").replace("\u03c0", "\\pi ")
    s = s.replace("\u221a", "\\sqrt ")  # √x, √(x+1)
    s = re.sub("[\u00b2\u00b3\u00b9\u2070\u2074-\u2079\u207b]+",  # x² → x^{2}, x⁻¹ → x^{-1}
               lambda m: "^{" + "".join(_SUPERSCRIPT[c] for c in m.group()) + "}", s)
    s = re.sub(r"\\(?:text|mbox|mathrm|textbf)\{[^{}]*\}", " ", s)  # units and words: "5\text{ cm}"
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)  # degrees
    s = re.sub(r"\\(?:left|right|displaystyle)(?![A-Za-z])", "", s)  # \left( → (
    s = re.sub(r"\\[,;:! ]|\\[%$]|\$", " ", s)  # spacing, \% and $ delimiters
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\frac\s*([0-9])\s*([0-9])", r"\\frac{\1}{\2}", s)  # \frac12
    s = re.sub(r"\\sqrt\s*([0-9])", r"\\sqrt{\1}", s)  # \sqrt2
    if "=" in s:
        s = s[s.rindex("=") + 1:]  # "y = 2x", "f(x) = ..." → the right-hand side
    return s


def _tokenize(s):
    toks, pos = [], 0
    s = s.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            raise _Reject(f"character {s[pos]!r}")
        pos = m.end()
        if m.group("num"):
            num = m.group("num")
            if sum(c.isdigit() for c in num.lower().split("e")[0]) > MAX_DIGITS:
                raise _Reject("number too long")
            toks.append(("num", num))
        elif m.group("op"):
            op = m.group("op")
            toks.append(("op", "^" if op == "**" else op))
        elif m.group("cmd"):
            cmd = m.group("cmd")
            if cmd not in _LATEX:
                raise _Reject(f"command \\{cmd}")
            if cmd in ("cdot", "times"):
                toks.append(("op", "*"))
            elif cmd == "pi":
                toks.append(("const", "pi"))
            elif cmd in _GREEK:
                toks.append(("var", cmd))
            elif cmd in ("frac", "sqrt"):
                toks.append(("latex", cmd))
            else:
                toks.append(("func", cmd))
        else:
            toks += _split_word(m.group("word"))
    return toks


def _split_word(w):
    """A letter run → tokens: a name (sin, pi), a name then up to 2 variables (sinx), or ≤ 2 variables (xy)."""
    if w in _FUNCS:
        return [("func", w)]
    if w == "pi":
        return [("const", "pi")]
    if w in _GREEK:
        return [("var", w)]
    for f in _FUNC_PREFIX:
        if w.startswith(f) and 0 < len(w) - len(f) <= 2:
            return [("func", f)] + _split_word(w[len(f):])
    if len(w) <= 2:
        return [("const", "e") if c == "e" else ("var", c) for c in w]
    raise _Reject(f"word {w!r}")


class _Parser:
    """Recursive descent, one method per precedence level:
        expr  := term (('+'|'-') term)*
        term  := unary (('*'|'/') unary | implicit product)*
        unary := ('-'|'+') unary | power
        power := primary ['^' unary]           (right-associative, x^-1 allowed)
        primary := num | var | pi | e | ( expr ) | [ expr ] | { expr } | |expr|
                 | \\frac G G | \\sqrt[n] G | func ['^' exponent] argument
    Every node is built with evaluate=False: building computes nothing."""

    def __init__(self, toks):
        self.toks, self.i, self.depth, self.abs_depth = toks, 0, 0, 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, kind=None, value=None):
        k, v = self.peek()
        if k is None or (kind and k != kind) or (value and v != value):
            raise _Reject(f"expected {value or kind}, got {v!r}")
        self.i += 1
        return v

    def at(self, kind, value=None):
        k, v = self.peek()
        return k == kind and (value is None or v == value)

    def nest(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Reject("nested too deep")

    def starts_factor(self):
        k, v = self.peek()
        if k in ("num", "var", "const", "func", "latex"):
            return True
        return k == "op" and (v in "([{" or (v == "|" and self.abs_depth == 0))

    def expr(self):
        node = self.term()
        while self.at("op", "+") or self.at("op", "-"):
            op = self.take()
            rhs = self.term()
            node = sympy.Add(node, rhs if op == "+" else _neg(rhs), evaluate=False)
        return node

    def term(self):
        node = self.unary()
        while True:
            if self.at("op", "*") or self.at("op", "/"):
                op = self.take()
                rhs = self.unary()
                if op == "/":
                    rhs = sympy.Pow(rhs, sympy.Integer(-1), evaluate=False)
            elif self.starts_factor():
                rhs = self.power()
            else:
                return node
            node = sympy.Mul(node, rhs, evaluate=False)

    def unary(self):
        if self.at("op", "-") or self.at("op", "+"):
            op = self.take()
            self.nest()
            node = self.unary()
            self.depth -= 1
            return _neg(node) if op == "-" else node
        return self.power()

    def power(self):
        base = self.primary()
        if self.at("op", "^"):
            self.take()
            self.nest()
            exp = self.unary()
            self.depth -= 1
            return _pow(base, exp)
        return base

    def group(self):
        """{...} or a single primary: the argument of \\frac and \\sqrt."""
        if self.at("op", "{"):
            self.take()
            node = self.expr()
            self.take("op", "}")
            return node
        return self.primary()

    def primary(self):
        self.nest()
        kind, v = self.peek()
        if kind == "num":
            self.take()
            f = Fraction(v)
            node = sympy.Rational(f.numerator, f.denominator)
        elif kind == "var":
            self.take()
            node = sympy.Symbol(v)
        elif kind == "const":
            self.take()
            node = sympy.pi if v == "pi" else sympy.E
        elif kind == "op" and v in ("(", "[", "{"):
            self.take()
            node = self.expr()
            self.take("op", {"(": ")", "[": "]", "{": "}"}[v])
        elif kind == "op" and v == "|" and self.abs_depth == 0:
            self.take()
            self.abs_depth += 1
            node = sympy.Abs(self.expr(), evaluate=False)
            self.abs_depth -= 1
            self.take("op", "|")
        elif kind == "latex" and v == "frac":
            self.take()
            num = self.group()
            den = self.group()
            node = sympy.Mul(num, sympy.Pow(den, sympy.Integer(-1), evaluate=False), evaluate=False)
        elif kind == "latex" and v == "sqrt":
            self.take()
            index = sympy.Integer(2)
            if self.at("op", "["):
                self.take()
                index = self.expr()
                self.take("op", "]")
            node = _pow(self.group(), sympy.Pow(index, sympy.Integer(-1), evaluate=False))
        elif kind == "func":
            node = self.call()
        else:
            raise _Reject(f"unexpected {v!r}")
        self.depth -= 1
        return node

    def call(self):
        name = self.take("func")
        exp = base = None
        if name == "log" and self.at("op", "_"):  # \log_2 8, \log_{10}(x): the log to a base
            self.take()
            base = self.group()
        if self.at("op", "^"):  # sin^2 x = (sin x)^2, sin^{-1} x = asin x
            self.take()
            if self.at("op", "-"):
                self.take()
                exp = _neg(self.primary())
            else:
                exp = self.primary()
            if name in _INVERSE and exp == -1:
                name, exp = _INVERSE[name], None
        if self.at("op", "(") or self.at("op", "{"):
            arg = self.primary()
        else:  # "\sin 2x" is sin(2x); the argument stops at an operator or the next function
            arg = self.power()
            while self.peek()[0] in ("num", "var", "const") or self.at("latex"):
                arg = sympy.Mul(arg, self.power(), evaluate=False)
        if name == "sqrt":
            node = _pow(arg, sympy.Rational(1, 2))
        else:
            node = _FUNCS[name](arg, evaluate=False)
        if base is not None:  # log_b x = ln x / ln b
            node = sympy.Mul(node, sympy.Pow(sympy.log(base, evaluate=False), sympy.Integer(-1), evaluate=False),
                             evaluate=False)
        return node if exp is None else _pow(node, exp)


def _neg(node):
    if isinstance(node, sympy.Number):
        return -node
    return sympy.Mul(sympy.Integer(-1), node, evaluate=False)


def _pow(base, exp):
    """Power node, refusing a constant exponent over MAX_EXP. The exponent's own powers were checked
    when it was built, so evaluating it here is cheap; this is what stops 9**9**9**9 and x^(10^100)."""
    if not exp.free_symbols:
        try:
            v = evaluate(exp, {}, time.perf_counter() + 0.5)
        except Invalid:
            raise _Reject("exponent does not evaluate")
        if abs(v) > MAX_EXP:
            raise _Reject("exponent too large")
    return sympy.Pow(base, exp, evaluate=False)


def parse_math(expr, max_len=MAX_LEN):
    """Untrusted answer text → sympy expression (unevaluated), or None if it is outside the grammar
    or a limit. The raw text is never given to sympify, parse_expr or eval."""
    if not isinstance(expr, str) or len(expr) > max_len:
        return None
    try:
        toks = _tokenize(_preprocess(expr))
        if not toks:
            return None
        p = _Parser(toks)
        node = p.expr()
        if p.i != len(toks):
            return None
        return node
    except (_Reject, ValueError, ZeroDivisionError, RecursionError):
        return None


# -----------------------------------------------------------------------------
# bounded numerical evaluation of a parsed tree

DPS = 100                  # digits: equiv.py compares to 1e-40, leaving 60 digits for cancellation and derivatives
_BIG = 1e300               # any larger intermediate value: this point is skipped
_MAX_EXP_ARG = 700         # exp(700) ~ 1e304
WINDOW = (1e-30, 1e30)     # with window=True, every nonzero value's magnitude: 30 digits either side of 1

_MP_FUNCS = {
    sympy.sin: "sin", sympy.cos: "cos", sympy.tan: "tan", sympy.sec: "sec", sympy.csc: "csc", sympy.cot: "cot",
    sympy.asin: "asin", sympy.acos: "acos", sympy.atan: "atan",
    sympy.sinh: "sinh", sympy.cosh: "cosh", sympy.tanh: "tanh", sympy.exp: "exp", sympy.log: "log",
}
_EXP_LIKE = (sympy.exp, sympy.sinh, sympy.cosh)  # overflow for a large real part
_LOCAL = threading.local()


def mp_context():
    """This thread's private DPS-digit mpmath context. mpmath functions raise their context's precision for a
    moment while they work, so threads must not share one; the global mpmath.mp is never touched."""
    ctx = getattr(_LOCAL, "ctx", None)
    if ctx is None:
        ctx = _LOCAL.ctx = mpmath.MPContext()
        ctx.dps = DPS
    return ctx


class Invalid(Exception):
    """This expression has no usable value at this point (overflow, pole, nan, deadline)."""


def evaluate(node, env, deadline, mp=None, window=False):
    """sympy tree from parse_math → mpmath number at the point env {Symbol: value}. Every step is one
    DPS-digit operation on values ≤ 1e300, and the deadline is checked per node. window=True: every
    nonzero value in the tree, leaves included, must lie in WINDOW, else Invalid."""
    mp = mp or mp_context()
    if time.perf_counter() > deadline:
        raise Invalid
    if node.is_Rational:
        out = mp.mpf(int(node.p)) / int(node.q)
    elif node.is_Symbol:
        out = env[node]
    elif node is sympy.pi:
        out = +mp.pi
    elif node is sympy.E:
        out = +mp.e
    else:
        out = _apply(node, [evaluate(a, env, deadline, mp, window) for a in node.args], mp)
    if window and out != 0 and not WINDOW[0] <= abs(out) <= WINDOW[1]:
        raise Invalid
    return out


def _apply(node, args, mp):
    """One node's operation on its evaluated arguments."""
    if node.is_Add:
        out = mp.fsum(args)
    elif node.is_Mul:
        out = mp.mpf(1)
        for a in args:
            out = out * a
            if not mp.isfinite(out) or abs(out) > _BIG:
                raise Invalid
    elif node.is_Pow:
        b, p = args
        if b == 0:
            if mp.re(p) > 0:
                return mp.mpf(0)
            raise Invalid  # 1/0, 0^0
        if abs(p) * (abs(mp.log(abs(b))) + mp.pi) > _MAX_EXP_ARG:
            raise Invalid  # |b^p| could pass 1e300: do not compute it
        out = mp.power(b, p)
    elif node.func is sympy.Abs and len(args) == 1:
        out = abs(args[0])
    elif node.func in _MP_FUNCS and len(args) == 1:
        x = args[0]
        if node.func in _EXP_LIKE and abs(mp.re(x)) > _MAX_EXP_ARG:
            raise Invalid
        if node.func is sympy.log and x == 0:
            raise Invalid
        try:
            out = getattr(mp, _MP_FUNCS[node.func])(x)
        except (ZeroDivisionError, ValueError):
            raise Invalid
    else:
        raise Invalid  # not a node parse_math builds
    if not mp.isfinite(out) or abs(out) > _BIG:
        raise Invalid
    return out


def exact_value(node):
    """Exact Fraction value of a constant built only from numbers, + * and integer powers; else None.
    So integer and fraction answers compare exactly, however many digits they have."""
    if node.is_Rational:
        return Fraction(int(node.p), int(node.q))
    if node.is_Add or node.is_Mul:
        vals = [exact_value(a) for a in node.args]
        if any(v is None for v in vals):
            return None
        out = Fraction(0) if node.is_Add else Fraction(1)
        for v in vals:
            out = out + v if node.is_Add else out * v
            if max(out.numerator.bit_length(), out.denominator.bit_length()) > 4000:
                return None  # too big to be worth exact arithmetic
        return out
    if node.is_Pow:
        b, p = exact_value(node.args[0]), exact_value(node.args[1])
        if b is None or p is None or p.denominator != 1 or abs(p) > MAX_EXP or (b == 0 and p < 0):
            return None
        if max(b.numerator.bit_length(), b.denominator.bit_length()) * abs(p) > 4000:
            return None
        return b ** int(p)
    return None


