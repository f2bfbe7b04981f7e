"""The evals' --tools auto|on|off|both: which modes run, the same problems scored with and without the
calculator and paired (each side's Wilson interval, McNemar p against hand counts), completions scored on
strip_calls, the word_problems domain, GSM8K's shots with calls — on planted completions and end to end
on a tiny random checkpoint."""
import dataclasses
import json
import os

import pytest
import torch

from mathlm.common import MathlmError
from mathlm.data import generate_word_problems as wp
from mathlm.data.download_gsm8k import to_pair
from mathlm.eval import gsm8k as gsm8k_eval
from mathlm.eval import harness
from mathlm.eval import math as math_eval
from mathlm.eval.stats import mcnemar_exact, wilson_interval
from mathlm.format import CALC_START, calc_call, qa_text
from mathlm.model.gpt import GPT, GPTConfig
from mathlm.tokenizer import MathTokenizer
from mathlm.train.common import save_checkpoint
from tests.conftest import GSM8K_SAMPLE

N = 12


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """word_problems_test.jsonl (12 problems), gsm8k_test.jsonl (the sample's first 12), tokenizers with and
    without the calculator tokens, and a tiny random checkpoint for each."""
    d = tmp_path_factory.mktemp("tools_eval")
    probs = wp.generate(3 * N, seed=5)[::3]   # every third: all three levels among 12
    with open(d / "word_problems_test.jsonl", "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in probs)
    gsm = [json.loads(ln) for ln in open(os.path.join(GSM8K_SAMPLE, "test.jsonl"))][:N]
    with open(d / "gsm8k_test.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in gsm)
    texts = [qa_text(p["question"], p["answer"]) for p in wp.generate(300, seed=6)]
    for name, tools in (("tok", True), ("tok_plain", False)):
        tok = MathTokenizer.train(texts, vocab_size=700, show_progress=False, tools=tools)
        tok.save(str(d / name))
        tok = MathTokenizer.load(str(d / name))
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=(tok.vocab_size + 63) // 64 * 64, n_layer=1, n_embd=32, n_head=2,
                              n_kv_head=1, ffn_hidden=64, block_size=1024)).eval()
        save_checkpoint(str(d / f"{name}.pt"), {"model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
                                                "config": {}, "step": 0, "tokenizer_hash": tok.hash, "stage": "test"})
    return d


def args(work, tmp_path, name="tok"):
    return ["--checkpoint", str(work / f"{name}.pt"), "--tokenizer", str(work / name), "--data_dir", str(work),
            "--n", "0", "--max_new_tokens", "8", "--device", "cpu", "--out", str(tmp_path / "m")]


def test_tool_modes(work):
    tok, plain = MathTokenizer.load(str(work / "tok")), MathTokenizer.load(str(work / "tok_plain"))
    assert [harness.tool_modes(m, tok) for m in ("auto", "on", "off", "both")] == [["on"], ["on"], ["off"], ["on", "off"]]
    assert harness.tool_modes("auto", plain) == ["off"] and harness.tool_modes("off", plain) == ["off"]
    for bad in ("on", "both"):
        with pytest.raises(MathlmError, match="no calculator tokens"):
            harness.tool_modes(bad, plain)
    with pytest.raises(MathlmError, match="choose auto"):
        harness.tool_modes("yes", tok)


def plant(monkeypatch, module, work, right_on, right_off, seen):
    """Completions with tools: right where right_on(i), the final line computed by a call
    ("#### <|calc|>0+42<|result|>42<|/result|>42": read unstripped, the number after #### is the call's 0);
    without: right where right_off(i)."""
    golds = {}
    for f in ("word_problems_test.jsonl", "gsm8k_test.jsonl"):
        for r in harness.read_rows(str(work / f)):
            golds[r["question"]] = math_eval.gold_answer(r)[0]
    tok = MathTokenizer.load(str(work / "tok"))

    def fake_complete(model, tok_, prompts, max_new_tokens, batch_size, progress=None, tools=None, **kw):
        out = []
        for i, p in enumerate(prompts):
            text = p if isinstance(p, str) else tok.decode(p)
            seen.append((tools is not None, CALC_START in text))
            g = golds[text.rsplit("Q: ", 1)[1].rsplit("\nA:", 1)[0].strip()]
            if tools is not None:
                out.append(f"#### {calc_call(f'0+{g}', g)}{g}" if right_on(i) else f"#### {calc_call('0+7', '7')}7")
            else:
                out.append(f"#### {g}" if right_off(i) else "#### -1")
            if progress is not None:
                progress.update(1)
        return out

    monkeypatch.setattr(module, "complete", fake_complete)
    return tok


def on_rows(i):
    return i % 4 != 3       # 9 of 12


def off_rows(i):
    return i % 3 == 0       # 4 of 12: 0, 3, 6, 9


# on only: 1, 2, 4, 5, 8, 10 (6); off only: 3 (1); McNemar p = 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125
HAND = dict(on=9, off=4, on_only=6, off_only=1, p=0.125)


