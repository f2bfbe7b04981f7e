"""mathlm.infer.speculative: speculative decoding is exact (greedy token for token, sampling in
distribution), the rejected drafts leave no trace in the KV cache, the static/compiled decode step
gives eager's tokens, and the bf16 inference weights where the CPU has native bf16.

The models are tiny and trained here for a second on repetitive text (motifs repeated with noise),
so the drafters are right often but not always: both acceptance and rejection paths run."""
import pytest
import torch

from mathlm.infer import speculative as spec
from mathlm.infer.speculative import Decoder, Lookup, SpecStats
from mathlm.model.gpt import GPT, GPTConfig, KVCache, sampling_probs
from tests.test_infer import one_thread  # noqa: F401 -- autouse: tiny models run single-threaded

VOCAB, BLOCK = 16, 64


def motif_text(n, gen):
    """A row: a random motif of 2-5 tokens repeated to length n, one token in ten replaced at random."""
    motif = torch.randint(0, VOCAB, (int(torch.randint(2, 6, (1,), generator=gen)),), generator=gen)
    row = motif.repeat(n // len(motif) + 1)[:n].clone()
    noise = torch.rand(n, generator=gen) < 0.1
    row[noise] = torch.randint(0, VOCAB, (int(noise.sum()),), generator=gen)
    return row


def trained(n_layer, n_embd, steps, seed, vocab=VOCAB):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=BLOCK, n_layer=n_layer, n_embd=n_embd, n_head=4,
                          n_kv_head=2, ffn_hidden=2 * n_embd))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.stack([motif_text(BLOCK + 1, gen) for _ in range(16)]) % vocab
        _, loss, _ = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def models():
    """(target, draft): the draft is smaller and trained less, so it is often but not always right."""
    return trained(2, 64, 120, 0), trained(1, 32, 25, 1)


def prompts(n, seed=0):
    """n prompts from the training distribution; a third of them end within 8 tokens of the context."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = BLOCK - 1 - i % 8 if i % 3 == 0 else int(torch.randint(1, BLOCK - 8, (1,), generator=gen))
        out.append(motif_text(length, gen).tolist())
    return out


# -----------------------------------------------------------------------------
# drafters

@pytest.mark.parametrize("seq,k,want", [
    ([1, 2, 3, 9, 1, 2, 3], 3, [9, 1, 2]),          # the 3-gram 1 2 3 matched; continuation 9 1 2
    ([1, 2, 3, 9, 2, 3, 7, 8, 2, 3], 2, [7, 8]),     # 2-gram 2 3: the most recent earlier occurrence
    ([5, 6, 5, 6, 5], 4, [6, 5]),                    # 5 6 5 at 0: continuation runs to the end
    ([4, 4, 4, 4, 4], 3, [4, 4]),                    # no occurrence has 3 tokens after it: the earliest
    ([4, 4, 4, 4, 4, 4, 4], 2, [4, 4]),              # the latest with 2 after it
    ([1, 2, 8, 8, 1, 2, 9, 1, 2], 2, [9, 1]),        # the latest of two full continuations
    ([1, 2, 3, 4], 3, []),                           # no n-gram repeats
    ([7], 3, []),
])
def test_lookup_drafts_the_latest_longest_match(seq, k, want):
    assert Lookup(max_ngram=3).draft(seq, k)[0] == want


def test_lookup_index_follows_a_growing_sequence():
    """Incremental indexing gives what a fresh index gives, every step of a growing list."""
    gen = torch.Generator().manual_seed(0)
    seq, grow = [], Lookup()
    for t in motif_text(80, gen).tolist():
        seq.append(t)
        assert grow.draft(seq, 4) == Lookup().draft(list(seq), 4)


# -----------------------------------------------------------------------------
# exactness

def test_greedy_speculation_equals_plain_greedy(models):
    """50 prompts (a third ending within 8 tokens of the context), k = 1..8, both drafters: the same
    tokens as GPT.generate; both drafters are accepted often and rejected sometimes."""
    target, draft = models
    stats = {"lookup": SpecStats(), "draft": SpecStats()}
    for i, ids in enumerate(prompts(50)):
        want = target.generate_ids([ids], 24)[0]
        for kind in stats:
            dec = Decoder(kind, k=1 + i % 8, draft_model=draft)
            dec.stats = stats[kind]
            got = [int(t) for t in dec.generate(target, [ids], 24)]
            assert got == want, (kind, i, len(ids))
    for kind, s in stats.items():
        assert 0.2 < s.acceptance < 0.98, (kind, s)  # both branches of the rule ran
        assert s.emitted == s.accepted + s.rounds  # each round: its accepted drafts and one token of its own


class Chars:
    """A character tokenizer over the VOCAB ids, with the last three as <|calc|> <|result|> <|/result|>:
    what the calculator's CallTracker reads (calc_ids, encode, decode)."""
    chars = "0123456789+*-"
    calc_ids = (13, 14, 15)

    def encode(self, text):
        return [self.chars.index(c) if c in self.chars else 12 for c in text]

    def decode(self, ids):
        return "".join(self.chars[i] if i < 13 else " " for i in ids)


