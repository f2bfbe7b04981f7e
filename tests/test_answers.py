"""Answer extraction, exact number comparison, the safe symbolic checker and the rewards.
Tables of real-looking completions; hostile inputs must score 0 at once, print nothing, write nothing."""
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sympy

from mathlm.eval.answers import (answers_match, exprs_equivalent, extract_boxed, extract_final,
                                 extract_number, format_reward, normalize_number, numbers_equal,
                                 parse_math, reward_answer, reward_numeric, reward_symbolic)
from tests.conftest import GSM8K_SAMPLE

# -----------------------------------------------------------------------------
# numbers

@pytest.mark.parametrize("s,want", [
    ("1,234", "1234"), ("$5.00", "5"), ("50%", "50"), ("3.", "3"), ("-0.5", "-0.5"), ("1/2", "0.5"),
    ("\\frac{1}{3}", "1/3"), ("-\\frac{3}{4}", "-0.75"), ("\\dfrac{6}{4}", "1.5"), ("\u22123", "-3"),
    ("0.50", "0.5"), (".25", "0.25"), ("1,080", "1080"), ("109,200,000", "109200000"), (" 72 ", "72"),
    ("\\$18", "18"), ("18\\%", "18"), ("\\boxed{42}", "42"), ("-0", "0"), (7, "7"), (0.1, "0.1"),
    ("1/0", None), ("abc", None), ("", None), ("1,23", None), ("3 apples", None), (None, None),
    ("1" * 41, None), ("2/3/4", None),
])
def test_normalize_number(s, want):
    assert normalize_number(s) == want


@pytest.mark.parametrize("a,b,want", [
    ("0.5", "1/2", True), ("\\frac{2}{4}", "0.5", True), ("1,000", "1000", True), ("$3.50", "3.5", True),
    ("0.333", "1/3", False), ("0.3333333333", "\\frac{1}{3}", False), ("-3", "3", False),
    ("1000000000000000000000000001", "1000000000000000000000000000", False), ("x", "x", False),
    (None, "1", False), (72, "72.0", True),
])
def test_numbers_equal_is_exact(a, b, want):
    assert numbers_equal(a, b) is want