def test_math_tools_both_planted(work, tmp_path, monkeypatch):
    seen = []
    plant(monkeypatch, math_eval, work, on_rows, off_rows, seen)
    js = math_eval.main(args(work, tmp_path) + ["--tools", "both", "--domains", "word_problems"])
    s = js["domains"]["word_problems"]
    assert js["tools"] == ["on", "off"]
    assert (s["correct"], s["tools_off"]["correct"], s["tools_on_only"], s["tools_off_only"]) == \
        (HAND["on"], HAND["off"], HAND["on_only"], HAND["off_only"])
    assert s["tools_p_value"] == HAND["p"] == mcnemar_exact(6, 1)
    assert s["ci95"] == list(wilson_interval(9, N)) and s["tools_off"]["ci95"] == list(wilson_interval(4, N))
    assert s["tools"] == "on" and s["n"] == s["tools_off"]["n"] == N
    assert s["flexible"] == 9 / N
    rows = [json.loads(ln) for ln in open(tmp_path / "m.jsonl")]
    assert [r["tools"] for r in rows] == ["on"] * N + ["off"] * N
    assert [r["question"] for r in rows[:N]] == [r["question"] for r in rows[N:]]   # the same problems
    assert all(CALC_START in r["completion"] for r in rows[:N])                     # the record keeps the calls
    assert {r["level"] for r in rows} == {2, 3, 4} and all("topic" in r for r in rows)
    assert {t for t, _ in seen} == {True, False}


def test_math_tools_off_and_compare_refuses_both(work, tmp_path, monkeypatch):
    seen = []
    plant(monkeypatch, math_eval, work, on_rows, off_rows, seen)
    js = math_eval.main(args(work, tmp_path) + ["--tools", "off", "--domains", "word_problems"])
    assert js["tools"] == ["off"] and js["domains"]["word_problems"]["correct"] == 4 and "tools_off" not in \
        js["domains"]["word_problems"]
    assert {t for t, _ in seen} == {False}
    with pytest.raises(SystemExit):
        math_eval.main(args(work, tmp_path) + ["--tools", "both", "--compare", str(work / "tok.pt"), str(work / "tok.pt")])


def test_gsm8k_tools_both_planted(work, tmp_path, monkeypatch):
    seen = []
    plant(monkeypatch, gsm8k_eval, work, on_rows, off_rows, seen)
    js = gsm8k_eval.main(["--checkpoint", str(work / "tok.pt"), "--tokenizer", str(work / "tok"), "--source",
                          str(work / "gsm8k_test.jsonl"), "--n", "0", "--max_new_tokens", "8", "--device", "cpu",
                          "--tools", "both", "--out", str(tmp_path / "g")])
    assert (js["correct"], js["tools_off"]["correct"], js["tools_on_only"], js["tools_off_only"],
            js["tools_p_value"]) == (HAND["on"], HAND["off"], HAND["on_only"], HAND["off_only"], HAND["p"])
    assert js["tools_off"]["ci95"] == list(wilson_interval(4, N)) and js["shots_used_min"] == 2
    # with tools the shots show their calls; without, GSM8K's sentences only
    assert set(seen) == {(True, True), (False, False)}
    rows = [json.loads(ln) for ln in open(tmp_path / "g.jsonl")]
    assert sum(r["correct_tools_off"] for r in rows) == 4 and CALC_START in rows[0]["completion"]


def test_shots_with_calls_are_download_gsm8k_default():
    with open(os.path.join(GSM8K_SAMPLE, "train.jsonl")) as f:
        train = [json.loads(line) for _, line in zip(range(5), f)]
    for (q, a), row in zip(gsm8k_eval.SHOTS_CALLS, (train[1], train[4])):
        assert (q, a) == (to_pair(row)["question"], to_pair(row)["answer"])


def test_end_to_end_random_checkpoint(work, tmp_path):
    """A real decode both ways (GPT.generate with and without the calculator), and auto on a tokenizer
    without the tokens is off."""
    js = math_eval.main(args(work, tmp_path) + ["--tools", "both", "--domains", "word_problems,gsm8k"])
    for d in ("word_problems", "gsm8k"):
        s = js["domains"][d]
        assert s["n"] == s["tools_off"]["n"] == N and 0 <= s["tools_p_value"] <= 1
    js = math_eval.main(args(work, tmp_path, "tok_plain") + ["--domains", "word_problems"])
    assert js["tools"] == ["off"]
    rows = [json.loads(ln) for ln in open(tmp_path / "m.jsonl")]
    assert len(rows) == N and {r["tools"] for r in rows} == {"off"}


def test_speculate_and_dtype_flags(work, tmp_path):
    """--speculate lookup at --batch_size 1 scores the very completions plain decoding does (greedy
    speculation is exact), in both evals and with the calculator on; --dtype bf16 decodes; bad values
    are one-line errors before any work."""
    base = args(work, tmp_path) + ["--max_new_tokens", "40", "--batch_size", "1"]
    no_dir = base[:4] + base[6:]   # the GSM8K eval reads --source, not --data_dir
    for ev, flags0 in ((math_eval, base + ["--domains", "word_problems,gsm8k"]),
                       (gsm8k_eval, no_dir + ["--source", str(work / "gsm8k_test.jsonl")])):
        texts = []
        for flags in ([], ["--speculate", "lookup", "--spec_k", "3"]):
            ev.main(flags0 + flags)
            texts.append([json.loads(ln)["completion"] for ln in open(tmp_path / "m.jsonl")])
        assert len(texts[0]) >= N and texts[0] == texts[1]
    js = math_eval.main(base + ["--domains", "word_problems", "--dtype", "bf16"])
    assert js["domains"]["word_problems"]["n"] == N
    for bad in (["--dtype", "fp8"], ["--speculate", "medusa"], ["--spec_k", "-1"], ["--speculate", "draft"]):
        with pytest.raises(SystemExit, match="error: --(dtype|speculate|spec_k)"):
            math_eval.main(base + bad)
