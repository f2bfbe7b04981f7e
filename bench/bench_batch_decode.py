"""Batched decoding with finished rows dropped from the batch vs kept in it, same model, same process.

    python -m bench.bench_batch_decode --checkpoint run/checkpoint_mathlm.pt     # a trained tiny model

GPT.generate drops the rows that emitted eos once they are a quarter of the batch (KVCache.select);
drop_finished=False keeps every row to the end, the old behaviour. Answers of a trained model run
from 30 to 230 tokens, so a batch that keeps its finished rows pays for its longest answer on every
row. Two workloads on real held-out questions (the calculus_test.jsonl beside the checkpoint):
  eval     --eval_prompts prompts, greedy, --eval_tokens new tokens, calculator on (what the evals run);
  rollout  --questions questions × --group_size samples at temperature 1, --rollout_tokens new
           tokens (a tiny GRPO step's first round).
Rounds are interleaved (kept, dropped, kept, ...); the table gives each engine's median seconds and
the median of the per-round ratios. Greedy outputs must be equal (checked every round). Reads the
checkpoint, its tokenizer and test file; writes nothing. Prints a markdown table for docs/BENCHMARKS.md.
"""
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from mathlm.common import parse_config


@dataclass
class Config:
    """Finished rows dropped from a batched decode vs kept: seconds per batch and their ratio."""
    checkpoint: str = "checkpoint_mathlm.pt"  # a trained model (a random one never emits eos)
    tokenizer: str = ""        # "" = math_tokenizer beside the checkpoint
    prompts: str = ""          # "" = calculus_test.jsonl beside the checkpoint
    threads: int = 2           # torch.set_num_threads: the 2-core development machine (0 = torch default)
    rounds: int = 5            # interleaved timings; medians reported
    eval_prompts: int = 64
    eval_tokens: int = 256
    questions: int = 16
    group_size: int = 8
    rollout_tokens: int = 224


def main(argv=None):
    cfg = parse_config(Config, argv, description=__doc__)
    from mathlm.eval.harness import load_for_eval
    from mathlm.format import qa_prompt
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    here = os.path.dirname(os.path.abspath(cfg.checkpoint))
    model, tok = load_for_eval(cfg.checkpoint, cfg.tokenizer or os.path.join(here, "math_tokenizer"), "cpu")
    with open(cfg.prompts or os.path.join(here, "calculus_test.jsonl")) as f:
        questions = [json.loads(line)["question"] for line in f]
    prompts = [tok.encode(qa_prompt(q)) for q in questions]
    # generate gives every row of a batch the room its longest prompt leaves: drop the prompts that
    # would leave a batch fewer than max(eval_tokens / 4, 32) new tokens
    limit = model.config.block_size - max(cfg.eval_tokens // 4, 32)
    prompts = [p for p in prompts if len(p) <= limit]

    def run(kind, drop, r):
        t0 = time.perf_counter()
        with torch.no_grad():
            if kind == "eval":
                out = model.generate_ids(prompts[:cfg.eval_prompts], cfg.eval_tokens, eos_id=tok.eos_id, tools=tok,
                                         drop_finished=drop)
            else:  # a new question set each round, the same for both engines
                qs = prompts[r * cfg.questions:(r + 1) * cfg.questions]
                out = model.generate_ids(qs, cfg.rollout_tokens, temperature=1.0, seed=r, eos_id=tok.eos_id,
                                         num_samples=cfg.group_size, tools=tok, drop_finished=drop)
        return time.perf_counter() - t0, out

    rows = []
    for kind in ("eval", "rollout"):
        kept, dropped, ratios, lens = [], [], [], []
        for r in range(cfg.rounds):
            tk, ok = run(kind, False, r)
            td, od = run(kind, True, r)
            if kind == "eval" and ok != od:
                raise SystemExit("greedy outputs differ with finished rows dropped — a bug")
            kept.append(tk)
            dropped.append(td)
            ratios.append(tk / td)
            lens += [len(x) for x in od]
        n = cfg.eval_prompts if kind == "eval" else cfg.questions * cfg.group_size
        rows.append((kind, n, statistics.median(lens), max(lens), statistics.median(kept),
                     statistics.median(dropped), statistics.median(ratios)))
        print(f"{kind}: kept {statistics.median(kept):.2f}s | dropped {statistics.median(dropped):.2f}s | "
              f"ratio {statistics.median(ratios):.2f}x", flush=True)
    print(f"\n{model.num_params() / 1e6:.2f}M params, {cfg.checkpoint}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {cfg.rounds} rounds\n")
    print("| workload | rows | answer tokens (median / max) | finished rows kept | dropped | speed-up |")
    print("|---|---|---|---|---|---|")
    for kind, n, med, mx, tk, td, ratio in rows:
        print(f"| {kind} | {n} | {med:.0f} / {mx} | {tk:.2f} s | {td:.2f} s | **{ratio:.2f}×** |")


if __name__ == "__main__":
    main()