def test_greedy_speculation_with_the_calculator_equals_plain(models):
    """With tools, the calls' results are forced after <|result|> (drafted or sampled): the same
    tokens as GPT.generate(tools=...), forced ones included, for both drafters and k = 1..8."""
    target, draft = models
    tools, forced = Chars(), 0
    gen = torch.Generator().manual_seed(4)
    for i in range(24):  # prompts repeating a call "<|calc|> a + b <|result|> c <|/result|>": the model copies it
        a, b_, c = torch.randint(0, 10, (3,), generator=gen).tolist()
        ids = ([13, a, 10, b_, 14, c, 15] * 9)[:int(torch.randint(8, BLOCK - 8, (1,), generator=gen))]
        want = [(int(t), bool(f)) for t, f in target.generate([ids], 24, tools=tools, with_forced=True)]
        forced += sum(f for _, f in want)
        for kind in ("lookup", "draft"):
            got = [int(t) for t in Decoder(kind, k=1 + i % 8, draft_model=draft).generate(target, [ids], 24, tools=tools)]
            assert got == [t for t, _ in want], (kind, i)
    assert forced > 20  # results were forced, not just drafted


def test_eos_and_budget_stop_where_generate_stops(models):
    target, _ = models
    ids = prompts(3, seed=5)[1]
    plain = target.generate_ids([ids], 30)[0]
    eos = plain[7]
    want = list(target.generate([ids], 30, eos_id=eos))
    got = list(Decoder("lookup", k=8).generate(target, [ids], 30, eos_id=eos))
    assert [int(t) for t in got] == [int(t[0]) for t in want] and int(got[-1]) == eos
    for n in (1, 2, 5):
        assert len(list(Decoder("lookup", k=8).generate(target, [ids], n))) == n


def chi2_pvalue(counts, expected):
    """Pearson chi-square goodness of fit; cells with expected < 5 pooled into one. Survival function
    of chi2(df) is the regularised upper incomplete gamma Q(df / 2, x / 2)."""
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum().view(1)])
    exp = torch.cat([expected[~small], expected[small].sum().view(1)])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    x = float(((obs - exp) ** 2 / exp).sum())
    df = len(exp) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(x / 2, dtype=torch.float64)))


SAMPLING = dict(temperature=0.9, top_k=5, top_p=0.95)


def exact_joint(model, ids, n_tok):
    """The exact probability of every n_tok-token continuation under the sampler, (V,) * n_tok,
    by enumerating prefixes: one forward per prefix."""
    V = model.config.vocab_size
    joint = torch.ones([V] * 0, dtype=torch.float64)
    prefixes = [[]]
    for _ in range(n_tok):
        with torch.no_grad():
            logits = model(torch.tensor([ids + p for p in prefixes]))[0][:, -1]
        p = sampling_probs(logits, **SAMPLING).double()  # (len(prefixes), V)
        joint = (joint.reshape(-1, 1) * p).reshape(-1)
        prefixes = [q + [v] for q in prefixes for v in range(V)]
    return joint


def first_tokens(run, n_tok, V):
    """Index of the first n_tok tokens of one generation, in the enumeration order of exact_joint."""
    toks = [int(t) for t in run][:n_tok]
    return sum(t * V ** (n_tok - 1 - i) for i, t in enumerate(toks))


