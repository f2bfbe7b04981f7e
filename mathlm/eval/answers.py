"""Final answers out of model text, compared exactly: GRPO rewards and the GSM8K / MATH evals.

    from mathlm.eval.answers import reward_answer, extract_number, exprs_equivalent
    reward_answer("... so she sold 72 clips.\n#### 72", "72", "number")        # 1.0
    reward_answer("#### x^3/3 + C", "\\frac{x^{3}}{3}", "antiderivative")       # 1.0

Pure functions: nothing here reads or writes a file, prints, or raises on model text.

Numbers (GSM8K)
  extract_number: the first number after the first "####" when there is one (the first,
  as lm-eval-harness's strict match does: what the model writes after its declared answer
  is chatter), else the content of the last \\boxed{}, else the last number in the text.
  GSM8K calculator annotations <<48/2=24>> are dropped first. A number is: an optional
  minus (ASCII or U+2212, only where it cannot be a binary minus: "5-3" is 3), an optional $,
  digits with optional thousands commas "1,234" and decimals "3.5", or a fraction "3/4",
  "\\frac{3}{4}". Units and %, $ around it are ignored; "3." is 3. Dates and times are best
  effort ("3:30" gives 30). Mixed numbers "1 1/2" and scientific notation are not read.
  Numbers are fractions.Fraction, so comparisons are exact: 0.5 == 1/2 and 0.333 != 1/3.
  normalize_number's canonical string: an integer "1234", a terminating decimal "0.75",
  otherwise "p/q" ("1/3"); equal values give equal strings, so strings can be counted
  (majority vote) and compared.

Expressions (MATH, calculus)
  Model text is untrusted. It never reaches eval, sympify or parse_expr. parse_math reads it
  with its own tokenizer and recursive-descent parser over a small whitelist grammar, and
  builds the sympy tree itself (evaluate=False, so construction computes nothing):
    numbers (≤ 30 digits), single-letter variables (xy is x*y), pi, e, a few Greek letters,
    sin cos tan sec csc cot asin acos atan (arcsin ...) sinh cosh tanh exp log ln sqrt,
    + - * / ^ ** ( ) [ ] { } |x|, implicit products 2x, x(x+1), sin x cos x, sin^2 x,
    sin^{-1} x, and the LaTeX subset \\frac \\dfrac \\tfrac \\sqrt \\sqrt[n] \\cdot \\times
    \\left \\right \\pi \\sin ... Text after the last "=" is the answer ("y = 2x" is 2x);
    \\text{...}, $, ^\\circ and \\% are dropped.
  Anything else is rejected: quotes, underscores, commas, letter runs that are not a name
  (import, lambda), unknown backslash commands, text over max_len characters, nesting over
  MAX_DEPTH, and any exponent that is a constant of magnitude over MAX_EXP — checked
  bottom-up as the tree is built, so 9**9**9**9 and x^(10^100) die at their innermost
  offending power before anything large is computed.

  Equivalence is decided numerically, by our own evaluator over that tree: exact Fractions
  when both sides are rational constants, else mpmath at 50 digits (a private context per
  thread) at 8 seeded random points in [0.5, 2] for every variable. Complex values are fine (sqrt(x-1));
  a point where either side overflows (|value| > 1e300, exp of more than 700), divides by
  zero or is nan is skipped; fewer than 3 good points means "not shown equal". Positive
  points make ln|x| and ln x agree, as an antiderivative check wants. With
  up_to_constant=True (antiderivatives; a trailing "+ C" is dropped) the difference must be
  the same constant at every point; two constants are still compared as values.
  Time is bounded by construction, in any thread, with no signals or worker processes:
  input ≤ max_len characters → at most a few hundred tree nodes; every operation is one
  50-digit mpmath call on a value bounded by 1e300; evaluation also checks a wall-clock
  deadline per node and gives up (not equal) when it passes. sympy.simplify is never called.

Rewards (binary; format is scored apart from correctness)
  reward_numeric, reward_symbolic, reward_answer(completion, gold, kind) and format_reward
  return 1.0 or 0.0, never raise on any completion (malformed → 0.0), print nothing and
  touch no file.
"""
import math
import random
import re
import threading
import time
from fractions import Fraction

