"""The calculus difficulty ladder, phrasings and pretraining corpus (generate_calculus): every
level-1/2 answer re-derived by sympy, casual questions that read back to the same maths, the typed
phrasings never in training, the output independent of the worker count, and the corpus and the
typed test set disjoint from the test problems."""
import json
import re

import pytest
import sympy as sp
from sympy.parsing.sympy_parser import (implicit_multiplication_application, parse_expr,
                                        standard_transformations)

from mathlm.data import generate_calculus as calc


@pytest.fixture(scope="module")
def ladder():
    return calc.generate(400, seed=11, levels=(1, 2), casual_frac=0.5)


def read(s, v):
    """Generated text (trusted) → sympy, implicit multiplication and e^ allowed (casual questions)."""
    s = s.replace("^", "**").replace("e**", "E**")
    tr = standard_transformations + (implicit_multiplication_application,)
    return parse_expr(s, local_dict={v: sp.Symbol(v), "E": sp.E, "exp": sp.exp, "log": sp.log}, transformations=tr)


def test_levels_topics_and_answers(ladder):
    assert {p["level"] for p in ladder} == {1, 2}
    assert {p["topic"] for p in ladder} == set(calc.TOPICS)
    for p in ladder:
        x = sp.Symbol(p["var"])
        f = read(p["params"]["f"], p["var"])
        if p["kind"] == "number":
            a, b = read(p["params"]["a"], p["var"]), read(p["params"]["b"], p["var"])
            assert sp.simplify(sp.integrate(f, (x, a, b)) - sp.Rational(p["final"])) == 0, p
        else:
            g = read(p["final"], p["var"])
            d = sp.diff(g, x) - f if p["kind"] == "antiderivative" else g - sp.diff(f, x)
            assert sp.simplify(d) == 0, p
        assert p["answer"].endswith("#### " + p["final"])


def test_first_rung_is_the_first_rung(ladder):
    """Level 1 is what the issue names: polynomial derivatives, sin/cos/exp of a linear argument,
    antiderivatives of polynomials (integer coefficients)."""
    for p in ladder:
        if p["level"] != 1:
            continue
        x = sp.Symbol(p["var"])
        f = read(p["params"]["f"], p["var"])
        if p["topic"] in ("power_rule", "indefinite_integral", "definite_integral"):
            assert f.is_polynomial(x), p
        if p["topic"] == "trig":
            assert f.atoms(sp.sin, sp.cos) and all(sp.degree(a.args[0], x) == 1 for a in f.atoms(sp.sin, sp.cos)), p


def test_casual_form_is_the_same_maths(ladder):
    """casual() rewrites 3*x^2 → 3x^2, exp(2*x) → e^(2x), x^2*sin(x) → x^2 sin(x): other characters,
    the same function, read back with implicit multiplication."""
    import random
    rng = random.Random(0)
    changed = 0
    for p in ladder:
        f = p["params"]["f"]
        for _ in range(3):
            c = calc.casual(f, rng)
            changed += c != f
            assert sp.simplify(read(c, p["var"]) - read(f, p["var"])) == 0, (f, c)
    assert changed > len(ladder)
    casual_q = [p["question"] for p in ladder if p["style"] == "casual"]
    assert 120 <= len(casual_q) <= 280
    assert sum(bool(re.search(r"\d[a-z(]", q)) for q in casual_q) > 60   # people write 3x^2


def test_same_output_for_any_worker_count():
    a = calc.generate(600, seed=3, levels=(1, 2), casual_frac=0.3, workers=1)
    b = calc.generate(600, seed=3, levels=(1, 2), casual_frac=0.3, workers=2)
    assert [p["question"] for p in a] == [p["question"] for p in b]
    assert [p["answer"] for p in a] == [p["answer"] for p in b]


def test_main_writes_typed_test_and_corpus_disjoint_from_test(tmp_path):
    calc.main(["--n", "300", "--n_test", "60", "--n_typed_test", "40", "--n_rl", "50", "--corpus", "200",
               "--levels", "1,2", "--seed", "9", "--text_only", "--out_dir", str(tmp_path)])
    rows = {n: [json.loads(l) for l in (tmp_path / f"calculus{n}.jsonl").read_text().splitlines()]
            for n in ("", "_test", "_typed_test", "_rl")}
    assert len(rows["_test"]) == 60 and len(rows["_typed_test"]) == 40 and len(rows["_rl"]) == 50
    assert len(rows[""]) == 300   # the RL questions come on top of the train set, not out of it
    typed_q = {p["question"] for p in rows["_typed_test"]}
    assert all(p["style"] == "typed" for p in rows["_typed_test"])
    # the typed phrasings use words no training question uses
    train_words = {w for p in rows[""] for w in re.findall(r"[a-z]{4,}", p["question"])}
    assert any(set(re.findall(r"[a-z]{4,}", q)) - train_words for q in typed_q)
    corpus = (tmp_path / "calculus_corpus.txt").read_text()
    assert corpus.count("Example.") >= 20 and corpus.count("\n\n\n") >= 20
    key = lambda p: (p["topic"], calc.to_x(p["params"]["f"], p["var"]), p["params"].get("a"), p["params"].get("b"))
    held = {key(p) for p in rows["_test"] + rows["_typed_test"]}
    rl = {key(p) for p in rows["_rl"]}
    assert not held & {key(p) for p in rows[""]}   # the same maths is never on both sides
    assert len(rl) == 50 and not rl & held and not rl & {key(p) for p in rows[""]}  # nor in RL and SFT/test
    # the corpus's bare equations (whole lines) are of training functions, never held-out ones
    train_f = {calc.to_x(p["params"]["f"], p["var"]) for p in rows[""]}
    eqs = re.findall(r"^(?:d/d(\w)\((.*)\) = .*|∫ \((.*)\) d(\w)(?: from .*)? = .*)$", corpus, flags=re.M)
    assert len(eqs) >= 20
    for v1, f1, f2, v2 in eqs:
        f = calc.to_x(f1 or f2, v1 or v2)
        assert f in train_f, f


@pytest.mark.parametrize("bad", [["--levels", "0"], ["--levels", "a"], ["--casual", "2"], ["--corpus", "-1"]])
def test_bad_flags_exit_with_one_line(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        calc.main(bad + ["--text_only", "--out_dir", str(tmp_path)])
    assert e.value.code != 0


def test_casual_phrasings_are_many_and_never_a_typed_template():
    """compose() draws thousands of phrasings, none equal to a held-out typed template (checked on the
    unformatted template) and none using the typed set's own words."""
    import random
    rng = random.Random(3)
    typed = set(calc.TYPED_DIFF_Q + calc.TYPED_INDEF_Q + calc.TYPED_DEF_Q)
    seen = set()
    for i in range(6000):
        family = ("diff", "indef", "def")[i % 3]
        q = calc.compose(rng, family, dict(fn="f", v="x", e="{e}", pe="({e})", a="{a}", b="{b}", rule=None))
        assert q.replace("x", "{v}").replace("f", "{fn}") not in typed
        assert not {"whats", "wrt", "take", "please", "between"} & set(re.findall(r"[a-z]+", q.lower())), q
        seen.add(q)
    assert len(seen) > 1500
