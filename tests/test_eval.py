"""The eval stages end to end on tiny random checkpoints and real GSM8K test problems:
mathlm.eval.gsm8k, mathlm.eval.math (one checkpoint and --compare A B), maj@k / pass@k, and the
harness's batched decoding against one prompt at a time.

Random weights score ~0%, so every run is checked for consistency (the summary JSON against the
per-example JSONL, recomputed with mathlm.eval.answers / stats), and a second run of each stage
swaps the model's completions for planted ones with hand-counted accuracies, so the scoring is
exercised on numbers that are not all zero.
"""
import dataclasses
import json
import os
import shutil

import pytest
import torch

from mathlm.eval import gsm8k as gsm8k_eval
from mathlm.eval import harness
from mathlm.eval import math as math_eval
from mathlm.eval.answers import extract_number, gold_answer, numbers_equal
from mathlm.eval.stats import mcnemar_exact, pass_at_k, wilson_interval
from mathlm.format import encode_qa, qa_prompt
from mathlm.model.gpt import GPT, GPTConfig
from mathlm.tokenizer import MathTokenizer
from mathlm.train.common import save_checkpoint
from tests.conftest import GSM8K_SAMPLE

GSM8K_TEST = os.path.join(GSM8K_SAMPLE, "test.jsonl")
FAST = ["--max_new_tokens", "24", "--device", "cpu"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """A 64-wide model gains nothing from intra-op threads, and on a busy machine their spinning made
    these tests 7x slower (0.65 s vs 4.3 s for one math eval run)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(vocab_size, seed, block_size=256, std=None):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=(vocab_size + 63) // 64 * 64, n_layer=2, n_embd=64, n_head=4, n_kv_head=2,
                    ffn_hidden=172, block_size=block_size)
    model = GPT(cfg)
    if std is not None:  # the 0.02 init repeats one token forever; wider weights give varied text
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, std)
    return model.eval()


@pytest.fixture(scope="module")
def work(gsm8k_workdir, tmp_path_factory):
    """A copy of the GSM8K work dir with two tiny checkpoints (A: seed 0, B: seed 1) and a hand-written
    calculus_test.jsonl of the generate_calculus schema (question, answer, final, kind)."""
    d = tmp_path_factory.mktemp("eval_work")
    shutil.copytree(gsm8k_workdir / "math_tokenizer", d / "math_tokenizer")
    shutil.copy(gsm8k_workdir / "gsm8k_test.jsonl", d / "gsm8k_test.jsonl")
    tok = MathTokenizer.load(str(d / "math_tokenizer"))
    for name, seed in (("A.pt", 0), ("B.pt", 1)):
        model = tiny_model(tok.vocab_size, seed, std=0.5)
        save_checkpoint(str(d / name), {"model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
                                        "config": {}, "step": 0, "tokenizer_hash": tok.hash, "stage": "test"})
    calc = [("Differentiate x^3 with respect to x.", "3*x^2", "expr"),
            ("Find the derivative of sin(2*x).", "2*cos(2*x)", "expr"),
            ("Integrate 2*x dx.", "x^2", "antiderivative"),
            ("Find an antiderivative of cos(x).", "sin(x)", "antiderivative"),
            ("Evaluate the integral of 2*x from 0 to 3.", "9", "number"),
            ("Evaluate the derivative of x^2 at x = 1/2.", "1", "number")]
    with open(d / "calculus_test.jsonl", "w") as f:
        for q, final, kind in calc:
            f.write(json.dumps({"question": q, "answer": f"#### {final}", "final": final, "kind": kind}) + "\n")
    return d


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def question_of(tok, prompt):
    """The question a prompt (string or ids) ends with: the text between the last "Q: " and "\\nA:"."""
    text = prompt if isinstance(prompt, str) else tok.decode(prompt)
    return text.rsplit("Q: ", 1)[1].rsplit("\nA:", 1)[0].strip()


# -----------------------------------------------------------------------------
# the prompt

def test_shots_are_the_documented_train_examples():
    """SHOTS are GSM8K train #1 and #4 exactly as download_gsm8k writes them (annotations removed)."""
    from mathlm.data.download_gsm8k import to_pair
    with open(os.path.join(GSM8K_SAMPLE, "train.jsonl")) as f:
        train = [json.loads(line) for _, line in zip(range(5), f)]
    for (q, a), row in zip(gsm8k_eval.SHOTS, (train[1], train[4])):
        pair = to_pair(row, "strip")
        assert (q, a) == (pair["question"], pair["answer"])


def test_build_prompt_is_shots_then_question_and_drops_shots_to_fit(work):
    tok = MathTokenizer.load(str(work / "math_tokenizer"))
    q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    want = [t for s, a in gsm8k_eval.SHOTS for t in sum(encode_qa(tok, s, a), [])] + tok.encode(qa_prompt(q))
    ids, used = gsm8k_eval.build_prompt(q, 2, 4096, 256, tok)
    assert (ids, used) == (want, 2)
    assert tok.decode(ids).count("<|eos|>") == 2  # each shot closed like a training example
    # a context too small for two shots keeps one, then none
    one_shot = sum(encode_qa(tok, *gsm8k_eval.SHOTS[0]), []) + tok.encode(qa_prompt(q))
    assert gsm8k_eval.build_prompt(q, 2, len(one_shot) + 64, 256, tok) == (one_shot, 1)
    assert gsm8k_eval.build_prompt(q, 2, 80, 256, tok) == (tok.encode(qa_prompt(q)), 0)


# -----------------------------------------------------------------------------
# the harness

@pytest.mark.parametrize("block_size", [256, 64])
def test_batched_greedy_equals_one_at_a_time(work, block_size):
    """16 prompts of different lengths: batch 8 (left padded) and batch 1 give identical completions.
    At block_size 64 many prompts sit within max_new_tokens of the context end, where a batch must not
    give a row fewer new tokens than it would get alone."""
    tok = MathTokenizer.load(str(work / "math_tokenizer"))
    rows = harness.read_rows(GSM8K_TEST)[:16]
    prompts = [qa_prompt(r["question"][:20 + 25 * i]) for i, r in enumerate(rows)]
    model = tiny_model(tok.vocab_size, seed=3, block_size=block_size, std=0.5)
    assert len({len(tok.encode(p)) for p in prompts}) > 8
    one = harness.complete(model, tok, prompts, max_new_tokens=24, batch_size=1)
    batched = harness.complete(model, tok, prompts, max_new_tokens=24, batch_size=8)
    assert batched == one
    assert len(set(one)) > 8  # varied text, not one token repeated by every row


def test_batches_share_a_budget():
    # block 10, 4 new tokens: lengths up to 6 get 4 tokens; 7 gets 3, 8 gets 2, only with their own length
    lengths = [8, 2, 7, 3, 8, 6, 7]
    got = harness.batches(lengths, max_new_tokens=4, block_size=10, batch_size=3)
    assert got == [[1, 3, 5], [2, 6], [0, 4]]
    assert harness.batches(lengths, 4, 10, batch_size=2) == [[1, 3], [5], [2, 6], [0, 4]]


class ScriptedModel:
    """Stands in for GPT.generate: row r emits scripts[r] (then eos), and counts the steps pulled."""

    def __init__(self, scripts, eos_id, block_size=256):
        self.scripts, self.eos_id, self.steps = scripts, eos_id, 0
        self.config = GPTConfig(vocab_size=64, n_layer=1, n_embd=8, n_head=1, n_kv_head=1, block_size=block_size)

    def generate(self, prompts, max_new_tokens, **kw):
        for t in range(max_new_tokens):
            self.steps += 1
            yield torch.tensor([s[t] if t < len(s) else self.eos_id for s in self.scripts[:len(prompts)]])


def test_complete_stops_at_eos_and_next_question(work):
    tok = MathTokenizer.load(str(work / "math_tokenizer"))
    runaway = tok.encode(" 3 + 4 = 7 apples.\n#### 7\n\nQ: Next question? And more and more and more text")
    ended = tok.encode(" 12") + [tok.eos_id] + tok.encode(" never seen")
    model = ScriptedModel([runaway, ended], tok.eos_id)
    out = harness.complete(model, tok, ["Q: a\nA:", "Q: b\nA:"], max_new_tokens=200, batch_size=2)
    assert out == ["3 + 4 = 7 apples.\n#### 7", "12"]
    assert model.steps < len(runaway)  # decoding stopped soon after "Q:", not at the end of the script


# -----------------------------------------------------------------------------
# mathlm.eval.gsm8k

def test_gsm8k_end_to_end_on_20_real_problems(work, tmp_path, capsys):
    out = str(tmp_path / "ev")
    summary = gsm8k_eval.main(["--checkpoint", str(work / "A.pt"), "--tokenizer", str(work / "math_tokenizer"),
                               "--source", GSM8K_TEST, "--n", "20", "--out", out] + FAST)
    rows, js = read_jsonl(out + ".jsonl"), read_json(out + ".json")
    assert js == json.loads(json.dumps(summary))
    assert js["n"] == len(rows) == 20
    for r in rows:
        assert set(r) >= {"question", "completion", "extracted", "gold", "correct"}
        assert r["extracted"] == extract_number(r["completion"], "strict")  # accuracy is strict (#12)
        assert r["correct"] == (r["extracted"] is not None and numbers_equal(r["extracted"], r["gold"]))
        assert r["extracted_flexible"] == extract_number(r["completion"], "flexible")
    k = sum(r["correct"] for r in rows)
    assert js["correct"] == k and js["accuracy"] == k / 20
    assert js["ci95"] == list(wilson_interval(k, 20))
    # the seeded subset: 20 of the sample's 200 test problems, in file order, the same on every run
    test = harness.read_rows(GSM8K_TEST)
    assert [r["question"] for r in rows] == [r["question"] for r in harness.subset(test, 20, 0)]
    golds = {r["question"]: extract_number(r["answer"]) for r in test}
    assert all(r["gold"] == golds[r["question"]] for r in rows)
    assert "accuracy" in capsys.readouterr().out


def planted_gsm8k(monkeypatch, tok, golds):
    """Replace the model: greedy row i is right for i % 3 in (0, 1) (a #### answer, a last-number answer),
    wrong for i % 3 == 2; sampled rows follow five hand-made patterns, see test_gsm8k_samples_planted."""
    def fake_complete(model, tok_, prompts, max_new_tokens, batch_size, num_samples=1, progress=None, **kw):
        out = []
        for i, p in enumerate(prompts):
            g = golds[question_of(tok, p)]
            if num_samples == 1:
                out.append([f"So the answer is:\n#### ${int(g):,}.00", f"In all she has {g} apples.",
                            f"#### {int(g) + 1}"][i % 3])
            else:
                w1, w2, w3 = (f"#### {int(g) + j}" for j in (1, 2, 3))
                right = f"#### {g}"
                out.append([[right, w1, w1], [right, right, w1], [w1, w2, w3], [right, w1, w2],
                            ["no idea", right, "no idea"]][i % 5])
            if progress is not None:
                progress.update(1)
        return out
    monkeypatch.setattr(gsm8k_eval, "complete", fake_complete)


def test_gsm8k_scoring_planted(work, tmp_path, monkeypatch):
    tok = MathTokenizer.load(str(work / "math_tokenizer"))
    golds = {r["question"]: extract_number(r["answer"]) for r in harness.read_rows(GSM8K_TEST)}
    planted_gsm8k(monkeypatch, tok, golds)
    out = str(tmp_path / "ev")
    js = gsm8k_eval.main(["--checkpoint", str(work / "A.pt"), "--tokenizer", str(work / "math_tokenizer"),
                          "--source", GSM8K_TEST, "--n", "20", "--out", out] + FAST)
    rows = read_jsonl(out + ".jsonl")
    # strict (#12): only the "####" answers (i % 3 == 0) count; flexible adds the last-number ones
    assert [r["correct"] for r in rows] == [i % 3 == 0 for i in range(20)]
    assert [r["correct_flexible"] for r in rows] == [i % 3 != 2 for i in range(20)]
    assert js["correct"] == 7 and js["accuracy"] == 7 / 20 and js["flexible"] == 14 / 20
    assert js["ci95"] == list(wilson_interval(7, 20)) and js["flexible_ci95"] == list(wilson_interval(14, 20))
    assert all((r["extracted"] is not None and numbers_equal(r["extracted"], r["gold"])) == r["correct"] for r in rows)
    golds = [r["gold"] for r in rows]
    assert js["majority_baseline"] == golds.count(js["majority_answer"]) / 20


def test_gsm8k_samples_real_model(work, tmp_path):
    out = str(tmp_path / "ev")
    js = gsm8k_eval.main(["--checkpoint", str(work / "A.pt"), "--tokenizer", str(work / "math_tokenizer"),
                          "--source", GSM8K_TEST, "--n", "6", "--samples", "3", "--temperature", "1.0",
                          "--out", out] + FAST)
    rows = read_jsonl(out + ".jsonl")
    assert "maj@3" in js and "pass@3" in js
    assert all(len(r["samples"]) == len(r["sample_correct"]) == 3 for r in rows)
    assert len({s for r in rows for s in r["samples"]}) > 3  # temperature 1: the samples differ
    assert js["pass@3"] == sum(any(r["sample_correct"]) for r in rows) / len(rows)
    assert js["maj@3"] == sum(r["majority_correct"] for r in rows) / len(rows)


def test_gsm8k_samples_planted(work, tmp_path, monkeypatch):
    """Per 5 rows: [right, w1, w1] pass only; [right, right, w1] both; [w1, w2, w3] neither;
    [right, w1, w2] both (a three-way tie goes to the first answer); ["no idea", right, "no idea"] both
    (text with no number is not a vote). So over 10 rows: pass@3 = 8/10, maj@3 = 6/10, and
    sampled pass@1 = mean(c/3) = 2 * (1 + 2 + 0 + 1 + 1) / 3 / 10 = 1/3."""
    tok = MathTokenizer.load(str(work / "math_tokenizer"))
    golds = {r["question"]: extract_number(r["answer"]) for r in harness.read_rows(GSM8K_TEST)}
    planted_gsm8k(monkeypatch, tok, golds)
    out = str(tmp_path / "ev")
    js = gsm8k_eval.main(["--checkpoint", str(work / "A.pt"), "--tokenizer", str(work / "math_tokenizer"),
                          "--source", GSM8K_TEST, "--n", "10", "--samples", "3", "--temperature", "1.0",
                          "--out", out] + FAST)
    rows = read_jsonl(out + ".jsonl")
    assert [r["majority_correct"] for r in rows] == [i % 5 != 0 and i % 5 != 2 for i in range(10)]
    assert js["pass@3"] == 8 / 10 == sum(any(r["sample_correct"]) for r in rows) / 10
    assert js["maj@3"] == 6 / 10
    assert js["pass@1_sampled"] == pytest.approx(1 / 3)
    assert js["pass@1_sampled"] == pytest.approx(sum(pass_at_k(3, sum(r["sample_correct"]), 1) for r in rows) / 10)


# -----------------------------------------------------------------------------
# mathlm.eval.math

def math_args(work, tmp_path, *extra):
    return ["--tokenizer", str(work / "math_tokenizer"), "--data_dir", str(work), "--n", "8",
            "--out", str(tmp_path / "m")] + FAST + list(extra)


def check_domain_summary(s, recs):
    k = sum(r["correct"] for r in recs)
    assert (s["n"], s["correct"], s["accuracy"]) == (len(recs), k, k / len(recs))
    assert s["ci95"] == list(wilson_interval(k, len(recs)))


def test_math_end_to_end_one_checkpoint(work, tmp_path, capsys):
    js = math_eval.main(["--checkpoint", str(work / "A.pt")] + math_args(work, tmp_path))
    out = capsys.readouterr().out
    rows = read_jsonl(tmp_path / "m.jsonl")
    assert read_json(tmp_path / "m.json") == json.loads(json.dumps(js))
    assert list(js["domains"]) == ["gsm8k", "calculus"]  # ml_math and MATH are absent here: named and skipped
    assert "ml_math_test.jsonl not found" in out and "/math_test.jsonl not found" in out
    assert "calculus" in out and "gsm8k" in out  # the table
    for d, n in (("gsm8k", 8), ("calculus", 6)):
        recs = [r for r in rows if r["domain"] == d]
        assert len(recs) == n
        check_domain_summary(js["domains"][d], recs)
        assert all(r["correct"] == math_eval.is_correct(r["completion"], r["gold"], r["kind"]) for r in recs)
    assert {r["kind"] for r in rows if r["domain"] == "calculus"} == {"expr", "antiderivative", "number"}


def test_math_compare_real_checkpoints(work, tmp_path, capsys):
    js = math_eval.main(["--compare", str(work / "A.pt"), str(work / "B.pt")] + math_args(work, tmp_path))
    out = capsys.readouterr().out
    assert "A: A.pt" in out and "B: B.pt" in out and "McNemar" in out
    check_compare(js, read_jsonl(tmp_path / "m.jsonl"))
    assert read_json(tmp_path / "m.json") == json.loads(json.dumps(js))


def check_compare(js, rows):
    for d, s in js["domains"].items():
        a = sorted((r for r in rows if r["domain"] == d and r["side"] == "A"), key=lambda r: r["index"])
        b = sorted((r for r in rows if r["domain"] == d and r["side"] == "B"), key=lambda r: r["index"])
        assert [r["question"] for r in a] == [r["question"] for r in b]  # the same problems, paired
        check_domain_summary(s["A"], a)
        check_domain_summary(s["B"], b)
        a_only = sum(x["correct"] and not y["correct"] for x, y in zip(a, b))
        b_only = sum(y["correct"] and not x["correct"] for x, y in zip(a, b))
        assert (s["a_only"], s["b_only"]) == (a_only, b_only)
        assert s["delta"] == s["B"]["accuracy"] - s["A"]["accuracy"]
        assert s["p_value"] == mcnemar_exact(a_only, b_only)


def test_math_compare_planted(work, tmp_path, monkeypatch):
    """A is right on even rows, B on rows i % 4 != 3: on gsm8k's 8 rows A 4/8, B 6/8, A-only 0 (i % 4 == 3
    and even: none), B-only 2 (rows 1, 5), so delta = +0.25 and McNemar p = 2 * 0.5^2 = 0.5."""
    tok = MathTokenizer.load(str(work / "math_tokenizer"))
    golds = {}
    for d in ("gsm8k", "calculus"):
        for r in harness.read_rows(str(work / math_eval.DOMAINS[d])):
            golds[r["question"]] = gold_answer(r)[0]
    sums = {}
    for side in ("A", "B"):
        sums[round(torch.load(work / f"{side}.pt", weights_only=True)["model"]["lm_head.weight"].sum().item(), 3)] = side

    def fake_complete(model, tok_, prompts, max_new_tokens, batch_size, num_samples=1, progress=None, **kw):
        side = sums[round(model.lm_head.weight.sum().item(), 3)]
        out = []
        for i, p in enumerate(prompts):
            right = (i % 2 == 0) if side == "A" else (i % 4 != 3)
            out.append(f"Work.\n#### {golds[question_of(tok, p)]}" if right else "#### 123456")
            if progress is not None:
                progress.update(1)
        return out

    monkeypatch.setattr(math_eval, "complete", fake_complete)
    js = math_eval.main(["--compare", str(work / "A.pt"), str(work / "B.pt")] + math_args(work, tmp_path))
    g = js["domains"]["gsm8k"]
    assert (g["A"]["correct"], g["B"]["correct"], g["a_only"], g["b_only"]) == (4, 6, 0, 2)
    assert g["delta"] == pytest.approx(0.25) and g["p_value"] == 0.5
    c = js["domains"]["calculus"]  # 6 rows: A right on 0, 2, 4; B on 0, 1, 2, 4, 5
    assert (c["A"]["correct"], c["B"]["correct"], c["a_only"], c["b_only"]) == (3, 5, 0, 2)
    check_compare(js, read_jsonl(tmp_path / "m.jsonl"))


def test_math_samples_keys(work, tmp_path):
    js = math_eval.main(["--checkpoint", str(work / "A.pt"), "--domains", "calculus", "--samples", "3",
                         "--temperature", "1.0"] + math_args(work, tmp_path))
    rows = read_jsonl(tmp_path / "m.jsonl")
    s = js["domains"]["calculus"]
    assert s["pass@3"] == sum(any(r["sample_correct"]) for r in rows) / len(rows)
    assert s["maj@3"] == sum(r["majority_correct"] for r in rows) / len(rows)


@pytest.mark.parametrize("row,want", [
    ({"answer": "3 + 4 = 7\n#### 7"}, ("7", "number")),                           # GSM8K
    ({"answer": "#### 1,234"}, ("1234", "number")),                               # canonical number
    ({"answer": "so\n#### 5", "final": "5"}, ("5", "number")),                    # download_gsm8k's rows
    ({"answer": "So $x = \\boxed{\\frac{1}{2}}$."}, ("\\frac{1}{2}", "expr")),    # MATH
    ({"answer": "So $\\boxed 5$.", "level": "Level 1"}, ("5", "expr")),            # \boxed 5
    ({"answer": "no boxed answer", "final": None}, (None, "expr")),               # no gold: left out
    ({"answer": "#### 2*x", "final": "2*x", "kind": "expr"}, ("2*x", "expr")),    # synthetic
    ({"answer": "x", "final": "3*x^2"}, ("3*x^2", "expr")),
    ({"answer": "68"}, ("68", "number")),                                          # a bare number
])
def test_gold_answer_from_each_schema(row, want):
    assert gold_answer(row) == want


def test_math_summary_has_flexible_topics_and_majority_baseline(work, tmp_path, monkeypatch):
    """Calculus rows carry a topic: per-topic summaries and topic in each record; every domain has the
    most-common-answer baseline; the planted completions answer right without "####" on odd rows, so
    strict and flexible differ."""
    from mathlm.data.generate_calculus import generate
    tok = MathTokenizer.load(str(work / "math_tokenizer"))
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(work / "gsm8k_test.jsonl", data / "gsm8k_test.jsonl")
    for name, n, seed in (("calculus_test.jsonl", 16, 1), ("calculus.jsonl", 40, 2)):  # generated rows carry a topic
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in generate(n, seed)))
    golds = {r["question"]: gold_answer(r)[0] for d in ("gsm8k", "calculus")
             for r in harness.read_rows(str(data / math_eval.DOMAINS[d]))}

    def fake_complete(model, tok_, prompts, max_new_tokens, batch_size, num_samples=1, progress=None, **kw):
        if progress is not None:
            progress.update(len(prompts))
        return [f"#### {golds[question_of(tok, p)]}" if i % 2 == 0 else f"The answer is {golds[question_of(tok, p)]}."
                for i, p in enumerate(prompts)]

    monkeypatch.setattr(math_eval, "complete", fake_complete)
    js = math_eval.main(["--checkpoint", str(work / "A.pt"), "--tokenizer", str(work / "math_tokenizer"),
                         "--data_dir", str(data), "--n", "16", "--out", str(tmp_path / "m")] + FAST)
    rows = read_jsonl(tmp_path / "m.jsonl")
    assert js["domains"]["calculus"]["majority_from"] == "calculus.jsonl"  # the train file, not the test set
    assert js["domains"]["gsm8k"]["majority_from"] == "gsm8k_test.jsonl"  # no gsm8k.jsonl here
    for d, s in js["domains"].items():
        recs = [r for r in rows if r["domain"] == d]
        assert {"domain", "index", "correct", "correct_flexible"} <= set(recs[0])
        assert s["correct"] == sum(i % 2 == 0 for i in range(len(recs)))  # strict: the #### rows
        assert s["flexible"] == 1.0                                       # flexible: all of them
        assert 0 <= s["majority_baseline"] <= 1 and s["majority_answer"] is not None
    cal = js["domains"]["calculus"]
    recs = [r for r in rows if r["domain"] == "calculus"]
    assert all("topic" in r for r in recs)
    assert sum(t["n"] for t in cal["topics"].values()) == cal["n"]
    for t, ts in cal["topics"].items():
        check_domain_summary(ts, [r for r in recs if r["topic"] == t])


