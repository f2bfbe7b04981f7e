"""GPT model tests: each against a hand count or an independent reference computation. CPU, seconds."""
import math

import pytest
import torch
import torch.nn.functional as F

from mathlm.model.gpt import (GPT, GPTConfig, KVCache, MoE, CausalSelfAttention, apply_rope, filter_top_k,
                              filter_top_p, rope_tables, sample_logits)


def tiny_config(**kw):
    cfg = dict(vocab_size=97, block_size=64, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, ffn_hidden=96)
    cfg.update(kw)
    return GPTConfig(**cfg)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(tiny_config(**kw)).eval()


# -----------------------------------------------------------------------------
# size and init

def test_default_config_param_count(capsys):
    model = GPT(GPTConfig())
    # per layer: q,o 512*512 each + k,v 512*256 each + SwiGLU 3*512*1408 + q/k norm 2*64 + 2 norms 2*512
    per_layer = 2 * 512 * 512 + 2 * 512 * 256 + 3 * 512 * 1408 + 2 * 64 + 2 * 512
    want = 32768 * 512 + 8 * per_layer + 512  # tied embedding counted once, + ln_f
    assert want == 40_379_904
    assert model.num_params() == want
    assert abs(model.num_params() - 40.4e6) / 40.4e6 < 0.01
    assert "number of parameters: 40.38M" in capsys.readouterr().out


def test_tied_weights_share_storage():
    model = tiny_model()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert "lm_head.weight" not in dict(model.named_parameters())  # counted once


def test_residual_projections_have_scaled_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, n_layer=8, n_embd=256, n_head=4, n_kv_head=2, ffn_hidden=512))
    scaled = 0.02 / math.sqrt(2 * 8)
    for block in model.transformer.h:
        for w, want in [(block.attn.o_proj.weight, scaled), (block.mlp.down_proj.weight, scaled),
                        (block.attn.q_proj.weight, 0.02), (block.mlp.gate_proj.weight, 0.02)]:
            assert abs(w.std().item() - want) / want < 0.1
        assert torch.all(block.ln_1.weight == 1)


# -----------------------------------------------------------------------------
# attention, RoPE, norms against references

def hf_rmsnorm(x, weight, eps=1e-6):  # transformers' Qwen3RMSNorm.forward, verbatim
    input_dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(input_dtype)


@pytest.mark.parametrize("shape", [(2, 5, 16), (3, 7, 4, 64), (1, 1, 512)])
def test_rmsnorm_matches_hf_bit_for_bit(shape):
    from mathlm.model.gpt import RMSNorm
    norm = RMSNorm(shape[-1])
    torch.nn.init.normal_(norm.weight, 1.0, 0.3)
    x = torch.randn(shape)
    assert torch.equal(norm(x), hf_rmsnorm(x, norm.weight))  # fp32 takes the fused F.rms_norm path
    xb = x.bfloat16()
    assert torch.equal(norm(xb), hf_rmsnorm(xb, norm.weight))  # bf16 input, fp32 weight (autocast)
    norm.bfloat16()
    assert torch.equal(norm(xb), hf_rmsnorm(xb, norm.weight))


def test_rope_equals_rotate_half_form():
    torch.manual_seed(0)
    hd, T = 32, 9
    x = torch.randn(2, 4, T, hd)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
    emb = torch.cat([torch.outer(torch.arange(T).float(), inv_freq)] * 2, -1)
    want = x * emb.cos() + torch.cat((-x[..., hd // 2:], x[..., :hd // 2]), -1) * emb.sin()
    assert torch.equal(apply_rope(x, *rope_tables(hd, T, 10000.0)), want)


def test_gqa_attention_matches_naive_reference():
    torch.manual_seed(0)
    cfg = tiny_config(n_embd=48, n_head=6, n_kv_head=2)  # 3 query heads per kv head
    attn = CausalSelfAttention(cfg)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    B, T, hd = 2, 7, cfg.head_dim
    x = torch.randn(B, T, cfg.n_embd)
    y = attn(x, *rope_tables(hd, T, cfg.rope_theta))
    # the reference RoPE, written out as in HF Qwen3: cos/sin of cat(freqs, freqs), rotate_half = cat(-x2, x1)
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()

    def rms(t, w):
        return w * t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)

    def rot(t):  # rotate-half RoPE, written out
        t1, t2 = t[..., :hd // 2], t[..., hd // 2:]
        return t * cos + torch.cat((-t2, t1), -1) * sin

    q = rot(rms((x @ attn.q_proj.weight.T).view(B, T, 6, hd), attn.q_norm.weight).transpose(1, 2))
    k = rot(rms((x @ attn.k_proj.weight.T).view(B, T, 2, hd), attn.k_norm.weight).transpose(1, 2))
    v = (x @ attn.v_proj.weight.T).view(B, T, 2, hd).transpose(1, 2)
    k, v = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)  # kv head j serves query heads 3j..3j+2
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    ref = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, 6 * hd) @ attn.o_proj.weight.T
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-4)


