"""Calculator calls in GPT.generate: the forced tokens are the calculator's answer, they go through the
KV cache (cached logits equal a full forward over the final sequence), rows without calls are untouched
(batched equals each row alone), forced flags mark exactly the calculator's tokens, and the length limit
cuts a result like any text.

The model is a tiny random GPT whose logits get a fixed bias by the last input token: a trigger `T`
makes it write `<|calc|>48*2<|result|>` (then the calculator must force `96<|/result|>`), `x` makes it
close a call at once, `:` (a Q/A prompt's end) writes `T`; other tokens only let it write letters,
spaces and eos, chosen by its own logits."""
import pytest
import torch

from mathlm.calculator import CALC_ERROR, CallTracker
from mathlm.format import TOOL_TOKENS
from mathlm.model.gpt import GPT, GPTConfig

SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", *TOOL_TOKENS]
CHARS = "0123456789+-*/. TxabcdefghilnorstUQA:?\n#="
FREE = " abcdefghilnorst"  # what the model may write outside a call (eos too)


class CharTok:
    """A character-level stand-in for MathTokenizer: ids 0..8 the specials, then one id per char."""
    vocab = SPECIALS + list(CHARS)
    eos_id = 1
    calc_ids = (6, 7, 8)

    def encode(self, text):
        ids, i = [], 0
        while i < len(text):
            for j, s in enumerate(SPECIALS):
                if text.startswith(s, i):
                    ids.append(j)
                    i += len(s)
                    break
            else:
                ids.append(self.vocab.index(text[i]))
                i += 1
        return ids

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


TOK = CharTok()
V = len(CharTok.vocab)


def bias_table():
    """(V, V): bias[last token] is added to the next token's logits."""
    e = TOK.encode
    b = torch.full((V, V), -30.0)
    b[:, [e(c)[0] for c in FREE] + [TOK.eos_id]] = 0.0
    chain = [e("T")[0], 6] + e("48*2") + [7]  # T -> <|calc|> 4 8 * 2 -> <|result|>
    for a, nxt in zip(chain, chain[1:]):
        b[a] = -30.0
        b[a, nxt] = 30.0
    b[e("x")[0]] = -30.0
    b[e("x")[0], 7] = 30.0  # x -> <|result|> at once
    b[e(":")[0]] = -30.0
    b[e(":")[0], e("T")[0]] = 30.0  # a Q/A prompt ("...A:") is answered with a call
    return b


class BiasedGPT(GPT):
    """GPT + bias_table()[last token]; records the logits of every cached (decoding) forward."""

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("bias", bias_table(), persistent=False)
        self.seen = []

    def forward(self, idx, targets=None, cache=None, attention_mask=None, last_only=False):
        logits, loss, aux = super().forward(idx, targets, cache, attention_mask, last_only)
        logits = logits + self.bias[idx[:, -1:] if last_only else idx]
        if cache is not None:
            self.seen.append(logits[:, -1].clone())
        return logits, loss, aux


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=V, block_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=64)
    return BiasedGPT(cfg).eval()


def decode(model, prompts, n, **kw):
    """(tokens, forced) per row, as lists, via generate(with_forced=True)."""
    steps = list(model.generate(prompts, n, tools=TOK, with_forced=True, eos_id=TOK.eos_id, **kw))
    toks = torch.stack([t for t, _ in steps], 1).tolist()
    forced = torch.stack([f for _, f in steps], 1).tolist()
    return toks, forced


def test_call_is_forced_and_cache_matches_full_forward(model):
    prompt = TOK.encode("ab T")
    model.seen = []
    toks, forced = decode(model, [prompt], 30)
    toks, forced = toks[0], forced[0]
    text = TOK.decode(toks)
    assert text.startswith("<|calc|>48*2<|result|>96<|/result|>"), text
    assert forced[:9] == [False] * 6 + [True] * 3  # 9, 6, <|/result|>
    assert not any(forced[9:])
    # the cached logits of every step equal a no-cache forward over the final sequence
    seq = torch.tensor([prompt + toks])
    with torch.no_grad():
        full, _, _ = model(seq)
    P = len(prompt)
    cached = torch.cat(model.seen)  # step k's logits chose toks[k]
    assert cached.shape[0] == len(toks)  # the prefill + one forward per step but the last
    torch.testing.assert_close(cached, full[0, P - 1:P - 1 + len(toks)], atol=1e-4, rtol=1e-4)
    for k, t in enumerate(toks):  # greedy where the model chose, the calculator where it did not
        if not forced[k]:
            assert t == int(full[0, P - 1 + k].argmax())


