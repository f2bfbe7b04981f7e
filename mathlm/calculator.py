"""The calculator tool: the only code that runs on model text inside a call, and it computes, never executes.

    from mathlm.calculator import calculate, CALC_ERROR
    calculate("48/2")          # '24'
    calculate("20000*.8")      # '16000'
    calculate("1,000 * 0.25")  # '250'
    calculate("10/3")          # '3.333333'
    calculate("2**1000000")    # 'error' (CALC_ERROR)

A small evaluator of its own (a tokenizer and a recursive-descent parser, Python's precedence):
    expr  := term (('+' | '-') term)*
    term  := unary (('*' | '/' | '//' | '%') unary)*
    unary := ('-' | '+') unary | power            # -2**2 is -4, as in Python
    power := atom ('**' unary)?                   # right-associative: 2**3**2 is 512
    atom  := number | '(' expr ')'
numbers: 12, 3.5, .8, 7. and digit groups with commas (1,000 / 12,345.6; a comma elsewhere is an
error). Arithmetic is exact (`fractions.Fraction`); `//` and `%` are Python's floor division and
modulo on rationals; `**` takes an integer exponent only (4**0.5 is an error, not 2.0).

Results are written the way GSM8K's `<<48/2=24>>` annotations write them, so the forced text is
on the training distribution (nanochat's calculator printed `10.0` where the data says `10`):
- an integer without `.0` ("24", "-3"), never "-0";
- a terminating decimal exactly, up to MAX_DECIMALS places ("0.25", "-3.5", "0.0625");
- anything else (1/3, or a decimal longer than MAX_DECIMALS places) rounded half away from zero to
  MAX_DECIMALS = 6 decimal places, trailing zeros stripped ("3.333333", "0.666667"; 1/3e7 is "0").
  6 places, not GSM8K's hand-rounded 2, so a chain of calls does not compound the rounding.
Measured against GSM8K's annotations (tests/test_calculator.py): train 23,049 / 23,716 (97.2%), test
4,126 / 4,282 (96.4%) reproduced character for character, and every one numerically equal; the others
are the same numbers written as money (4*8=32.00, 0.50*5=2.50, 24/60=.4), which no calculator can tell
from the expression — so data writers put calculate(expr) after <|result|>, never the annotation's text.

Bounds (each makes the result CALC_ERROR rather than slow or huge): MAX_LEN characters of input,
MAX_DIGITS digits per number, MAX_DEPTH nested parentheses/unary signs, |exponent| <= MAX_EXP,
MAX_BITS bits in any intermediate numerator or denominator (checked before a power is computed),
a result of at most MAX_RESULT_CHARS characters, and a TIME_LIMIT CPU-time check between steps.
Anything else — names, attributes, calls, strings, `^`, unbalanced parentheses, division by zero —
is CALC_ERROR too: `calculate` never raises and never prints.
"""
import re
import time
from fractions import Fraction

CALC_ERROR = "error"     # the text forced after <|result|> when a call cannot be computed
MAX_LEN = 256            # characters of expression
MAX_DIGITS = 30          # digits in one number (commas and the point not counted)
MAX_DEPTH = 32           # nesting of parentheses and unary signs (recursion stays shallow)
MAX_EXP = 1000           # |exponent| of **
MAX_BITS = 4096          # bits of any intermediate numerator/denominator (~1,200 digits)
MAX_RESULT_CHARS = 48    # a longer printed result is an error: nobody's word problem needs it
MAX_DECIMALS = 6         # decimal places of a non-terminating (or too long) result
TIME_LIMIT = 0.5         # seconds of this thread's CPU time, checked between parser steps: the bounds
                         # above keep the worst case near 1 ms; CPU, not wall, time, so a process that
                         # is descheduled on a busy machine never gets a spurious CALC_ERROR

# a number (digits with optional 3-digit comma groups, optional fraction) | an operator | a paren
TOKEN = re.compile(r"[ \t]*(?:(?P<num>(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]*)?|\.[0-9]+)|(?P<op>\*\*|//|[-+*/%()]))")


class _Fail(Exception):
    """Any reason the expression is not computed; caught in calculate, never escapes."""