import mpmath
import sympy

# -----------------------------------------------------------------------------
# numbers

MAX_NUM_DIGITS = 40  # longer digit runs are not answers; also keeps int() far from Python's 4300-digit limit

# GSM8K's own calculator annotations repeat the result right after them: "48/2 = <<48/2=24>>24"
_CALC = re.compile(r"<<[^<>\n]{0,200}>>")

# one number in running text. The look-behind keeps "x2" and "1.2" (the 2) from matching and
# lets a minus count only where it cannot be a binary minus ("5-3" → 3, "x = -3" → -3).
_NUMBER = re.compile(r"""
    (?<![\w.\\)\]}])
    (?P<neg>-\s?)?
    (?:\\?\$\s?)?
    (?:
        \\[dt]?frac\{\s*(?P<fn>-?\d{1,40})\s*\}\{\s*(?P<fd>-?\d{1,40})\s*\}
      | (?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<dec>\.\d+)?(?:/(?P<den>\d+)(?![\d/]))?
      | (?P<lead>\.\d+)
    )
""", re.VERBOSE)


def _clean(text):
    return text.replace("\u2212", "-").replace("{,}", ",")


def _match_to_fraction(m):
    """A _NUMBER match → Fraction, or None (too many digits, zero denominator)."""
    if m.group("fn") is not None:
        num, den = m.group("fn"), m.group("fd")
    elif m.group("lead") is not None:
        num, den = "0" + m.group("lead"), "1"
    else:
        num = m.group("int").replace(",", "") + (m.group("dec") or "")
        den = m.group("den") or "1"
    if len(num) > MAX_NUM_DIGITS or len(den) > MAX_NUM_DIGITS or int(den) == 0:
        return None
    f = Fraction(num) / Fraction(den)
    return -f if m.group("neg") else f


def _to_fraction(s):
    """A string that is one number and nothing else (around it only $, %, a trailing period) → Fraction."""
    if isinstance(s, Fraction):
        return s
    if isinstance(s, bool):
        return None
    if isinstance(s, int):
        return Fraction(s)
    if isinstance(s, float):
        return Fraction(repr(s)) if math.isfinite(s) else None  # repr: 0.1 means 1/10, not its binary value
    if not isinstance(s, str) or len(s) > 200:
        return None
    s = _clean(s).strip()
    s = re.sub(r"^\\boxed\{(.*)\}$", r"\1", s).strip()
    s = s.replace("\\%", "").replace("\\$", "$").rstrip("%").rstrip(".").strip()
    m = _NUMBER.fullmatch(s)
    return _match_to_fraction(m) if m else None


