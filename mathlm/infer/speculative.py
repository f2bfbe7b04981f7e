"""Faster batch-1 decoding for mathlm's GPT: exact speculative decoding, and a static-shape decode
step for torch.compile (CUDA graphs).

    from mathlm.infer.speculative import Decoder, Lookup, DraftModel
    dec = Decoder("lookup", k=4)                          # or Decoder("draft", draft_model=small_gpt)
    for tok in dec.generate(model, [ids], 128, temperature=0.7, seed=0, eos_id=eos): ...
    dec.stats                                             # drafted / accepted / rounds, acceptance rate
    Decoder("lookup", compile=True)                       # the same through a compiled static-shape step

`Decoder.generate` takes GPT.generate's arguments and yields the same (B,) tensors, so callers swap
one for the other; batch > 1 or num_samples > 1 falls back to GPT.generate. Calculator calls
(tools=tok) work as in GPT.generate: a call's result is forced after <|result|>, never drafted.

Speculative decoding (Leviathan et al. 2023, Algorithm 1). A drafter proposes k tokens with
probabilities q; the target scores [last token, d_1 .. d_k] in ONE forward on its KV cache, which
gives p at every draft position plus one more. Draft d_i is accepted with probability
min(1, p(d_i) / q(d_i)); at the first rejection a token is drawn from norm(max(0, p - q)) and the
round ends; if all k are accepted a bonus token is drawn from p after d_k. Every emitted token is
then distributed exactly as the target's own sampler would draw it, whatever q is. p and q are the
same temperature / top-k / top-p distribution sample_logits draws from (gpt.sampling_probs), so the
output matches plain sampling with those settings. Greedy (temperature 0) is the limit: accept
while the draft equals the target's argmax, then emit the argmax.
Drafters:
  - Lookup: prompt lookup. The longest n-gram (n <= max_ngram) ending the text so far that occurred
    before (its latest occurrence with k tokens after it); its continuation is the draft. q is
    one-hot (deterministic), so d is accepted with probability p(d) and a rejection draws from p
    with d removed. Costs no model.
  - DraftModel: a smaller GPT on the same tokenizer, with its own KV cache kept in step.
The target's cache holds every token but the newest (and a forced calculator result, which goes in
with the next drafts); a rejection truncates it (KVCache.truncate: slots are written by position,
so moving the pointer back is the rollback).

Compiled decode: GPT.forward slices its KV cache to the tokens so far, a new shape every step,
which torch.compile would recompile or guard on. `static_step` runs the same blocks on the whole
preallocated cache with a mask of the filled slots and a position tensor: one shape for every step
(T = 1 plain; k + 1, padded, for a verify round), so `torch.compile(mode="reduce-overhead")` can
capture it in a CUDA graph. On this CPU it removes the per-op Python of a small model's step.
"""
from dataclasses import dataclass

import torch

from mathlm.model.gpt import KVCache, sampling_probs


# -----------------------------------------------------------------------------
# drafters: draft(seq, k, ...) -> (tokens, q) with q (len, vocab) fp32 probabilities or None (one-hot)

class Lookup:
    """Prompt-lookup drafts: the continuation of the longest n-gram (max_ngram down to 1) that ends
    the sequence and occurred before: its most recent occurrence with k tokens after it, else its
    earliest (the longest continuation; in "a a a a" the latest match has one token after it).
    Indexed incrementally: the sequence only grows within one generation."""

    def __init__(self, max_ngram=3):
        self.max_ngram = max_ngram
        self.reset()

    def reset(self, seq=None):
        self.starts = [dict() for _ in range(self.max_ngram + 1)]  # n -> {n-gram: its starts with a next token, in order}
        self.indexed = 0  # tokens of the sequence whose preceding n-grams are indexed
        self.seq = seq  # the list being extended (speculative_generate appends to one list)

    def draft(self, seq, k, *sampler):
        if seq is not self.seq or self.indexed > len(seq):
            self.reset(seq)
        for m in range(max(self.indexed, 1), len(seq)):  # seq[m] now continues the n-grams ending at m - 1
            for n in range(1, min(self.max_ngram, m) + 1):
                self.starts[n].setdefault(tuple(seq[m - n:m]), []).append(m - n)
        self.indexed = len(seq)
        for n in range(min(self.max_ngram, len(seq) - 1), 0, -1):
            starts = self.starts[n].get(tuple(seq[-n:]))
            if starts:
                full = next((i for i in reversed(starts) if i + n + k <= len(seq)), starts[0])
                return seq[full + n:full + n + k], None
        return [], None