def test_rope_score_depends_only_on_position_difference():
    torch.manual_seed(0)
    hd = 16
    cos, sin = rope_tables(hd, 128, 10000.0)
    q, k = torch.randn(hd), torch.randn(hd)

    def score(m, n):
        return (apply_rope(q, cos[m], sin[m]) @ apply_rope(k, cos[n], sin[n])).item()

    for shift in (0, 5, 37, 100):
        assert score(3 + shift, 1 + shift) == pytest.approx(score(3, 1), abs=1e-4)
        assert score(1 + shift, 9 + shift) == pytest.approx(score(1, 9), abs=1e-4)
    assert abs(score(3, 1) - score(9, 1)) > 1e-2  # a different distance gives a different score
    # rotation preserves the norm
    assert apply_rope(q, cos[17], sin[17]).norm().item() == pytest.approx(q.norm().item(), rel=1e-5)


# -----------------------------------------------------------------------------
# KV cache and padding

PROMPTS = [[5, 17, 3, 42, 8], [9, 1, 2, 3, 4, 5, 6, 7, 8], [60, 61, 62]]
FED = [[11, 12, 13, 14], [21, 22, 23, 24], [31, 32, 33, 34]]  # tokens fed one per decode step


@pytest.mark.parametrize("moe", [False, True])
def test_kv_cache_decode_matches_full_forward(moe):
    model = tiny_model(n_expert=4 if moe else 0)
    for block in model.transformer.h:  # a sharper router so rows actually use different experts
        if moe:
            torch.nn.init.normal_(block.mlp.router.weight, std=0.5)
    B, T = len(PROMPTS), max(map(len, PROMPTS))
    idx = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, p in enumerate(PROMPTS):
        idx[b, T - len(p):], mask[b, T - len(p):] = torch.tensor(p), 1

    cache = KVCache(model.config, B, T + 4)
    prefill, _, _ = model(idx, cache=cache, attention_mask=mask)
    steps = []
    for s in range(4):
        logits, _, _ = model(torch.tensor([f[s] for f in FED])[:, None], cache=cache, last_only=True)
        steps.append(logits[:, 0])
    padded_nocache, _, _ = model(idx, attention_mask=mask)  # padded forward without a cache

    for b, p in enumerate(PROMPTS):
        full, _, _ = model(torch.tensor([p + FED[b]]))  # this row alone, unpadded
        n = len(p)
        torch.testing.assert_close(prefill[b, T - n:], full[0, :n], atol=1e-5, rtol=0)
        torch.testing.assert_close(padded_nocache[b, T - n:], full[0, :n], atol=1e-5, rtol=0)
        for s in range(4):
            torch.testing.assert_close(steps[s][b], full[0, n + s], atol=1e-5, rtol=0)


def test_kv_cache_chunked_prefill_matches_full_forward():
    model = tiny_model()
    seq = torch.randint(0, 97, (2, 20))
    full, _, _ = model(seq)
    cache = KVCache(model.config, 2, 20)
    parts = [model(seq[:, a:b], cache=cache)[0] for a, b in [(0, 7), (7, 8), (8, 15), (15, 20)]]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


def test_padded_rows_have_no_nan():
    model = tiny_model()
    idx = torch.tensor([[0, 0, 0, 7], [1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 1]])
    logits, _, _ = model(idx, attention_mask=mask)
    assert torch.isfinite(logits).all()