# (completion, extracted number, gold): the table GSM8K eval and GRPO rewards rely on
EXTRACT_TABLE = [
    # GSM8K reference style with calculator annotations and a #### line
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72",
     "72", "72"),
    ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
     "10", "10"),
    ("He pays 1,500 + 600 = $<<1500+600=2100>>2,100.\n#### 2,100", "2100", "2100"),
    ("The total is 3 * 4 = 12\n#### 12 apples", "12", "12"),
    ("#### $18.00", "18", "18"),
    ("So the answer is 5.\n#### 5.", "5", "5"),
    ("The temperature fell to 5 - 8 = -3 degrees.\n#### -3", "-3", "-3"),
    ("The temperature fell to \u22123 degrees.\n#### \u22123", "-3", "-3"),
    ("She has 3/4 of the pie left.\n#### 3/4", "0.75", "0.75"),
    ("#### \\frac{3}{4}", "0.75", "3/4"),
    ("#### 0.75", "0.75", "3/4"),
    ("The percent is 25%.\n#### 25%", "25", "25"),
    # doubled ####: the first declared answer counts, later text is chatter
    ("18 - 6 = 12\n#### 12\n#### 13", "12", "12"),
    ("#### 7\nQ: Tom has 3 apples and gets 5 more.\n#### 8", "7", "7"),
    ("Wrong first.\n#### 40\nActually it is 42.", "40", "42"),
    # #### with no number after it: the declared answer is not a number (and no fallback rescues it)
    ("She had 5 apples.\n####", None, "5"),
    ("She had 5 apples.\n#### lots", None, "5"),
    ("She had 5 apples.\n#### five", "5", "5"),  # number words are read where an answer is declared (#12)
    # no ####: the last number
    ("Natalia sold 48 + 24 = 72 clips.", "72", "72"),
    ("Each box holds 12, so 5 boxes hold 60 eggs. The answer is 60.", "60", "60"),
    ("x = 7.", "7", "7"),
    ("So he earns $1,234.50 in total.", "1234.5", "1234.50"),
    ("The answer is 18 dollars.", "18", "18"),
    ("The answer is $18", "18", "18"),
    ("That is an increase of 18%.", "18", "18"),
    ("The final balance is -45 dollars.", "-45", "-45"),
    ("The final balance is \u221245 dollars.", "-45", "-45"),
    ("10-3=7", "7", "7"),
    ("The difference is 10-3", "3", "3"),
    ("It fell from 5 to -2", "-2", "-2"),
    ("She ate 2/3 of it.", "2/3", "2/3"),
    ("Half the class: 30/2 = <<30/2=15>>15 students", "15", "15"),
    ("He runs 3 miles a day for 7 days, so 3 * 7 = 21 miles", "21", "21"),
    ("Total cost: 2.5 * 4 = 10.00", "10", "10"),
    ("It weighs 1,000,000 grams", "1000000", "1000000"),
    ("We get 0.5 hours", "0.5", "1/2"),
    ("The answer is .5", "0.5", "0.5"),
    ("So x2 is not a number but 9 is", "9", "9"),
    ("The 3rd day she reads 14 pages", "14", "14"),
    ("Therefore the answer is \\frac{5}{8}.", "0.625", "5/8"),
    ("so y = -\\frac{1}{2}", "-0.5", "-1/2"),
    # boxed answers win over a later number
    ("Adding up, we get \\boxed{18}.", "18", "18"),
    ("The answer is $\\boxed{1{,}024}$. Checked with 2 methods.", "1024", "1024"),
    ("\\boxed{\\frac{7}{2}} because 7 over 2", "3.5", "7/2"),
    ("\\boxed{\\$42.00}", "42", "42"),
    ("So $x = \\boxed{-4}$ and we are done in 3 steps.", "-4", "-4"),
    # wrong answers are still extracted, and marked wrong against gold
    ("48 + 24 = 71\n#### 71", "71", "72"),
    ("The answer is 7.5", "7.5", "7"),
    ("\\boxed{19}", "19", "18"),
    ("I am not sure.", None, "3"),
    ("", None, "3"),
]


@pytest.mark.parametrize("text,want,gold", EXTRACT_TABLE)
def test_extract_number_table(text, want, gold):
    assert extract_number(text, mode="flexible") == want  # the table includes the last-number fallback
    correct = want is not None and numbers_equal(want, gold)
    assert reward_numeric(text, gold, mode="flexible") == (1.0 if correct else 0.0)


@pytest.mark.parametrize("text,strict,stated,flexible", [
    ("work\n#### 72", "72", "72", "72"),                       # declared: every mode reads it
    ("so \\boxed{72}", "72", "72", "72"),
    ("72", None, "72", "72"),                                  # a bare answer is stated, not declared
    ("x = 72.", None, "72", "72"),
    ("The answer is 72 clips.", None, "72", "72"),
    ("The answer is 72, I think.", None, None, "72"),          # not a whole answer: the flexible first number
    ("Natalia sold 48 + 24 = 72 clips.", None, None, "72"),    # only the last-number fallback reads it
    ("#### lots\nso 72", None, None, None),                    # declared and unreadable: no rescue
])
def test_extract_number_modes(text, strict, stated, flexible):
    # #12: GRPO pays for "stated" answers; the evals report "strict" and "flexible" side by side
    assert [extract_number(text, m) for m in ("strict", "stated", "flexible")] == [strict, stated, flexible]


def test_extract_table_is_big_and_mixed():
    assert len(EXTRACT_TABLE) >= 40
    assert sum(reward_numeric(t, g) for t, _, g in EXTRACT_TABLE) < len(EXTRACT_TABLE)  # has wrong ones


def test_reward_numeric_takes_a_full_gsm8k_gold():
    assert reward_numeric("so 72\n#### 72", "Natalia sold 48+24 = 72 clips.\n#### 72") == 1.0


def _gsm8k_answers(n):
    with open(os.path.join(GSM8K_SAMPLE, "train.jsonl")) as f:  # the committed first 200 rows
        return [json.loads(next(f))["answer"] for _ in range(n)]


