"""Digit splitting: what one-digit-per-token costs in sequence length, measured on real GSM8K.

    python -m bench.bench_tokenizer [--vocab_size 32768]

Trains two byte-level BPEs on the GSM8K train text in the same process, identical but for how
numbers are pre-tokenised: ours (one digit per chunk) and GPT-2 style (runs of up to 3 digits),
then counts tokens per GSM8K test answer and per number. Prints a markdown table for
docs/BENCHMARKS.md. Needs ../shared/data/gsm8k.
"""
import argparse
import json
import os
import re
import statistics
import time

from mathlm import tokenizer as T

GSM8K = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "gsm8k")


def rows(split):
    with open(os.path.join(GSM8K, f"{split}.jsonl")) as f:
        return [json.loads(line) for line in f]


def train(texts, vocab_size, pattern):
    saved = T.SPLIT_PATTERN
    T.SPLIT_PATTERN = pattern  # _build reads the module constant
    try:
        return T.MathTokenizer.train(texts, vocab_size=vocab_size, show_progress=False)
    finally:
        T.SPLIT_PATTERN = saved


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab_size", type=int, default=32768)
    args = ap.parse_args()
    train_texts = [r["question"] + "\n" + r["answer"] for r in rows("train")]
    test = rows("test")
    grouped = T.SPLIT_PATTERN.replace(r"|\p{N}", r"|\p{N}{1,3}")
    out = {}
    for name, pat in [("single digits (mathlm)", T.SPLIT_PATTERN), ("digit groups of ≤3 (GPT-2 style)", grouped)]:
        t0 = time.time()
        tok = train(train_texts, args.vocab_size, pat)
        ans = [len(tok.encode(r["answer"])) for r in test]
        nums = [m.group() for r in test for m in re.finditer(r"\d+", r["answer"])]
        per_num = statistics.mean(len(tok.encode(n)) for n in nums)
        out[name] = (statistics.mean(ans), per_num, time.time() - t0)
    base = out["digit groups of ≤3 (GPT-2 style)"][0]
    print("| pre-tokenisation | tokens / GSM8K test answer | tokens / number | vs groups |")
    print("|---|---|---|---|")
    for name, (a, n, dt) in out.items():
        print(f"| {name} | {a:.1f} | {n:.2f} | {a / base:.2f}× |")


if __name__ == "__main__":
    main()
