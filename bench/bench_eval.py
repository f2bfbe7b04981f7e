"""The GSM8K eval one problem at a time against its batched KV-cache path, in one process.

    python -m bench.bench_eval              # 64 problems, 64 new tokens, batch 1 vs 32, 1 thread (a few minutes)
    python -m bench.bench_eval --n 32 --rounds 1

Runs `python -m mathlm.eval.gsm8k` (its main(), the whole eval: 2-shot prompts, decoding, scoring)
on the same --n real GSM8K test problems with --batch_size 1 and with --batch_size 32, and reads
problems/s of the greedy pass from each summary. The model is tiny-ish and random (the GSM8K
tokenizer is trained here on GSM8K train); a random model never emits eos or "Q:", so every
problem gets exactly --max_new_tokens new tokens on both paths, and the two paths must return
identical completions (checked). Runs are interleaved (1, 32, 1, 32, ...) and the median ratio
is reported, which cancels most drift from other load on the machine.

Threads: torch.set_num_threads(--threads), 1 by default: the development machine is shared and
two busy threads make timings swing; one thread gives stable ratios (and on 2 cores the batched
path would gain a bit more from the second thread than batch 1 does).
Reads ../shared/data/gsm8k/{train,test}.jsonl; writes only to a temporary folder; prints a
markdown table for docs/BENCHMARKS.md.
"""
import contextlib
import dataclasses
import io
import json
import os
import platform
import statistics
import tempfile
from dataclasses import dataclass

import torch

from mathlm.common import parse_config

GSM8K_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "gsm8k")


@dataclass
class Config:
    n: int = 64                 # GSM8K test problems (the eval's seeded subset)
    max_new_tokens: int = 64
    batch_size: int = 32        # the batched path; the baseline is batch 1
    rounds: int = 3             # interleaved batch-1 / batched runs; the median ratio is reported
    threads: int = 1
    vocab_size: int = 8192      # the tiny preset's vocabulary
    n_layer: int = 4            # the tiny preset's model shape (bench/bench_model.py "tiny")
    n_embd: int = 256
    block_size: int = 512
    seed: int = 0


def setup(cfg, d):
    """Tokenizer trained on GSM8K train and a seeded random checkpoint, written into folder d."""
    from mathlm.format import qa_text
    from mathlm.model.gpt import GPT, GPTConfig
    from mathlm.tokenizer import MathTokenizer
    from mathlm.train.common import save_checkpoint
    with open(os.path.join(GSM8K_DIR, "train.jsonl")) as f:
        texts = [qa_text(r["question"], r["answer"]) for r in map(json.loads, f)]
    tok = MathTokenizer.train(texts, vocab_size=cfg.vocab_size, show_progress=False)
    tok.save(os.path.join(d, "math_tokenizer"))
    torch.manual_seed(cfg.seed)
    mc = GPTConfig(vocab_size=cfg.vocab_size, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=4, n_kv_head=2,
                   ffn_hidden=704, block_size=cfg.block_size)
    with contextlib.redirect_stdout(io.StringIO()):
        model = GPT(mc)
    save_checkpoint(os.path.join(d, "ckpt.pt"), {"model": model.state_dict(), "model_config": dataclasses.asdict(mc),
                                                 "config": {}, "step": 0, "tokenizer_hash": tok.hash, "stage": "bench"})
    return model.num_params()


def run_eval(cfg, d, batch_size):
    from mathlm.eval import gsm8k
    out = os.path.join(d, f"eval_b{batch_size}")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        summary = gsm8k.main(["--checkpoint", os.path.join(d, "ckpt.pt"), "--tokenizer", os.path.join(d, "math_tokenizer"),
                              "--source", os.path.join(GSM8K_DIR, "test.jsonl"), "--n", str(cfg.n),
                              "--max_new_tokens", str(cfg.max_new_tokens), "--batch_size", str(batch_size),
                              "--device", "cpu", "--out", out])
    with open(out + ".jsonl") as f:
        completions = [json.loads(line)["completion"] for line in f]
    return summary, completions


def main(argv=None):
    cfg = parse_config(Config, None, argv)
    torch.set_num_threads(cfg.threads)
    print(f"torch {torch.__version__} | {platform.processor() or platform.machine()} | {os.cpu_count()} cores | "
          f"threads {cfg.threads} | load avg {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as d:
        n_params = setup(cfg, d)
        print(f"model {n_params / 1e6:.2f}M params (n_layer {cfg.n_layer}, n_embd {cfg.n_embd}, vocab {cfg.vocab_size:,}) "
              f"| {cfg.n} problems | {cfg.max_new_tokens} new tokens each")
        one, many, ratios = [], [], []
        for r in range(cfg.rounds):
            s1, c1 = run_eval(cfg, d, 1)
            sb, cb = run_eval(cfg, d, cfg.batch_size)
            if c1 != cb:
                raise SystemExit("error: batched completions differ from one-at-a-time ones — a harness bug")
            one.append(s1["problems_per_s"])
            many.append(sb["problems_per_s"])
            ratios.append(many[-1] / one[-1])
            print(f"round {r + 1}/{cfg.rounds} | batch 1 {one[-1]:.2f} problems/s | batch {cfg.batch_size} "
                  f"{many[-1]:.2f} problems/s | ratio {ratios[-1]:.2f}x | shots used {sb['shots_used_min']}")
        new_chars = sum(len(c) for c in c1)
    print(f"identical completions on both paths ({new_chars:,} characters); load avg after {os.getloadavg()[0]:.1f}\n")
    print("| path | problems/s (median) | vs batch 1 |")
    print("|---|---:|---:|")
    print(f"| batch 1 | {statistics.median(one):.2f} | 1.00x |")
    print(f"| batch {cfg.batch_size} | {statistics.median(many):.2f} | {statistics.median(ratios):.2f}x |")


if __name__ == "__main__":
    main()