@pytest.fixture(scope="module")
def small_vocab():
    """A 6-token target and a draft that disagrees with it a lot (trained on another seed, less)."""
    target, draft = trained(1, 32, 60, 3, vocab=6), trained(1, 32, 5, 4, vocab=6)
    ids = [0, 1, 2, 0, 1, 2, 0, 1]  # lookup drafts 2 0 1 ...
    return target, draft, ids, exact_joint(target, ids, 3)


N_SAMPLES = 2000
ALPHA = 1e-3  # false-alarm rate of each test: a correct sampler fails it with probability 0.1% over seeds


@pytest.mark.parametrize("kind,k", [("lookup", 2), ("draft", 2), pytest.param("lookup", 1, marks=pytest.mark.slow),
                                    pytest.param("draft", 1, marks=pytest.mark.slow)])
def test_sampling_matches_the_target_distribution(small_vocab, kind, k):
    """The first 3 sampled tokens (216 cells) with speculation against the exact sampler distribution
    of the target: chi-square at ALPHA over N_SAMPLES fixed seeds; impossible cells never occur."""
    target, draft, ids, joint = small_vocab
    V = target.config.vocab_size
    dec = Decoder(kind, k=k, draft_model=draft)
    counts = torch.zeros_like(joint)
    for s in range(N_SAMPLES):
        counts[first_tokens(dec.generate(target, [ids], 3, seed=s, **SAMPLING), 3, V)] += 1
    assert counts[joint == 0].sum() == 0
    assert 0.05 < dec.stats.acceptance < 0.95, dec.stats  # rejections and residual draws happened
    assert chi2_pvalue(counts, N_SAMPLES * joint) > ALPHA


