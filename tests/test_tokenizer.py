"""MathTokenizer: lossless, math symbols as single tokens, specials intact, save/load and transformers parity."""
import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from mathlm.tokenizer import SPECIAL_TOKENS, MathTokenizer
from scripts.train_tokenizer import main as train_main

MATH_TEXT = (
    "The gradient ∇f of f(x, y) = x^2 + y^2 is (2x, 2y). We have ∫ x^2 dx = x^3/3 + C, and "
    "∇·F = 0 for a solenoidal field. By parts, ∫ u dv = uv − ∫ v du. If a ≤ b then ∑ a ≤ ∑ b. "
    "Q: What is the derivative of 3x^2 + 2x?\nA: 6x + 2\n\n#### 6x + 2\n"
    "\\frac{d}{dx} \\sin(x^2) = 2x \\cos(x^2), and ∇^2 u = ∂^2u/∂x^2 + ∂^2u/∂y^2.\n"
)


@pytest.fixture(scope="module")
def tok():
    texts = [MATH_TEXT.replace("3x^2", f"{k}x^2") for k in range(2, 9)] * 30
    return MathTokenizer.train(texts, vocab_size=600, show_progress=False)


@pytest.mark.parametrize("sym", ["∇", "∫", "x^2"])
def test_math_symbols_are_single_tokens(tok, sym):
    assert len(tok.encode(sym)) == 1


def test_digits_are_split_one_per_token(tok):
    ids = tok.encode("12345")
    assert [tok.decode([i]) for i in ids] == list("12345")


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_roundtrip_arbitrary_unicode(tok, text):
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", [
    r"\frac{\partial L}{\partial W} = X^\top (\hat{y} - y) \quad \boxed{42}",
    "emoji 😀🚀 and CJK 微积分, RTL مرحبا, combining é, zero-width\u200bjoin",
    "  leading and trailing spaces \t\n\n\r\n ",
    "",
])
def test_roundtrip_latex_and_emoji(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_never_split(tok):
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.encode(s) == [i]
    ids = tok.encode("Q: 2+2?<|assistant|> 4<|eos|>")
    assert tok.assistant_id in ids and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "Q: 2+2?<|assistant|> 4<|eos|>"


def test_save_load_identical_ids_and_transformers_parity(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast
    tok.save(tmp_path / "tk")
    assert sorted(os.listdir(tmp_path / "tk")) == ["merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    t2 = MathTokenizer.load(str(tmp_path / "tk"))
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "tk"))
    for text in [MATH_TEXT, "∇ ∫ x^2 <|eos|> 1,234.5", "Q: hi\nA: 7\n\n"]:
        assert t2.encode(text) == tok.encode(text)
        assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert t2.hash == tok.hash
    assert hf.eos_token_id == tok.eos_id and hf.pad_token_id == tok.pad_id
    vocab = json.load(open(tmp_path / "tk" / "vocab.json"))
    assert len(vocab) == tok.vocab_size


def test_chat_template_matches_format(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast
    from mathlm.format import encode_chat
    tok.save(tmp_path / "tk")
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "tk"))
    msgs = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
            {"role": "user", "content": "x^2'?"}]
    ids, mask = encode_chat(tok, [("2+2?", "4"), ("x^2'?", None)])
    assert hf.apply_chat_template(msgs, tokenize=True, return_dict=False, add_generation_prompt=True) == ids
    assert sum(mask) == len(tok.encode(" 4\n\n")) + 1  # the answer and its eos
    # without the generation prompt the text stops before <|assistant|>; a finished conversation
    # renders the same either way (its last turn already opened and closed the answer)
    assert hf.apply_chat_template(msgs, tokenize=True, return_dict=False) == ids[:-1]
    assert hf.apply_chat_template(msgs[:2], tokenize=True, return_dict=False) == \
        encode_chat(tok, [("2+2?", "4")])[0]


def test_chat_template_refuses_a_system_turn(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast
    tok.save(tmp_path / "tk")
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "tk"))
    with pytest.raises(Exception, match="mathlm has no system role"):
        hf.apply_chat_template([{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1?"}],
                               tokenize=False)


@pytest.mark.parametrize("content", [None, "{not json", '{"model": {}}'])
def test_missing_or_corrupt_tokenizer_is_one_line_error(tmp_path, content):
    d = tmp_path / "tk"
    d.mkdir()
    if content is not None:
        (d / "tokenizer.json").write_text(content)
    with pytest.raises(ValueError, match="train_tokenizer"):
        MathTokenizer.load(str(d))


def test_train_script_end_to_end(tmp_path, capsys):
    src = tmp_path / "calc.jsonl"
    src.write_text("".join(json.dumps({"question": f"d/dx x^{k}?", "answer": f"{k}x^{k-1}\n#### {k}x^{k-1}"}) + "\n"
                           for k in range(2, 9)) * 20)
    # frequent enough to become one token if the test split leaked into training
    (tmp_path / "calc_test.jsonl").write_text((json.dumps({"question": "zzqq zzqq", "answer": "zzqq"}) + "\n") * 200)
    out = tmp_path / "tk"
    tok = train_main(["--data_dir", str(tmp_path), "--out_dir", str(out), "--vocab_size", "300"])
    assert MathTokenizer.load(str(out)).hash == tok.hash
    assert len(tok.encode("zzqq")) > 1  # the test split stayed out
    # 7 short rows cannot fill 300: the log says why the vocab is smaller, not just a smaller number
    merges = len(json.loads(tok.tk.to_str())["model"]["merges"])
    out_text = capsys.readouterr().out
    assert "wrote" in out_text and tok.vocab_size < 300
    assert (f"vocab {tok.vocab_size:,}, not the 300 asked: after {merges:,} merges no pair of adjacent tokens "
            "within a word occurs 2+ times") in out_text
    # and that is the reason: with min_frequency 1 the same text gives more merges
    assert train_main(["--data_dir", str(tmp_path), "--out_dir", str(out), "--vocab_size", "300",
                       "--min_frequency", "1"]).vocab_size > tok.vocab_size
    with pytest.raises(SystemExit, match="no input text"):
        train_main(["--data_dir", str(tmp_path / "empty"), "--out_dir", str(out)])