def test_greedy_generate_matches_naive_loop_and_num_samples():
    model = tiny_model(seed=1)

    def naive(p, n):
        seq = list(p)
        for _ in range(n):
            logits, _, _ = model(torch.tensor([seq]))
            seq.append(int(logits[0, -1].argmax()))
        return seq[len(p):]

    want = [naive(p, 6) for p in PROMPTS]
    assert model.generate_ids(PROMPTS, 6) == want
    # each prompt prefilled once, its cache rows copied: rows p0,p0,p1,p1,p2,p2
    assert model.generate_ids(PROMPTS, 6, num_samples=2) == [w for w in want for _ in range(2)]


def test_generate_eos_and_block_size():
    model = tiny_model(seed=1)
    first = model.generate_ids([PROMPTS[0]], 6)[0]
    eos = first[2]
    k = first.index(eos)
    steps = list(model.generate([PROMPTS[0]], 6, eos_id=eos))
    assert len(steps) == k + 1  # stops once every row is done
    assert model.generate_ids([PROMPTS[0]], 6, eos_id=eos) == [first[:k]]
    # prompt + generated never exceed block_size (64)
    assert len(model.generate_ids([list(range(60))], 50)[0]) == 4
    assert model.generate_ids([list(range(64))], 5) == [[]]


class Stepper(GPT):
    """A GPT whose next token is the last one + 1 + (the real model's argmax mod 3), or EOS from EOS - 1 on:
    rows finish at different steps, and each step depends on the cached forward, so a cache row that
    lost its place (or another row's keys) changes the tokens."""
    EOS = 90

    def forward(self, idx, targets=None, cache=None, attention_mask=None, last_only=False):
        logits, loss, aux = super().forward(idx, targets, cache, attention_mask, last_only)
        nxt = (idx[:, -1] + 1 + logits[:, -1].argmax(-1) % 3).clamp(max=self.EOS)
        out = torch.full_like(logits, -1e4)
        out[:, -1].scatter_(-1, nxt[:, None], 0.0)
        return out, loss, aux


def test_finished_rows_leave_the_batch_and_the_rest_decode_as_alone():
    torch.manual_seed(3)
    model = Stepper(tiny_config()).eval()
    prompts = [[5, 17, 3, 42, 8], [9, 1, 2, 3, 4, 5, 6, 7, 80], [60, 61, 62], [7, 7, 30, 31], [10, 3], [44, 45, 89]]
    sizes = []
    model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].size(0)))
    alone = [model.generate_ids([p], 40, eos_id=Stepper.EOS)[0] for p in prompts]
    assert len({len(a) for a in alone}) >= 5  # rows finish at many different steps
    for n in (1, 2):
        sizes.clear()
        batched = model.generate_ids(prompts, 40, eos_id=Stepper.EOS, num_samples=n)
        assert batched == [a for a in alone for _ in range(n)]
        # the batch shrank as rows finished: fewer rows per forward, down to the longest row alone
        assert sizes[0] == len(prompts) and sizes[1] == len(prompts) * n
        assert sizes[1:] == sorted(sizes[1:], reverse=True) and sizes[-1] < len(prompts) * n
    # drop_finished=False keeps every row to the end (the same tokens); without eos nothing finishes
    for kw in (dict(eos_id=Stepper.EOS, drop_finished=False), {}):
        sizes.clear()
        out = model.generate_ids(prompts, 40 if kw else 10, **kw)
        assert set(sizes) == {len(prompts)} and (out == alone or not kw)


def test_sampling_same_seed_same_tokens():
    model = tiny_model(seed=2)
    kw = dict(temperature=1.0, top_k=50, top_p=0.95)
    a = model.generate_ids(PROMPTS, 12, seed=123, num_samples=3, **kw)
    b = model.generate_ids(PROMPTS, 12, seed=123, num_samples=3, **kw)
    c = model.generate_ids(PROMPTS, 12, seed=124, num_samples=3, **kw)
    assert a == b
    assert a != c
    assert len(a) == 9 and all(len(r) == 12 for r in a)