def test_the_sampling_test_has_power(small_vocab, monkeypatch):
    """The same test run on plain sampling passes, and on a broken rule (every draft accepted) fails."""
    target, draft, ids, joint = small_vocab
    V = target.config.vocab_size
    rows = torch.stack(list(target.generate([ids], 3, num_samples=N_SAMPLES, seed=0, **SAMPLING)), 1)
    counts = torch.bincount(rows[:, 0] * V * V + rows[:, 1] * V + rows[:, 2], minlength=V ** 3).double()
    assert chi2_pvalue(counts, N_SAMPLES * joint) > ALPHA

    def accept_all(p_logits, drafts, q, temperature, top_k, top_p, generator):
        p = sampling_probs(p_logits[-1], temperature, top_k, top_p)
        return len(drafts), int(torch.multinomial(p, 1, generator=generator))
    monkeypatch.setattr(spec, "_verify", accept_all)
    dec = Decoder("draft", k=2, draft_model=draft)
    counts = torch.zeros_like(joint)
    for s in range(N_SAMPLES // 3):
        counts[first_tokens(dec.generate(target, [ids], 3, seed=s, **SAMPLING), 3, V)] += 1
    assert chi2_pvalue(counts, N_SAMPLES // 3 * joint) < 1e-6


# -----------------------------------------------------------------------------
# the cache after a rejection

def test_cache_after_rejection_equals_a_fresh_prefill(models):
    """Two rounds by hand: drafts accepted then rejected, truncate; the cache's keys/values, pointers
    and next logits equal those of a fresh prefill of the accepted text."""
    target, _ = models
    ids = prompts(2, seed=3)[1][:20]
    greedy = target.generate_ids([ids], 10)[0]
    cache = KVCache(target.config, 1, BLOCK)
    target(torch.tensor([ids[:-1]]), cache=cache)
    seq = list(ids)
    for right in (3, 0):  # round 1: 3 correct drafts then a wrong one; round 2: the first is wrong
        done = len(seq) - len(ids)
        drafts = greedy[done:done + right] + [(greedy[done + right] + 1) % VOCAB, 5, 6]
        n = cache.pos
        logits = target(torch.tensor([seq[-1:] + drafts]), cache=cache)[0][0]
        j, nxt = spec._verify(logits, drafts, None, 0.0, None, None, None)
        assert (j, nxt) == (right, greedy[done + right])
        cache.truncate(n + 1 + j)
        seq += drafts[:j] + [nxt]
    fresh = KVCache(target.config, 1, BLOCK)
    target(torch.tensor([seq[:-1]]), cache=fresh)
    assert cache.pos == fresh.pos == len(seq) - 1
    assert torch.equal(cache.next_pos, fresh.next_pos) and torch.equal(cache.key_mask, fresh.key_mask)
    for a, b in zip(cache.k + cache.v, fresh.k + fresh.v):
        torch.testing.assert_close(a[:, :, :cache.pos], b[:, :, :fresh.pos], rtol=1e-5, atol=1e-5)
    after = target(torch.tensor([seq[-1:]]), cache=cache)[0]
    torch.testing.assert_close(after, target(torch.tensor([seq[-1:]]), cache=fresh)[0], rtol=1e-5, atol=1e-5)


def test_truncate_refuses_what_it_cannot_undo(models):
    target, _ = models
    cache = KVCache(target.config, 1, 16)
    target(torch.tensor([[1, 2, 3]]), cache=cache)
    with pytest.raises(ValueError, match="cannot truncate"):
        cache.truncate(4)
    padded = KVCache(target.config, 2, 16)
    target(torch.tensor([[0, 1], [2, 3]]), cache=padded, attention_mask=torch.tensor([[0, 1], [1, 1]]))
    with pytest.raises(ValueError, match="without pads"):
        padded.truncate(1)


# -----------------------------------------------------------------------------
# the decoder's choices

def test_batches_and_samples_fall_back_to_plain_decoding(models):
    target, draft = models
    a, b = prompts(2, seed=7)
    for kind in ("lookup", "draft"):
        dec = Decoder(kind, k=4, draft_model=draft)
        got = torch.stack(list(dec.generate(target, [a, b], 12)), 1)
        assert torch.equal(got, torch.stack(list(target.generate([a, b], 12)), 1))
        got = torch.stack(list(dec.generate(target, [a], 6, num_samples=3, temperature=1.0, seed=2)), 1)
        assert torch.equal(got, torch.stack(list(target.generate([a], 6, num_samples=3, temperature=1.0, seed=2)), 1))
        assert dec.stats.rounds == 0


def test_k_zero_takes_each_drafters_benchmarked_default(models):
    """k = 0 (the flags' default) drafts 4 a round by lookup and 8 by a draft model (AUTO_K, from
    bench_infer); an explicit k is kept, a negative one refused."""
    _, draft = models
    assert (Decoder().k, Decoder("lookup").k, Decoder("draft", draft_model=draft).k) == (4, 4, 8)
    assert Decoder("draft", k=3, draft_model=draft).k == 3
    with pytest.raises(ValueError, match="0 = auto"):
        Decoder("lookup", k=-1)


def test_bad_choices_are_one_line_errors(models):
    target, _ = models
    with pytest.raises(ValueError, match="draft_checkpoint"):
        Decoder("draft")
    with pytest.raises(ValueError, match="off|lookup|draft"):
        Decoder("ngram")
    other = trained(1, 32, 0, 0, vocab=VOCAB + 1)
    with pytest.raises(ValueError, match="vocabulary"):
        list(Decoder("draft", draft_model=other).generate(target, [[1, 2]], 4))


def test_cli_speculation_flags(tmp_path, capsys):
    """--speculate/--spec_k/--draft_checkpoint: the answer is plain greedy's; bad values are one line."""
    from mathlm.infer.inference import generate_text, main
    from tests.test_infer import _die, make_tiny
    path, tok_dir, model, tok = make_tiny(str(tmp_path))
    other = str(tmp_path / "other.pt")  # a draft trained with another tokenizer
    torch.save({**torch.load(path, weights_only=True), "tokenizer_hash": "0123abcd"}, other)
    common = ["--checkpoint", path, "--tokenizer", tok_dir, "--prompt", "What is 2+3?", "--max_new_tokens", "30"]
    want = generate_text(model, tok, "What is 2+3?", max_new_tokens=30)
    for extra in (["--speculate", "lookup", "--spec_k", "3"], ["--speculate", "draft", "--draft_checkpoint", path]):
        assert main(common + extra) == want
    _die(common + ["--speculate", "ngram"], "--speculate ngram: use one of off|lookup|draft")
    _die(common + ["--spec_k", "-1"], "--spec_k -1")
    _die(common + ["--speculate", "draft"], "needs --draft_checkpoint")
    _die(common + ["--speculate", "draft", "--draft_checkpoint", other, "--tokenizer", tok_dir], "tokenizer")


# -----------------------------------------------------------------------------
# static-shape decode step (the torch.compile path)

def test_static_step_gives_generate_tokens(models):
    """The static step (whole cache + slot mask) decodes what GPT.generate decodes, greedy and seeded."""
    target, _ = models
    for ids in prompts(6, seed=9):
        want = [int(t) for t in target.generate([ids], 20)]
        assert [int(t) for t in spec.static_generate(target, [ids], 20)] == want
        want = [int(t) for t in target.generate([ids], 20, temperature=1.0, top_k=8, seed=4)]
        assert [int(t) for t in spec.static_generate(target, [ids], 20, temperature=1.0, top_k=8, seed=4)] == want


def test_speculation_through_the_static_step_gives_plain_tokens(models):
    """Verify rounds padded to k + 1 slots of the static step (and GPT.forward where they do not fit:
    forced results, the context end), the draft model's steps too: the tokens of plain greedy decoding."""
    target, draft = models
    tools = Chars()
    for i, ids in enumerate(prompts(12, seed=13)):
        want = target.generate_ids([ids], 20, tools=tools)[0]
        for kind in ("lookup", "draft"):
            dec = Decoder(kind, k=1 + i % 6, draft_model=draft)
            dec.step = spec.static_step  # eager: what compile=True compiles
            assert [int(t) for t in dec.generate(target, [ids], 20, tools=tools)] == want, (kind, i)


@pytest.mark.slow
def test_compiled_step_gives_eager_tokens(models):
    """torch.compile (inductor on CPU) of the static step: the same greedy tokens as eager, plain and
    speculative, with one graph for every prompt length (the cache is block_size long)."""
    import torch._dynamo
    torch._dynamo.reset()
    target, draft = models
    decs = [Decoder(compile=True), Decoder("lookup", k=4, compile=True), Decoder("draft", k=3, draft_model=draft, compile=True)]
    for ids in prompts(4, seed=11):
        want = target.generate_ids([ids], 16)[0]
        for dec in decs:
            assert [int(t) for t in dec.generate(target, [ids], 16)] == want


# -----------------------------------------------------------------------------
# bf16 inference weights

def test_load_model_dtype(tmp_path, monkeypatch):
    """auto = bf16 blocks where the CPU has native bf16, else fp32; the tied embedding / lm_head and the
    final norm stay fp32 (GPT.decode_dtype), so logits are fp32; plain and speculative decoding run on it."""
    from mathlm import common
    from mathlm.infer.inference import load_model
    from tests.test_infer import make_tiny
    path, tok_dir, model, _ = make_tiny(str(tmp_path))
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: "avx512_bf16")
    m, _ = load_model(path, tok_dir, device="cpu", dtype="auto", verbose=False)
    assert m.transformer.h[0].attn.q_proj.weight.dtype == torch.bfloat16 == m.transformer.h[0].ln_1.weight.dtype
    assert m.lm_head.weight.dtype == torch.float32 and torch.equal(m.lm_head.weight, model.lm_head.weight)
    ids = list(range(5, 25))
    with torch.no_grad():
        logits = m(torch.tensor([ids]))[0]
        assert logits.dtype == torch.float32
        # bf16 blocks: close to fp32's logits, not equal
        assert 0 < (logits - model(torch.tensor([ids]))[0]).abs().max() < 0.1
        # the head: bf16 logits everywhere, the top 64 recomputed in fp32 from the same hidden state
        x = torch.randn(3, 64)
        exact, got = x @ model.lm_head.weight.T, m.lm_head(x)
        top = got.topk(64).indices
        torch.testing.assert_close(got.gather(1, top), exact.gather(1, top))
        assert torch.equal(got.argmax(1), exact.argmax(1)) and 0 < (got - exact).abs().max() < 0.05
    want = m.generate_ids([ids], 12)[0]
    assert [int(t) for t in Decoder("lookup", k=3).generate(m, [ids], 12)] == want
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: None)
    m, _ = load_model(path, tok_dir, device="cpu", dtype="auto", verbose=False)
    assert all(p.dtype == torch.float32 for p in m.parameters())
