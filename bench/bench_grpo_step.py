"""A GRPO step's three avoidable costs, each against the code it replaced, interleaved in one process.

    python -m bench.bench_grpo_step --checkpoint checkpoint_mathlm.pt [--data_dir .] [--rounds 3]

Reads a trained checkpoint, its tokenizer (--data_dir/math_tokenizer) and the first --questions rows of
--data_dir/calculus_rl.jsonl (else calculus.jsonl). Each round times, old then new:
  sample   drawing one token for --questions x G rows from the checkpoint's vocabulary:
           torch.multinomial vs gpt.sample_probs (inverse CDF);
  logprob  forward + backward of a (--questions x G, 160) micro-batch under bf16 autocast (where native,
           else fp32): gather - logsumexp vs grpo.token_logprobs (cross_entropy's fused log-softmax);
  score    grpo.score on one rollout round of those questions: the checker's uncached function vs
           answers_match's remembered verdicts (cache cleared before each timing).
The speed-ups are medians of per-round ratios. Prints a markdown table for docs/BENCHMARKS.md.
"""
import json
import os
import statistics
import time
from dataclasses import dataclass

import torch

from mathlm.common import autocast, parse_config, pick_dtype
from mathlm.model.gpt import sample_probs
from mathlm.train.grpo import rollout, score, token_logprobs


@dataclass
class Config:
    """GRPO step pieces: multinomial vs inverse CDF, gather - logsumexp vs cross_entropy, checker cache."""
    checkpoint: str = "checkpoint_mathlm.pt"  # a trained model (its rollouts are what gets scored)
    data_dir: str = "."        # math_tokenizer/ and calculus_rl.jsonl (else calculus.jsonl)
    questions: int = 40        # one rollout round of the tiny preset draws ~35-45
    group_size: int = 8
    max_new_tokens: int = 212
    rounds: int = 3            # interleaved timings; medians reported
    threads: int = 0           # torch.set_num_threads (0 = torch default)


def timed(fn, reps=1):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def old_logprobs(logits, tokens):
    logits = logits.float()
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def main(argv=None):
    args = parse_config(Config, argv, description=__doc__)
    from mathlm.eval import equiv
    from mathlm.eval.harness import load_for_eval
    from mathlm.train.grpo import load_questions
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_for_eval(args.checkpoint, os.path.join(args.data_dir, "math_tokenizer"), "cpu")
    path = os.path.join(args.data_dir, "calculus_rl.jsonl")
    if not os.path.exists(path):
        path = os.path.join(args.data_dir, "calculus.jsonl")
    questions = load_questions(path, "calculus")[:args.questions]
    rows, V = args.questions * args.group_size, model.config.vocab_size
    dtype = pick_dtype("cpu", "auto", verbose=False)
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(rows, V, generator=g) * 3, -1)
    idx = torch.randint(0, V, (min(rows, 64), 161), generator=g)
    ro = rollout(model, tok, questions, args.group_size, args.max_new_tokens, seed=0)
    cached = equiv._answers_match

    def fwd_bwd(lp):
        model.zero_grad(set_to_none=True)
        with autocast("cpu", dtype):
            logits, _, _ = model(idx)
        (-lp(logits[:, :-1], idx[:, 1:]).mean()).backward()

    def scored(fn):
        cached.cache_clear()
        equiv._answers_match = fn
        try:
            return timed(lambda: score(ro["texts"], questions, args.group_size))
        finally:
            equiv._answers_match = cached

    pieces = {
        "sample": (lambda: timed(lambda: torch.multinomial(probs, 1, generator=g), 20),
                   lambda: timed(lambda: sample_probs(probs, g), 20)),
        "logprob": (lambda: timed(lambda: fwd_bwd(old_logprobs)), lambda: timed(lambda: fwd_bwd(token_logprobs))),
        "score": (lambda: scored(cached.__wrapped__), lambda: scored(cached)),
    }
    times = {k: ([], []) for k in pieces}
    for r in range(args.rounds):
        for name, (old, new) in pieces.items():
            times[name][0].append(old())
            times[name][1].append(new())
            print(f"round {r + 1}/{args.rounds} {name}: {times[name][0][-1]:.4f} s -> {times[name][1][-1]:.4f} s",
                  flush=True)
    print(f"\n{model.num_params() / 1e6:.2f}M params, {rows} rows (sample, score), {idx.shape[0]} x 160 (logprob, "
          f"{str(dtype).replace('torch.', '')} autocast), {torch.get_num_threads()} threads\n")
    print("| piece | before (median) | after (median) | speed-up (median of per-round ratios) |\n|---|---:|---:|---:|")
    for name, (old, new) in times.items():
        ratio = statistics.median(a / b for a, b in zip(old, new))
        print(f"| {name} | {statistics.median(old) * 1e3:,.1f} ms | {statistics.median(new) * 1e3:,.1f} ms | "
              f"{ratio:.2f}x |")


if __name__ == "__main__":
    main()
