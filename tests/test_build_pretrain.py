"""build_pretrain: text and Q/A jsonl → train.bin + val.bin that decode back to the documents,
identical bytes for any number of workers, metas that name the tokenizer, nothing left by a failed build."""
import hashlib
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mathlm.common import MathlmError
from mathlm.data import build_pretrain as bp
from mathlm.data.tokens import open_tokens, read_meta
from mathlm.format import qa_text
from mathlm.tokenizer import MathTokenizer

MATH_TEXT = (
    "The gradient ∇f of f(x, y) = x^2 + y^2 is (2x, 2y). We have ∫ x^2 dx = x^3/3 + C.\n"
    "Q: What is 12 * 7?\nA: 12 * 7 = 84.\n#### 84\n"
    "\\frac{d}{dx} \\sin(x^2) = 2x \\cos(x^2). If a ≤ b then ∑ a ≤ ∑ b.\n"
)

# a text file written by hand, and the documents it holds (the contract in the module docstring)
FILE_A = ("\n \nFirst doc, line one.\nline two: x^2 and ∇f.\n\nA second paragraph, same doc.\n"
          "\n\n\n"
          "Second doc: ∫ x dx = x^2/2.\n"
          "  \n\t\n"
          "Third doc: 12345 + 678 = 13023.\nno newline at the end")
DOCS_A = ["First doc, line one.\nline two: x^2 and ∇f.\n\nA second paragraph, same doc.\n",
          "Second doc: ∫ x dx = x^2/2.\n",
          "Third doc: 12345 + 678 = 13023.\nno newline at the end"]
DOCS_B = [f"Doc {i}: {i} * {i} = {i * i}.\nSo the square of {i} is {i * i}.\n" for i in range(60)]
FILE_B = "\n\n".join(DOCS_B) + "\n\n\n"   # docs end in \n: two blank lines between, three at the end


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    texts = [MATH_TEXT.replace("12", str(k)) for k in range(10, 40)] * 10 + DOCS_B
    MathTokenizer.train(texts, vocab_size=500, show_progress=False).save(str(d))
    return str(d)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return MathTokenizer.load(tok_dir)


def write(path, text):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return str(path)


def build(tmp_path, inputs, tok_dir, out="out", **flags):
    argv = ["--input", *inputs, "--out_dir", str(tmp_path / out), "--tokenizer", tok_dir]
    for k, v in {"val_frac": 0.3, "num_workers": 1, **flags}.items():
        argv += [f"--{k}", str(v)]
    bp.main(argv)
    return str(tmp_path / out)


def split_docs(out_dir, tok):
    """{split: (documents decoded between eos tokens, token array)}."""
    out = {}
    for s in ("train", "val"):
        ids = np.asarray(open_tokens(os.path.join(out_dir, f"{s}.bin"), tok.hash))
        ends = np.flatnonzero(ids == tok.eos_id)
        assert len(ids) == 0 or ends[-1] == len(ids) - 1   # every document, the last too, ends with eos
        starts = np.concatenate([[0], ends[:-1] + 1])
        out[s] = ([tok.decode(ids[a:b]) for a, b in zip(starts, ends)], ids)
    return out