class DraftModel:
    """Drafts from a smaller GPT (same tokenizer), sampling with the target's settings. Its KV cache
    keeps the longest prefix it shares with the sequence, so each round feeds only what is new.
    step: static_step or its compiled form for its one- and two-token forwards (the drafting loop)."""

    def __init__(self, model, step=None):
        self.model, self.step = model, step
        self.cache, self.static, self.tokens = None, None, []

    @torch.no_grad()
    def draft(self, seq, k, temperature, top_k, top_p, generator):
        m, block = self.model, self.model.config.block_size
        k = min(k, block - len(seq))  # the draft's context ends before the target's may
        if k <= 0:
            return [], None
        if self.cache is None:
            self.cache = KVCache(m.config, 1, block, device=m.lm_head.weight.device, dtype=m.cos.dtype)
            self.static = StaticCache(self.cache) if self.step else None
        same = 0
        for a, b in zip(self.tokens, seq):
            if a != b:
                break
            same += 1
        same = min(same, len(seq) - 1)  # at least the newest token is fed: its logits are the first draft's
        self.cache.truncate(same)
        # 2 slots: after a round that accepted every draft, the last draft and the bonus token are new
        logits = _run(m, seq[same:], self.cache, self.static, self.step, 2, last_only=True)[-1]
        self.tokens = list(seq)
        out, qs = [], []
        for i in range(k):
            if temperature == 0.0:
                t = int(logits.argmax())
            else:
                q = sampling_probs(logits, temperature, top_k, top_p)
                t = int(torch.multinomial(q, 1, generator=generator))
                qs.append(q)
            out.append(t)
            if i < k - 1:
                logits = _run(m, [t], self.cache, self.static, self.step, 1)[-1]
                self.tokens.append(t)
        return out, (torch.stack(qs) if qs else None)


@dataclass
class SpecStats:
    """Counts over every speculative round since the last reset."""
    rounds: int = 0     # target forwards after the prefill (one per round)
    drafted: int = 0    # draft tokens proposed
    accepted: int = 0   # draft tokens accepted
    emitted: int = 0    # tokens yielded (accepted + one per round, less any cut by eos / the budget)

    @property
    def acceptance(self):
        """Share of the drafted tokens the target accepted."""
        return self.accepted / max(self.drafted, 1)

    @property
    def mean_accepted(self):
        """Draft tokens accepted per target forward (each forward also yields one token of its own)."""
        return self.accepted / max(self.rounds, 1)


# -----------------------------------------------------------------------------
# speculative decoding, batch 1

def _run(model, toks, cache, static=None, step=None, width=0, last_only=False):
    """Logits (len(toks), vocab) of `toks` fed after the cache's tokens, the cache advanced by them:
    through `step` on `static` when they fit `width` slots, padded (one compiled shape), else
    GPT.forward. The pad tokens' keys land past what is kept, are never attended by the real tokens
    (causal mask) and are overwritten before anything reads them."""
    device = model.lm_head.weight.device
    pos, n = cache.pos, len(toks)
    if step is not None and n <= width and pos + width <= cache.max_len:
        logits = step(model, torch.tensor([toks + [0] * (width - n)], device=device),
                      torch.arange(pos, pos + width, device=device), static)[0, :n]
        cache.key_mask[:, pos:pos + n] = True  # what GPT.forward's bookkeeping would have done
        cache.next_pos += n
        cache.pos += n
        return logits
    return model(torch.tensor([toks], device=device), cache=cache, last_only=last_only)[0][0]


