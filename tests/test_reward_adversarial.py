"""Adversarial policies against the GRPO reward (issue #12): a "policy" that always answers a huge
constant, or always copies the question, must earn mean reward 0 on the calculus and GSM8K
training rows, read and scored exactly as GRPO reads and scores them (load_questions, score)."""
import json
import os

import pytest

from mathlm.data.generate_calculus import generate
from mathlm.train.grpo import load_questions, score
from tests.conftest import GSM8K_SAMPLE

POLICIES = {
    "huge constant": lambda q: "The answer is a constant.\n#### 10^{40}",
    "huge e power": lambda q: "#### e^{99}",
    "pole": lambda q: "#### \\tan(\\pi/2)",
    "huge constant, bare": lambda q: "10^{40}",
    "copy the question": lambda q: q,
    "copy the question after ####": lambda q: "#### " + q,
    "the answer is the question": lambda q: "The answer is " + q,
}


def _rows(tmp_path, name):
    if name == "calculus":
        path = tmp_path / "calculus.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in generate(300, 0)))
        return load_questions(str(path), "calculus")
    return load_questions(os.path.join(GSM8K_SAMPLE, "train.jsonl"), "gsm8k")  # the committed 200 rows


@pytest.mark.parametrize("task", ["calculus", "gsm8k"])
@pytest.mark.parametrize("policy", list(POLICIES))
def test_adversarial_policy_earns_nothing(tmp_path, task, policy):
    qs = _rows(tmp_path, task)
    assert len(qs) >= 200
    texts = [POLICIES[policy](q["question"]) for q in qs]
    correct, _, truncated = score(texts, qs, 1, cut=[False] * len(texts))
    assert correct.sum().item() == 0, [q["question"] for q, c in zip(qs, correct.view(-1)) if c][:3]
    assert truncated.sum().item() == 0
    if task == "calculus":
        assert {q["kind"] for q in qs} == {"expr", "antiderivative", "number"}  # every checker path is attacked