def test_real_gsm8k_answers():
    answers = _gsm8k_answers(50)
    for a in answers:
        body, gold = a.rsplit("####", 1)
        assert extract_number(a) == normalize_number(gold), a
        assert reward_numeric(a, gold) == 1.0
    # without the #### line the last number is the answer almost always (97% on all 8,792 answers;
    # the rest end on a sentence like "... on the 13th day"); 48 of these 50
    hits = sum(extract_number(a.rsplit("####", 1)[0], mode="flexible") == normalize_number(a.rsplit("####", 1)[1])
               for a in answers)
    assert hits >= 45


# -----------------------------------------------------------------------------
# final-answer strings

@pytest.mark.parametrize("text,want", [
    ("so \\boxed{5}", "5"), ("\\boxed{\\frac{1}{2}} and \\boxed{x^{2}}", "x^{2}"), ("\\fbox{7}", "7"),
    ("\\boxed{a{b}c}", "a{b}c"), ("\\boxed{ 3 }", "3"), ("\\boxed 5$", "5"), ("\\boxed{unclosed", None),
    ("no box", None), (None, None),
])
def test_extract_boxed(text, want):
    assert extract_boxed(text) == want


@pytest.mark.parametrize("text,want", [
    ("work\n#### 2x\\cos(x^2)", "2x\\cos(x^2)"), ("#### 72.", "72"), ("#### \\boxed{5}", "5"),
    ("#### 1\n#### 2", "1"), ("####\n\n 42 \nmore", "42"), ("so \\boxed{x+1}", "x+1"), ("####   ", None),
    ("plain 5", None),
])
def test_extract_final(text, want):
    assert extract_final(text) == want


# -----------------------------------------------------------------------------
# safe symbolic checker

@pytest.mark.parametrize("a,b", [
    ("2*x*cos(x^2)", "2x\\cos(x^{2})"),
    ("2*x*cos(x**2)", "2 x \\cos\\left(x^{2}\\right)"),
    ("\\frac{x^{3}}{3}", "x^3/3"),
    ("\\sin^2 x + \\cos^2 x", "1"),
    ("sin^2(x)", "1 - cos(x)^2"),
    ("e^{2x}", "exp(x)^2"),
    ("\\sqrt{x}", "x^{1/2}"),
    ("(x+1)^2", "x^2 + 2x + 1"),
    ("\\frac{1}{x^2}", "x^{-2}"),
    ("y = 3x", "3x"),
    ("\\tan x", "\\frac{\\sin x}{\\cos x}"),
    ("\\sin^{-1} x", "arcsin(x)"),
    ("\\dfrac12", "0.5"),
    ("2\\pi", "\u03c0 + pi"),
    ("xy", "y*x"),
    ("\\sqrt{x-3}", "(x-3)^{1/2}"),  # complex at the sample points, still compared
    ("\\frac{-b}{2a}", "-b/(2*a)"),
    ("5\\text{ cm}", "5"),
])
def test_equivalent(a, b):
    assert exprs_equivalent(a, b)
    assert exprs_equivalent(b, a)


@pytest.mark.parametrize("pred,gold", [
    ("\\sqrt[3]{x^2}", "x^(2/3)"),  # real for x < 0, where the gold's principal value is not
    ("\\ln(x^2)", "2\\ln x"),
])
def test_equivalent_where_the_gold_is_real(pred, gold):
    # #12: negative points are sampled; the pred must match wherever the gold is real, so these hold
    # one way only (2 ln x for the gold ln(x^2) is wrong at x < 0)
    assert exprs_equivalent(pred, gold)
    assert not exprs_equivalent(gold, pred)


@pytest.mark.parametrize("a,b", [
    ("2*x*cos(x^2)", "x*cos(x^2)"),
    ("2*x*cos(x^2)", "2x\\sin(x^{2})"),
    ("x^2", "x^3"),
    ("\\sin^2 x + \\cos^2 x", "2"),
    ("e^x", "e^{-x}"),
    ("1/3", "0.333333333333"),
    ("x + 1", "x + 1.000000001"),
    ("x^3/3 + 1", "x^3/3"),  # differ by a constant: not equal without up_to_constant
    ("\\ln|x|", "\\ln(x+1)"),
])
def test_not_equivalent(a, b):
    assert not exprs_equivalent(a, b)
    assert not exprs_equivalent(b, a)