def test_forcing_really_changes_the_sequence(model):
    """Without tools the model writes what its (biased) logits say after <|result|>: not 96."""
    prompt = TOK.encode("ab T")
    with_tools, _ = decode(model, [prompt], 12)
    plain = model.generate_ids([prompt], 12, eos_id=TOK.eos_id)
    assert plain[0][:6] == with_tools[0][:6]
    assert TOK.decode(plain[0]).find("96<|/result|>") == -1


def test_batched_equals_each_row_alone(model):
    prompts = [TOK.encode(s) for s in ["ab T", "dog cat", "T", "<|calc|>3/4<|result|>", "sing<|calc|>1/0 x",
                                       "a<|calc|>48*2<|result|>96<|/result|> then T", "rest"]]
    toks, forced = decode(model, prompts, 24)
    for r, p in enumerate(prompts):
        alone_t, alone_f = decode(model, [p], 24)
        n = len(alone_t[0])
        assert toks[r][:n] == alone_t[0] and forced[r][:n] == alone_f[0], TOK.decode(p)
    texts = [TOK.decode(t) for t in toks]
    assert texts[0].startswith("<|calc|>48*2<|result|>96<|/result|>")
    assert "<|calc|>" not in texts[1] and not any(forced[1])  # a row without a call: never forced
    assert texts[3].startswith("0.75<|/result|>") and forced[3][:5] == [True] * 5  # prompt ends at <|result|>
    assert texts[4].startswith(f"<|result|>{CALC_ERROR}<|/result|>")  # 1/0 x: not computable
    assert texts[5].startswith("<|calc|>48*2<|result|>96<|/result|>")  # a finished call in the prompt


def test_result_cut_by_the_length_limit(model):
    prompt = TOK.encode("T")
    toks, forced = decode(model, [prompt], 7)  # <|calc|> 4 8 * 2 <|result|> then room for one token
    assert TOK.decode(toks[0]) == "<|calc|>48*2<|result|>9"
    assert forced[0] == [False] * 6 + [True]
    long_prompt = TOK.encode("ab " * 19 + "T")  # 58 tokens of a 64-token block: 6 new at most
    toks, forced = decode(model, [long_prompt], 50)
    assert TOK.decode(toks[0]) == "<|calc|>48*2<|result|>" and not any(forced[0])


def test_tools_off_without_calc_ids(model):
    class NoTools(CharTok):
        calc_ids = None
    prompt = TOK.encode("ab T")
    steps = list(model.generate([prompt], 10, tools=NoTools(), with_forced=True))
    assert not any(bool(f.any()) for _, f in steps)
    assert [int(t) for t, _ in steps] == model.generate_ids([prompt], 10)[0]


def test_num_samples_rows_each_get_their_calls(model):
    toks, forced = decode(model, [TOK.encode("T"), TOK.encode("ab")], 10, num_samples=2, temperature=1.0, seed=3)
    for r in (0, 1):
        assert TOK.decode(toks[r]).startswith("<|calc|>48*2<|result|>96<|/result|>")
        assert forced[r][6:9] == [True] * 3
    # a prompt that ends at <|result|>: each of its samples gets the whole result, independently
    toks, forced = decode(model, [TOK.encode("<|calc|>3/4<|result|>")], 6, num_samples=3, temperature=1.0, seed=3)
    for r in range(3):
        assert TOK.decode(toks[r]).startswith("0.75<|/result|>") and forced[r][:5] == [True] * 5


@pytest.mark.parametrize("prompt,sampled,want,want_forced", [
    ("<|calc|>2+3", ["<|result|>", "a", "a", "a"], "<|result|>5<|/result|>a", [0, 1, 1, 0]),
    ("<|calc|>2+3<|result|>", ["a", "a", "a"], "5<|/result|>a", [1, 1, 0]),
    ("<|calc|>2+3<|result|>5", ["a", "a"], "<|/result|>a", [1, 0]),               # partial result in prompt
    ("<|calc|>2+3<|result|>5<|/result|>", ["<|result|>", "a"], "<|result|>e", [0, 1]),  # no open call
    ("", ["<|calc|>", "7", "/", "2", "<|result|>", "a", "a", "a", "a", "a"],
     "<|calc|>7/2<|result|>3.5<|/result|>a", [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]),
])
def test_call_tracker(prompt, sampled, want, want_forced):
    calls = CallTracker(TOK, [TOK.encode(prompt)])
    out, forced = [], []
    for s in sampled:
        t, f = calls.step([TOK.encode(s)[0]])
        out.append(t[0])
        forced.append(int(f[0]))
    assert TOK.decode(out) == want
    assert forced == want_forced