# -----------------------------------------------------------------------------
# mixture of experts

def test_moe_matches_per_token_loop():
    torch.manual_seed(0)
    cfg = tiny_config(n_expert=4, expert_top_k=2)
    moe = MoE(cfg)
    torch.nn.init.normal_(moe.router.weight, std=0.5)
    x = torch.randn(2, 5, cfg.n_embd)
    y, aux = moe(x)
    ref = torch.zeros_like(x)
    counts = torch.zeros(4)
    for b in range(2):
        for t in range(5):
            probs = (moe.router.weight @ x[b, t]).softmax(-1)
            w, e = probs.topk(2)
            w = w / w.sum()
            for wi, ei in zip(w, e):
                ex = moe.experts[int(ei)]
                ref[b, t] += wi * (ex.down_proj.weight @ (F.silu(ex.gate_proj.weight @ x[b, t])
                                                          * (ex.up_proj.weight @ x[b, t])))
                counts[int(ei)] += 1
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-4)
    probs = (x.view(-1, cfg.n_embd) @ moe.router.weight.T).softmax(-1)
    want_aux = 4 * (counts / counts.sum() * probs.mean(0)).sum()
    torch.testing.assert_close(aux, want_aux)


def test_moe_aux_loss_minimum_for_uniform_routing():
    model = tiny_model(n_expert=4)
    idx = torch.randint(0, 97, (2, 12))
    for block in model.transformer.h:
        torch.nn.init.zeros_(block.mlp.router.weight)  # every expert prob = 1/4
    _, _, aux = model(idx)
    assert aux.item() == pytest.approx(1.0, abs=1e-6)
    # skewed: every token prefers expert 0 → f_0 = 1/2 (one of its 2 slots), P_0 ≈ 1 → aux ≈ 4 * 1/2 = 2
    moe = MoE(tiny_config(n_expert=4))
    x = 1.0 + 0.1 * torch.randn(2, 12, 64)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 1.0
    _, aux = moe(x)
    assert aux.item() == pytest.approx(2.0, abs=0.01)


def test_dense_aux_loss_is_zero_scalar():
    _, _, aux = tiny_model()(torch.randint(0, 97, (2, 8)))
    assert aux.shape == () and aux.item() == 0.0


# -----------------------------------------------------------------------------
# loss and training

def test_loss_ignores_minus_100_and_all_masked_is_zero():
    model = tiny_model()
    idx = torch.randint(0, 97, (2, 8))
    targets = torch.randint(0, 97, (2, 8))
    targets[0, :5] = -100
    logits, loss, _ = model(idx, targets)
    keep = targets != -100
    want = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, want)

    _, loss, _ = model(idx, torch.full_like(idx, -100))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()  # a grad path exists, and it is zero
    assert model.transformer.wte.weight.grad.abs().sum().item() == 0.0


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=64, block_size=32, n_layer=2, n_embd=64))
    x = torch.randint(0, 64, (4, 17))
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), "cpu")
    for step in range(300):
        _, loss, _ = model(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.05, f"loss {loss.item():.3f} after {step + 1} steps"


def test_configure_optimizers_groups(capsys):
    model = tiny_model()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert any(p is model.transformer.wte.weight for p in decay["params"])
    # per layer 7 matrices (q,k,v,o,gate,up,down) + embedding; 4 norms per layer + ln_f
    assert len(decay["params"]) == 2 * 7 + 1 and len(no_decay["params"]) == 2 * 4 + 1
    assert "decayed tensors: 15" in capsys.readouterr().out


def test_estimate_mfu_hand_computed():
    model = tiny_model()
    N = model.num_params()
    flops = 6 * N + 12 * 2 * 4 * 16 * 10  # 6N + 12 L H Q T
    assert model.estimate_mfu((3, 10), dt=0.5, peak_flops=1e12) == pytest.approx(flops * 30 / 0.5 / 1e12)


# -----------------------------------------------------------------------------
# sampling helpers

def test_greedy_is_argmax():
    logits = torch.randn(5, 30)
    assert torch.equal(sample_logits(logits, temperature=0.0), logits.argmax(-1))


def test_top_k_keeps_exactly_k():
    logits = torch.randn(4, 50)
    out = filter_top_k(logits, 7)
    kept = torch.isfinite(out)
    assert kept.sum(-1).tolist() == [7] * 4
    assert torch.equal(out[kept], logits[kept])
    assert torch.all(logits.masked_fill(~kept, float("inf")).min(-1).values
                     >= logits.masked_fill(kept, float("-inf")).max(-1).values)


@pytest.mark.parametrize("p,want", [(0.3, {2}), (0.44, {2}), (0.5, {2, 0}), (0.69, {2, 0}), (0.71, {2, 0, 1}),
                                    (0.9, {2, 0, 1, 4}), (0.96, {0, 1, 2, 3, 4}), (1.0, {0, 1, 2, 3, 4})])
def test_top_p_keeps_smallest_set_reaching_p(p, want):
    probs = torch.tensor([[0.25, 0.15, 0.45, 0.05, 0.10]])  # sorted: 2 (.45), 0 (.25), 1 (.15), 4 (.10), 3 (.05)
    out = filter_top_p(probs.log(), p)
    assert set(torch.isfinite(out[0]).nonzero().flatten().tolist()) == want


def test_sample_logits_seeded():
    logits = torch.randn(3, 40)
    draw = lambda seed: sample_logits(logits.repeat(20, 1), 1.0, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))
    # top_k=1 sampling is greedy whatever the temperature
    assert torch.equal(sample_logits(logits, 2.0, top_k=1), logits.argmax(-1))