def _verify(p_logits, drafts, q, temperature, top_k, top_p, generator):
    """(number of drafts accepted, the token that ends the round). p_logits (len(drafts) + 1, vocab):
    the target's logits after the newest token and after each draft."""
    if temperature == 0.0:
        best = p_logits.argmax(-1).tolist()
        j = 0
        while j < len(drafts) and drafts[j] == best[j]:
            j += 1
        return j, best[j]
    p = sampling_probs(p_logits, temperature, top_k, top_p)  # (len + 1, vocab)
    for j, d in enumerate(drafts):
        qd = 1.0 if q is None else float(q[j, d])  # > 0: d was drawn from q
        u = float(torch.rand((), generator=generator, device=p.device))
        if u * qd < float(p[j, d]):  # u < p(d) / q(d): accept
            continue
        if q is None:  # q one-hot at d: max(0, p - q) is p with d removed
            resid = p[j].clone()
            resid[d] = 0.0
        else:
            resid = (p[j] - q[j]).clamp_min(0.0)
        if float(resid.sum()) <= 0.0:  # p == q up to rounding: then any draw from p is exact
            resid = p[j]
        return j, int(torch.multinomial(resid, 1, generator=generator))
    return len(drafts), int(torch.multinomial(p[-1], 1, generator=generator))


def _budget(model, T, max_new_tokens, seed):
    """As GPT.generate: (new tokens after a T-token prompt, stopping at block_size; the seeded generator or None)."""
    device = model.lm_head.weight.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    return min(max_new_tokens, model.config.block_size - T), generator


@torch.no_grad()
def speculative_generate(model, ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=None,
                         eos_id=None, tools=None, drafter=None, k=4, stats=None, step=None):
    """GPT.generate for one prompt (a list of ids) with drafts verified k at a time; yields (1,)
    tensors, one per token, stopping where GPT.generate stops (eos, max_new_tokens, block_size).
    tools: as GPT.generate's (a tokenizer with calc_ids runs the calculator): after <|result|> the
    call's result and <|/result|> are emitted as they are, not drafted or sampled, and reach the
    cache with the next round's drafts. step: static_step or its compiled form, for every round
    whose tokens fit k + 1 slots (padded to that, one shape); the others run GPT.forward."""
    cfg = model.config
    device = model.lm_head.weight.device
    if not ids:
        raise ValueError("generate needs a non-empty prompt — start it with <|bos|>")
    if len(ids) > cfg.block_size:
        raise ValueError(f"prompt of {len(ids)} tokens exceeds block_size={cfg.block_size} — truncate it")
    n_new, generator = _budget(model, len(ids), max_new_tokens, seed)
    if n_new <= 0:
        return
    drafter = drafter if drafter is not None else Lookup()
    stats = stats if stats is not None else SpecStats()
    calls = None
    if tools is not None and getattr(tools, "calc_ids", None) is not None:
        from mathlm.calculator import CallTracker
        calls = CallTracker(tools, [list(ids)])
    seq = list(ids)
    # the cache holds seq[:cache.pos], at least the newest token short: the rest goes in with the next drafts
    # a static step attends over the whole cache: one size for every prompt, so one compiled graph
    cache = KVCache(cfg, 1, cfg.block_size if step else len(ids) + n_new - 1, device=device, dtype=model.cos.dtype)
    static, width = (StaticCache(cache), k + 1) if step else (None, 0)
    if len(seq) > 1:
        model(torch.tensor([seq[:-1]], device=device), cache=cache, last_only=True)
    done = 0
    while done < n_new:
        if calls is not None and calls.pending[0]:  # a finished call: its result is forced, not sampled
            forced, calls.pending[0] = calls.pending[0][:n_new - done], []
            for t in forced:
                seq.append(t)
                done += 1
                stats.emitted += 1
                yield torch.tensor([t], device=device)
            continue
        # a round yields at most len(drafts) + 1 tokens: never more than the budget left
        drafts, q = drafter.draft(seq, min(k, n_new - done - 1), temperature, top_k, top_p, generator)
        drafts = drafts[:max(0, n_new - done - 1)]
        if calls is not None and calls.result in drafts:  # what follows <|result|> is forced, never drafted
            drafts = drafts[:drafts.index(calls.result) + 1]
        q = q[:len(drafts)] if q is not None else None
        fed = seq[cache.pos:] + drafts
        # a lone token (no draft this round) takes the 1-slot graph: padding it to k + 1 would cost a verify
        logits = _run(model, fed, cache, static, step, 1 if len(fed) == 1 else width)[-len(drafts) - 1:]  # (1 + len, vocab)
        j, nxt = _verify(logits, drafts, q, temperature, top_k, top_p, generator)
        cache.truncate(len(seq) + j)  # keep the sequence and the accepted drafts
        stats.rounds += 1
        stats.drafted += len(drafts)
        stats.accepted += j
        out = drafts[:j]
        if calls is None or not out or out[-1] != calls.result:  # after an accepted <|result|>, the result comes
            out.append(nxt)
        for t in out:
            seq.append(t)
            done += 1
            stats.emitted += 1
            if calls is not None:
                calls.advance(0, t)
            yield torch.tensor([t], device=device)
            if t == eos_id:
                return


