"""Rewards and gold answers: what GRPO pays for and what every eval counts, in one place.

    from mathlm.eval.answers import reward_answer, gold_answer, extract_number
    reward_answer("... so she sold 72 clips.\\n#### 72", "72", "number")        # 1.0
    reward_answer("#### x^3/3 + C", "\\frac{x^{3}}{3}", "antiderivative")       # 1.0
    reward_answer("#### 10^{40}", "x^3/3", "antiderivative")                    # 0.0
    gold_answer({"question": "...", "answer": "... #### 1,234"})               # ("1234", "number")

The ideas live in three modules, re-exported here so callers import from one place:
  mathlm/eval/extract.py    where the answer is in model text; plain numbers, exactly
  mathlm/eval/safe_math.py  the whitelist parser and bounded evaluator for untrusted text
  mathlm/eval/equiv.py      the equivalence rule (numbers as a grader reads them, expressions
                            numerically, antiderivatives through their derivatives)

Gold answers: gold_answer(row) → (gold string or None, kind) for a row of any schema: row["final"]
(synthetic and converted rows), else what follows the last "####" (GSM8K), else the last \\boxed{}
(MATH), else the whole answer when it is one number. kind is row["kind"] when given, else
"number" for GSM8K-schema rows and plain numbers, else "expr". A "number" gold is canonical
("1,234" → "1234"). GRPO, both evals and the report read golds through it and nothing else.

Three ways to read a completion's answer (mode), each a superset of the one before:
  "strict"    the declared answer only: the "####" line, else the last \\boxed{} — the evals'
              headline accuracy (lm-eval-harness's strict match);
  "stated"    (default; the GRPO reward) else an answer stated whole: the sentence after the last
              "the answer is", else the whole completion when it is one answer ("57", "x = 7");
  "flexible"  else, for numbers, the first number of that sentence, else the last number in the
              text — the evals' "flexible" accuracy. Never a reward: a policy paid for its last
              number learns to end on common numbers or to copy the question's.
A declared answer that does not read is wrong in every mode; no fallback rescues it.

Rewards (binary; format is scored apart from correctness): reward_numeric, reward_symbolic,
reward_answer(completion, gold, kind, mode="stated") and format_reward return 1.0 or 0.0, never
raise on any completion (malformed → 0.0), print nothing and touch no file. GRPO also pays 0 for
a completion cut at max_new_tokens before it declared an answer (has_final_answer).
"""
import re

from mathlm.eval.equiv import answers_match, canonical_number, exprs_equivalent, read_number
from mathlm.eval.extract import (canonical, answer_phrase, answer_text, extract_boxed, extract_final, first_number,
                                 last_number, normalize_number, numbers_equal)
from mathlm.eval.safe_math import parse_math

__all__ = ["MODES", "REWARD_KINDS", "answer_phrase", "answers_match", "exprs_equivalent", "extract_answer",
           "extract_boxed", "extract_final", "extract_number", "format_reward", "gold_answer", "has_final_answer",
           "majority_key", "normalize_number", "numbers_equal", "parse_math", "read_number", "reward_answer",
           "reward_numeric", "reward_symbolic"]

REWARD_KINDS = ("number", "expr", "antiderivative", "text")


# -----------------------------------------------------------------------------
# gold answers

def gold_answer(row):
    """(gold answer string or None, kind) for a row of any schema; None: the row states no answer
    (a MATH solution that boxes nothing), and callers leave such rows out."""
    kind = row.get("kind") or None
    answer = row.get("answer")
    answer = "" if answer is None else str(answer)
    final = row.get("final")
    if final is not None and str(final).strip():
        gold, schema = str(final).strip(), "number" if "####" in answer else "expr"
    elif "####" in answer:  # GSM8K: the gold follows ####
        gold, schema = answer.rsplit("####", 1)[1].strip(), "number"
    elif extract_boxed(answer) is not None:  # MATH: the last \boxed{} of the solution
        gold, schema = extract_boxed(answer), "expr"
    elif normalize_number(answer) is not None:  # a bare number
        gold, schema = answer.strip(), "number"
    else:
        gold, schema = None, "expr"
    kind = kind or schema
    if gold is not None and kind == "number":
        gold = normalize_number(gold) or gold
    return (gold or None), kind


# -----------------------------------------------------------------------------
# answers in completions: three ways to read one

MODES = ("strict", "stated", "flexible")


def _stated(text):
    """The answer a completion states without declaring it: the sentence after its last "the answer is",
    else the whole completion (a bare "57" or "x = 7"). None when neither exists."""
    phrase = answer_phrase(text)
    if phrase is not None:
        return phrase
    return text.strip() or None


def extract_answer(text, mode="stated"):
    """Model text → the answer string the checker compares, or None (see the module docstring for modes)."""
    text = answer_text(text)
    if text is None:
        return None
    final = extract_final(text)
    if final is not None or "####" in text or mode == "strict":
        return final  # a declared answer that does not read is not rescued by a fallback
    return _stated(text)


def extract_number(text, mode="stated"):
    """Model text → canonical number string (see normalize_number), or None. The declared answer (the
    "####" line, else the last \\boxed{}) read as a grader reads it; else, unless mode is "strict", the
    stated answer read whole; else, with mode "flexible", the first number of the answer sentence, else
    the last number of the text (lm-eval-harness's flexible match)."""
    text = answer_text(text)
    if text is None:
        return None
    final = extract_final(text)
    if final is not None or "####" in text:  # declared: what does not read is not rescued
        f = None if final is None else read_number(final)
        if f is None and final is not None and answer_phrase(final) is not None:
            f = read_number(answer_phrase(final))  # "#### The answer is 5"
    elif mode == "strict":
        f = None
    else:
        stated = _stated(text)
        f = None if stated is None else read_number(stated)
        if f is None and mode == "flexible":
            phrase = answer_phrase(text)
            f = None if phrase is None else first_number(phrase)
            if f is None:
                f = last_number(text)
    return None if f is None else canonical(f)


def has_final_answer(text):
    """True when the text declares an answer (a non-empty "####" line or a \\boxed{}): what a completion
    cut at max_new_tokens must have to earn a reward."""
    return extract_final(text) is not None


# -----------------------------------------------------------------------------
# rewards (GRPO) — binary correctness, and a separate format reward

def reward_numeric(completion, gold, mode="stated"):
    """1.0 if the completion's number equals gold exactly (gold: a number or a full GSM8K answer)."""
    try:
        pred = extract_number(completion, mode)
        if pred is None:
            return 0.0
        g = normalize_number(gold)
        if g is None:
            g = extract_number(gold) if "####" in str(gold) else canonical_number(gold)
        return 1.0 if numbers_equal(pred, g) else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def reward_symbolic(completion, gold, up_to_constant=False, mode="stated"):
    """1.0 if the completion's answer (extract_answer; "flexible" reads expressions as "stated" does)
    is equivalent to gold."""
    try:
        pred = extract_answer(completion, mode)
        return 1.0 if pred is not None and answers_match(pred, gold, up_to_constant) else 0.0
    except Exception:  # noqa: BLE001
        return 0.0


def reward_answer(completion, gold, kind, mode="stated"):
    """Dispatch on the dataset's answer kind. An unknown kind or mode is a caller bug and raises ValueError."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if kind == "number":
        return reward_numeric(completion, gold, mode)
    if kind in ("expr", "text"):  # "text": shapes like "(32, 128)"; answers_match compares them as normalised text
        return reward_symbolic(completion, gold, mode=mode)
    if kind == "antiderivative":
        return reward_symbolic(completion, gold, up_to_constant=True, mode=mode)
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

