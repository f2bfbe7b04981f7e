"""GSM8K-style multi-step word problems from templates, each arithmetic step a calculator call.

    python -m mathlm.data.generate_word_problems                         # 20,000 train + 1,000 test, then tokenize
    python -m mathlm.data.generate_word_problems --preset tiny --text_only   # 2,000 + 500, text only
    python -m mathlm.data.generate_word_problems --calls off             # plain arithmetic, no calls

Reads:  math_tokenizer/ (unless --text_only)
Writes: word_problems.jsonl, word_problems_test.jsonl (one JSON object per line, keys sorted)
        + word_problems.bin / .meta.json / .idx.npy (unless --text_only), through
        mathlm.data.qa_io.write_qa_dataset like every dataset (decontaminated against *_test.jsonl,
        GSM8K's test split among them when download_gsm8k ran first, as the pipeline does)

Seven topics — shopping (items bought at prices, change from a bill), rate_time (a rate x hours
x days, rejects, boxes), sharing (equal shares), percent (discounts and taxes), compare (totals and
differences: "m times as many", "k fewer"), travel (speed x time, distance left), savings (wages,
spending, jars) — each at level 2, 3 and 4: the number of arithmetic steps in the answer. Names,
objects and phrasings vary; the numbers are sized so that the products are multi-digit (where a
small model's arithmetic fails and a calculator's does not).

The answer is one sentence a step, as GSM8K writes them, each step "expr = result" with the call
between (mathlm/format.py): "He pays 12*7 = <|calc|>12*7<|result|>84<|/result|>$84 for the pens."
and ends "#### <final>". --calls off writes "12*7 = $84". Records: question, answer, final (an
integer or a terminating decimal, as the calculator prints it), kind "number", topic, level,
params (the inputs: counts as integers, prices as exact strings such as "12.25").

Verified twice before a problem is kept: the final equals a closed-form solution of the params
(`solve`, written separately from the step-by-step text, exact Fractions), and the calculator
(mathlm/calculator.py) reproduces every step's written result from its written expression — so
what the decoder forces at inference is exactly what training showed.

Deterministic: one random.Random(seed) drives everything. Problems are unique by (topic, level,
numbers): the held-out split cannot hold train's arithmetic under another name.
"""
import random
import time
from dataclasses import dataclass
from fractions import Fraction

from mathlm.common import SEED_MAX, check_choice, check_range, cli, parse_config
from mathlm.data.generate_calculus import parse_levels, write_outputs
from mathlm.data.generate_ml_math import draw_unique, num
from mathlm.format import CALL, calc_call


@dataclass
class Config:
    n: int = 20000                  # train problems
    n_test: int = 1000              # held-out test problems (no question or arithmetic shared with train)
    seed: int = 1234                # drives generation and the train/test split
    levels: str = "2,3,4"           # steps per problem to draw from
    calls: str = "on"               # on: each step is a calculator call | off: plain arithmetic
    out_dir: str = "."              # where word_problems.jsonl, word_problems_test.jsonl (and .bin) go
    text_only: bool = False         # write the jsonl only; no tokenizer needed
    tokenizer: str = "math_tokenizer"  # tokenizer folder (not needed with --text_only)


# tiny: 500 held out, so a tools-on vs tools-off comparison has the power to see a 2x gap; seconds to make
PRESETS = {"tiny": dict(n=2000, n_test=500), "smoke": dict(n=200, n_test=30)}
NAME = "word_problems"
LEVELS = (2, 3, 4)

# -----------------------------------------------------------------------------
# names, objects, and the one way a step is written

NAMES = [("Ava", "she"), ("Liam", "he"), ("Maya", "she"), ("Noah", "he"), ("Priya", "she"), ("Omar", "he"),
         ("Sofia", "she"), ("Lucas", "he"), ("Chloe", "she"), ("Mateo", "he"), ("Hana", "she"), ("Ethan", "he"),
         ("Zara", "she"), ("Diego", "he"), ("Emma", "she"), ("Kofi", "he"), ("Lena", "she"), ("Ravi", "he"),
         ("Julia", "she"), ("Sam", "he"), ("Aisha", "she"), ("Ben", "he"), ("Mia", "she"), ("Tom", "he")]
POSS = {"he": "his", "she": "her"}
GOODS = [("notebook", "notebooks"), ("pen", "pens"), ("book", "books"), ("shirt", "shirts"), ("mug", "mugs"),
         ("toy car", "toy cars"), ("plant", "plants"), ("lamp", "lamps"), ("chair", "chairs"),
         ("ticket", "tickets"), ("candle", "candles"), ("backpack", "backpacks"), ("puzzle", "puzzles")]
