"""Where the answer is in model text, and plain numbers read exactly (no sympy here: data stages import it).

    from mathlm.eval.extract import extract_final, extract_boxed, normalize_number
    extract_final("... so she sold 72 clips.\\n#### 72")     # "72"
    extract_boxed("so $x = \\boxed{\\frac{1}{2}}$")           # "\\frac{1}{2}"
    normalize_number("$1,234.50")                             # "1234.5"

Pure functions: nothing here reads or writes a file, prints, or raises on model text.

Where the answer is, in the order a grader looks:
  1. the model's text ends at the next question turn: an inline or new-line "Q:" (the model
     starting the next few-shot question) cuts it, so that question's numbers are not read;
  2. the declared answer (extract_final): the first non-empty line after the first "####" (the
     first, as lm-eval-harness's strict match takes it: what follows a declared answer is
     chatter), its \\boxed{} content if it has one, a trailing period dropped; else the last
     \\boxed{...} / \\fbox{...} (braces matched; "\\boxed 5" is 5). This is the strict answer;
  3. the flexible fallbacks, used only when nothing is declared: the sentence after the last
     "the answer is" / "answer:" (answer_phrase), then, for numbers only, the last number in the
     text (last_number). A declared answer that does not read is not rescued by a fallback.
GSM8K calculator annotations <<48/2=24>> are dropped before any of this.

A plain number is: an optional minus (ASCII or U+2212, only where it cannot be a binary minus),
an optional $, ASCII digits with optional thousands commas "1,234" and decimals "3.5", a
fraction "3/4" or "\\frac{3}{4}", or a mixed number "1 1/2" (3/2); % and $ around it are
ignored, and "3." is 3. Unicode digits (٧٢, ７２) are not numbers. Number words (zero to
nineteen, the tens, hundred, thousand, million, billion: "twenty-five", "one hundred twenty")
are read where an answer is declared. Numbers are fractions.Fraction, so comparisons are exact:
0.5 == 1/2 and 0.333 != 1/3. normalize_number's canonical string: an integer "1234", a
terminating decimal "0.75", otherwise "p/q"; equal values give equal strings, so strings can be
counted (majority vote) and compared. Expressions as answers ("5-3", "2\\cdot10^{3}") are read
by mathlm.eval.equiv.read_number, which starts from these.
"""
import math
import re
from fractions import Fraction

MAX_NUM_DIGITS = 40  # longer digit runs are not answers; also keeps int() far from Python's 4300-digit limit

# GSM8K's own calculator annotations repeat the result right after them: "48/2 = <<48/2=24>>24"
_CALC = re.compile(r"<<[^<>\n]{0,200}>>")

# the model starting the next question: "Q:" at the start or after a space or sentence end
_NEXT_QUESTION = re.compile(r"(?:^|(?<=[\s.!?;:)]))Q:")

# one number in running text. The look-behind keeps "x2" and "1.2" (the 2) from matching and
# lets a minus count only where it cannot be a binary minus ("5-3" → 3, "x = -3" → -3).
# re.ASCII: \d and \w would otherwise take Arabic-Indic and fullwidth digits.
_NUMBER = re.compile(r"""
    (?<![\w.\\)\]}])
    (?P<neg>-\s?)?
    (?:\\?\$\s?)?
    (?:
        \\[dt]?frac\{\s*(?P<fn>-?\d{1,40})\s*\}\{\s*(?P<fd>-?\d{1,40})\s*\}
      | (?P<whole>\d{1,40})[ \t]+(?P<mn>\d{1,40})/(?P<md>\d{1,40})(?![\d/.])
      | (?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<dec>\.\d+)?(?:/(?P<den>\d+)(?![\d/]))?
      | (?P<lead>\.\d+)
    )
""", re.VERBOSE | re.ASCII)

# "the answer is 18", "Final answer: 18", "answer = 18"
_ANSWER_PHRASE = re.compile(r"\banswer\s*(?:is\b\s*:?|:|=)\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?;](?:\s|$)|\n")

_ONES = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                    "thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9}


def _clean(text):
    return text.replace("\u2212", "-").replace("{,}", ",")


def _match_to_fraction(m):
    """A _NUMBER match → Fraction, or None (too many digits, zero denominator)."""
    if m.group("fn") is not None:
        num, den = m.group("fn"), m.group("fd")
    elif m.group("whole") is not None:
        if int(m.group("md")) == 0 or int(m.group("mn")) >= int(m.group("md")):
            return None  # "3 4/2" is not a mixed number
        f = int(m.group("whole")) + Fraction(int(m.group("mn")), int(m.group("md")))
        return -f if m.group("neg") else f
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