def test_equivalence_is_the_same_from_threads():
    pairs = [("2*x*cos(x^2)", "2x\\cos(x^{2})"), ("x^2", "x^3"), ("\\sin^2 x + \\cos^2 x", "1")] * 20
    want = [exprs_equivalent(a, b) for a, b in pairs]
    with ThreadPoolExecutor(4) as ex:
        assert list(ex.map(lambda ab: exprs_equivalent(*ab), pairs)) == want == [True, False, True] * 20


@pytest.mark.parametrize("pred,gold,want", [
    ("\\frac{x^{3}}{3} + C", "x^3/3", True),
    ("x^3/3 + 7", "\\frac{x^3}{3}", True),
    ("\\ln|x| + C", "\\ln x", True),
    ("-\\cos x + C", "1 - \\cos(x)", True),
    ("\\sin^2 x / 2", "-\\cos^2 x / 2", True),  # differ by the constant 1/2
    ("\\frac{e^{2x}}{2} + C", "e^{2x}/2", True),
    ("x \\ln x - x + C", "x\\ln(x) - x", True),
    ("x^3 + C", "x^3/3", False),
    ("\\cos x + C", "-\\cos x", False),
    ("e^{2x} + C", "e^{2x}/2", False),
    ("x\\ln x + C", "x\\ln(x) - x", False),
])
def test_antiderivative_up_to_constant(pred, gold, want):
    assert exprs_equivalent(pred, gold, up_to_constant=True) is want
    assert reward_answer(f"Integrate term by term.\n#### {pred}", gold, "antiderivative") == float(want)


@pytest.mark.parametrize("text,want", [
    ("2x", "2*x"), ("x^{2}", "x**2"), ("\\frac{1}{2}", "1/2"), ("-x", "-x"), ("3.5", "7/2"),
])
def test_parse_math_builds_the_expected_tree(text, want):
    got = parse_math(text)
    assert got is not None and sympy.simplify(got - sympy.sympify(want)) == 0  # want is trusted test text


def test_answers_match_falls_back_to_text_for_tuples():
    assert answers_match("(1, 2)", "(1,2)")
    assert not answers_match("(1, 3)", "(1,2)")
    assert answers_match("\\frac{1}{2}", "0.5")


def test_reward_symbolic_and_dispatch():
    assert reward_symbolic("We differentiate.\n#### 2x\\cos(x^2)", "2*x*cos(x^2)") == 1.0
    assert reward_symbolic("so the answer is \\boxed{\\frac{\\sqrt{2}}{2}}", "1/\\sqrt{2}") == 1.0
    assert reward_symbolic("no final answer", "1") == 0.0
    assert reward_answer("#### 5", "5", "number") == 1.0
    assert reward_answer("#### 5", "5", "expr") == 1.0
    with pytest.raises(ValueError):
        reward_answer("#### 5", "5", "nonsense")  # a caller bug, not model text: loud


@pytest.mark.parametrize("text,want", [
    ("reasoning\n#### 42", 1.0), ("#### 42\n", 1.0), ("#### x^2 + C", 1.0), ("####42", 1.0),
    ("reasoning\n#### 42\nchatter", 0.0), ("#### 4\n#### 42", 0.0), ("#### ", 0.0), ("the answer is 42", 0.0),
    ("", 0.0), (None, 0.0), ("#### " + "9" * 200, 0.0),
])
def test_format_reward(text, want):
    assert format_reward(text) == want


# -----------------------------------------------------------------------------
# hostile model text: reward 0 at once, nothing printed, nothing written