def hashed_to_val(doc, seed=1337, frac=0.3):
    h = hashlib.blake2b(doc.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(h, "big") < int(frac * 2**64)


# -----------------------------------------------------------------------------

def test_text_files_decode_back_to_their_documents(tmp_path, tok_dir, tok):
    a, b = write(tmp_path / "a.txt", FILE_A), write(tmp_path / "b.txt", FILE_B)
    out = build(tmp_path, [a, b], tok_dir, chunk_mb=0.0005)   # ~500-byte chunks: many tasks
    docs = DOCS_A + DOCS_B
    got = split_docs(out, tok)
    want_val = [d for d in docs if hashed_to_val(d)]
    assert 0 < len(want_val) < len(docs)
    assert got["val"][0] == want_val                                  # in input order, chosen by hash
    assert got["train"][0] == [d for d in docs if not hashed_to_val(d)]
    for s in ("train", "val"):   # each document is encoded whole: exactly tok.encode(doc) + eos
        want = [i for d in got[s][0] for i in tok.encode(d) + [tok.eos_id]]
        np.testing.assert_array_equal(got[s][1], want)


def test_meta_names_dtype_count_sources_and_tokenizer(tmp_path, tok_dir, tok):
    a = write(tmp_path / "a.txt", FILE_A + "\n\n\n" + FILE_B)
    out = build(tmp_path, [a], tok_dir)
    for s in ("train", "val"):
        path = os.path.join(out, f"{s}.bin")
        meta = read_meta(path)
        assert meta["dtype"] == "uint16" and meta["vocab_size"] == tok.vocab_size
        assert meta["n_tokens"] == os.path.getsize(path) // 2 > 0
        assert meta["tokenizer_hash"] == tok.hash and meta["split"] == s
        with open(a, "rb") as f:
            assert meta["sources"] == [{"path": a, "bytes": os.path.getsize(a),
                                        "sha256": hashlib.sha256(f.read()).hexdigest()}]
    assert sum(read_meta(os.path.join(out, f"{s}.bin"))["n_documents"] for s in ("train", "val")) == 63


def test_output_bytes_do_not_depend_on_workers_or_chunk_size(tmp_path, tok_dir):
    a, b = write(tmp_path / "a.txt", FILE_A), write(tmp_path / "b.txt", FILE_B)
    one = build(tmp_path, [a, b], tok_dir, out="one", num_workers=1)
    two = build(tmp_path, [a, b], tok_dir, out="two", num_workers=2, chunk_mb=0.0003)
    for name in ("train.bin", "val.bin", "train.meta.json", "val.meta.json"):
        with open(os.path.join(one, name), "rb") as f1, open(os.path.join(two, name), "rb") as f2:
            assert f1.read() == f2.read(), name


def test_qa_jsonl_rows_become_qa_documents_and_test_files_are_skipped(tmp_path, tok_dir, tok):
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}", "source": "t"}
            for i in range(40)]
    write(tmp_path / "toy.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    write(tmp_path / "toy_test.jsonl", json.dumps({"question": "held out?", "answer": "yes"}) + "\n")
    out = build(tmp_path, [str(tmp_path / "*.jsonl")], tok_dir)
    got = split_docs(out, tok)
    want = [f"Q: What is {i} + {i}?\nA: {i} + {i} = {2 * i}\n#### {2 * i}\n\n" for i in range(40)]
    assert want[3] == qa_text(rows[3]["question"], rows[3]["answer"])
    assert sorted(got["train"][0] + got["val"][0]) == sorted(want)
    assert [s["path"] for s in read_meta(os.path.join(out, "train.bin"))["sources"]] == [str(tmp_path / "toy.jsonl")]


def test_long_document_is_cut_at_lines(tmp_path, tok_dir, tok):
    lines = [f"line {i:02d} of one long document...\n" for i in range(10)]   # 32 bytes each
    a = write(tmp_path / "a.txt", "".join(lines))
    out = build(tmp_path, [a], tok_dir, max_doc_mb=0.0001, val_frac=0)     # cut once a doc has ≥ 100 bytes: 4 lines
    got = split_docs(out, tok)
    assert got["train"][0] == ["".join(lines[0:4]), "".join(lines[4:8]), "".join(lines[8:10])]
    assert got["val"][0] == []


@given(st.lists(st.text(alphabet="ax Q:^2 1\t.(\\\n∇\u00a0\r-", max_size=10), max_size=12).map("\n".join))
@settings(max_examples=300, deadline=None)
def test_cutting_at_safe_line_ends_keeps_the_tokens(tok, text):
    pieces = bp.SAFE_CUT.split(text)
    assert "".join(pieces) == text
    # the pre-tokenizer's pieces, not just the ids: a small vocab may hide a changed piece in equal ids
    pre = lambda s: [w for w, _ in tok.tk.pre_tokenizer.pre_tokenize_str(s)]
    assert [w for p in pieces for w in pre(p)] == pre(text)
    assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text)


def test_tokenizer_mismatch_is_refused(tmp_path, tok_dir):
    out = build(tmp_path, [write(tmp_path / "b.txt", FILE_B)], tok_dir)
    with pytest.raises(MathlmError, match="tokenized with tokenizer .* rebuild"):
        open_tokens(os.path.join(out, "train.bin"), "0123456789abcdef")


def test_no_input_dies_naming_what_was_looked_for(tmp_path, tok_dir):
    with pytest.raises(SystemExit, match=r"no input file matches .*nowhere\.txt, .*\*\.jsonl"):
        build(tmp_path, [str(tmp_path / "nowhere.txt"), str(tmp_path / "*.jsonl")], tok_dir)


def test_missing_tokenizer_dies_with_the_fix(tmp_path):
    with pytest.raises(SystemExit, match="train_tokenizer"):
        build(tmp_path, [write(tmp_path / "b.txt", FILE_B)], str(tmp_path / "no_tokenizer"))


def test_too_few_documents_for_val_dies(tmp_path, tok_dir):
    with pytest.raises(SystemExit, match="val documents"):
        build(tmp_path, [write(tmp_path / "a.txt", "just one document\n")], tok_dir, val_frac=0.005)
    assert not os.path.exists(tmp_path / "out" / "train.bin")


def test_interrupted_build_leaves_no_bin_and_keeps_the_old_one(tmp_path, tok_dir, monkeypatch):
    a, b = write(tmp_path / "a.txt", FILE_A), write(tmp_path / "b.txt", FILE_B)
    calls = []

    def flaky(docs, encode=bp._encode_chunk):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("worker died")
        return encode(docs)

    monkeypatch.setattr(bp, "_encode_chunk", flaky)
    with pytest.raises(RuntimeError, match="worker died"):
        build(tmp_path, [a, b], tok_dir, chunk_mb=0.0005)
    assert os.listdir(tmp_path / "out") == []            # no train.bin, no val.bin, no .tmp, no meta
    monkeypatch.undo()

    out = build(tmp_path, [b], tok_dir)                   # a finished build, then a failed rebuild
    before = {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))}
    bad = write(tmp_path / "bad.jsonl", json.dumps({"question": "q", "answer": "a"}) + "\n{oops\n")
    with pytest.raises(SystemExit, match=r"bad\.jsonl:2 is not JSON"):
        build(tmp_path, [a, b, bad], tok_dir, num_workers=2, chunk_mb=0.0005)   # dies mid-build, pool running
    assert {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))} == before


def test_a_tokenizer_that_changed_mid_build_is_an_error_not_a_hang(tok_dir):
    # a worker whose tokenizer hash differs from the main process's: the task raises in the main
    # process (a Pool initializer that raised would be respawned forever)
    chunks = iter([(["Q: 1 + 1?\nA: 2\n\n"], 20)])
    with pytest.raises(RuntimeError, match="changed during the build"):
        list(bp.encode_chunks(chunks, 2, (tok_dir, "0123456789abcdef", 0.0, 0)))