def _canonical(f):
    """Fraction → "12", "-0.75", "1/3": one string per value."""
    if f.denominator == 1:
        return str(f.numerator)
    d, twos, fives = f.denominator, 0, 0
    while d % 2 == 0:
        d, twos = d // 2, twos + 1
    while d % 5 == 0:
        d, fives = d // 5, fives + 1
    if d != 1:
        return f"{f.numerator}/{f.denominator}"
    k = max(twos, fives)  # the decimal terminates after k places
    digits = str(abs(f.numerator) * 10 ** k // f.denominator).rjust(k + 1, "0")
    out = (digits[:-k] + "." + digits[-k:]).rstrip("0")
    return ("-" if f < 0 else "") + out


def normalize_number(s):
    """One number (str, int, float or Fraction) → canonical string, or None if it is not one number.
    "1,234" → "1234", "$5.00" → "5", "50%" → "50", "3." → "3", "1/2" → "0.5", "\\frac{1}{3}" → "1/3"."""
    try:
        f = _to_fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None if f is None else _canonical(f)


def numbers_equal(a, b):
    """Exact equality of two numbers given as strings (any form normalize_number reads), ints or Fractions."""
    try:
        fa, fb = _to_fraction(a), _to_fraction(b)
    except (ValueError, ZeroDivisionError):
        return False
    return fa is not None and fb is not None and fa == fb


def _first_number(text):
    for m in _NUMBER.finditer(text):
        f = _match_to_fraction(m)
        if f is not None:
            return f
    return None


def _last_number(text):
    """Scan a tail window, widening it 4x until it holds a number that starts well inside it (one near the
    window's edge may be cut or lose its look-behind): a 100 kB text of numbers costs one 4 kB scan."""
    n = 4096
    while True:
        window = text[-n:]
        whole = len(window) == len(text)
        for m in reversed(list(_NUMBER.finditer(window))):
            if not whole and m.start() < 200:
                break
            f = _match_to_fraction(m)
            if f is not None:
                return f
        if whole:
            return None
        n *= 4


def extract_number(text):
    """Model text → canonical number string (see normalize_number), or None.
    The first number after the first "####"; else the last \\boxed{}'s number; else the last number."""
    if not isinstance(text, str):
        return None
    text = _CALC.sub("", _clean(text))
    i = text.find("####")
    if i != -1:
        f = _first_number(text[i + 4:])
    else:
        boxed = extract_boxed(text)
        f = _last_number(text if boxed is None else boxed)
    return None if f is None else _canonical(f)


# -----------------------------------------------------------------------------
# final-answer strings

def extract_boxed(text):
    """Content of the last \\boxed{...} or \\fbox{...} (balanced braces), or None. "\\boxed 5" gives "5"."""
    if not isinstance(text, str):
        return None
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if i == -1:
        return None
    m = re.match(r"\\(?:boxed|fbox)[ \t]*(\{)?", text[i:i + 50])
    if not m.group(1):  # "\boxed 5": up to the next space or $
        m = re.match(r"\\(?:boxed|fbox) +([^\s$]+)", text[i:i + 200])
        return m.group(1) if m else None
    j = i + m.end() - 1
    depth = 0
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1:k].strip()
    return None  # unbalanced: the completion was cut mid-answer


def extract_final(text):
    """The final-answer string: the first non-empty line after the first "####" (its \\boxed{} content
    if it has one, a trailing period dropped), else the last \\boxed{} content, else None."""
    if not isinstance(text, str):
        return None
    i = text.find("####")
    if i != -1:
        rest = text[i + 4:].strip()
        line = rest.split("\n", 1)[0].strip()
        boxed = extract_boxed(line)
        line = boxed if boxed is not None else line
        line = line.rstrip(".").strip()
        return line or None
    return extract_boxed(text)


# -----------------------------------------------------------------------------
# safe expression parser: whitelist grammar → sympy tree built by hand

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

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<word>[A-Za-z]+)|\\(?P<cmd>[A-Za-z]+)"
                    r"|(?P<op>\*\*|[-+*/^()\[\]{}|]))")


class _Reject(Exception):
    """The text is outside the grammar or a limit; the answer is treated as unreadable."""


def _preprocess(s):
    s = s.replace("\u2212", "-").replace("\u00b7", "*").replace("\u00d7", "*").replace("\u03c0", "\\pi ")
    s = re.sub(r"\\(?:text|mbox|mathrm|textbf)\{[^{}]*\}", " ", s)  # units and words: "5\text{ cm}"
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)  # degrees
    s = re.sub(r"\\(?:left|right|displaystyle)(?![A-Za-z])", "", s)  # \left( → (
    s = re.sub(r"\\[,;:! ]|\\[%$]|\$", " ", s)  # spacing, \% and $ delimiters
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)  # \frac12
    s = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)  # \sqrt2
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
            if sum(c.isdigit() for c in num) > MAX_DIGITS:
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
        exp = None
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
            v = _evaluate(exp, {}, time.perf_counter() + 0.5)
        except _Invalid:
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

_DPS = 50
_BIG = 1e300               # any larger intermediate value: this point is skipped
_MAX_EXP_ARG = 700         # exp(700) ~ 1e304
_TOL = 1e-30               # relative; 50-digit arithmetic leaves ~1e-45 after a few hundred ops
_N_POINTS, _MIN_POINTS = 8, 3