HOSTILE = [
    "__import__('os').system('touch {sentinel}')",
    "__import__(\"os\").system(\"touch {sentinel}\")",
    "exec(\"open('{sentinel}','w')\")",
    "eval('1')",
    "lambda: 1",
    "().__class__.__bases__",
    "().__class__.__bases__[0].__subclasses__()",
    "import os",
    "x.__dict__",
    "Symbol('x')",
    "9**9**9**9",
    "9^9^9^9",
    "10^10^10",
    "x^(10^100)",
    "x^{10^{100}}",
    "2^{2^{2^{2^{2^{2}}}}}",
    "(10x)^{(10x)^{(10x)^{(10x)}}}",
    "e^{e^{e^{e^{e^{e^{x}}}}}}",
    "9" * 5000,
    "1" * 100_000,
    "x+" * 50_000 + "x",
    "(" * 10_000 + "x" + ")" * 10_000,
    "\\frac{" * 500 + "1" + "}{2}" * 500,
    "\\boxed{" * 1000 + "1" + "}" * 1000,
    "#" * 100_000,
    "1/" * 50_000,
    "1,111" + ",111" * 25_000,
    "<<" + "a" * 198 + ">" + "<<1>>" * 10_000,
    "x^" * 99 + "x",
    "-" * 150 + "x",
    "\\sin(" * 60 + "x" + ")" * 60,
    "\\input{/etc/passwd}",
    "\\write18{touch {sentinel}}",
    "x_1",
    "'x'",
    "",
    " ",
    "\x00",
    "\\",
    "{",
    "None",
    "nan",
    "oo",
    "zoo",
    "1/0",
    "x/0",
    "\\ln 0",
    "\\frac{1}{0}",
]


def _hostile_inputs(sentinel):
    out = []
    for h in HOSTILE:
        h = h.replace("{sentinel}", str(sentinel))
        out += [h, "Let me think.\n#### " + h, "\\boxed{" + h + "}"]
    return out + [None, 123, b"1", ["#### 1"], {"a": 1}]


# grammatical, so they parse, but have no finite value or are not 17: still reward 0
PARSEABLE = {"(10x)^{(10x)^{(10x)^{(10x)}}}", "e^{e^{e^{e^{e^{e^{x}}}}}}", "oo", "1/0", "x/0", "\\ln 0",
             "\\frac{1}{0}"}


def test_hostile_inputs_score_zero_fast_silently(tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    before = set(os.listdir(tmp_path))
    gold = "17"  # no hostile text contains 17, so a 1.0 could only come from something being run
    for h in _hostile_inputs(sentinel):
        for fn in (lambda: reward_answer(h, gold, "expr"), lambda: reward_answer(h, gold, "antiderivative"),
                   lambda: reward_answer(h, gold, "number"), lambda: reward_symbolic(h, "x"),
                   lambda: float(exprs_equivalent(h, gold)),
                   lambda: float(exprs_equivalent("x", h, up_to_constant=True))):
            t = time.perf_counter()
            r = fn()
            dt = time.perf_counter() - t
            assert r == 0.0, (str(h)[:80], r)
            assert dt < 1.0, (str(h)[:80], dt)  # a safety bound on hostile input, not a speed benchmark
        format_reward(h)  # must not raise either
    for h in HOSTILE:
        if h not in PARSEABLE:
            assert parse_math(h.replace("{sentinel}", str(sentinel))) is None, h
    assert not sentinel.exists()
    assert set(os.listdir(tmp_path)) == before
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


@pytest.mark.parametrize("text", [
    "__import__('os').system('ls')", "lambda: 1", "().__class__.__bases__", "9**9**9**9", "10^10^10",
    "x^(10^100)", "import", "x_1", "a,b", "'1'", "abc(x)", "\\int x dx", "1" * 31, "(" * 40 + "x" + ")" * 40, "",
])
def test_parse_math_rejects(text):
    assert parse_math(text) is None


def test_parse_math_keeps_powers_unevaluated_and_bounded():
    # limits are inclusive: 10^100 is fine as an exponent... of nothing bigger
    assert parse_math("10^{100}") is not None
    assert parse_math("x^{101}") is None
    assert parse_math("x^{-100}") is not None
    assert parse_math("e^{x^{2}}") is not None  # symbolic nested powers are ordinary calculus answers


@pytest.mark.parametrize("completion,want", [
    ("The output has shape\n#### (32, 128)", 1.0),
    ("#### (32,128)", 1.0),
    ("#### (32, 12)", 0.0),
    ("#### (128, 32)", 0.0),
])
def test_text_kind_compares_normalised_text(completion, want):
    assert reward_answer(completion, "(32, 128)", "text") == want