MAKERS = [("machine", "widgets"), ("bakery", "loaves of bread"), ("printer", "pages"), ("factory line", "bottles"),
          ("workshop", "toys"), ("farm", "eggs"), ("press", "cans")]
SHARED = ["cookies", "stickers", "marbles", "cards", "apples", "candies", "beads", "stamps"]
VEHICLES = [("car", "miles"), ("train", "kilometers"), ("bus", "miles"), ("truck", "kilometers"),
            ("cyclist", "kilometers"), ("boat", "miles")]
SPEND = ["a bike", "a game console", "a guitar", "a tablet", "a camera", "a trip", "a pair of skates"]


def who(rng, k=1):
    """k distinct (name, pronoun, possessive) triples."""
    return [(n, p, POSS[p]) for n, p in rng.sample(NAMES, k)]


def cap(s):
    return s[:1].upper() + s[1:]


def money(rng, lo, hi):
    """A price in dollars: whole most of the time, sometimes with cents (.25 .5 .75), as a Fraction."""
    whole = rng.randint(lo, hi)
    return Fraction(whole) + (rng.choice([Fraction(1, 4), Fraction(1, 2), Fraction(3, 4)]) if rng.random() < 0.25 else 0)


class Work:
    """The answer's arithmetic, one operation a step: "expr = result" with the call between when
    calls are on (the model writes expr, the calculator result; then the model copies the result into
    its sentence, as GSM8K's annotations do). The steps are kept for verification."""

    def __init__(self, calls):
        self.calls, self.steps = calls, []

    def __call__(self, expr, value, unit=""):
        value = Fraction(value)
        self.steps.append((expr, value))
        r = num(value)
        return f"{expr} = {calc_call(expr, r) if self.calls else ''}{unit}{r}"


# -----------------------------------------------------------------------------
# topics: gen(rng, level, w) → (question, answer lines, final Fraction, params); solve(level, p) → Fraction
# Each level adds a step; the text computes step by step (in Work), solve in closed form.


def gen_shopping(rng, level, w):
    (name, pr, po), = who(rng)
    (one1, many1), (one2, many2) = rng.sample(GOODS, 2)
    n1, p1 = rng.randint(3, 29), money(rng, 3, 48)
    params = dict(n1=n1, p1=num(p1))
    lines = []
    c1 = n1 * p1
    q = rng.choice(["{N} buys {n1} {m1} that cost ${p1} each.", "At the store, {N} picks up {n1} {m1} at ${p1} apiece.",
                    "{N} orders {n1} {m1}; each one costs ${p1}."]).format(N=name, n1=n1, m1=many1, p1=num(p1))
    lines.append(f"The {many1} cost {w(f'{n1}*{num(p1)}', c1, '$')}.")
    total = c1
    if level >= 3:
        n2, p2 = rng.randint(2, 19), money(rng, 4, 65)
        params.update(n2=n2, p2=num(p2))
        c2 = n2 * p2
        total = c1 + c2
        q += " " + rng.choice(["{P} also buys {n2} {m2} for ${p2} each.", "{P} adds {n2} {m2} at ${p2} each."]).format(
            P=cap(pr), n2=n2, m2=many2, p2=num(p2))
        lines.append(f"The {many2} cost {w(f'{n2}*{num(p2)}', c2, '$')}.")
        lines.append(f"Altogether {pr} spends {w(f'{num(c1)}+{num(c2)}', total, '$')}.")
    if level in (2, 4):
        bill = next(b for b in (20, 50, 100, 200, 500, 1000, 2000, 5000) if b > total)
        params.update(bill=bill)
        q += " " + rng.choice(["{P} pays with ${b}. How much change does {p} get?",
                               "If {p} pays with ${b}, how much change should {p} receive?",
                               "{P} hands the cashier ${b}. How many dollars of change does {p} get back?"]).format(
            P=cap(pr), p=pr, b=bill)
        lines.append(f"{cap(pr)} gets {w(f'{bill}-{num(total)}', bill - total, '$')} in change.")
        return q, lines, bill - total, params
    q += " " + rng.choice(["How much does {p} spend in all?", "How many dollars does {p} spend altogether?",
                           "What is the total cost?"]).format(p=pr)
    return q, lines, total, params