_MP_FUNCS = {
    sympy.sin: "sin", sympy.cos: "cos", sympy.tan: "tan", sympy.sec: "sec", sympy.csc: "csc", sympy.cot: "cot",
    sympy.asin: "asin", sympy.acos: "acos", sympy.atan: "atan",
    sympy.sinh: "sinh", sympy.cosh: "cosh", sympy.tanh: "tanh", sympy.exp: "exp", sympy.log: "log",
}
_EXP_LIKE = (sympy.exp, sympy.sinh, sympy.cosh)  # overflow for a large real part
_LOCAL = threading.local()


def _mp():
    """This thread's private 50-digit mpmath context. mpmath functions raise their context's precision for a
    moment while they work, so threads must not share one; the global mpmath.mp is never touched."""
    ctx = getattr(_LOCAL, "ctx", None)
    if ctx is None:
        ctx = _LOCAL.ctx = mpmath.MPContext()
        ctx.dps = _DPS
    return ctx


class _Invalid(Exception):
    """This expression has no usable value at this point (overflow, pole, nan, deadline)."""


def _evaluate(node, env, deadline, mp=None):
    """sympy tree from parse_math → mpmath number at the point env {Symbol: value}. Every step is one
    50-digit operation on values ≤ 1e300, and the deadline is checked per node."""
    mp = mp or _mp()
    if time.perf_counter() > deadline:
        raise _Invalid
    if node.is_Rational:
        return mp.mpf(int(node.p)) / int(node.q)
    if node.is_Symbol:
        return env[node]
    if node is sympy.pi:
        return +mp.pi
    if node is sympy.E:
        return +mp.e
    args = [_evaluate(a, env, deadline, mp) for a in node.args]
    if node.is_Add:
        out = mp.fsum(args)
    elif node.is_Mul:
        out = mp.mpf(1)
        for a in args:
            out = out * a
            if not mp.isfinite(out) or abs(out) > _BIG:
                raise _Invalid
    elif node.is_Pow:
        b, p = args
        if b == 0:
            if mp.re(p) > 0:
                return mp.mpf(0)
            raise _Invalid  # 1/0
        if abs(p) * (abs(mp.log(abs(b))) + mp.pi) > _MAX_EXP_ARG:
            raise _Invalid  # |b^p| could pass 1e300: do not compute it
        out = mp.power(b, p)
    elif node.func is sympy.Abs and len(args) == 1:
        out = abs(args[0])
    elif node.func in _MP_FUNCS and len(args) == 1:
        x = args[0]
        if node.func in _EXP_LIKE and abs(mp.re(x)) > _MAX_EXP_ARG:
            raise _Invalid
        if node.func is sympy.log and x == 0:
            raise _Invalid
        try:
            out = getattr(mp, _MP_FUNCS[node.func])(x)
        except (ZeroDivisionError, ValueError):
            raise _Invalid
    else:
        raise _Invalid  # not a node parse_math builds
    if not mp.isfinite(out) or abs(out) > _BIG:
        raise _Invalid
    return out


def _exact(node):
    """Exact Fraction value of a constant built only from numbers, + * and integer powers; else None.
    So integer and fraction answers compare exactly, however many digits they have."""
    if node.is_Rational:
        return Fraction(int(node.p), int(node.q))
    if node.is_Add or node.is_Mul:
        vals = [_exact(a) for a in node.args]
        if any(v is None for v in vals):
            return None
        out = Fraction(0) if node.is_Add else Fraction(1)
        for v in vals:
            out = out + v if node.is_Add else out * v
            if max(out.numerator.bit_length(), out.denominator.bit_length()) > 4000:
                return None  # too big to be worth exact arithmetic
        return out
    if node.is_Pow:
        b, p = _exact(node.args[0]), _exact(node.args[1])
        if b is None or p is None or p.denominator != 1 or abs(p) > MAX_EXP or (b == 0 and p < 0):
            return None
        if max(b.numerator.bit_length(), b.denominator.bit_length()) * abs(p) > 4000:
            return None
        return b ** int(p)
    return None


def _close(x, y):
    return abs(x - y) <= _TOL * max(1, abs(x), abs(y))


