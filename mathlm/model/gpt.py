"""The GPT: a small Qwen3-style decoder (pre-norm RMSNorm, GQA attention with QK-norm and RoPE,
SwiGLU MLP or an optional sparse MoE), a KV cache, and sampling.

    from mathlm.model.gpt import GPT, GPTConfig
    model = GPT(GPTConfig())                                  # 40.38M params, tied embeddings
    logits, loss, aux = model(idx, targets)                   # training: loss + coef * aux
    for tok in model.generate([[5, 17, 3], [5, 9]], 32, temperature=0.8, top_p=0.95, seed=0):
        ...                                                   # tok: (B * num_samples,) per step

Reads and writes nothing; the stages own files. Every submodule name maps 1:1 to Hugging Face
Qwen3ForCausalLM / Qwen3MoeForCausalLM (the table below), so an export gives the same logits.

    ours                                     HF Qwen3ForCausalLM
    transformer.wte                          model.embed_tokens
    transformer.h.{i}.ln_1                   model.layers.{i}.input_layernorm
    transformer.h.{i}.attn.{q,k,v,o}_proj    model.layers.{i}.self_attn.{q,k,v,o}_proj
    transformer.h.{i}.attn.{q,k}_norm        model.layers.{i}.self_attn.{q,k}_norm
    transformer.h.{i}.ln_2                   model.layers.{i}.post_attention_layernorm
    transformer.h.{i}.mlp.{gate,up,down}_proj  model.layers.{i}.mlp.{gate,up,down}_proj
    transformer.ln_f                         model.norm
    lm_head (tied to wte)                    lm_head (tie_word_embeddings=True)
  MoE (Qwen3MoeForCausalLM, norm_topk_prob=True, moe_intermediate_size=ffn_hidden):
    transformer.h.{i}.mlp.router             model.layers.{i}.mlp.gate
    transformer.h.{i}.mlp.experts.{j}.*      model.layers.{i}.mlp.experts (transformers >= 5 stacks them:
                                             gate_up_proj[j] = cat(gate_proj, up_proj), down_proj[j])

Padding: prompts of different lengths are LEFT padded, so every row's last column is its newest
token and one decode step serves the whole batch. `attention_mask` (B, T) marks real tokens (1) and
pads (0); each row's positions count only its real tokens (cumsum(mask) - 1), so a padded row gets
exactly the RoPE positions and logits it would get alone. Pad keys are masked out of attention.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 32768
    block_size: int = 512       # longest sequence (prompt + completion) the model sees
    n_layer: int = 8
    n_embd: int = 512
    n_head: int = 8             # query heads; head_dim = n_embd // n_head
    n_kv_head: int = 4          # key/value heads (GQA): each serves n_head // n_kv_head query heads
    ffn_hidden: int = 1408      # SwiGLU hidden width (≈ 8/3 * n_embd, rounded to a multiple of 64)
    rope_theta: float = 10000.0
    qk_norm: bool = True        # RMSNorm over head_dim on q and k before RoPE (Qwen3)
    norm_eps: float = 1e-6
    n_expert: int = 0           # 0 = dense MLP; > 0 = sparse MoE with this many SwiGLU experts
    expert_top_k: int = 2       # experts per token (MoE only)
    dropout: float = 0.0

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head} — "
                             f"pick n_head dividing n_embd (e.g. {self.n_embd // 64 or 1} for head_dim 64)")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head} — "
                             f"GQA shares each key/value head among n_head // n_kv_head query heads; "
                             f"pick n_kv_head dividing n_head (e.g. 1, {self.n_head // 2 or 1} or {self.n_head})")
        if self.n_expert > 0 and not 1 <= self.expert_top_k <= self.n_expert:
            raise ValueError(f"expert_top_k={self.expert_top_k} must be between 1 and n_expert={self.n_expert} — "
                             f"lower expert_top_k or raise n_expert")

    @property
    def head_dim(self):
        return self.n_embd // self.n_head


# -----------------------------------------------------------------------------
# building blocks

class RMSNorm(nn.Module):
    """Weight-only RMSNorm, computed in fp32 and cast back — bit-for-bit HF Qwen3RMSNorm."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # one op instead of eight: 1.8x faster at decode shapes on CPU (docs/BENCHMARKS.md), and
            # bit-identical to the lines below in fp32 on CPU (tests check)
            return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(head_dim, max_len, theta):
    """RoPE tables (max_len, head_dim) for apply_rope: cos = cos(cat(freqs, freqs)) as in Llama/Qwen,
    and sin with the rotate-half sign folded in: cat(-sin(freqs), sin(freqs))."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    freqs = torch.arange(max_len, dtype=torch.float)[:, None] * inv_freq[None, :]  # (max_len, hd/2)
    return torch.cat((freqs.cos(), freqs.cos()), -1), torch.cat((-freqs.sin(), freqs.sin()), -1)


def apply_rope(x, cos, sin):
    """Rotate-half RoPE, x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1) (HF Qwen3).
    Written as roll(x, hd/2) = cat(x2, x1) times the sign-folded sin of rope_tables: one kernel
    instead of split/neg/cat (several times faster per decode step on CPU, docs/BENCHMARKS.md),
    and bit-identical since negation is exact.
    x: (B, n_head, T, hd); cos/sin: (T, hd) or (B, 1, T, hd)."""
    return x * cos + torch.roll(x, x.size(-1) // 2, dims=-1) * sin


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        C, hd = config.n_embd, config.head_dim
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, hd
        self.q_proj = nn.Linear(C, config.n_head * hd, bias=False)
        self.k_proj = nn.Linear(C, config.n_kv_head * hd, bias=False)
        self.v_proj = nn.Linear(C, config.n_kv_head * hd, bias=False)
        self.o_proj = nn.Linear(config.n_head * hd, C, bias=False)
        self.q_norm = RMSNorm(hd, config.norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(hd, config.norm_eps) if config.qk_norm else nn.Identity()
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0):
        B, T, _ = x.size()
        # QK-norm acts per head, before RoPE (Qwen3): it bounds attention logits without touching positions
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_head, self.head_dim)).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim)).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nkv, L, hd): every key so far, this step's included
        # mask None: causal when T > 1 (training, prefill), all keys for one decode query; else bool, True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           scale=self.head_dim ** -0.5, enable_gqa=True)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.o_proj(y))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(config.ffn_hidden, config.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    """Sparse mixture of SwiGLU experts, Qwen3-MoE routing: softmax over experts, keep the top-k,
    renormalise their weights to sum 1. No capacity limit: every token reaches its k experts.
    Returns (y, aux) with aux the Switch load-balancing loss n_expert * sum_e f_e * P_e, whose
    minimum 1.0 is reached when routing is uniform."""

    def __init__(self, config):
        super().__init__()
        self.n_expert, self.top_k = config.n_expert, config.expert_top_k
        self.router = nn.Linear(config.n_embd, config.n_expert, bias=False)
        self.experts = nn.ModuleList([MLP(config) for _ in range(config.n_expert)])

    def forward(self, x):
        B, T, C = x.size()
        x = x.reshape(B * T, C)
        router_logits = self.router(x)  # (N, E)
        probs = F.softmax(router_logits, dim=-1, dtype=torch.float)
        top_w, top_i = probs.topk(self.top_k, dim=-1)  # (N, k)
        top_w = (top_w / top_w.sum(-1, keepdim=True)).to(router_logits.dtype)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(top_i == e)  # tokens routed to e, and in which of their k slots
            y.index_add_(0, tok, (expert(x[tok]) * top_w[tok, slot, None]).to(y.dtype))
        # f_e: fraction of the N*k token-slots sent to e (not differentiable); P_e: mean router prob
        f = F.one_hot(top_i, self.n_expert).sum((0, 1)).float() / top_i.numel()
        aux = self.n_expert * (f * probs.mean(0)).sum()
        return y.view(B, T, C), aux


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = RMSNorm(config.n_embd, config.norm_eps)
        self.is_moe = config.n_expert > 0
        self.mlp = MoE(config) if self.is_moe else MLP(config)

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), cos, sin, mask, cache, layer)
        if self.is_moe:
            h, aux = self.mlp(self.ln_2(x))
        else:
            h, aux = self.mlp(self.ln_2(x)), None
        return x + h, aux


# -----------------------------------------------------------------------------
# KV cache

class KVCache:
    """Preallocated keys/values for every layer, (B, n_kv_head, max_len, head_dim) in the model dtype.

    Slots are shared by the batch: a forward of T tokens writes slots [pos, pos + T) for every row.
    Rows of different lengths are left padded, so `key_mask` (B, max_len) says which slots hold real
    tokens and `next_pos` (B,) is each row's next RoPE position (its count of real tokens so far).
    While no pads have been written (`padded` False) every row sits at the same positions and decode
    needs no mask at all. Prefill a batch once, call `expand(n)` to give each row n copies, then
    decode one token a step.
    """

    def __init__(self, config, batch_size, max_len, device="cpu", dtype=torch.float32):
        if max_len > config.block_size:
            raise ValueError(f"KV cache max_len={max_len} exceeds block_size={config.block_size} — "
                             f"shorten the prompt or max_new_tokens")
        shape = (batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.key_mask = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.pos = 0  # slots filled so far (the same for every row)
        self.padded = False  # True once a forward brought pads: then every step needs the key mask
        self.max_len = max_len

    @property
    def batch_size(self):
        return self.key_mask.size(0)

    def update(self, layer, k, v):
        """Write this step's (B, nkv, T, hd) keys/values at slot `pos`; return all keys/values so far."""
        T = k.size(2)
        self.k[layer][:, :, self.pos:self.pos + T] = k
        self.v[layer][:, :, self.pos:self.pos + T] = v
        return self.k[layer][:, :, :self.pos + T], self.v[layer][:, :, :self.pos + T]

    def expand(self, num_samples):
        """Repeat every row num_samples times (row b → rows b*n .. b*n + n-1), e.g. after a prefill."""
        if num_samples == 1:
            return
        rep = lambda t: t.repeat_interleave(num_samples, dim=0)
        self.k, self.v = [rep(t) for t in self.k], [rep(t) for t in self.v]
        self.key_mask, self.next_pos = rep(self.key_mask), rep(self.next_pos)

    def select(self, rows):
        """Keep only these batch rows (a LongTensor of row indices, in order): finished rows leave a
        batched decode, so the steps after cost what the rows still decoding cost."""
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]
        self.key_mask, self.next_pos = self.key_mask.index_select(0, rows), self.next_pos.index_select(0, rows)

    def truncate(self, n):
        """Forget every slot from n on (speculative decoding rejecting drafts). Slots are written by
        position and read only up to `pos`, so moving the pointers back is the whole rollback: the
        stale keys past n are overwritten before they are read again. Unpadded caches only, where
        every row's next position is its slot."""
        if self.padded:
            raise ValueError("truncate needs a cache without pads (batch 1 or prompts of equal length)")
        if not 0 <= n <= self.pos:
            raise ValueError(f"cannot truncate a cache of {self.pos} slots to {n}")
        self.key_mask[:, n:self.pos] = False
        self.next_pos.fill_(n)
        self.pos = n