def solve_shopping(level, p):
    total = p["n1"] * Fraction(p["p1"]) + (p["n2"] * Fraction(p["p2"]) if level >= 3 else 0)
    return p["bill"] - total if level in (2, 4) else total


def gen_rate_time(rng, level, w):
    maker, things = rng.choice(MAKERS)
    r, h, d = rng.randint(12, 96), rng.randint(3, 12), rng.randint(3, 28)
    per_day, total = r * h, r * h * d
    params = dict(r=r, h=h, d=d)
    q = rng.choice(["A {m} makes {r} {t} an hour and runs {h} hours a day.",
                    "Each hour a {m} produces {r} {t}. It works {h} hours every day.",
                    "A {m} turns out {r} {t} per hour, {h} hours a day."]).format(m=maker, r=r, t=things, h=h)
    lines = [f"In a day it makes {w(f'{r}*{h}', per_day)} {things}.",
             f"In {d} days it makes {w(f'{per_day}*{d}', total)} {things}."]
    if level == 2:
        q += " " + rng.choice(["How many {t} does it make in {d} days?",
                               "How many {t} are made over {d} days?"]).format(t=things, d=d)
        return q, lines, total, params
    if level == 4:
        b = rng.choice([4, 6, 8, 10, 12, 20, 24, 25])
        boxes = rng.randint(-(-total // (2 * b)), (total - 1) // b)
        k = total - b * boxes
    else:
        k = rng.randint(1, total // 2)
    params.update(k=k)
    good = total - k
    q += " " + rng.choice(["Over {d} days, {k} of them fail inspection.",
                           "In {d} days, {k} of the {t} turn out to be faulty."]).format(d=d, k=k, t=things)
    lines.append(f"{w(f'{total}-{k}', good)} {things} pass inspection.")
    if level == 3:
        q += " How many good {t} are left?".format(t=things)
        return q, lines, good, params
    params.update(b=b)
    q += " " + rng.choice(["The good ones are packed {b} to a box. How many boxes are filled?",
                           "Good {t} go into boxes of {b}. How many boxes does that fill?"]).format(b=b, t=things)
    lines.append(f"They fill {w(f'{good}/{b}', boxes)} boxes.")
    return q, lines, boxes, params


def solve_rate_time(level, p):
    total = p["r"] * p["h"] * p["d"]
    if level == 2:
        return Fraction(total)
    good = total - p["k"]
    return Fraction(good) if level == 3 else Fraction(good, p["b"])


def gen_sharing(rng, level, w):
    (name, pr, po), = who(rng)
    thing = rng.choice(SHARED)
    k = rng.randint(3, 12)
    each = rng.randint(6, 48)
    rest = k * each
    if level == 2:
        a = rng.randint(rest // 4, 3 * rest // 4)
        b = rest - a
        params = dict(a=a, b=b, k=k)
        q = rng.choice(["{N} has {a} {t} and gets {b} more. {P} shares them equally among {k} friends. "
                        "How many {t} does each friend get?",
                        "{N} collects {a} {t}, then finds {b} more. If {p} splits all of them evenly between {k} "
                        "friends, how many does each friend receive?"]).format(N=name, a=a, t=thing, b=b, P=cap(pr),
                                                                              p=pr, k=k)
        lines = [f"{cap(pr)} has {w(f'{a}+{b}', rest)} {thing}.",
                 f"Each friend gets {w(f'{rest}/{k}', each)} {thing}."]
        return q, lines, each, params
    c = rng.randint(12, 36)
    e = rng.randint(1, 3 * c)
    t = -(-(rest + e) // c)       # trays: enough for the shares plus what is kept
    e = t * c - rest               # so "kept" makes the shares exact
    params = dict(t=t, c=c, e=e, k=k)
    q = rng.choice(["{N} buys {t} packs of {c} {th}. {P} keeps {e} and shares the rest equally among {k} friends.",
                    "{N} has {t} bags with {c} {th} in each. After keeping {e} for {o}self, {p} divides the rest "
                    "evenly between {k} friends."]).format(N=name, t=t, c=c, th=thing, P=cap(pr), p=pr, e=e, k=k,
                                                           o="her" if pr == "she" else "him")
    lines = [f"{cap(pr)} has {w(f'{t}*{c}', t * c)} {thing}.",
             f"After keeping {e}, {w(f'{t * c}-{e}', rest)} are left to share.",
             f"Each friend gets {w(f'{rest}/{k}', each)} {thing}."]
    if level == 3:
        q += " How many {th} does each friend get?".format(th=thing)
        return q, lines, each, params
    f = rng.randint(1, each - 1)
    params.update(f=f)
    q += " " + rng.choice(["Each friend then gives away {f} of theirs. How many {th} does each friend have left?",
                           "If every friend uses {f} of them, how many {th} does each friend still have?"]).format(
        f=f, th=thing)
    lines.append(f"Each friend has {w(f'{each}-{f}', each - f)} {thing} left.")
    return q, lines, each - f, params


def solve_sharing(level, p):
    if level == 2:
        return Fraction(p["a"] + p["b"], p["k"])
    each = Fraction(p["t"] * p["c"] - p["e"], p["k"])
    return each if level == 3 else each - p["f"]


def gen_percent(rng, level, w):
    (name, pr, po), = who(rng)
    one, many = rng.choice(GOODS)
    price = rng.randint(12, 480)
    pct = rng.choice([5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 75])
    tax = rng.random() < 0.3   # a tax raises the price; otherwise a discount lowers it
    params = dict(price=price, pct=pct, tax=tax)
    cut = Fraction(price * pct, 100)
    new = price + cut if tax else price - cut
    if tax:
        q = rng.choice(["A {o} costs ${p} before a {c}% sales tax.", "The price of a {o} is ${p}, plus {c}% tax."])
        lines = [f"The tax is {w(f'{price}*{pct}/100', cut, '$')}.",
                 f"With tax a {one} costs {w(f'{price}+{num(cut)}', new, '$')}."]
    else:
        q = rng.choice(["A {o} that costs ${p} is on sale for {c}% off.", "A store takes {c}% off a ${p} {o}."])
        lines = [f"The discount is {w(f'{price}*{pct}/100', cut, '$')}.",
                 f"On sale a {one} costs {w(f'{price}-{num(cut)}', new, '$')}."]
    q = q.format(o=one, p=price, c=pct)
    if level == 2:
        q += " " + rng.choice(["How much does {N} pay for one?", "What does one {o} cost {N}?"]).format(N=name, o=one)
        return q, lines, new, params
    k = rng.randint(2, 14)
    params.update(k=k)
    total = k * new
    lines.append(f"{cap(many)} cost {w(f'{k}*{num(new)}', total, '$')}.")
    if level == 3:
        q += " " + rng.choice(["{N} buys {k} of them. How much does {p} pay?",
                               "How much do {k} {m} cost {N}?"]).format(N=name, k=k, p=pr, m=many)
        return q, lines, total, params
    fee = rng.randint(5, 40)
    params.update(fee=fee)
    q += " " + rng.choice(["{N} orders {k} of them and pays a ${f} delivery fee. How much does {p} pay in all?",
                           "{N} buys {k} {m} online, plus ${f} for shipping. What is {po} total?"]).format(
        N=name, k=k, p=pr, m=many, f=fee, po=po)
    lines.append(f"With delivery {pr} pays {w(f'{num(total)}+{fee}', total + fee, '$')}.")
    return q, lines, total + fee, params


def solve_percent(level, p):
    one = Fraction(p["price"]) * (1 + Fraction(p["pct"], 100) * (1 if p["tax"] else -1))
    if level == 2:
        return one
    return p["k"] * one + (p["fee"] if level == 4 else 0)


def gen_compare(rng, level, w):
    (a_n, _, _), (b_n, _, _), (c_n, _, _) = who(rng, 3)
    thing = rng.choice(SHARED)
    a, m = rng.randint(11, 89), rng.randint(3, 14)
    b = a * m
    params = dict(a=a, m=m)
    q = rng.choice(["{A} has {a} {t}. {B} has {m} times as many {t} as {A}.",
                    "{A} owns {a} {t}, and {B} owns {m} times as many."]).format(A=a_n, a=a, t=thing, B=b_n, m=m)
    lines = [f"{b_n} has {w(f'{a}*{m}', b)} {thing}."]
    if level == 2:
        q += " How many {t} do they have together?".format(t=thing)
        lines.append(f"Together they have {w(f'{a}+{b}', a + b)} {thing}.")
        return q, lines, Fraction(a + b), params
    k = rng.randint(a + 1, b - 1)   # > a, so at level 4 B has more than A and C together
    c = b - k
    params.update(k=k)
    q += " {C} has {k} fewer {t} than {B}.".format(C=c_n, k=k, t=thing, B=b_n)
    lines.append(f"{c_n} has {w(f'{b}-{k}', c)} {thing}.")
    if level == 3:
        q += " " + rng.choice(["How many {t} do the three have in all?", "How many {t} do they have altogether?"]).format(
            t=thing)
        lines.append(f"In all they have {w(f'{a}+{b}+{c}', a + b + c)} {thing}.")
        return q, lines, Fraction(a + b + c), params
    q += " How many more {t} does {B} have than {A} and {C} together?".format(t=thing, B=b_n, A=a_n, C=c_n)
    lines.append(f"{a_n} and {c_n} have {w(f'{a}+{c}', a + c)} {thing}.")
    lines.append(f"{b_n} has {w(f'{b}-{a + c}', b - a - c)} more.")
    return q, lines, Fraction(b - a - c), params


def solve_compare(level, p):
    a, b = p["a"], p["a"] * p["m"]
    if level == 2:
        return Fraction(a + b)
    c = b - p["k"]
    return Fraction(a + b + c) if level == 3 else Fraction(b - (a + c))


def gen_travel(rng, level, w):
    vehicle, unit = rng.choice(VEHICLES)
    s1, h1 = rng.randint(13, 79), rng.randint(2, 9)
    d1 = s1 * h1
    params = dict(s1=s1, h1=h1)
    q = rng.choice(["A {v} travels at {s} {u} per hour for {h} hours.",
                    "For {h} hours a {v} goes {s} {u} an hour."]).format(v=vehicle, s=s1, u=unit, h=h1)
    lines = [f"It covers {w(f'{s1}*{h1}', d1)} {unit}."]
    dist = d1
    if level >= 3:
        s2, h2 = rng.randint(13, 79), rng.randint(2, 9)
        params.update(s2=s2, h2=h2)
        d2 = s2 * h2
        dist = d1 + d2
        q += " Then it goes {s} {u} per hour for {h} more hours.".format(s=s2, u=unit, h=h2)
        lines.append(f"Then it covers {w(f'{s2}*{h2}', d2)} {unit}.")
        lines.append(f"In all it travels {w(f'{d1}+{d2}', dist)} {unit}.")
    if level in (2, 4):
        trip = dist + rng.randint(10, 900)
        params.update(trip=trip)
        q += " " + rng.choice(["The whole trip is {t} {u}. How many {u} are left?",
                               "How far is it still from the end of its {t}-{o} trip?"]).format(t=trip, u=unit,
                                                                                                o=unit[:-1])
        lines.append(f"{w(f'{trip}-{dist}', trip - dist)} {unit} are left.")
        return q, lines, Fraction(trip - dist), params
    q += " How many {u} does it travel in all?".format(u=unit)
    return q, lines, Fraction(dist), params


def solve_travel(level, p):
    dist = p["s1"] * p["h1"] + (p["s2"] * p["h2"] if level >= 3 else 0)
    return Fraction(p["trip"] - dist if level in (2, 4) else dist)


def gen_savings(rng, level, w):
    (name, pr, po), = who(rng)
    item = rng.choice(SPEND)
    if level == 2:
        wage, weeks = rng.randint(15, 95), rng.randint(4, 26)
        earned = wage * weeks
        x = rng.randint(earned // 5, earned - 1)
        params = dict(wage=wage, weeks=weeks, x=x)
        q = rng.choice(["{N} saves ${w} every week for {n} weeks, then spends ${x} on {i}. How much money is left?",
                        "Each week {N} puts ${w} aside. After {n} weeks {p} buys {i} for ${x}. How many dollars "
                        "does {p} have left?"]).format(N=name, w=wage, n=weeks, x=x, i=item, p=pr)
        lines = [f"{cap(pr)} saves {w(f'{wage}*{weeks}', earned, '$')}.",
                 f"{cap(pr)} has {w(f'{earned}-{x}', earned - x, '$')} left."]
        return q, lines, Fraction(earned - x), params
    rate, hours, weeks = rng.randint(9, 38), rng.randint(6, 30), rng.randint(2, 12)
    week = rate * hours
    earned = week * weeks
    params = dict(rate=rate, hours=hours, weeks=weeks)
    q = rng.choice(["{N} earns ${r} an hour and works {h} hours a week.",
                    "{N} works {h} hours each week at ${r} per hour."]).format(N=name, r=rate, h=hours)
    lines = [f"A week's pay is {w(f'{rate}*{hours}', week, '$')}.",
             f"In {weeks} weeks {pr} earns {w(f'{week}*{weeks}', earned, '$')}."]
    if level == 4:
        jars = rng.choice([2, 3, 4, 5, 8, 10])
        share = rng.randint(-(-earned // (2 * jars)), (earned - 1) // jars)
        x = earned - jars * share
    else:
        x = rng.randint(earned // 5, earned - 1)
    params.update(x=x)
    left = earned - x
    q += " After {n} weeks {p} spends ${x} on {i}.".format(n=weeks, p=pr, x=x, i=item)
    lines.append(f"After buying {item} {pr} has {w(f'{earned}-{x}', left, '$')}.")
    if level == 3:
        q += " " + rng.choice(["How much money does {p} have left?", "How many dollars are left?"]).format(p=pr)
        return q, lines, Fraction(left), params
    params.update(jars=jars)
    q += " {P} splits the rest equally into {j} savings jars. How much goes into each jar?".format(P=cap(pr), j=jars)
    lines.append(f"Each jar gets {w(f'{left}/{jars}', share, '$')}.")
    return q, lines, Fraction(share), params


def solve_savings(level, p):
    if level == 2:
        return Fraction(p["wage"] * p["weeks"] - p["x"])
    left = p["rate"] * p["hours"] * p["weeks"] - p["x"]
    return Fraction(left) if level == 3 else Fraction(left, p["jars"])


TOPICS = {"shopping": (gen_shopping, solve_shopping), "rate_time": (gen_rate_time, solve_rate_time),
          "sharing": (gen_sharing, solve_sharing), "percent": (gen_percent, solve_percent),
          "compare": (gen_compare, solve_compare), "travel": (gen_travel, solve_travel),
          "savings": (gen_savings, solve_savings)}


# -----------------------------------------------------------------------------
# verification and generation


def check_calls(answer):
    """(n calls, [(expr, written, calculator's)] where they differ): every call's written result must
    be what the calculator prints for its expression, and the sentence must repeat it."""
    from mathlm.calculator import calculate
    bad, n = [], 0
    for m in CALL.finditer(answer):
        n += 1
        expr, written = m.group(1), m.group(2)
        got = calculate(expr)
        after = answer[m.end():].lstrip("$")
        if got != written or not after.startswith(written):
            bad.append((expr, written, got))
    return n, bad


def make_problem(rng, topic, level, calls=True):
    """One record, or None when a check fails (the final is not solve's, a step's result is not the
    calculator's, a number is negative or not terminating)."""
    gen, solve = TOPICS[topic]
    w = Work(calls)
    q, lines, final, params = gen(rng, level, w)
    final = Fraction(final)
    if final != solve(level, params) or final < 0 or len(w.steps) != level or final != w.steps[-1][1]:
        return None
    if any(v < 0 for _, v in w.steps) or "/" in num(final):
        return None
    answer = "\n".join(lines + [f"#### {num(final)}"])
    if calls:
        n, bad = check_calls(answer)
        if bad or n != level:
            return None
    return {"question": q, "answer": answer, "final": num(final), "kind": "number", "topic": topic,
            "level": level, "params": params}


def generate(n, seed, levels=LEVELS, calls=True, progress=False, stats=None):
    """n checked problems, unique by (topic, level, numbers), the (topic, level) pairs in turn.
    Same arguments → same list."""
    rng = random.Random(seed)
    order = [(t, lv) for lv in levels for t in TOPICS]
    return draw_unique(n, lambda i: make_problem(rng, *order[i % len(order)], calls), NAME, "problem",
                       progress, stats)


@cli
def main(argv=None):
    cfg = parse_config(Config, PRESETS, argv)
    check_range(cfg, "n", lo=1)
    check_range(cfg, "n_test", lo=0)
    check_range(cfg, "seed", lo=0, hi=SEED_MAX)
    check_choice(cfg, "calls", ("on", "off"))
    levels = parse_levels(cfg.levels, LEVELS, "2,3")
    from mathlm.data.qa_io import dataset_lock
    with dataset_lock(NAME, cfg.out_dir):  # a second run on this dataset stops here, before the generation
        return run(cfg, levels)


def run(cfg, levels):
    t0 = time.time()
    stats = {}
    problems = generate(cfg.n + cfg.n_test, cfg.seed, levels, cfg.calls == "on", progress=True, stats=stats)
    return write_outputs(NAME, cfg, problems, cfg.n_test, t0, stats)


if __name__ == "__main__":
    main()