# -----------------------------------------------------------------------------
# a static-shape decode step for torch.compile

class StaticCache:
    """KVCache's update() for the static step: writes this step's keys at `slot` (a (T,) tensor) in
    place and returns the whole preallocated buffers; the mask hides the slots not yet written."""

    def __init__(self, cache):
        self.k, self.v = cache.k, cache.v
        self.slot = None
        for t in self.k + self.v:  # written in place every step: CUDA graphs must keep their addresses, not
            torch._dynamo.mark_static_address(t)  # skip the graph for mutated inputs (as transformers' StaticCache)

    def update(self, layer, k, v):
        self.k[layer].index_copy_(2, self.slot, k)
        self.v[layer].index_copy_(2, self.slot, v)
        return self.k[layer], self.v[layer]


def static_step(model, tok, slot, cache):
    """Logits (B, T, vocab) in fp32 after tokens tok (B, T) at positions `slot` ((T,) long tensor),
    writing their keys into `cache` (a StaticCache) in place. Every shape is fixed by T and the cache
    size, so a compiled version runs every step without recompiling. Dense GPTs without pads only."""
    cache.slot = slot
    L = cache.k[0].size(2)
    # query i sees the slots up to its own: the ones filled before and this call's earlier tokens
    mask = (torch.arange(L, device=tok.device)[None, :] <= slot[:, None]).view(1, 1, -1, L)
    cos, sin = model.cos.index_select(0, slot), model.sin.index_select(0, slot)  # (T, hd)
    x = model.transformer.wte(tok).to(model.cos.dtype)  # as GPT.forward: blocks in their dtype, logits in lm_head's
    for i, block in enumerate(model.transformer.h):
        x, _ = block(x, cos, sin, mask, cache, i)
    return model.lm_head(model.transformer.ln_f(x.to(model.lm_head.weight.dtype))).float()


@torch.no_grad()
def static_generate(model, prompts, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=None,
                    eos_id=None, step=static_step):
    """GPT.generate (prompts of equal length, num_samples 1) with every decode step through `step`:
    static_step or its compiled form. The cache is block_size long, so one compiled graph serves
    every prompt length."""
    from mathlm.model.gpt import sample_logits
    device = model.lm_head.weight.device
    idx = prompts.to(device) if isinstance(prompts, torch.Tensor) else torch.tensor(prompts, device=device)
    B, T = idx.size()
    n_new, generator = _budget(model, T, max_new_tokens, seed)
    if n_new <= 0:
        return
    cache = KVCache(model.config, B, model.config.block_size, device=device, dtype=model.cos.dtype)
    logits = model(idx, cache=cache, last_only=True)[0][:, -1].float()
    static = StaticCache(cache)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for i in range(n_new):
        tok = sample_logits(logits, temperature, top_k, top_p, generator)
        if eos_id is not None:
            tok = tok.masked_fill(done, eos_id)
            done = done | (tok == eos_id)
        yield tok
        if i == n_new - 1 or (eos_id is not None and bool(done.all())):
            return
        # a fresh tensor per step: CUDA graphs copy inputs into their static buffers
        logits = step(model, tok[:, None], torch.tensor([T + i], device=device), static)[:, -1]