# -----------------------------------------------------------------------------
# sampling: pure functions of (B, vocab) logits

def filter_top_k(logits, k):
    """Keep exactly the k largest logits per row, the rest → -inf."""
    k = min(k, logits.size(-1))
    vals, idx = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, vals)


def filter_top_p(logits, p):
    """Nucleus filter: keep the smallest set of top tokens whose probability mass reaches p
    (the top token always survives), the rest → -inf."""
    sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
    probs = F.softmax(sorted_logits.float(), dim=-1)
    mass_before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, idx, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sampling_probs(logits, temperature, top_k=None, top_p=None):
    """(..., vocab) logits → the fp32 distribution sample_logits draws from (temperature > 0); speculative
    decoding (mathlm/infer/speculative.py) applies the same one to target and draft."""
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        logits = filter_top_k(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = filter_top_p(logits, top_p)
    return F.softmax(logits, dim=-1)


def sample_logits(logits, temperature=0.0, top_k=None, top_p=None, generator=None):
    """(B, vocab) logits → (B,) token ids. temperature 0 = greedy (argmax)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = sampling_probs(logits, temperature, top_k, top_p)
    return sample_probs(probs, generator)


def sample_probs(probs, generator=None):
    """(B, vocab) probabilities → (B,) ids drawn from them, by inverse CDF: one uniform u per row, the
    token whose CDF interval [cdf[i-1], cdf[i]) holds u * total (a zero-probability token's interval is
    empty, so it is never drawn). Exact like torch.multinomial, which took a quarter of a GRPO rollout's
    time on CPU: 11.0 ms a draw at 320 rows x 2,048 tokens against 0.3 ms for this (bench/bench_grpo_step)."""
    cdf = probs.cumsum(-1)
    total = cdf[..., -1:]
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=cdf.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u * total rounded up to total
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


# -----------------------------------------------------------------------------
# the model

class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=RMSNorm(config.n_embd, config.norm_eps),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one matrix embeds and unembeds
        cos, sin = rope_tables(config.head_dim, config.block_size, config.rope_theta)
        self.register_buffer("cos", cos, persistent=False)  # (block_size, hd); rebuilt, never saved
        self.register_buffer("sin", sin, persistent=False)

        self.apply(self._init_weights)
        # residual projections add into the stream 2 * n_layer times: scale them so its variance stays put (GPT-2)
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        print(f"number of parameters: {self.num_params() / 1e6:.2f}M")

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def decode_dtype(self, dtype):
        """Cast for decoding: the blocks' weights (and the RoPE tables, the KV cache) to `dtype`; the tied
        embedding and the final norm stay fp32, and the head is a RefinedHead: fp32 logits where they
        decide. bf16 logits step by 1/16 at |logit| ~ 10 and flip near-ties: greedy answers equal fp32's
        on 27/48 held-out prompts with everything bf16, 41/48 with an fp32 head (docs/BENCHMARKS.md)."""
        for block in self.transformer.h:
            block.to(dtype=dtype)
        self.cos, self.sin = self.cos.to(dtype), self.sin.to(dtype)  # the tables the blocks multiply by
        if dtype != torch.float32:
            self.lm_head = RefinedHead(self.transformer.wte.weight, dtype)
        return self

    def num_params(self):
        """Parameter count; the tied embedding/lm_head matrix counts once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, cache=None, attention_mask=None, last_only=False):
        """idx (B, T) token ids → (logits, loss, aux_loss).

        targets (B, T): next-token ids, -100 = ignore; loss is their mean cross-entropy (0 if none count).
        cache: a KVCache; idx continues from cache.pos and the cache advances by T.
        attention_mask (B, T): 1 = real token, 0 = left pad.
        last_only: logits for the last position only, (B, 1, vocab) — all that sampling needs.
        aux_loss: MoE load-balancing loss averaged over layers (0-d; 0 for a dense model).
        """
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens (cache {start} + input {T}) exceeds block_size="
                             f"{self.config.block_size} — truncate the input or build the model with a larger block_size")
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"KV cache full: {start} + {T} tokens > max_len={cache.max_len} — allocate a longer KVCache")

        if attention_mask is None and (cache is None or not cache.padded):
            # no pads anywhere: every row sits at positions start..start+T-1, one table slice serves all rows
            cos, sin = self.cos[start:start + T], self.sin[start:start + T]  # (T, hd)
            mask = None  # SDPA's causal mask (T > 1) is right when queries and keys start together ...
            if start > 0 and T > 1:  # ... but not for a chunk after cached keys: key j is visible to query i iff j <= start + i
                mask = torch.ones(T, start + T, dtype=torch.bool, device=idx.device).tril(start)
            if cache is not None:
                cache.key_mask[:, start:start + T] = True
                cache.next_pos += T
        else:
            real = (torch.ones(B, T, dtype=torch.bool, device=idx.device) if attention_mask is None
                    else attention_mask.to(torch.bool))
            if cache is not None:
                cache.padded = True  # from now on every step needs the key mask
                cache.key_mask[:, start:start + T] = real
                key_mask, pos0 = cache.key_mask[:, :start + T], cache.next_pos
            else:
                key_mask, pos0 = real, torch.zeros(B, dtype=torch.long, device=idx.device)
            # positions count real tokens only; pads (before a row's first token) get position 0
            pos = (pos0[:, None] + real.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
            cos, sin = self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1)  # (B, 1, T, hd)
            q_slot = torch.arange(start, start + T, device=idx.device)[:, None]  # (T, 1)
            k_slot = torch.arange(start + T, device=idx.device)[None, :]  # (1, L)
            # a pad query attends to itself too, so no row is all -inf (softmax NaN would leak via 0 * NaN)
            mask = ((k_slot <= q_slot) & key_mask[:, None, :]) | (k_slot == q_slot)  # (B, T, L)
            mask = mask.unsqueeze(1)  # (B, 1, T, L): the same for every head
            if cache is not None:
                cache.next_pos = cache.next_pos + real.sum(1)

        # .to(): decode_dtype keeps the tied embedding in fp32 and the blocks (and RoPE tables) in bf16
        x = self.transformer.drop(self.transformer.wte(idx).to(self.cos.dtype))  # (B, T, C)
        aux = []
        for i, block in enumerate(self.transformer.h):
            x, a = block(x, cos, sin, mask, cache, i)
            aux.append(a)
        x = self.transformer.ln_f(x.to(self.lm_head.weight.dtype))  # fp32 logits from bf16 blocks (decode_dtype)
        if cache is not None:
            cache.pos += T
        aux_loss = torch.stack(aux).mean() if self.config.n_expert > 0 else torch.zeros((), device=idx.device)

        if targets is not None:
            logits = self.lm_head(x)
            # sum / count rather than mean: a batch with every target ignored gives 0 (with a grad path), not NaN
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-100, reduction="sum")
            loss = loss / (targets != -100).sum().clamp(min=1)
        else:
            logits = self.lm_head(x[:, -1:, :] if last_only else x)  # left padding: the last column is real
            loss = None
        return logits, loss, aux_loss

    # -------------------------------------------------------------------------
    # training helpers

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; weight decay on matrices (embedding included), none on norms and other 1-D params."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        print(f"decayed tensors: {len(decay)} ({sum(p.numel() for p in decay):,} params) | "
              f"non-decayed tensors: {len(no_decay)} ({sum(p.numel() for p in no_decay):,} params)")
        fused = device_type == "cuda"
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops=None):
        """Model FLOPs utilisation, PaLM appendix B: 6N + 12*L*H*Q*T flops per token (fwd + bwd).
        tokens_per_iter: an int (T = block_size) or (batch, T). N counts only the experts a token uses."""
        cfg = self.config
        if isinstance(tokens_per_iter, (tuple, list)):
            batch, T = tokens_per_iter
            tokens = batch * T
        else:
            tokens, T = tokens_per_iter, cfg.block_size
        N = self.num_params()
        if cfg.n_expert > 0:  # a token runs top_k of n_expert experts
            expert = 3 * cfg.n_embd * cfg.ffn_hidden
            N -= cfg.n_layer * (cfg.n_expert - cfg.expert_top_k) * expert
        flops_per_token = 6 * N + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * T
        return flops_per_token * tokens / dt / (peak_flops or device_peak_flops())

    # -------------------------------------------------------------------------
    # generation

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=None,
                 eos_id=None, num_samples=1, tools=None, with_forced=False, drop_finished=True):
        """Yield the next token of every row, (B * num_samples,), once per step.

        prompts: list of token-id lists (lengths may differ; left padded here) or a LongTensor (B, T).
        Rows are ordered prompt 0 sample 0..n-1, prompt 1 sample 0..n-1, ... Each prompt is prefilled
        once, then its cache rows are copied num_samples times. A row that emitted eos_id keeps
        yielding eos_id; generation stops once all rows have, or when prompt + new tokens reach
        block_size. A seed makes sampling reproducible (its own torch.Generator; global RNG untouched).
        With eos_id (and drop_finished, the default), finished rows leave the batch once they are a
        quarter of it (their cache rows are dropped): a batch of answers of 30 to 224 tokens then
        decodes at the cost of its mean length, not its longest. Greedy output is unchanged by it; sampled rows draw from the same distribution,
        but a seed's stream is split over fewer rows after a drop, so the same seed gives other samples.

        tools: the calculator (mathlm/calculator.py), given a tokenizer with `calc_ids` (None there,
        or tools None: off). A row that emits <|result|> gets the result of its call and <|/result|>
        forced, one token per step, fed through the cache like sampled tokens; other rows keep sampling.
        Forced text counts against max_new_tokens / block_size like sampled text (a result that does
        not fit is cut with the row). with_forced: yield (tokens, forced) instead, forced (B * n,) bool
        True where the calculator, not the model, chose the token (GRPO leaves those out of the loss).
        """
        device = self.lm_head.weight.device
        if isinstance(prompts, torch.Tensor):
            idx = prompts.to(device)
            attention_mask = None
        else:
            if not prompts or min(len(p) for p in prompts) == 0:
                raise ValueError("generate needs at least one prompt and no empty prompt — start each with <|bos|>")
            T = max(len(p) for p in prompts)
            idx = torch.zeros(len(prompts), T, dtype=torch.long)
            attention_mask = torch.zeros(len(prompts), T, dtype=torch.long)
            for b, p in enumerate(prompts):
                idx[b, T - len(p):] = torch.tensor(p, dtype=torch.long)
                attention_mask[b, T - len(p):] = 1
            idx = idx.to(device)
            # equal lengths need no mask: decode then runs SDPA unmasked and slices the RoPE table
            attention_mask = attention_mask.to(device) if min(map(len, prompts)) < T else None
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"prompt of {T} tokens exceeds block_size={self.config.block_size} — truncate it")
        n_new = min(max_new_tokens, self.config.block_size - T)
        if n_new <= 0:
            return
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)

        # the last sampled token is never fed back, so the cache needs T + n_new - 1 slots
        cache = KVCache(self.config, B, T + n_new - 1, device=device, dtype=self.cos.dtype)  # the blocks' dtype
        logits, _, _ = self(idx, cache=cache, attention_mask=attention_mask, last_only=True)
        logits = logits[:, -1, :]  # (B, vocab)
        if num_samples > 1:
            cache.expand(num_samples)
            logits = logits.repeat_interleave(num_samples, dim=0)
        done = torch.zeros(B * num_samples, dtype=torch.bool, device=device)
        calls = None
        if tools is not None and getattr(tools, "calc_ids", None) is not None:
            from mathlm.calculator import CallTracker
            calls = CallTracker(tools, [list(p) for p in (prompts.tolist() if isinstance(prompts, torch.Tensor)
                                                          else prompts) for _ in range(num_samples)])
        forced = torch.zeros(B * num_samples, dtype=torch.bool, device=device)
        alive = None  # the rows still in the batch (cache rows and logits), None = all of them
        for step in range(n_new):
            tok = sample_logits(logits, temperature, top_k, top_p, generator)  # one per row in the batch
            if alive is not None:  # rows that left the batch are done: they yield eos
                tok = torch.full((B * num_samples,), eos_id, dtype=torch.long, device=device).index_copy(0, alive, tok)
            if calls is not None:  # one host sync a step: the calculator reads the chosen tokens
                toks, forced = calls.step(tok.tolist(), done.tolist())
                tok = torch.tensor(toks, dtype=torch.long, device=device)
                forced = torch.tensor(forced, dtype=torch.bool, device=device)
            if eos_id is not None:
                tok = tok.masked_fill(done, eos_id)
                done = done | (tok == eos_id)
            yield (tok, forced) if with_forced else tok
            if step == n_new - 1 or (eos_id is not None and bool(done.all())):
                return
            if eos_id is not None and drop_finished:
                live = ~done if alive is None else ~done.index_select(0, alive)  # over the rows in the batch
                if int(live.sum()) <= 0.75 * live.numel():  # a quarter of the batch finished: drop those rows
                    keep = live.nonzero().squeeze(1)
                    cache.select(keep)
                    alive = keep if alive is None else alive.index_select(0, keep)
            fed = tok if alive is None else tok.index_select(0, alive)
            logits, _, _ = self(fed[:, None], cache=cache, last_only=True)
            logits = logits[:, -1, :]

    def generate_ids(self, prompts, max_new_tokens, **kwargs):
        """generate() collected: the new tokens of every row as a list, cut before eos."""
        steps = list(self.generate(prompts, max_new_tokens, **{**kwargs, "with_forced": False}))
        if not steps:
            n = (len(prompts) if not isinstance(prompts, torch.Tensor) else prompts.size(0))
            return [[] for _ in range(n * kwargs.get("num_samples", 1))]
        rows = torch.stack(steps, dim=1).tolist()  # (B * num_samples, steps)
        eos_id = kwargs.get("eos_id")
        if eos_id is not None:
            rows = [r[:r.index(eos_id)] if eos_id in r else r for r in rows]
        return rows


