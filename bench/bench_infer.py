"""Inference speed: mathlm's decoder against transformers' generate() on the exported folder of the
same model, in one process.

    python -m bench.bench_infer                 # default 40M shape, fp32 CPU (a few minutes on 2 cores)
    python -m bench.bench_infer --quick         # a 4 x 256 model, fewer rounds (about a minute)
    python -m bench.bench_infer --device cuda   # the same on a GPU (fp32)

A random-init GPT of the shape is exported with mathlm/infer/export.py to a temp folder, and
AutoModelForCausalLM.from_pretrained(folder) loads it (Qwen3ForCausalLM, sdpa attention,
DynamicCache: the out-of-the-box path). Both decode greedily with eos off and must emit the
same tokens. Measured, per engine:
  - decode tokens/s at batch 1 and 16: B * (N - 1) / (T(N new tokens) - T(1 new token)), so the
    prefill and the first token are not counted; prompts of --prompt_len random tokens;
  - time to first token (TTFT) for a --ttft_prompt-token prompt at batch 1: T(1 new token).
Runs are interleaved (ours, transformers, ours, ...) over --rounds; the table gives the median of
each engine and the median of the per-round ratios, which cancels most drift from other load. Reads and writes nothing but the temp folder;
prints a markdown table for docs/BENCHMARKS.md.
"""
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from mathlm.common import parse_config, pick_device
from mathlm.model.gpt import GPT, GPTConfig


@dataclass
class Config:
    """Decode tokens/s and time to first token: mathlm vs transformers generate()."""
    quick: bool = False      # the small shape instead of the default 40M one
    threads: int = 2         # torch.set_num_threads: the 2-core development machine (0 = torch default)
    rounds: int = 5          # interleaved timings; medians reported
    prompt_len: int = 32     # for the decode rate
    new_tokens: int = 64
    ttft_prompt: int = 256
    device: str = "cpu"      # cpu|cuda|auto; fp32 everywhere
    seed: int = 0


PRESETS = {"quick": dict(quick=True, rounds=3)}
SMALL = dict(vocab_size=8192, block_size=512, n_layer=4, n_embd=256, n_head=4, n_kv_head=2, ffn_hidden=704)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ours_fn(model):
    def run(idx, n):
        toks = list(model.generate(idx, n))  # a (B, T) tensor: no padding, every row the same length
        return torch.stack(toks, 1)
    return run


def hf_fn(hf):
    def run(idx, n):
        with torch.no_grad():
            out = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[:, idx.size(1):]
    return run


def timed(fn, idx, n, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn(idx, n)
    sync(device)
    return time.perf_counter() - t0, out


def main(argv=None):
    import transformers
    from transformers import AutoModelForCausalLM

    from mathlm.infer.export import hf_config, to_hf_state_dict
    from safetensors.torch import save_file
    import json
    cfg = parse_config(Config, PRESETS, argv)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(cfg.seed)
    mc = GPTConfig(**(SMALL if cfg.quick else {}))
    model = GPT(mc).eval().to(device)

    with tempfile.TemporaryDirectory() as d:  # the exported folder, as scripts/upload_hf.py writes it
        save_file(to_hf_state_dict(model.state_dict()), os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_config(asdict(mc)), f)
        hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval().to(device)
    engines = {"mathlm": ours_fn(model), "transformers": hf_fn(hf)}

    g = torch.Generator().manual_seed(cfg.seed)
    prompts = {B: torch.randint(0, mc.vocab_size, (B, cfg.prompt_len), generator=g).to(device) for B in (1, 16)}
    long_prompt = torch.randint(0, mc.vocab_size, (1, cfg.ttft_prompt), generator=g).to(device)
    with torch.no_grad():  # same weights, same network: the logits must agree before timing means anything
        diff = (model(long_prompt)[0] - hf(long_prompt).logits).abs().max().item()
    assert diff < 1e-3, f"logits differ by {diff}"

    # warm up both, and check they decode the same greedy tokens
    outs = {k: fn(prompts[16], cfg.new_tokens) for k, fn in engines.items()}
    for k, fn in engines.items():
        fn(long_prompt, 1)
    same = torch.equal(outs["mathlm"].cpu(), outs["transformers"].cpu())
    assert outs["mathlm"].shape == outs["transformers"].shape == (16, cfg.new_tokens)

    times = {(k, what): [] for k in engines for what in ("b1", "b16", "ttft")}
    for r in range(cfg.rounds):
        for k, fn in engines.items():
            for B in (1, 16):
                t_n, _ = timed(fn, prompts[B], cfg.new_tokens, device)
                t_1, _ = timed(fn, prompts[B], 1, device)
                times[(k, f"b{B}")].append(B * (cfg.new_tokens - 1) / max(t_n - t_1, 1e-9))
            times[(k, "ttft")].append(timed(fn, long_prompt, 1, device)[0])
        print(f"round {r + 1}/{cfg.rounds} | " + " | ".join(
            f"{k} b1 {times[(k, 'b1')][-1]:.0f} b16 {times[(k, 'b16')][-1]:.0f} tok/s ttft {1000 * times[(k, 'ttft')][-1]:.0f}ms"
            for k in engines))

    med = {key: statistics.median(v) for key, v in times.items()}
    # the ratio of each round's interleaved pair, then its median: load drift hits both sides of a pair
    ratio = {what: statistics.median(a / b if what != "ttft" else b / a for a, b in
                                     zip(times[("mathlm", what)], times[("transformers", what)]))
             for what in ("b1", "b16", "ttft")}
    machine = (torch.cuda.get_device_name() if device.startswith("cuda") else
               f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    name = "small 4 x 256" if cfg.quick else "default"
    print(f"\nmodel: {name} ({model.num_params() / 1e6:.2f}M params), fp32, {machine}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}; prompt {cfg.prompt_len} tokens, {cfg.new_tokens} new, "
          f"greedy, medians of {cfg.rounds} interleaved rounds; greedy tokens identical: {same}; "
          f"max logit diff {diff:.1e}\n")
    print("| measure | mathlm | transformers generate() | speed-up (> 1: mathlm faster) |")
    print("|---|---|---|---|")
    for what, label in (("b1", "decode tok/s, batch 1"), ("b16", "decode tok/s, batch 16")):
        a, b = med[("mathlm", what)], med[("transformers", what)]
        print(f"| {label} | {a:,.0f} | {b:,.0f} | {ratio[what]:.2f}× |")
    a, b = med[("mathlm", "ttft")], med[("transformers", "ttft")]
    print(f"| time to first token, {cfg.ttft_prompt}-token prompt | {1000 * a:.1f} ms | {1000 * b:.1f} ms | "
          f"{ratio['ttft']:.2f}× |")
    return med, ratio


if __name__ == "__main__":
    main()
