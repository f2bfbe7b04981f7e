"""Q/A data stages: real GSM8K through --source (the committed sample, and the full set where
../shared has it), the token index, decontamination, bad input."""
import json
import os
import re

import numpy as np
import pytest

from mathlm.common import MathlmError
from mathlm.data import download_gsm8k, download_math, download_numina, download_openr1
from mathlm.data.decontam import build_test_index, decontaminate, ngrams, words
from mathlm.data.qa_io import last_boxed, load_qa, qa_example, read_jsonl, write_jsonl, write_qa_bin, write_qa_dataset
from mathlm.data.tokens import meta_path, read_meta
from mathlm.format import encode_qa, qa_answer, qa_prompt, qa_text, strip_calls
from mathlm.tokenizer import MathTokenizer
from tests.conftest import GSM8K_SAMPLE, gsm8k_full


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    rows = _rows(os.path.join(GSM8K_SAMPLE, "train.jsonl"))  # byte-level: it encodes the full set too
    tok = MathTokenizer.train([qa_text(r["question"], r["answer"]) for r in rows], vocab_size=2000,
                              show_progress=False)
    return tok.save(str(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module", params=["sample", "full"])
def gsm8k_dir(request, tok_dir, tmp_path_factory):
    """(out dir, summary, source dir): download_gsm8k run on the sample, then on the full set (or skipped)."""
    src = GSM8K_SAMPLE if request.param == "sample" else gsm8k_full()
    out = str(tmp_path_factory.mktemp("gsm8k"))
    summary = download_gsm8k.main(["--source", src, "--out_dir", out, "--tokenizer", tok_dir])
    return out, summary, src


# -----------------------------------------------------------------------------
# real GSM8K

def test_gsm8k_writes_every_row(gsm8k_dir):
    out, summary, src = gsm8k_dir
    src_train = _rows(os.path.join(src, "train.jsonl"))
    src_test = _rows(os.path.join(src, "test.jsonl"))
    n = len(src_train)
    assert (n, len(src_test)) in [(200, 200), (7473, 1319)]  # the sample, or the full set
    assert summary == {"train": n, "test": len(src_test), "dropped": {"gsm8k_test.jsonl": 0}}
    train = read_jsonl(os.path.join(out, "gsm8k.jsonl"))
    test = read_jsonl(os.path.join(out, "gsm8k_test.jsonl"))
    assert [r["question"] for r in train] == [r["question"].strip() for r in src_train]
    assert [r["question"] for r in test] == [r["question"].strip() for r in src_test]
    meta = read_meta(os.path.join(out, "gsm8k.bin"))
    assert meta["n_examples"] == n and meta["decontam"] == {"gsm8k_test.jsonl": 0}
    assert np.load(os.path.join(out, "gsm8k.idx.npy")).shape == (n, 3)


def test_gsm8k_answers_keep_reasoning_and_final(gsm8k_dir):
    out, _, _ = gsm8k_dir
    train = read_jsonl(os.path.join(out, "gsm8k.jsonl"))
    # the annotations are calculator calls by default (tests/test_download_gsm8k.py); a reader sees GSM8K's sentences
    assert strip_calls(train[0]["answer"]) == ("Natalia sold 48/2 = 24 clips in May.\n"
                                               "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72")
    assert train[0]["final"] == "72"
    for r in train:
        assert "<<" not in r["answer"]
        assert r["answer"].rsplit("####", 1)[1].strip().replace(",", "") == r["final"]


def test_gsm8k_bin_decodes_to_canonical_text_byte_for_byte(gsm8k_dir, tok_dir):
    out, _, _ = gsm8k_dir
    tok = MathTokenizer.load(tok_dir)
    tokens, index = load_qa("gsm8k", out, tok.hash)
    train = read_jsonl(os.path.join(out, "gsm8k.jsonl"))
    want = "".join(qa_text(r["question"], r["answer"]) + "<|eos|>" for r in train)
    assert tok.decode(tokens.tolist()).encode("utf-8") == want.encode("utf-8")
    # the index tiles the file: each example starts where the previous one ended
    ends = index[:, 0] + index[:, 1] + index[:, 2]
    assert index[0, 0] == 0 and (index[1:, 0] == ends[:-1]).all() and ends[-1] == len(tokens)
    for i in (0, 1, len(train) // 2, len(train) - 1):  # same tokens as the one reference encoder, encode_qa
        assert qa_example(tokens, index, i) == encode_qa(tok, train[i]["question"], train[i]["answer"])


def test_gsm8k_index_spans_cover_exactly_the_answer(gsm8k_dir, tok_dir):
    out, _, _ = gsm8k_dir
    tok = MathTokenizer.load(tok_dir)
    tokens, index = load_qa("gsm8k", out, tok.hash)
    train = read_jsonl(os.path.join(out, "gsm8k.jsonl"))
    for i in range(0, len(train), 7):
        prompt, answer = qa_example(tokens, index, i)
        assert tok.decode(prompt) == qa_prompt(train[i]["question"])       # "Q: ...\nA:"
        assert answer[-1] == tok.eos_id and tok.eos_id not in answer[:-1]
        assert tok.decode(answer[:-1]) == qa_answer(train[i]["answer"])     # " answer\n\n"


def test_gsm8k_test_questions_never_in_bin(gsm8k_dir, tok_dir):
    out, summary, _ = gsm8k_dir
    tok = MathTokenizer.load(tok_dir)
    tokens, _ = load_qa("gsm8k", out, tok.hash)
    text = tok.decode(tokens.tolist())
    test = read_jsonl(os.path.join(out, "gsm8k_test.jsonl"))
    assert len(test) == summary["test"]
    assert _occurrences(text, [r["question"] for r in test]) == []
    train = read_jsonl(os.path.join(out, "gsm8k.jsonl"))
    train_q = train[len(train) // 2]["question"]
    assert _occurrences(text, [train_q]) == [train_q]  # the search itself finds what is there


def _occurrences(text, needles, k=24):
    """Needles found in text, in one pass: look up the k characters after every word start."""
    by_prefix = {}
    for q in needles:
        by_prefix.setdefault(q[:k], []).append(q)
    return [q for m in re.finditer(r"(?<!\S)\S", text)
            for q in by_prefix.get(text[m.start():m.start() + k], ()) if text.startswith(q, m.start())]


# -----------------------------------------------------------------------------
# refusals and bad input

def test_tokenizer_mismatch_refused(gsm8k_dir):
    out, _, _ = gsm8k_dir
    with pytest.raises(MathlmError, match="tokenized with tokenizer .* rebuild"):
        load_qa("gsm8k", out, "0123456789abcdef")


def test_missing_qa_dataset_names_the_fix(tmp_path):
    with pytest.raises(MathlmError, match="math.bin not found — build it"):
        load_qa("math", str(tmp_path))


def test_read_jsonl_skips_and_reports_malformed_lines(tmp_path, capsys):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"question": "a", "answer": "1"}\n{broken\n[1, 2]\n\n\xff\xfe\n{"question": "b", "answer": "2"}\n')
    rows = read_jsonl(str(p))
    assert [r["question"] for r in rows] == ["a", "b"]
    out = capsys.readouterr().out
    assert "skipped 3 malformed line(s)" in out and "line 2, 3, 5" in out
    assert len(out.strip().splitlines()) == 1


def test_downloader_survives_malformed_source(tmp_path, capsys):
    src = tmp_path / "train.jsonl"
    src.write_text('{"question": "How many?", "answer": "2 + 2 = 4\\n#### 4"}\n'
                   'not json\n'
                   '{"question": "No final?", "answer": "there is no marker"}\n'
                   '{"question": "Cost?", "answer": "5 * 3 = <<5*3=15>>15\\n#### 1,500"}\n', encoding="utf-8")
    out = tmp_path / "out"
    summary = download_gsm8k.main(["--source", str(src), "--out_dir", str(out), "--text_only"])
    assert summary["train"] == 2 and summary["test"] == 0
    log = capsys.readouterr().out
    assert "skipped 1 malformed line(s) (not a JSON object): line 2" in log
    assert "skipped 1 row(s) missing the expected fields: row 2" in log
    rows = read_jsonl(str(out / "gsm8k.jsonl"))
    assert rows[1] == {"question": "Cost?", "answer": "5 * 3 = <|calc|>5*3<|result|>15<|/result|>15\n#### 1,500",
                       "final": "1500"}
    assert not os.path.exists(out / "gsm8k.bin")  # --text_only: no tokenizer needed, no .bin


def test_missing_tokenizer_says_text_only(tmp_path):
    pairs = [{"question": "1+1?", "answer": "2"}]
    with pytest.raises(MathlmError, match="--text_only"):
        write_qa_dataset("x", pairs, [], str(tmp_path), str(tmp_path / "no_tokenizer"))
    assert not os.path.exists(tmp_path / "x.jsonl")  # failed before writing anything


def _pairs(n):
    return [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}"} for i in range(n)]


def test_interrupted_build_leaves_old_files_whole(tmp_path, tok_dir, monkeypatch):
    tok = MathTokenizer.load(tok_dir)
    write_qa_bin("x", _pairs(10), tok, str(tmp_path), chunk_size=4)
    files = ["x.bin", "x.idx.npy", "x.meta.json"]
    before = {f: (tmp_path / f).read_bytes() for f in files}

    calls = []
    real = tok.encode_batch

    def crash_on_third(texts):  # 2 calls per chunk: dies while the second chunk is tokenized
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(texts)

    monkeypatch.setattr(tok, "encode_batch", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        write_qa_bin("x", _pairs(50), tok, str(tmp_path), chunk_size=4)
    assert sorted(os.listdir(tmp_path)) == sorted(files)  # no temp file left behind
    assert {f: (tmp_path / f).read_bytes() for f in files} == before
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        write_qa_bin("y", _pairs(50), tok, str(tmp_path), chunk_size=4)
    assert not [f for f in os.listdir(tmp_path) if f.startswith("y")]  # first build: nothing at all


def test_hub_failure_without_source_is_one_line(tmp_path, monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    for mod in (download_gsm8k, download_math, download_numina, download_openr1):
        with pytest.raises(SystemExit) as e:
            mod.main(["--out_dir", str(tmp_path), "--text_only"])
        msg = str(e.value)
        assert "\n" not in msg and "from the hub (ConnectionError: Couldn't reach" in msg
        assert msg.endswith("pass --source PATH with local jsonl/parquet files in the hub schema")


def test_unreachable_hub_fails_in_seconds(tmp_path):
    """Offline, download_gsm8k spent 25 s on huggingface_hub's retries before its one-line error: now
    one probe (here made to fail, so no network is touched), then datasets' offline mode."""
    import subprocess
    import sys
    import time
    code = ("import mathlm.pipeline as p; p.hub_reachable = lambda timeout=3.0: False\n"
            "from mathlm.data import download_gsm8k; download_gsm8k.main(['--out_dir', '.', '--text_only'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))}
    env.update(PYTHONPATH=os.path.abspath(os.path.join(os.path.dirname(__file__), "..")), OMP_NUM_THREADS="1",
               HF_HOME=str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1 and time.time() - t0 < 15, (time.time() - t0, p.stderr[-500:])
    err = p.stderr.strip()
    assert "\n" not in err and "huggingface.co is unreachable" in err and err.endswith(
        "pass --source PATH with local jsonl/parquet files in the hub schema")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".jsonl")]  # nothing written


# -----------------------------------------------------------------------------
# decontamination

def test_ngrams_by_hand():
    assert words("Find $x^2$, if x=3.") == ["find", "x", "2", "if", "x", "3"]
    assert ngrams("a b c d", n=3) == {("a", "b", "c"), ("b", "c", "d")}
    assert ngrams("a b", n=3) == set()


def test_decontaminate_rule():
    test_q = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
              "muffins for her friends every day with four. How much does she make every day?")
    short = "What is 7 times 8?"
    pairs = [
        {"question": test_q.upper().replace(".", " ."), "answer": "a"},          # same words: dropped
        {"question": "Solve this: " + test_q + " Show work.", "answer": "b"},      # pasted inside: dropped
        {"question": test_q.replace("16 eggs", "20 eggs"), "answer": "c"},          # other numbers: kept
        {"question": "what is 7 TIMES 8", "answer": "d"},                          # short, same words: dropped
        {"question": "What is 7 times 9?", "answer": "e"},                         # short, different: kept
    ]
    kept, n = decontaminate(pairs, [test_q, short])
    assert n == 3 and [p["answer"] for p in kept] == ["c", "e"]
    # a long template whose numbers sit at the end: 13 of 15 13-grams shared (0.87), other numbers
    fixed = ("Use the rules of differentiation that you have learned in this chapter carefully and "
             "step by step to compute the derivative with respect to x of")
    assert decontaminate([{"question": fixed + " 3x^2"}], [fixed + " 5x^4"])[1] == 0
    assert decontaminate([{"question": fixed + " 3x^2, please."}], [fixed + " 3x^2"])[1] == 1
    assert build_test_index({"gsm8k": [test_q]}).match(pairs[1]["question"]) == "gsm8k"


def test_planted_duplicate_of_test_question_is_dropped(tmp_path, tok_dir, capsys):
    test = _rows(os.path.join(GSM8K_SAMPLE, "test.jsonl"))[:50]
    write_jsonl(str(tmp_path / "gsm8k_test.jsonl"), test)
    planted = {"question": "  " + test[17]["question"].replace(" ", "  ") + " ", "answer": "leak"}
    train = _pairs(30) + [planted]
    summary = write_qa_dataset("calc", train, [{"question": "What is 3 plus 3?", "answer": "6"}],
                               str(tmp_path), tok_dir)
    assert summary["train"] == 29  # the planted copy, and "What is 3 plus 3?" (own test split)
    assert summary["dropped"] == {"calc_test.jsonl": 1, "gsm8k_test.jsonl": 1}
    assert "dropped 2 of 31 train examples" in capsys.readouterr().out
    assert read_meta(str(tmp_path / "calc.bin"))["decontam"] == summary["dropped"]
    assert all(r["answer"] != "leak" for r in read_jsonl(str(tmp_path / "calc.jsonl")))


# -----------------------------------------------------------------------------
# the other downloaders, through local files in the hub schema

def test_math_from_local_parquet_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = {"problem": ["Compute $1+1$.", "Find $x$ if $2x=6$."],
            "solution": ["$1+1=\\boxed{2}$.", "So $x=\\boxed{\\frac{6}{2}}$."],
            "level": ["Level 1", "Level 2"], "type": ["Prealgebra", "Algebra"]}
    (tmp_path / "src" / "algebra").mkdir(parents=True)
    pq.write_table(pa.table(rows), tmp_path / "src" / "algebra" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({k: v[:1] for k, v in rows.items()}),
                   tmp_path / "src" / "algebra" / "test-00000-of-00001.parquet")
    summary = download_math.main(["--source", str(tmp_path / "src"), "--out_dir", str(tmp_path), "--text_only"])
    # the train copy of the test problem is dropped by decontamination
    assert summary == {"train": 1, "test": 1, "dropped": {"math_test.jsonl": 1}}
    assert read_jsonl(str(tmp_path / "math.jsonl")) == [
        {"question": "Find $x$ if $2x=6$.", "answer": "So $x=\\boxed{\\frac{6}{2}}$.",
         "final": "\\frac{6}{2}", "level": "Level 2", "type": "Algebra"}]
    assert read_jsonl(str(tmp_path / "math_test.jsonl"))[0]["final"] == "2"


def test_numina_and_openr1_from_local_jsonl(tmp_path, capsys):
    numina = [{"problem": "p1 is a problem", "solution": "s \\boxed{3}", "source": "olympiads", "messages": []}]
    write_jsonl(str(tmp_path / "train.jsonl"), numina)
    assert download_numina.main(["--source", str(tmp_path / "train.jsonl"), "--out_dir", str(tmp_path / "o"),
                                 "--text_only"])["train"] == 1
    assert read_jsonl(str(tmp_path / "o" / "numina.jsonl"))[0] == {
        "question": "p1 is a problem", "answer": "s \\boxed{3}", "final": "3", "source": "olympiads"}

    openr1 = [{"problem": "q verified", "solution": "sol", "answer": "1", "correctness_math_verify": [False, True]},
              {"problem": "q judge only", "solution": "sol", "answer": "2", "correctness_math_verify": [False]},
              {"problem": "q no solution", "solution": "", "answer": "3", "correctness_math_verify": [True]}]
    write_jsonl(str(tmp_path / "r1.jsonl"), openr1)
    summary = download_openr1.main(["--source", str(tmp_path / "r1.jsonl"), "--out_dir", str(tmp_path / "o"),
                                    "--text_only"])
    assert summary["train"] == 1 and summary["test"] == 0
    assert read_jsonl(str(tmp_path / "o" / "openr1.jsonl"))[0]["final"] == "1"
    assert "kept 1 of 3 rows (2 left out" in capsys.readouterr().out


@pytest.mark.parametrize("text,want", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("\\boxed{1} then \\fbox{x^{2}}", "x^{2}"),
    ("answer \\boxed 5$", "5"),
    ("\\boxed{unbalanced", None),
    ("no box", None),
])
def test_last_boxed(text, want):
    assert last_boxed(text) == want


def test_meta_written_last_and_matches(tmp_path, tok_dir):
    tok = MathTokenizer.load(tok_dir)
    meta = write_qa_bin("x", _pairs(5), tok, str(tmp_path), source="unit")
    assert meta["n_examples"] == 5 and meta["sources"] == ["unit"] and meta["tokenizer_hash"] == tok.hash
    assert os.path.getmtime(meta_path(str(tmp_path / "x.bin"))) >= os.path.getmtime(tmp_path / "x.bin")