def _tokenize(expr):
    toks, pos = [], 0
    end = len(expr.rstrip())
    while pos < end:
        m = TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise _Fail("bad character")
        if m.group("num") is not None:
            s = m.group("num").replace(",", "")
            if sum(c.isdigit() for c in s) > MAX_DIGITS:
                raise _Fail("too many digits")
            toks.append(("num", Fraction(s if not s.endswith(".") else s[:-1])))
        else:
            toks.append(("op", m.group("op")))
        pos = m.end()
        if toks[-1][0] == "num" and pos < len(expr) and expr[pos] in ".,":  # 1.2.3, 1,00
            raise _Fail("malformed number")
    return toks


def _check(x):
    if x.numerator.bit_length() > MAX_BITS or x.denominator.bit_length() > MAX_BITS:
        raise _Fail("too large")
    return x


class _Parser:
    def __init__(self, toks, deadline):
        self.toks, self.i, self.deadline, self.depth = toks, 0, deadline, 0

    def peek(self):
        return self.toks[self.i][1] if self.i < len(self.toks) and self.toks[self.i][0] == "op" else None

    def take(self):
        if self.i >= len(self.toks):
            raise _Fail("unexpected end")
        self.i += 1
        if time.thread_time() > self.deadline:
            raise _Fail("time")
        return self.toks[self.i - 1]

    def expr(self):
        x = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            y = self.term()
            x = _check(x + y if op == "+" else x - y)
        return x

    def term(self):
        x = self.unary()
        while self.peek() in ("*", "/", "//", "%"):
            op = self.take()[1]
            y = self.unary()
            if op == "*":
                x = x * y
            elif y == 0:
                raise _Fail("division by zero")
            elif op == "/":
                x = x / y
            elif op == "//":
                x = Fraction(x // y)
            else:
                x = x % y
            x = _check(x)
        return x

    def unary(self):
        if self.peek() in ("-", "+"):
            op = self.take()[1]
            self.enter()
            x = self.unary()
            self.depth -= 1
            return -x if op == "-" else x
        return self.power()

    def power(self):
        x = self.atom()
        if self.peek() == "**":
            self.take()
            self.enter()
            e = self.unary()
            self.depth -= 1
            if e.denominator != 1 or abs(e) > MAX_EXP:
                raise _Fail("exponent")
            e = int(e)
            if x == 0 and e < 0:
                raise _Fail("division by zero")
            # the result's size is known before computing it: refuse it rather than build it
            if max(x.numerator.bit_length(), x.denominator.bit_length()) * abs(e) > MAX_BITS:
                raise _Fail("too large")
            x = _check(x ** e)
        return x

    def atom(self):
        kind, v = self.take()
        if kind == "num":
            return v
        if v != "(":
            raise _Fail("expected a number")
        self.enter()
        x = self.expr()
        if self.take() != ("op", ")"):
            raise _Fail("expected )")
        self.depth -= 1
        return x

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Fail("too deep")


def format_number(x):
    """A Fraction as GSM8K writes it: '24', '-3.5', '0.25', else rounded to MAX_DECIMALS places."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    scale = 10 ** MAX_DECIMALS
    if (x * scale).denominator == 1:  # terminates within MAX_DECIMALS places: exact
        n = int(x * scale)
    else:  # round half away from zero
        n = int((abs(x) * scale + Fraction(1, 2)) // 1) * (1 if x > 0 else -1)
    sign = "-" if n < 0 else ""
    q, r = divmod(abs(n), scale)
    frac = str(r).rjust(MAX_DECIMALS, "0").rstrip("0")
    if not frac:
        return sign + str(q) if q else "0"
    return f"{sign}{q}.{frac}"


def evaluate(expr):
    """The exact value of expr as a Fraction; raises ValueError with the reason (for tests, tooling)."""
    if not isinstance(expr, str) or len(expr) > MAX_LEN:
        raise ValueError("not a string of at most MAX_LEN characters")
    try:
        toks = _tokenize(expr)
        if not toks:
            raise _Fail("empty")
        p = _Parser(toks, time.thread_time() + TIME_LIMIT)
        x = p.expr()
        if p.i != len(toks):
            raise _Fail("trailing tokens")
        return x
    except _Fail as e:
        raise ValueError(str(e)) from None


def calculate(expr):
    """The calculator's answer to expr as text (format_number), or CALC_ERROR. Never raises, never prints."""
    try:
        s = format_number(evaluate(expr))
        return s if len(s) <= MAX_RESULT_CHARS else CALC_ERROR
    except Exception:  # noqa: BLE001 — model text must never crash a decode, whatever it is
        return CALC_ERROR


# -----------------------------------------------------------------------------
# calls during decoding: which tokens the calculator forces, row by row


class CallTracker:
    """Calculator calls across the rows of one batched decode, in token ids (no torch: mathlm's
    GPT.generate and mathlm.infer.tools' transformers loop share it, so both force the same tokens).

        calls = CallTracker(tok, prompts)          # tok: .calc_ids (3 ids), .encode, .decode
        toks, forced = calls.step(sampled, done)   # lists, one entry per row, every decode step

    When a row's chosen token is <|result|>, the text since that row's last <|calc|> is computed and
    its result tokens + <|/result|> are queued; the next steps override that row's sampled token
    with them (forced True), one per step, so they pass through the model like sampled ones. Other
    rows are untouched. A <|result|> with no open call forces CALC_ERROR. Prompt tokens run through
    the same machine as if forced by the caller: a prompt may hold finished calls, end inside a
    call's expression, or end at <|result|> (then the first steps are forced).
    """

    def __init__(self, tok, prompts):
        self.tok = tok
        self.calc, self.result, self.end = tok.calc_ids
        self.open = [None] * len(prompts)      # ids since the row's last <|calc|>, None = no open call
        self.pending = [[] for _ in prompts]   # tokens still to force, in order
        seen = {}  # a prompt's state, computed once for its num_samples rows (few-shot prompts hold calls)
        for r, p in enumerate(prompts):
            key = tuple(p)
            if key in seen:
                o, q = seen[key]
                self.open[r], self.pending[r] = (list(o) if o is not None else None), list(q)
                continue
            for t in p:
                if self.pending[r] and self.pending[r][0] == t:  # the prompt already holds this forced token
                    self.pending[r].pop(0)
                else:
                    self.pending[r] = []
                    self.advance(r, t)
            seen[key] = (self.open[r], self.pending[r])

    def advance(self, r, t):
        """Row r's state after token t, which the model (not the calculator) chose."""
        if t == self.calc:
            self.open[r] = []
        elif t == self.result:
            expr = self.tok.decode(self.open[r]) if self.open[r] is not None else None
            self.open[r] = None
            self.pending[r] = list(self.tok.encode(calculate(expr) if expr is not None else CALC_ERROR))
            self.pending[r].append(self.end)
        elif self.open[r] is not None:
            self.open[r].append(t)

    def step(self, toks, done=None):
        """toks: each row's sampled token (list of ints). Returns (toks with forced tokens put in, forced
        flags). done[r] True: row r has finished and is left alone."""
        toks, forced = list(toks), [False] * len(toks)
        for r, t in enumerate(toks):
            if done is not None and done[r]:
                continue
            if self.pending[r]:
                toks[r], forced[r] = self.pending[r].pop(0), True
            else:
                self.advance(r, t)
        return toks, forced


def forced_mask(ids, calc_ids):
    """[bool] per token of ids: True where the calculator, not the model, wrote it — every token after a
    <|result|> up to and including the next <|/result|> (or to the end, when a cut cut it off). These
    are exactly the tokens CallTracker forces, so SFT and GRPO read the mask off the ids alone.
    calc_ids None (a tokenizer without the tool): nothing is forced."""
    if calc_ids is None:
        return [False] * len(ids)
    _, result, end = calc_ids
    out, inside = [], False
    for t in ids:
        out.append(inside)
        if inside:
            inside = t != end
        elif t == result:
            inside = True
    return out


__all__ = ["calculate", "evaluate", "format_number", "CallTracker", "forced_mask", "CALC_ERROR", "MAX_DECIMALS"]
