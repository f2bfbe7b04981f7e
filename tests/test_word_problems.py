"""generate_word_problems: every final re-derived here from the params by formulas of this file (a
third route, beside the generator's step-by-step text and its closed-form `solve`), every call
recomputed by the calculator, the numbers in params found in the question, levels, the held-out
split, decontamination, --calls off, and seeded determinism."""
import json
import re
from collections import Counter
from fractions import Fraction as F

import pytest

from mathlm.calculator import calculate
from mathlm.data import generate_word_problems as wp
from mathlm.data.generate_calculus import split
from mathlm.eval.answers import reward_answer
from mathlm.format import CALC_START, CALL, TOOL_TOKENS, strip_calls

N_CHECK = 700  # ≥ 500 problems, every one re-verified


@pytest.fixture(scope="module")
def problems():
    return wp.generate(N_CHECK, seed=7)


def reference(topic, level, p):
    """The answer, from the inputs, written out again by hand for each template."""
    q = {k: F(v) if isinstance(v, str) else v for k, v in p.items()}
    if topic == "shopping":
        cost = q["n1"] * q["p1"] + (q["n2"] * q["p2"] if level > 2 else 0)
        return q["bill"] - cost if level != 3 else cost
    if topic == "rate_time":
        made = q["r"] * q["h"] * q["d"]
        return {2: made, 3: made - q.get("k", 0), 4: F(made - q.get("k", 0)) / q.get("b", 1)}[level]
    if topic == "sharing":
        if level == 2:
            return F(q["a"] + q["b"]) / q["k"]
        each = F(q["t"] * q["c"] - q["e"]) / q["k"]
        return each - (q["f"] if level == 4 else 0)
    if topic == "percent":
        factor = F(100 + q["pct"], 100) if q["tax"] else F(100 - q["pct"], 100)
        one = q["price"] * factor
        return {2: one, 3: q.get("k", 0) * one, 4: q.get("k", 0) * one + q.get("fee", 0)}[level]
    if topic == "compare":
        a, b = q["a"], q["a"] * q["m"]
        return {2: a + b, 3: a + b + (b - q.get("k", 0)), 4: b - a - (b - q.get("k", 0))}[level]
    if topic == "travel":
        d = q["s1"] * q["h1"] + (q["s2"] * q["h2"] if level > 2 else 0)
        return d if level == 3 else q["trip"] - d
    if topic == "savings":
        if level == 2:
            return q["wage"] * q["weeks"] - q["x"]
        left = q["rate"] * q["hours"] * q["weeks"] - q["x"]
        return left if level == 3 else F(left) / q["jars"]
    raise AssertionError(topic)


def test_answers_recompute_exactly(problems):
    for p in problems:
        want = F(reference(p["topic"], p["level"], p["params"]))
        assert F(p["final"]) == want, p
        assert want >= 0 and p["final"] == wp.num(want)          # an integer or a terminating decimal, canonical
        assert p["answer"].endswith("\n#### " + p["final"])
        # the checker GRPO and the evals use reads the answer a reader sees
        assert reward_answer(strip_calls(p["answer"]), p["final"], "number") == 1.0
        for k, v in p["params"].items():   # the inputs are the question's numbers, not something else
            if k != "tax" and not isinstance(v, bool):
                assert re.search(rf"(?<![\d.]){re.escape(str(v))}(?![\d])", p["question"]), (k, v, p["question"])


def test_calls_evaluate_to_written_results(problems):
    for p in problems:
        calls = list(CALL.finditer(p["answer"]))
        assert len(calls) == p["level"], p["answer"]   # one call a step
        for m in calls:
            expr, result = m.group(1), m.group(2)
            assert calculate(expr) == result, (expr, result)
            # the sentence repeats the result right after the call, as GSM8K does after its annotation
            assert p["answer"][m.end():].lstrip("$").startswith(result)
            assert p["answer"][:m.start()].endswith(f"{expr} = ")


def test_levels_topics_and_phrasings(problems):
    seen = Counter((p["topic"], p["level"]) for p in problems)
    assert {lv for _, lv in seen} == {2, 3, 4}
    assert {t for t, _ in seen} == set(wp.TOPICS)
    assert min(seen.values()) >= N_CHECK // (3 * len(wp.TOPICS)) - 5   # every (topic, level) about evenly
    assert len({p["question"] for p in problems}) == len(problems)
    names = Counter(n for p in problems for n, _ in wp.NAMES if re.search(rf"\b{n}\b", p["question"]))
    assert len(names) >= 20
    # a multi-digit product in most problems: the arithmetic a calculator is for
    assert sum(bool(re.search(r"\d\d+\*\d+", strip_calls(p["answer"]))) for p in problems) > 0.6 * len(problems)


def test_calls_off_is_the_same_problem_without_calls():
    on, off = wp.generate(120, seed=3, calls=True), wp.generate(120, seed=3, calls=False)
    for a, b in zip(on, off):
        assert a["question"] == b["question"] and a["final"] == b["final"]
        assert strip_calls(a["answer"]) == b["answer"]
        assert not any(t in b["answer"] for t in TOOL_TOKENS)
        assert CALC_START in a["answer"]


def test_levels_flag_and_bad_flags(tmp_path):
    out = wp.main(["--n", "40", "--n_test", "5", "--levels", "4", "--text_only", "--out_dir", str(tmp_path)])
    assert out["train"] == 40
    rows = [json.loads(ln) for ln in open(tmp_path / "word_problems.jsonl")]
    assert {r["level"] for r in rows} == {4}
    for bad in (["--levels", "5"], ["--calls", "maybe"], ["--n", "0"], ["--seed", "-1"]):
        with pytest.raises(SystemExit):
            wp.main([*bad, "--text_only", "--out_dir", str(tmp_path)])


def read(path):
    return [json.loads(ln) for ln in open(path)]


def test_main_deterministic_split_disjoint_and_decontaminated(tmp_path):
    args = ["--n", "300", "--n_test", "60", "--seed", "11", "--text_only"]
    # a GSM8K-style test file holding one of the problems that would be trained on
    train_would_be, _ = split(wp.generate(360, 11), 60, 11)
    leak = train_would_be[5]["question"]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "gsm8k_test.jsonl").write_text(json.dumps({"question": leak, "answer": "#### 1"}) + "\n")
    wp.main(args + ["--out_dir", str(tmp_path / "a")])
    wp.main(args + ["--out_dir", str(tmp_path / "b")])
    wp.main(["--n", "300", "--n_test", "60", "--seed", "12", "--text_only", "--out_dir", str(tmp_path / "c")])
    train, test = read(tmp_path / "a" / "word_problems.jsonl"), read(tmp_path / "a" / "word_problems_test.jsonl")
    assert len(test) == 60 and len(train) == 299                       # the leaked one dropped
    assert leak not in {r["question"] for r in train}
    key = lambda r: (r["topic"], r["level"], json.dumps(r["params"], sort_keys=True))  # noqa: E731
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert not {key(r) for r in train} & {key(r) for r in test}         # not even the same numbers
    assert {r["level"] for r in test} == {2, 3, 4}
    # same seed, same bytes; another seed, other problems
    assert (tmp_path / "a" / "word_problems_test.jsonl").read_bytes() == \
        (tmp_path / "b" / "word_problems_test.jsonl").read_bytes()
    assert [r for r in read(tmp_path / "b" / "word_problems.jsonl") if r["question"] != leak] == train
    assert read(tmp_path / "c" / "word_problems_test.jsonl") != test
