"""download_gsm8k --calculator: GSM8K's <<a=b>> annotations as calculator calls whose results are the
calculator's own text (what the decoder forces), strip and keep, and the mismatch counts — on a table,
the committed sample, and the full set where ../shared has it."""
import json
import os
from collections import Counter

import pytest

from mathlm.calculator import calculate
from mathlm.data import download_gsm8k as g
from mathlm.data.qa_io import read_jsonl
from mathlm.format import CALL, calc_call, strip_calls
from tests.conftest import GSM8K_SAMPLE, gsm8k_full


@pytest.mark.parametrize("text,want,counts", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
     f"Natalia sold 48/2 = {calc_call('48/2', '24')}24 clips in May.", {"calls": 1}),
    # GSM8K's money text (32.00, .4) stays in the sentence; the call holds what the calculator prints
    ("4*8 = $<<4*8=32.00>>32.00", f"4*8 = ${calc_call('4*8', '32')}32.00", {"calls": 1, "differs": 1}),
    ("24/60 = <<24/60=.4>>.4 hours", f"24/60 = {calc_call('24/60', '0.4')}.4 hours", {"calls": 1, "differs": 1}),
    # an annotation with the wrong number: the calculator's result, counted as another number
    ("5*3 = <<5*3=16>>16", f"5*3 = {calc_call('5*3', '15')}16", {"calls": 1, "differs": 1, "wrong": 1}),
    # rounded by hand: another number than the expression's (none in GSM8K's 28k annotations)
    ("10/3 = <<10/3=3.33>>3.33", f"10/3 = {calc_call('10/3', '3.333333')}3.33", {"calls": 1, "differs": 1, "wrong": 1}),
    # what the calculator cannot compute is removed, as --calculator strip removes it
    ("x = <<x+2=5>>5 and <<=3>>3", "x = 5 and 3", {"errors": 2}),
    ("1,000 * 2 = <<1,000*2=2000>>2000", f"1,000 * 2 = {calc_call('1,000*2', '2000')}2000", {"calls": 1}),
    ("no annotation here", "no annotation here", {}),
])
def test_to_calls_table(text, want, counts):
    c = Counter()
    assert g.to_calls(text, c) == want
    assert {k: v for k, v in c.items() if v} == counts
    assert strip_calls(want) == g.CALCULATOR.sub("", text)   # a reader sees what --calculator strip writes


def check_rows(rows):
    """Every call's result is the calculator's text, and the answer read without calls is GSM8K's sentence."""
    n = 0
    for r in rows:
        for m in CALL.finditer(r["answer"]):
            assert calculate(m.group(1)) == m.group(2), m.group(0)
            n += 1
        assert "<<" not in r["answer"]
    return n


def test_sample_modes(tmp_path):
    src = [json.loads(ln) for ln in open(os.path.join(GSM8K_SAMPLE, "train.jsonl"))]
    out = {}
    for mode in ("call", "strip", "keep"):
        g.main(["--source", GSM8K_SAMPLE, "--out_dir", str(tmp_path / mode), "--text_only", "--calculator", mode])
        out[mode] = read_jsonl(str(tmp_path / mode / "gsm8k.jsonl"))
    n_annotations = sum(r["answer"].count("<<") for r in src)
    assert check_rows(out["call"]) == n_annotations > 500
    assert [strip_calls(r["answer"]) for r in out["call"]] == [r["answer"] for r in out["strip"]]
    assert [r["answer"] for r in out["keep"]] == [r["answer"].strip() for r in src]
    assert [r["final"] for r in out["call"]] == [r["final"] for r in out["strip"]] == [r["final"] for r in out["keep"]]
    assert out["call"][0]["answer"].startswith(f"Natalia sold 48/2 = {calc_call('48/2', '24')}24 clips in May.")
    test_rows = read_jsonl(str(tmp_path / "call" / "gsm8k_test.jsonl"))   # the test split is converted the same way
    assert check_rows(test_rows) > 500
    with pytest.raises(SystemExit):
        g.main(["--source", GSM8K_SAMPLE, "--out_dir", str(tmp_path), "--text_only", "--calculator", "drop"])


def test_full_gsm8k_counts(tmp_path, capsys):
    src = gsm8k_full()
    g.main(["--source", src, "--out_dir", str(tmp_path), "--text_only"])
    log = capsys.readouterr().out
    # measured: every annotation computes; 667 train / 156 test written otherwise (32.00, .4), none another number
    assert "gsm8k train: 23,716 annotations → calls | 667 where GSM8K writes the result otherwise (0 another number)" \
        in log and "| 0 the calculator cannot compute" in log
    assert "gsm8k test: 4,282 annotations → calls | 156 " in log
    assert check_rows(read_jsonl(str(tmp_path / "gsm8k.jsonl"))) == 23716
