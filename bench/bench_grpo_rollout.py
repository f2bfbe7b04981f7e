"""GRPO rollout throughput: the batched group sampler vs one sequence at a time, same model, same run.

    python -m bench.bench_grpo_rollout [--n_layer 4] [--questions 16] [--group_size 8] [--max_new_tokens 128]

A randomly initialised GPT at the default width (n_embd 512, 8 heads / 4 KV heads, SwiGLU 1408)
but only --n_layer layers, with a BPE trained here on GSM8K (32,768 asked; ~17.9k reached, GSM8K
has no more merges). 16 real GSM8K test questions in the Q/A prompt format, G = 8 completions
each, 128 new tokens:
  batched     mathlm.train.grpo.rollout: the 16 prompts left padded and prefilled once, each one's
              KV cache rows copied G times, then all 128 rows decoded together (what a GRPO step runs);
  sequential  model.generate on one prompt with one sample, 128 times (prefill + decode each).
Both cut every completion the same way (grpo.cut_tokens). A random model seldom emits eos, so both
generate about 128 × 128 tokens; tokens/s counts the generated tokens (up to and including eos).
Prints a markdown row for docs/BENCHMARKS.md. Needs ../shared/data/gsm8k.
"""
import argparse
import json
import os
import time

import torch

from mathlm.common import pick_device, pick_dtype, autocast
from mathlm.model.gpt import GPT, GPTConfig
from mathlm.tokenizer import MathTokenizer
from mathlm.train.grpo import cut_tokens, prompt_ids, rollout

GSM8K = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "gsm8k")


def rows(split):
    with open(os.path.join(GSM8K, f"{split}.jsonl")) as f:
        return [json.loads(line) for line in f]


@torch.no_grad()
def sequential(model, tok, questions, G, max_new_tokens, device, dtype, seed):
    n = 0
    for i, q in enumerate(questions):
        for j in range(G):
            with autocast(device, dtype):
                steps = list(model.generate([prompt_ids(tok, q["question"])], max_new_tokens, temperature=1.0,
                                            seed=seed + i * G + j, eos_id=tok.eos_id))
            ids = torch.cat(steps).tolist()
            n += ids.index(tok.eos_id) + 1 if tok.eos_id in ids else len(ids)
            cut_tokens(tok, ids)
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--group_size", type=int, default=8)
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of each; the best counts")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(device, "auto")
    if not os.path.isdir(GSM8K):
        raise SystemExit(f"error: {GSM8K} not found — this benchmark prompts with real GSM8K questions")

    train = rows("train")
    tok = MathTokenizer.train([r["question"] + "\n" + r["answer"] for r in train], vocab_size=32768,
                              show_progress=False)
    questions = [{"question": r["question"]} for r in rows("test")[:args.questions]]
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=(tok.vocab_size + 63) // 64 * 64, block_size=512, n_layer=args.n_layer)
    model = GPT(cfg).to(device).eval()
    G, T = args.group_size, args.max_new_tokens

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rollout(model, tok, questions[:2], 2, 8, seed=0, device=device, dtype=dtype)  # warm up kernels and allocator
    best = {}
    for _ in range(args.repeats):
        sync()
        t = time.perf_counter()
        out = rollout(model, tok, questions, G, T, seed=0, device=device, dtype=dtype)
        sync()
        dt = time.perf_counter() - t
        best["batched"] = min(best.get("batched", (1e9, 0)), (dt, out["n_generated"]))
        t = time.perf_counter()
        n = sequential(model, tok, questions, G, T, device, dtype, seed=0)
        sync()
        dt = time.perf_counter() - t
        best["sequential"] = min(best.get("sequential", (1e9, 0)), (dt, n))
    base = best["sequential"][1] / best["sequential"][0]
    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu, {torch.get_num_threads()} thread(s)"
    print(f"model {model.num_params() / 1e6:.1f}M params ({args.n_layer} layers, n_embd {cfg.n_embd}, vocab "
          f"{cfg.vocab_size:,}) | {args.questions} questions × G={G} | {T} new tokens | {where}")
    print("| sampler | tokens | seconds | tokens/s | vs sequential |")
    print("|---|---|---|---|---|")
    for name in ("batched", "sequential"):
        dt, n = best[name]
        print(f"| {name} | {n:,} | {dt:.2f} | {n / dt:,.0f} | {n / dt / base:.1f}× |")


if __name__ == "__main__":
    main()