# -----------------------------------------------------------------------------
# one-line errors

def one_line_exit(fn, argv):
    with pytest.raises(SystemExit) as e:
        fn(argv)
    msg = str(e.value.code)
    assert "\n" not in msg and msg.startswith("error:")
    return msg


def test_missing_inputs_are_named(work, tmp_path):
    tokdir = ["--tokenizer", str(work / "math_tokenizer")]
    missing = str(tmp_path / "nope.pt")
    assert missing in one_line_exit(gsm8k_eval.main, ["--checkpoint", missing, "--source", GSM8K_TEST] + tokdir)
    no_test = str(tmp_path / "no_test.jsonl")
    assert no_test in one_line_exit(gsm8k_eval.main, ["--checkpoint", str(work / "A.pt"), "--source", no_test] + tokdir)
    no_tok = str(tmp_path / "no_tokenizer")
    assert no_tok in one_line_exit(gsm8k_eval.main, ["--checkpoint", str(work / "A.pt"), "--source", GSM8K_TEST,
                                                     "--tokenizer", no_tok])
    assert missing in one_line_exit(math_eval.main, ["--compare", str(work / "A.pt"), missing, "--data_dir",
                                                     str(work)] + tokdir)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert str(empty) in one_line_exit(math_eval.main, ["--checkpoint", str(work / "A.pt"), "--data_dir",
                                                        str(empty)] + tokdir)