def test_sample_probs_draws_each_token_at_its_probability():
    """Inverse-CDF sampling (sample_probs, which replaced torch.multinomial) against the exact
    distribution: a chi-square test over 200,000 draws of one row per distribution, at a fixed seed
    (false-alarm rate 0.1% per distribution at a fresh seed); zero-probability tokens never drawn."""
    from scipy.stats import chisquare
    from mathlm.model.gpt import sample_probs
    g = torch.Generator().manual_seed(0)
    for probs in ([0.1, 0.0, 0.6, 0.3], [0.0, 0.0, 1.0, 0.0], [0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0]):
        p = torch.tensor(probs)
        draws = sample_probs(p.repeat(200_000, 1), g)
        counts = torch.bincount(draws, minlength=len(probs))
        assert counts[p == 0].sum() == 0
        keep = p > 0
        if keep.sum() > 1:
            want = p[keep].double() / p[keep].double().sum() * int(counts.sum())
            assert chisquare(counts[keep].double().numpy(), want.numpy()).pvalue > 1e-3


def test_sample_probs_never_draws_a_zero_probability_tail_at_u_near_one(monkeypatch):
    """u * total can round up to total in fp32 when u is the largest uniform below 1: the draw must then
    be the last token with probability, not a filtered-out one after it."""
    from mathlm.model.gpt import sample_probs
    probs = torch.tensor([[0.3, 0.7, 0.0, 0.0]]) / 3  # unnormalised, as filters leave them
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.full(shape, 1 - 2 ** -24, dtype=kw.get("dtype")))
    assert sample_probs(probs).tolist() == [1]


# -----------------------------------------------------------------------------
# errors that say how to fix them

def test_bad_config_raises_helpful_error():
    with pytest.raises(ValueError, match="n_head=8 is not divisible by n_kv_head=3.*pick n_kv_head"):
        GPTConfig(n_head=8, n_kv_head=3)
    with pytest.raises(ValueError, match="n_embd=100 is not divisible by n_head=8"):
        GPTConfig(n_embd=100)
    with pytest.raises(ValueError, match="expert_top_k=3 must be between 1 and n_expert=2"):
        GPTConfig(n_expert=2, expert_top_k=3)


def test_too_long_sequence_raises_helpful_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="65 tokens.*exceeds block_size=64.*truncate"):
        model(torch.zeros(1, 65, dtype=torch.long))
    cache = KVCache(model.config, 1, 64)
    model(torch.zeros(1, 60, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="cache 60 \\+ input 5"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="prompt of 70 tokens exceeds block_size=64"):
        model.generate_ids([[1] * 70], 3)