def plain_number(s):
    """An answer string that is one plain number, optionally followed by unit words ("72 clips",
    "$18.00 per hour"), or number words ("twenty-five apples") → Fraction, else None."""
    if not isinstance(s, str) or len(s) > 200:
        return None
    s = _clean(s).strip().rstrip(".").strip()
    m = re.fullmatch(r"(.*?[0-9%])\s*(?:\\text\{\s*)?([A-Za-z][A-Za-z .]*)\}?", s)
    if m and not re.search(r"[0-9]", m.group(2)):
        s = m.group(1)  # the unit words go
    try:
        f = _to_fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return f if f is not None else _words_number(s)


def _words_number(s):
    """'five' → 5, 'twenty-five' → 25, 'one hundred twenty' → 120, 'three thousand apples' → 3000."""
    if re.search(r"[0-9]", s):
        return None
    words = re.findall(r"[a-z]+", s.lower())
    total, current, seen = 0, 0, False
    for k, w in enumerate(words):
        if w in _ONES:
            current += _ONES[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w == "hundred" and seen:
            current *= 100
        elif w in _SCALES and seen:
            total, current = total + current * _SCALES[w], 0
        elif w == "and" and seen:
            continue
        else:
            if len(words) - k > 3:  # more than a unit after the number: a sentence, not an answer
                return None
            break
        seen = True
    return Fraction(total + current) if seen else None


def canonical(f):
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
    return None if f is None else canonical(f)


def numbers_equal(a, b):
    """Exact equality of two numbers given as strings (any form normalize_number reads), ints or Fractions."""
    try:
        fa, fb = _to_fraction(a), _to_fraction(b)
    except (ValueError, ZeroDivisionError):
        return False
    return fa is not None and fb is not None and fa == fb


def first_number(text):
    """The first plain number in running text, or None."""
    for m in _NUMBER.finditer(text):
        f = _match_to_fraction(m)
        if f is not None:
            return f
    return None


def last_number(text):
    """The last plain number in running text, or None. Scans a tail window, widening it 4x until it holds
    a number that starts well inside it (one near the window's edge may be cut or lose its look-behind):
    a 100 kB text of numbers costs one 4 kB scan."""
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


# -----------------------------------------------------------------------------
# where the answer is

def answer_text(text):
    """Model text → the part a grader reads: up to the next "Q:" turn, calculator annotations dropped.
    None for anything that is not a string."""
    if not isinstance(text, str):
        return None
    m = _NEXT_QUESTION.search(text)
    if m:
        text = text[:m.start()]
    return _CALC.sub("", _clean(text))


def extract_boxed(text):
    """Content of the last \\boxed{...} or \\fbox{...} (balanced braces), or None. "\\boxed 5" gives "5".
    The one \\boxed parser of the project (mathlm.data.qa_io.last_boxed is this function)."""
    if not isinstance(text, str):
        return None
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if i == -1:
        return None
    m = re.match(r"\\(?:boxed|fbox)[ \t]*(\{)?", text[i:i + 50])
    if not m.group(1):  # "\boxed 5": up to the next space or $, a closing period dropped
        m = re.match(r"\\(?:boxed|fbox) +([^\s$]+)", text[i:i + 200])
        return (m.group(1).rstrip(".,") or None) if m else None
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
    """The declared (strict) answer string: the first non-empty line after the first "####" (its
    \\boxed{} content if it has one, a trailing period dropped), else the last \\boxed{} content, else None."""
    text = answer_text(text)
    if text is None:
        return None
    i = text.find("####")
    if i != -1:
        line = text[i + 4:].strip().split("\n", 1)[0].strip()
        boxed = extract_boxed(line)
        line = boxed if boxed is not None else line
        return line.rstrip(".").strip() or None
    return extract_boxed(text)


def answer_phrase(text):
    """The sentence after the last "the answer is" / "answer:" in the text, or None: "The answer is 18
    dollars. Then ..." → "18 dollars"."""
    text = answer_text(text)
    if text is None:
        return None
    last = None
    for last in _ANSWER_PHRASE.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end():last.end() + 300]
    end = _SENTENCE_END.search(rest)
    rest = (rest[:end.start()] if end else rest).strip().rstrip(".").strip()
    return rest or None
