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
import copy
import json
import os
import statistics
import time
from dataclasses import dataclass

import torch

from mathlm.common import parse_config
from mathlm.train.grpo import rollout


@dataclass
class Config:
    """GRPO rollout tokens/s with fp32 weights, under bf16 autocast, and with bf16 weights."""
    checkpoint: str = "checkpoint_mathlm.pt"  # a trained model (a random one never emits eos)
    data_dir: str = "."        # math_tokenizer/ and calculus_rl.jsonl (else calculus.jsonl)
    questions: int = 16
    group_size: int = 8
    max_new_tokens: int = 224
    rounds: int = 3            # interleaved timings; medians reported
    threads: int = 0           # torch.set_num_threads (0 = torch default)


def main(argv=None):
    args = parse_config(Config, argv, description=__doc__)
    from mathlm.eval.harness import load_for_eval
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_for_eval(args.checkpoint, os.path.join(args.data_dir, "math_tokenizer"), "cpu")
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
