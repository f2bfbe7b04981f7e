"""Reward-hacking tables for the answer checker (issue #12): answers that are wrong for their question
but try to look right must score 0; right answers in other notations must score 1. Each row says why
it is here. The same tables, run against the checker before and after #12, give the false-positive /
false-negative counts quoted in the README's eval section."""
import pytest

from mathlm.eval.answers import reward_answer

# (completion, gold, kind) → reward 0
WRONG = [
    # D1: a constant that dominates the tolerance used to pass every antiderivative
    ("#### 10^{40}", "x^3/3", "antiderivative"),               # huge constant
    ("#### e^{99}", "-\\cos x", "antiderivative"),             # huge constant written as a power of e
    ("#### \\tan(\\pi/2)", "x\\ln x - x", "antiderivative"),   # a pole, ≈1e50 at 50 digits
    ("#### 10^{31}", "x^3/3", "antiderivative"),               # just over the old 1e-30 tolerance
    ("#### 10^{40} + x^3", "x^3/3", "antiderivative"),         # wrong answer hidden behind a big constant
    ("#### x^3 + e^{99}", "x^3/3", "antiderivative"),          # the same with e
    ("#### 10^{-40}", "x^2/2", "antiderivative"),              # tiny constant: still a constant
    ("#### 0", "x^2/2", "antiderivative"),                     # zero is a constant too
    ("#### 10^{40} \\cdot x^3/3", "x^3/3", "antiderivative"),  # right shape, huge factor
    ("#### x^2", "x^3/3", "antiderivative"),                   # the integrand, not its antiderivative
    ("#### x\\ln x", "x\\ln x - x", "antiderivative"),         # a missing term
    ("#### \\cos x + C", "-\\cos x", "antiderivative"),        # sign error plus the + C ritual
    ("#### e^{2x} + C", "e^{2x}/2", "antiderivative"),         # forgot the chain-rule factor
    ("#### x^3/3 + 10^{-31}x", "x^3/3", "antiderivative"),     # tiny extra x term under the old tolerance
    ("#### x^3/3 + x", "x^3/3", "antiderivative"),             # an extra term
    ("#### \\frac{x^3}{3} + 10^{40}x", "x^3/3", "antiderivative"),  # huge extra linear term
    # D3: expressions that agree on [0.5, 2] or within the old 1e-30 tolerance
    ("#### |x|", "x", "expr"),                                 # equal only for x > 0
    ("#### \\sqrt{x^2}", "x", "expr"),                         # = |x|
    ("#### x^3", "|x|^3", "expr"),                             # differ for x < 0
    ("#### \\frac{1}{x}", "\\frac{1}{|x|}", "expr"),           # differ for x < 0
    ("#### \\sqrt{x}^2", "|x|", "expr"),                       # = x on the principal branch, not |x|
    ("#### 2x + 10^{-31}", "2x", "expr"),                      # tiny constant under the old tolerance
    ("#### 3.14159265358979323846264338328", "\\pi", "expr"),  # a 30-digit literal, not pi
    ("#### x \\cdot .333333333333333333333333333333", "x/3", "expr"),  # 30 threes are not 1/3
    ("#### x + e^{-100}", "x", "expr"),                        # tiny constant written as e^-100
    ("#### x(1 + 10^{-50})", "x", "expr"),                     # tiny relative error
    ("#### xy + 10^{-35}", "xy", "expr"),                      # two variables, tiny constant
    ("#### x - x^3/6", "\\sin x", "expr"),                     # Taylor polynomial: close near 0 only
    ("#### x - x^3/6 + x^5/120", "\\sin x", "expr"),           # a better Taylor polynomial
    ("#### 1 + x + x^2/2 + x^3/6", "e^x", "expr"),             # Taylor polynomial of e^x
    ("#### x^2 + 1", "x^2", "expr"),                           # an extra term
    ("#### 2x\\cos(x^2) + 10^{40}", "2x\\cos(x^2)", "expr"),   # huge extra constant
    ("#### x^3/3 + C", "x^3/3", "expr"),                       # + C on a derivative question is a wrong term
    # D2: a number read from the start of an expression
    ("#### 72/1.0000001", "72", "number"),                     # not 72
    ("#### 72e-3", "72", "number"),                            # 0.072
    ("#### 5-3", "5", "number"),                               # 2
    ("#### 0^{-1}", "0", "number"),                            # undefined
    ("#### 1 1/2", "1", "number"),                             # 3/2
    ("#### log(0)", "0", "number"),                            # undefined
    ("#### ().__class__.__bases__[0].__subclasses__()", "0", "number"),  # code, not a number
    ("#### \\sqrt[0]{2}", "0", "number"),                      # undefined
    ("#### {0.__class__.__mro__}", "0", "number"),             # code again
    ("#### 72 + 10^{-30}", "72", "number"),                    # near the gold, but not it
    ("#### 72.0000000000000000000000000000001", "72", "number"),  # a long decimal near the gold
    ("#### 71.99999999999999999999", "72", "number"),          # the same from below
    ("#### \\frac{144}{2.0000001}", "72", "number"),           # a fraction near the gold
    ("#### 2\\cdot10^{3}", "200", "number"),                   # 2000: the exponent counts
    ("#### 1.5e3", "15", "number"),                            # 1500, not 15 or 1.5
    ("#### 7.2 \\cdot 10^{1} + 1", "72", "number"),            # 73
    # unicode digits are not ASCII numbers; a grader does not expect them in a #### line
    ("#### ７２", "72", "number"),                              # fullwidth
    ("#### ٧٢", "72", "number"),                               # Arabic-Indic
    # extraction: the next question's numbers, or numbers after a declared answer, are not the answer
    ("The answer is 7. Q: What is 2+2?\nA: 4", "4", "number"),  # inline Q: cut
    ("The answer is 7. I checked it with 12 apples.", "12", "number"),  # "the answer is N" wins
    ("#### 40\nActually it is 42.", "42", "number"),            # the first #### wins over later text
]

