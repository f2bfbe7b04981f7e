"""The from-scratch teaching files in docs/ do what the real code does: docs/bpe.py learns
HF tokenizers' merges, merge for merge; docs/sampling.py gives the model's sampler's distribution."""
import importlib.util
import json
import os

import pytest
import torch

from mathlm.model.gpt import filter_top_k, filter_top_p
from mathlm.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, MathTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_doc(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "docs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bpe = load_doc("bpe")
sampling = load_doc("sampling")


def gsm8k_text(n=120):
    rows = [json.loads(line) for line in open(os.path.join(REPO, "tests", "data", "gsm8k", "train.jsonl"))][:n]
    return [r["question"] + "\n" + r["answer"] for r in rows]


def test_bytes_to_unicode_is_gpt2s_table():
    from tokenizers import pre_tokenizers
    assert sorted(bpe.BYTE_CHAR.values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert bpe.BYTE_CHAR[ord(" ")] == "Ġ" and bpe.BYTE_CHAR[ord("A")] == "A"


def test_pretokenize_matches_the_tokenizer():
    hf = MathTokenizer.train(["x"], vocab_size=300, show_progress=False).tk  # only its pre-tokenizer is used
    for text in ["d/dx x^2 = 2x", "Natalia sold 48/2 = <<48/2=24>>24 clips.", "∇·F ≤ ∫ f(x) dx\n\n  ok"]:
        want = [w for w, _ in hf.pre_tokenizer.pre_tokenize_str(text)]
        assert bpe.pretokenize(text, SPLIT_PATTERN) == want


def test_merges_equal_hf_tokenizers():
    texts = gsm8k_text()
    n_merges = 300
    hf = MathTokenizer.train(texts, vocab_size=len(SPECIAL_TOKENS) + 256 + n_merges, min_frequency=2,
                             show_progress=False, tools=False)  # docs/bpe.py knows the 6 specials only
    hf_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                 for m in json.loads(hf.tk.to_str())["model"]["merges"]]
    assert len(hf_merges) == n_merges  # the text is big enough that the vocabulary fills up
    merges, vocab = bpe.train(texts, n_merges, SPLIT_PATTERN, specials=SPECIAL_TOKENS, min_frequency=2)
    assert merges == hf_merges
    # same symbols, same ids
    assert vocab == {k: v for k, v in hf.tk.get_vocab().items()}
    # and encoding unseen text gives the same ids, which decode back to the text
    text = gsm8k_text(200)[150]
    ids = bpe.encode(text, merges, vocab, SPLIT_PATTERN)
    assert ids == hf.tk.encode(text).ids
    assert bpe.decode(ids, vocab) == text


def test_merge_in_place_is_left_to_right_non_overlapping():
    s = list("aaaa")
    bpe.merge_in_place(s, ("a", "a"), "aa")
    assert s == ["aa", "aa"]
    s = list("aaa")
    bpe.merge_in_place(s, ("a", "a"), "aa")
    assert s == ["aa", "a"]


def model_distribution(logits, temperature, top_k, top_p):
    """What mathlm.model.gpt.sample_logits draws from (sample_probs)."""
    z = torch.tensor([logits], dtype=torch.float32) / temperature
    if top_k:
        z = filter_top_k(z, top_k)
    if top_p < 1.0:
        z = filter_top_p(z, top_p)
    return torch.softmax(z, dim=-1)[0].tolist()


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.7, 0, 1.0), (1.5, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.8), (0.6, 5, 0.9), (1.0, 1, 1.0),
    (2.0, 0, 0.3), (1.0, 8, 0.95),
])
def test_sampling_distribution_equals_the_models(temperature, top_k, top_p):
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = (torch.randn(12, generator=g) * 2).tolist()
        want = model_distribution(logits, temperature, top_k, top_p)
        got = sampling.distribution(logits, temperature, top_k, top_p)
        assert got == pytest.approx(want, abs=1e-6)
        assert sum(q > 0 for q in got) == sum(q > 0 for q in want)  # the same tokens are kept


def test_sample_draws_from_the_distribution():
    import random
    logits = [2.0, 1.0, 0.0, -1.0]
    want = sampling.distribution(logits, 0.8, 0, 0.9)
    rng = random.Random(0)
    n = 20000
    counts = [0] * 4
    for _ in range(n):
        counts[sampling.sample(logits, 0.8, 0, 0.9, rng)] += 1
    assert counts[3] == 0 and want[3] == 0  # dropped by top-p: never drawn
    for c, q in zip(counts, want):  # within 5 standard errors
        assert abs(c / n - q) < 5 * (q * (1 - q) / n) ** 0.5 + 1e-9
    assert sampling.distribution(logits, 0.0) == [1.0, 0.0, 0.0, 0.0]
