"""Where mathlm.eval.math writes: a one-checkpoint run and a --compare run keep separate summaries
(eval_math.json, eval_math_compare.json) in the working directory, the last line names the file
and the checkpoints, and replacing a summary of other checkpoints is said, never silent."""
import json
import os

from mathlm.eval import math as math_eval
from tests.test_eval import FAST, one_thread, work  # noqa: F401  (fixtures)


def run(work, *args):
    return math_eval.main(list(args) + ["--tokenizer", str(work / "math_tokenizer"), "--data_dir", str(work),
                                        "--n", "4", "--domains", "calculus"] + FAST)


def test_compare_does_not_overwrite_the_one_checkpoint_summary(work, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    a, b = str(work / "A.pt"), str(work / "B.pt")
    single = run(work, "--checkpoint", a)
    out = capsys.readouterr().out
    assert f"wrote {tmp_path}/eval_math.json and .jsonl ({a};" in out
    pair = run(work, "--compare", a, b)
    out = capsys.readouterr().out
    assert f"wrote {tmp_path}/eval_math_compare.json and .jsonl (A = {a} vs B = {b};" in out
    assert "replaced" not in out
    assert json.load(open("eval_math.json")) == json.loads(json.dumps(single))  # untouched
    assert json.load(open("eval_math_compare.json")) == json.loads(json.dumps(pair))
    assert sorted(os.listdir(tmp_path)) == ["eval_math.json", "eval_math.jsonl", "eval_math_compare.json",
                                            "eval_math_compare.jsonl"]


def test_replacing_another_checkpoints_summary_is_said(work, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    a, b = str(work / "A.pt"), str(work / "B.pt")
    run(work, "--checkpoint", a)
    run(work, "--checkpoint", a)  # the same checkpoint again: an update, nothing to say
    assert "replaced" not in capsys.readouterr().out
    run(work, "--checkpoint", b)
    assert f"note: this replaced eval_math.json of {a} — pass --out NAME" in capsys.readouterr().out
    run(work, "--compare", a, b, "--out", "eval_math")  # asked for by name: replaced, and said
    assert f"note: this replaced eval_math.json of {b}" in capsys.readouterr().out
    assert json.load(open("eval_math.json"))["checkpoints"] == [a, b]