# (completion, gold, kind) → reward 1
RIGHT = [
    # D4: notations a model writes
    ("#### x²", "x^2", "expr"),                                # superscript power
    ("#### 4x³ + 1", "4*x^3 + 1", "expr"),                     # superscript inside a sum
    ("#### √x", "\\sqrt{x}", "expr"),                          # the radical sign
    ("#### x^{1/2}", "√x", "expr"),                            # the radical sign in the gold
    ("#### 2\\cdot10^{3}", "2000", "number"),                  # scientific notation, LaTeX
    ("#### 1.5e3", "1500", "number"),                          # scientific notation, e
    ("#### 2.5 \\times 10^{2}", "250", "number"),              # scientific notation, times
    ("#### \\log_2 8", "3", "number"),                         # a log with a base
    ("#### 72e-3", "0.072", "number"),                         # a negative exponent
    # D2: numbers read as a grader reads them
    ("#### 5-3", "2", "number"),                               # an expression is its value
    ("#### 1 1/2", "3/2", "number"),                           # a mixed number
    ("#### 3 + 4 = 7", "7", "number"),                         # the value after the last =
    ("#### \\sqrt{16}", "4", "number"),                        # an exact root
    ("#### $1,234.50", "1234.5", "number"),                    # money with thousands commas
    ("#### 72 clips", "72", "number"),                         # a unit after the number
    ("#### \\frac{3}{4}", "0.75", "number"),                   # a LaTeX fraction
    ("#### 0.5", "1/2", "number"),                             # the same value as a fraction
    ("#### \u22123", "-3", "number"),                          # the unicode minus
    ("#### 50%", "50", "number"),                              # a percent sign
    ("#### five", "5", "number"),                              # a number word
    ("#### twenty-five", "25", "number"),                      # a compound number word
    ("#### one hundred twenty", "120", "number"),              # with a scale word
    ("So $\\boxed{1{,}024}$.", "1024", "number"),              # a boxed answer with a LaTeX comma
    # extraction without ####
    ("The answer is 18 dollars.", "18", "number"),             # the phrase, a unit after it
    ("The answer is 7. Q: What is 2+2?\nA: 4", "7", "number"),  # the next question is cut off
    ("The answer is 60. Each of the 5 boxes holds 12.", "60", "number"),  # the phrase wins over later numbers
    ("The answer is five.", "5", "number"),                    # a number word after the phrase
    # antiderivatives: equal up to a constant, written differently
    ("#### \\frac{x^{3}}{3} + C", "x^3/3", "antiderivative"),  # + C and LaTeX
    ("#### x^3/3 + 7", "x^3/3", "antiderivative"),             # another constant
    ("#### \\ln|x| + C", "\\ln x", "antiderivative"),          # log|x| vs log x: equal derivatives
    ("#### \\ln x", "\\ln|x|", "antiderivative"),              # the other way round
    ("#### \\frac{1}{2}\\ln(x^2)", "\\ln|x|", "antiderivative"),  # the same derivative 1/x
    ("#### \\ln(2x)", "\\ln x", "antiderivative"),             # differ by ln 2
    ("#### -\\cos x + 5", "1 - \\cos x", "antiderivative"),    # differ by a constant
    ("#### \\sin^2 x / 2", "-\\cos^2 x / 2", "antiderivative"),  # differ by 1/2
    ("#### x\\ln x - x + C", "x\\ln(x) - x", "antiderivative"),  # integration by parts result
    ("#### \\frac{e^{2x}}{2}", "e^{2x}/2", "antiderivative"),  # LaTeX fraction of an exponential
    ("#### 2\\sqrt{x}", "\\sqrt{4x}", "antiderivative"),       # equal on the principal branch
    ("#### \\tan x", "\\frac{\\sin x}{\\cos x}", "antiderivative"),  # a quotient of trig functions
    # expressions
    ("#### |x|", "\\sqrt{x^2}", "expr"),                       # equal for every real x
    ("#### 2x\\cos(x^2)", "2*x*cos(x^2)", "expr"),             # LaTeX vs the generator's syntax
    ("#### x^2 + 2x + 1", "(x+1)^2", "expr"),                  # expanded
    ("#### \\frac{1}{x^2}", "x^{-2}", "expr"),                 # a negative power
    ("#### e^{2x}", "exp(x)^2", "expr"),                       # exp rules
    ("#### \\sin^2 x + \\cos^2 x", "1", "expr"),               # an identity
    ("#### \\sqrt{x-3}", "(x-3)^{1/2}", "expr"),               # complex for x < 3, still equal
    ("So the answer is \\boxed{\\frac{\\sqrt{2}}{2}}", "1/\\sqrt{2}", "expr"),  # rationalised
    ("#### 2\\pi", "\\pi + pi", "expr"),                       # a constant
    ("#### y = 3x", "3x", "expr"),                             # the value after =
    ("#### \\ln(3x) + \\frac{x-3}{x}", "log(3*x) + (x - 3)/x", "expr"),  # a calculus gold in LaTeX
    ("#### 2^x \\ln 2", "2^x*log(2)", "expr"),                 # an exponential's derivative
]


@pytest.mark.parametrize("completion,gold,kind", WRONG)
def test_wrong_answers_score_zero(completion, gold, kind):
    assert reward_answer(completion, gold, kind) == 0.0


@pytest.mark.parametrize("completion,gold,kind", RIGHT)
def test_right_answers_score_one(completion, gold, kind):
    assert reward_answer(completion, gold, kind) == 1.0


def test_tables_are_big_enough():
    assert len(WRONG) >= 40 and len(RIGHT) >= 40
