"""Our GPT against transformers' Qwen3ForCausalLM of the same shape and the same weights, in one process.

    python -m bench.bench_model            # default 40M config + tiny config, fp32 CPU, 2 threads (~10 min loaded)
    python -m bench.bench_model --quick    # tiny config only

Measures (1) training-step tokens/s: forward + backward + AdamW step, and (2) greedy KV-cache
decode tokens/s: our generate() against Qwen3's generate(use_cache=True), at batch 1 and 16, same
prompt length and new tokens. Qwen3 gets our weights (the names map 1:1), the script checks the
logits agree, and the two decoders must emit the same greedy tokens. Runs are interleaved
(ours, Qwen3, ours, ...) and the median ratio is reported, which cancels most drift from other
load on the machine. Reads and writes nothing; prints a markdown table for docs/BENCHMARKS.md.
"""
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from mathlm.common import parse_config
from mathlm.model.gpt import GPT, GPTConfig


@dataclass
class Config:
    quick: bool = False         # tiny config only, fewer rounds
    threads: int = 2            # torch.set_num_threads: the 2-core development machine
    rounds: int = 3             # interleaved ours/Qwen3 timings; the median ratio is reported
    train_iters: int = 2        # timed training steps per round (after one warmup step)
    prompt_len: int = 32
    new_tokens: int = 32
    seed: int = 0


SHAPES = {  # name: (GPTConfig kwargs, training batch, training T)
    "default": (dict(), 4, 256),
    "tiny": (dict(vocab_size=8192, block_size=256, n_layer=4, n_embd=256, n_head=4, n_kv_head=2,
                  ffn_hidden=704), 8, 128),
}


# -----------------------------------------------------------------------------
# the baseline: the same network as transformers' Qwen3, carrying our weights

def qwen3_like(model):
    import transformers
    from transformers import Qwen3Config, Qwen3ForCausalLM
    transformers.logging.set_verbosity_error()
    c = model.config
    hc = Qwen3Config(vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.ffn_hidden,
                     num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head,
                     head_dim=c.head_dim, rope_theta=c.rope_theta, tie_word_embeddings=True,
                     rms_norm_eps=c.norm_eps, max_position_embeddings=c.block_size, attn_implementation="sdpa")
    hf = Qwen3ForCausalLM(hc)
    rename = [("transformer.wte", "model.embed_tokens"), ("transformer.h.", "model.layers."),
              (".ln_1", ".input_layernorm"), (".ln_2", ".post_attention_layernorm"), (".attn.", ".self_attn."),
              ("transformer.ln_f", "model.norm")]
    sd = {}
    for k, v in model.state_dict().items():
        for a, b in rename:
            k = k.replace(a, b)
        sd[k] = v.clone()
    hf.load_state_dict(sd, strict=False)  # lm_head.weight is tied to embed_tokens
    hf.tie_weights()
    hf.generation_config.eos_token_id = None  # decode exactly new_tokens, like ours
    hf.generation_config.pad_token_id = 0
    return hf


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns, rounds):
    """Time each fn once per round, in turn; returns a list of times per fn."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            times[i].append(timed(fn))
    return times


def ratio(base_times, our_times):
    """Per-round (baseline time / our time) as 'median (min-max)': > 1 means ours is faster."""
    r = [b / o for b, o in zip(base_times, our_times)]
    return f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"


# -----------------------------------------------------------------------------
# the two measurements

def bench_train(ours, hf, B, T, iters, rounds):
    V = ours.config.vocab_size
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (B, T + 1), generator=g)
    ours.train(), hf.train()
    opt_ours = ours.configure_optimizers(0.1, 3e-4, (0.9, 0.95), "cpu")
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step_ours():
        for _ in range(iters):
            _, loss, _ = ours(x[:, :-1], x[:, 1:])
            loss.backward()
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)

    def step_hf():
        for _ in range(iters):
            loss = hf(input_ids=x[:, :-1], labels=x[:, :-1]).loss  # HF shifts labels inside: same T-1 targets
            loss.backward()
            opt_hf.step()
            opt_hf.zero_grad(set_to_none=True)

    for fn in (step_ours, step_hf):  # warmup: allocator, optimizer state
        fn()
    t_ours, t_hf = interleaved([step_ours, step_hf], rounds)
    tok = B * T * iters
    ours.eval(), hf.eval()
    return tok / statistics.median(t_ours), tok / statistics.median(t_hf), ratio(t_hf, t_ours)


@torch.no_grad()
def bench_decode(ours, hf, B, prompt_len, new_tokens, rounds):
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, ours.config.vocab_size, (B, prompt_len), generator=g)
    out = {}

    def dec_ours():
        out["ours"] = ours.generate_ids(prompt, new_tokens)

    def dec_hf():
        ids = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, use_cache=True)
        out["hf"] = ids[:, prompt_len:].tolist()

    for fn in (dec_ours, dec_hf):
        fn()
    same = sum(a == b for a, b in zip(out["ours"], out["hf"]))
    t_ours, t_hf = interleaved([dec_ours, dec_hf], rounds)
    tok = B * new_tokens
    return tok / statistics.median(t_ours), tok / statistics.median(t_hf), ratio(t_hf, t_ours), same


# -----------------------------------------------------------------------------

def main(argv=None):
    cfg = parse_config(Config, None, argv)
    torch.set_num_threads(cfg.threads)
    print(f"torch {torch.__version__} | {platform.processor() or platform.machine()} | threads {cfg.threads} | "
          f"load avg {os.getloadavg()[0]:.1f} | fp32")
    rows = []
    for name in (["tiny"] if cfg.quick else ["tiny", "default"]):
        kw, B, T = SHAPES[name]
        torch.manual_seed(cfg.seed)
        ours = GPT(GPTConfig(**kw)).eval()
        hf = qwen3_like(ours).eval()
        x = torch.randint(0, ours.config.vocab_size, (2, 64))
        with torch.no_grad():
            diff = (ours(x)[0] - hf(x).logits).abs().max().item()
        print(f"{name}: max |logit difference| vs Qwen3 with the same weights: {diff:.1e}")
        assert diff < 1e-3, "the baseline does not compute the same function; the comparison would be meaningless"

        # decode first: training moves the weights apart (each model has its own optimizer)
        for b in (1, 16):
            o, h, r, same = bench_decode(ours, hf, b, cfg.prompt_len, cfg.new_tokens, cfg.rounds)
            rows.append((name, f"decode B={b}, {cfg.prompt_len}+{cfg.new_tokens} tokens", o, h, r,
                         f"{same}/{b} rows identical"))
            print(rows[-1])
        o, h, r = bench_train(ours, hf, B, T, cfg.train_iters, cfg.rounds)
        rows.append((name, f"train step B={B}, T={T}", o, h, r, ""))
        print(rows[-1])

    print(f"load avg after: {os.getloadavg()[0]:.1f}\n")
    print("| config | measurement | ours tok/s | Qwen3 tok/s | ratio, median (range) | greedy tokens |")
    print("|---|---|---:|---:|---:|---|")
    for name, what, o, h, r, note in rows:
        print(f"| {name} | {what} | {o:,.1f} | {h:,.1f} | {r} | {note} |")


if __name__ == "__main__":
    main()