class RefinedHead(nn.Module):
    """The tied head for GPT.decode_dtype: every logit from a `dtype` copy of the matrix (half the bytes
    an fp32 head reads per token: at 40M the fp32 head alone cost most of bf16's gain), then the top
    `refine` recomputed from the fp32 rows. Greedy picks and the head of a sampled distribution are
    the fp32 head's; the tail keeps bf16's precision (~3 significant digits)."""

    def __init__(self, weight, dtype, refine=64):
        super().__init__()
        self.weight = weight  # the fp32 tied Parameter (wte's): the exact rows, and .device/.dtype as before
        self.register_buffer("low", weight.detach().to(dtype), persistent=False)
        self.refine = refine

    def forward(self, x):
        # contiguous: a strided (B, 1, C) slice (the prefill's last position) sends a bf16 F.linear to
        # bmm with a copy of the whole matrix, 90 ms at 40M (measured), instead of one mm
        logits = F.linear(x.contiguous().to(self.low.dtype), self.low).float()
        top = logits.topk(min(self.refine, logits.size(-1)), dim=-1).indices  # (..., m)
        exact = torch.einsum("...c,...mc->...m", x.float(), self.weight[top])
        return logits.scatter(-1, top, exact)


def device_peak_flops():
    """Dense bf16 peak of the current CUDA GPU (from its name); A100's 312 TFLOPS when unknown."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    for key, flops in (("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L40", 181e12),
                       ("4090", 165e12), ("A10", 125e12)):
        if key in name:
            return flops
    return 312e12