def compiled_step(mode=None, backend="inductor"):
    """static_step under torch.compile; mode None = "reduce-overhead" (CUDA graphs) on CUDA."""
    mode = mode or ("reduce-overhead" if torch.cuda.is_available() else None)
    return torch.compile(static_step, mode=mode, backend=backend, fullgraph=True)


# -----------------------------------------------------------------------------
# the choice callers make once

SPECULATE = ("off", "lookup", "draft")
# drafted tokens a round when k is 0 (auto), from bench_infer on a trained 8 x 512 target (docs/BENCHMARKS.md):
# a 2M draft model's drafts cost little each, so longer rounds pay (compiled, fp32: 1.86x generate() at
# k = 4, 2.11x at 6, 2.17x at 8); prompt lookup's are accepted less the longer they are (22% at 4, 12% at 8)
AUTO_K = {"off": 4, "lookup": 4, "draft": 8}


class Decoder:
    """How batch-1 decoding runs: speculate off|lookup|draft (k drafts a round, 0 = AUTO_K's; draft_model for
    "draft"); compile=True runs the target's steps (plain, or speculation's verify rounds) through the
    compiled static-shape step. `generate` takes
    GPT.generate's arguments; batch > 1, num_samples > 1 and with_forced go to GPT.generate unchanged
    (the compiled step also leaves calculator calls to it)."""

    def __init__(self, speculate="off", k=0, draft_model=None, compile=False, max_ngram=3):
        if speculate not in SPECULATE:
            raise ValueError(f"speculate={speculate!r}: use one of {'|'.join(SPECULATE)}")
        if speculate == "draft" and draft_model is None:
            raise ValueError("speculate=draft needs a draft model — pass --draft_checkpoint")
        if k < 0:
            raise ValueError(f"k={k}: speculative decoding drafts at least 1 token a round (0 = auto)")
        self.speculate, self.k, self.draft_model = speculate, k or AUTO_K[speculate], draft_model
        self.max_ngram = max_ngram
        self.step = compiled_step() if compile else None
        self.stats = SpecStats()

    def __repr__(self):
        return (f"Decoder(speculate={self.speculate}, k={self.k}" + (", compiled" if self.step else "") + ")")

    def generate(self, model, prompts, max_new_tokens, num_samples=1, tools=None, with_forced=False, **kw):
        one = (len(prompts) == 1 if not isinstance(prompts, torch.Tensor) else prompts.size(0) == 1)
        if with_forced or not one or num_samples > 1:  # batches, samples, forced flags: GPT.generate's own loop
            return model.generate(prompts, max_new_tokens, num_samples=num_samples, tools=tools,
                                  with_forced=with_forced, **kw)
        dense = model.config.n_expert == 0  # MoE routing has data-dependent shapes: eager only
        if self.speculate != "off":
            if self.draft_model is not None and self.draft_model.config.vocab_size != model.config.vocab_size:
                raise ValueError("the draft model's vocabulary differs from the model's — draft with a model "
                                 "trained on the same tokenizer")
            draft_step = self.step if self.draft_model is not None and self.draft_model.config.n_expert == 0 else None
            drafter = Lookup(self.max_ngram) if self.speculate == "lookup" else DraftModel(self.draft_model, draft_step)
            ids = prompts[0].tolist() if isinstance(prompts, torch.Tensor) else list(prompts[0])
            return speculative_generate(model, ids, max_new_tokens, tools=tools, drafter=drafter, k=self.k,
                                        stats=self.stats, step=self.step if dense else None, **kw)
        if self.step is not None and dense and getattr(tools, "calc_ids", None) is None:
            return static_generate(model, prompts, max_new_tokens, step=self.step, **kw)
        return model.generate(prompts, max_new_tokens, tools=tools, **kw)