def _drop_constant(s):
    return re.sub(r"\+\s*C\s*\.?\s*$", "", s.strip())


def exprs_equivalent(a, b, timeout=1.0, up_to_constant=False):
    """True when the two expression strings are shown equal (or, with up_to_constant, to differ by a
    constant) at 8 random points; False when they differ, either is unreadable, or time runs out."""
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
            xa, xb = _exact(ea), _exact(eb)
            if xa is not None and xb is not None:
                return xa == xb
        rng = random.Random(1234)  # fixed points: the same completion always gets the same reward
        diffs = []
        for _ in range(_N_POINTS):
            env = {s: _mp().mpf(rng.uniform(0.5, 2.0)) for s in symbols}
            try:
                va, vb = _evaluate(ea, env, deadline), _evaluate(eb, env, deadline)
            except _Invalid:
                if time.perf_counter() > deadline:
                    return False
                continue
            if not up_to_constant and not _close(va, vb):
                return False
            diffs.append((va - vb, max(1, abs(va), abs(vb))))
        if len(diffs) < _MIN_POINTS:
            return False
        if up_to_constant:
            d0 = diffs[0][0]
            return all(abs(d - d0) <= _TOL * scale for d, scale in diffs)
        return True
    except Exception:  # noqa: BLE001 — untrusted input: any failure means "not shown equal"
        return False


# -----------------------------------------------------------------------------
# rewards (GRPO) — binary correctness, and a separate format reward

def reward_numeric(completion, gold):
    """1.0 if the completion's extracted number equals gold exactly (gold: a number or a full GSM8K answer)."""
    try:
        pred = extract_number(completion)
        if pred is None:
            return 0.0
        g = normalize_number(gold)
        if g is None:
            g = extract_number(gold)
        return 1.0 if numbers_equal(pred, g) else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def _normalize_text(s):
    return re.sub(r"\s+", "", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")


def answers_match(pred, gold, up_to_constant=False):
    """Two final-answer strings: equal as numbers, else equivalent expressions, else (for answers the
    grammar does not cover, like "(1, 2)") equal after whitespace is removed."""
    if not isinstance(pred, str) or not isinstance(gold, str) or len(pred) > 1000:
        return False
    if not up_to_constant and numbers_equal(pred, gold):
        return True
    if exprs_equivalent(pred, gold, up_to_constant=up_to_constant):
        return True
    return bool(pred.strip()) and _normalize_text(pred) == _normalize_text(gold)


def reward_symbolic(completion, gold, up_to_constant=False):
    """1.0 if the completion's final answer (#### line, else \\boxed{}) is equivalent to gold."""
    try:
        pred = extract_final(completion)
        return 1.0 if pred is not None and answers_match(pred, gold, up_to_constant) else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


REWARD_KINDS = ("number", "expr", "antiderivative", "text")


def reward_answer(completion, gold, kind):
    """Dispatch on the dataset's answer kind. An unknown kind is a caller bug and raises ValueError."""
    if kind == "number":
        return reward_numeric(completion, gold)
    if kind in ("expr", "text"):  # "text": shapes like "(32, 128)"; answers_match compares them as normalised text
        return reward_symbolic(completion, gold)
    if kind == "antiderivative":
        return reward_symbolic(completion, gold, up_to_constant=True)
    raise ValueError(f"unknown answer kind {kind!r}; expected one of {REWARD_KINDS}")


_FORMAT = re.compile(r"####[ \t]*\S[^\n]{0,99}")


def format_reward(completion):
    """1.0 if the completion ends with one well-formed "#### <answer>" line (and has no other ####)."""
    try:
        if not isinstance(completion, str):
            return 0.0
        s = completion.rstrip()
        if s.count("####") != 1:
            return 0.0
        last = s.rsplit("\n", 1)[-1].strip()
        return 1.0 if _FORMAT.fullmatch(last) else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def majority_key(answer):
    """The string majority votes count: the canonical number when it is one, else the stripped text."""
    if answer is None:
        return None
    n = normalize_number(answer)
    if n is not None:
        return n
    if not isinstance(answer, str):
        return None
    return answer.strip() or None

