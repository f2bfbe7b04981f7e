"""generate_calculus --calls: the scratchpad's integer steps as calculator calls, each computing exactly
the number written after it, and without --calls the text the generator wrote before calls existed."""
import json

import pytest
import sympy as sp

from mathlm.calculator import calculate
from mathlm.data import generate_calculus as gc
from mathlm.format import CALL, calc_call, strip_calls

x = sp.Symbol("x")


@pytest.mark.parametrize("e,d,want", [
    (3 * x ** 4, 12 * x ** 3, calc_call("4*3", "12")),                 # coefficient x exponent
    (-2 * x ** 3, -6 * x ** 2, calc_call("3*(-2)", "-6")),
    (-8 * sp.cos(7 * x), 56 * sp.sin(7 * x), calc_call("-7*(-8)", "56")),  # x the inner constant
    (5 * sp.exp(3 * x), 15 * sp.exp(3 * x), calc_call("3*5", "15")),
    (-15 * x ** 4, -3 * x ** 5, calc_call("(-15)/5", "-3")),            # an antiderivative: over n+1
    (x ** 4, 4 * x ** 3, ""),                                           # nothing to compute
    (3 * x, sp.Integer(3), ""),
    (-x ** 2, -2 * x, ""),
    (-2 / x ** 2, 2 / x, calc_call("-1*(-2)", "2")),                    # over n+1 = -1
])
def test_coef_call(e, d, want):
    assert gc.coef_call(e, d) == want


def test_call_for_only_where_the_calculator_prints_the_text():
    assert gc.call_for("10/3-1/3", 3, "3") == calc_call("10/3-1/3", "3")
    assert gc.call_for("7/3", sp.Rational(7, 3), "7/3") == ""              # the calculator prints 2.333333
    assert gc.call_for("5-10", -5, "-5") == calc_call("5-10", "-5")


@pytest.fixture(scope="module")
def both():
    return gc.generate(420, 5, levels=(1, 2, 3)), gc.generate(420, 5, levels=(1, 2, 3), calls=True)


def test_calls_off_is_the_text_without_calls(both):
    off, on = both
    assert not any("<|calc|>" in p["answer"] for p in off)
    for a, b in zip(off, on):
        assert strip_calls(b["answer"]) == a["answer"]
        assert {k: v for k, v in a.items() if k != "answer"} == {k: v for k, v in b.items() if k != "answer"}


def test_every_call_computes_the_number_after_it(both):
    _, on = both
    topics = set()
    for p in on:
        assert "<|calc|>" not in p["final"]
        for m in CALL.finditer(p["answer"]):
            assert calculate(m.group(1)) == m.group(2), m.group(0)
            assert p["answer"][m.end():].startswith(m.group(2))
            topics.add(p["topic"])
    assert topics >= {"power_rule", "trig", "exp_log", "quotient_rule", "indefinite_integral", "definite_integral"}
    assert sum("<|calc|>" in p["answer"] for p in on) > len(on) / 2


def test_main_flag(tmp_path):
    for flag, want in (([], False), (["--calls"], True)):
        out = tmp_path / str(want)
        gc.main(["--n", "120", "--n_test", "10", "--levels", "1,2", "--workers", "1", "--text_only",
                 "--out_dir", str(out), *flag])
        rows = [json.loads(ln) for ln in open(out / "calculus.jsonl")]
        assert any("<|calc|>" in r["answer"] for r in rows) == want
