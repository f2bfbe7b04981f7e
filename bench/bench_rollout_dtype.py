"""GRPO rollouts at three precisions, interleaved in one process: which dtype should the sampler decode in?

    python -m bench.bench_rollout_dtype --checkpoint checkpoint_mathlm.pt [--data_dir .] [--rounds 3]

Reads a trained checkpoint, its tokenizer (--data_dir/math_tokenizer) and the first --questions rows of
--data_dir/calculus_rl.jsonl (else calculus.jsonl). One GRPO step's rollouts (grpo.rollout: --questions
prompts x G = 8 samples at temperature 1, up to --max_new_tokens) with
  fp32      the weights as trained, no autocast (what --rollout_dtype fp32 runs);
  autocast  fp32 weights under bf16 autocast (what GRPO ran before --rollout_dtype);
  bf16      a copy with GPT.decode_dtype(bf16): bf16 blocks, fp32 tied head (--rollout_dtype bf16/auto).
Each round runs all three with the same seed, in turn; tokens/s = generated tokens (eos included) over
the call's wall time; the ratios are medians of per-round ratios against fp32. Prints a markdown table.
"""
import argparse
import copy
import json
import os
import statistics
import time

import torch

from mathlm.tokenizer import MathTokenizer
from mathlm.train.common import load_checkpoint, model_from_checkpoint
from mathlm.train.grpo import rollout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoint_mathlm.pt")
    ap.add_argument("--data_dir", default=".")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--group_size", type=int, default=8)
    ap.add_argument("--max_new_tokens", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = MathTokenizer.load(os.path.join(args.data_dir, "math_tokenizer"))
    model = model_from_checkpoint(load_checkpoint(args.checkpoint), "cpu").eval()
    cast = copy.deepcopy(model).decode_dtype(torch.bfloat16)
    path = os.path.join(args.data_dir, "calculus_rl.jsonl")
    if not os.path.exists(path):
        path = os.path.join(args.data_dir, "calculus.jsonl")
    with open(path) as f:
        questions = [json.loads(line) for line, _ in zip(f, range(args.questions))]
    engines = {"fp32": (model, torch.float32), "autocast": (model, torch.bfloat16), "bf16": (cast, torch.float32)}
    speed = {k: [] for k in engines}
    for r in range(args.rounds):
        for name, (m, dt) in engines.items():
            t = time.perf_counter()
            out = rollout(m, tok, questions, args.group_size, args.max_new_tokens, seed=r, dtype=dt)
            speed[name].append(out["n_generated"] / (time.perf_counter() - t))
            print(f"round {r + 1}/{args.rounds} {name}: {out['n_generated']:,} tokens, {speed[name][-1]:,.0f} tok/s",
                  flush=True)
    print(f"\n{model.num_params() / 1e6:.2f}M params, {args.questions} questions x {args.group_size}, "
          f"{args.max_new_tokens} new tokens max, {torch.get_num_threads()} threads\n")
    print("| sampler weights | tok/s (median) | vs fp32 (median of per-round ratios) |\n|---|---:|---:|")
    for name in engines:
        ratio = statistics.median(a / b for a, b in zip(speed[name], speed["fp32"]))
        print(f"| {name} | {statistics.median(speed[name]):,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
