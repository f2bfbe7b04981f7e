"""The calculator's tokens in the tokenizer: ids right after the specials, never split, carried to
transformers; a tokenizer trained without them still loads (tools unavailable)."""
import pytest

from mathlm.format import CALC_END, CALC_RESULT, CALC_START, TOOL_TOKENS, calc_call
from mathlm.tokenizer import SPECIAL_TOKENS, MathTokenizer

TEXT = ["Natalia sold 48/2 = 24 clips in May. 48+24 = 72 clips. #### 72\n"] * 40
CALL_TEXT = "48/2 = " + calc_call("48/2", "24") + "24 clips"


@pytest.fixture(scope="module")
def tok():
    return MathTokenizer.train(TEXT, vocab_size=300, show_progress=False)


def test_tool_tokens_follow_the_specials(tok):
    n = len(SPECIAL_TOKENS)
    assert tok.calc_ids == (n, n + 1, n + 2)
    assert [tok.id_to_token(i) for i in tok.calc_ids] == list(TOOL_TOKENS)
    assert tok.special_ids == set(range(n))  # generation stops at these, not at a call


def test_calls_encode_as_single_tokens_and_round_trip(tok):
    ids = tok.encode(CALL_TEXT)
    c, r, e = tok.calc_ids
    assert ids.count(c) == ids.count(r) == ids.count(e) == 1
    assert tok.decode(ids[ids.index(c) + 1:ids.index(r)]) == "48/2"
    assert tok.decode(ids[ids.index(r) + 1:ids.index(e)]) == "24"
    assert tok.decode(ids) == CALL_TEXT
    for t in TOOL_TOKENS:
        assert tok.encode(t) == [tok.tk.token_to_id(t)]


def test_old_tokenizer_loads_without_tools(tmp_path):
    old = MathTokenizer.train(TEXT, vocab_size=300, show_progress=False, tools=False)
    old.save(tmp_path / "old")
    t = MathTokenizer.load(str(tmp_path / "old"))
    assert t.calc_ids is None
    assert CALC_START not in t.hf_config()["additional_special_tokens"]
    assert t.decode(t.encode(CALL_TEXT)) == CALL_TEXT  # plain text to it: bytes, still lossless


def test_transformers_parity_and_chat_template(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast
    tok.save(tmp_path / "tk")
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "tk"))
    assert hf(CALL_TEXT, add_special_tokens=False)["input_ids"] == tok.encode(CALL_TEXT)
    assert [hf.convert_tokens_to_ids(t) for t in TOOL_TOKENS] == list(tok.calc_ids)
    assert set(TOOL_TOKENS) <= set(hf.all_special_tokens)  # skip_special_tokens hides them
    msgs = [{"role": "user", "content": "48/2?"}, {"role": "assistant", "content": CALL_TEXT}]
    text = hf.apply_chat_template(msgs, tokenize=False)
    assert text == f"<|user|>Q: 48/2?\nA:<|assistant|> {CALL_TEXT}\n\n<|eos|>"  # the template is unchanged


def test_train_tokenizer_script_writes_tool_tokens(tmp_path):
    import json
    from scripts.train_tokenizer import main
    rows = tmp_path / "gsm.jsonl"
    rows.write_text("".join(json.dumps({"question": "q?", "answer": t}) + "\n" for t in TEXT))
    for flag, want in (([], True), (["--no-tools"], False)):
        out = tmp_path / f"tk{len(flag)}"
        main(["--input", str(rows), "--out_dir", str(out), "--vocab_size", "300"] + flag)
        assert (MathTokenizer.load(str(out)).calc_ids is not None) == want
    assert CALC_RESULT != CALC_END  # the three tokens are distinct strings


def test_training_learns_no_merges_from_written_calls():
    """BPE training text with calls in it: the trainer does not match added tokens the way encode does,
    so the calls' token strings are cut out first: no merge of '<|', 'calc' or across a call's edges."""
    import json
    texts = [f"She sold {i} = {calc_call(f'{i}*2', str(i * 2))}{i * 2} clips.\n" for i in range(2000)]
    tok = MathTokenizer.train(texts, vocab_size=400, show_progress=False)
    merges = ["".join(m) if isinstance(m, list) else m.replace(" ", "") for m in json.loads(tok.tk.to_str())["model"]["merges"]]
    assert merges and not any(c in m for m in merges for c in "<|>") and "calc" not in merges
    pieces = [p for i in range(2000) for p in (f"She sold {i} = ", f"{i}*2", f"{i * 2}", f"{i * 2} clips.\n")]
    plain = MathTokenizer.train(pieces, vocab_size=400, show_progress=False)
    assert tok.tk.to_str() == plain.tk.to_str()  # exactly the tokenizer trained on the pieces between the calls
