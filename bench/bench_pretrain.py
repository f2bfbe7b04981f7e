"""Pretraining loop overhead: tokens/s of the whole `mathlm.train.pretrain` loop (batch sampling
from the memmapped mixture, accumulation, LR schedule, grad clip, logging) against the bare
forward + backward + AdamW step of the same model on a fixed batch, in the same process.

    python -m bench.bench_pretrain [--steps 60] [--threads 1] [--dtype fp32|bf16]

Data: real GSM8K (../shared/data/gsm8k) through download_gsm8k with a 4k tokenizer, in a temp dir.
Model: the tiny preset's shape. The loop's tokens/s is the median of its logged intervals (the
first interval, which includes warm-up, is dropped); the bare loop is timed over the same number
of steps after 3 warm-up steps. Both run in --dtype (bf16 = autocast, as the trainers do). Prints a
markdown table for docs/BENCHMARKS.md.
"""
import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time

import torch

GSM8K = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "gsm8k")


def bare_step(model, opt, x, accum, dtype):
    """One optimizer step on the fixed batch x: accum forward+backward passes (autocast in dtype), AdamW."""
    from mathlm.common import autocast
    for _ in range(accum):
        with autocast("cpu", dtype):
            _, loss, _ = model(x, x)
        (loss / accum).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grad_accum", type=int, default=2)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mathlm.common import pick_dtype
    from mathlm.data import download_gsm8k
    from mathlm.model.gpt import GPT, GPTConfig
    from mathlm.train.pretrain import PRESETS
    from mathlm.train.pretrain import main as pretrain_main
    from scripts import train_tokenizer

    d = tempfile.mkdtemp()
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet, contextlib.redirect_stderr(io.StringIO()):
        download_gsm8k.main(["--source", GSM8K, "--out_dir", d, "--text_only"])
        tok = train_tokenizer.main(["--data_dir", d, "--out_dir", os.path.join(d, "math_tokenizer"), "--vocab_size", "4096"])
        download_gsm8k.main(["--source", GSM8K, "--out_dir", d, "--tokenizer", os.path.join(d, "math_tokenizer")])

    p = PRESETS["tiny"]
    B, T, accum = p["batch_size"], p["block_size"], args.grad_accum
    log_every = 10
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        hist = pretrain_main(["--data_dir", d, "--preset", "tiny", "--mixture", "gsm8k.bin:1", "--no-progress",
                              "--device", "cpu", "--max_steps", str(args.steps), "--eval_every", "-1",
                              "--eval_iters", "1", "--log_every", str(log_every), "--grad_accum", str(accum),
                              "--dtype", args.dtype, "--out", os.path.join(d, "ck.pt")])
    loop = statistics.median([h["tok_s"] for h in hist if "tok_s" in h][1:])

    # the bare step: same model shape and optimizer, one fixed batch, nothing else
    mc = {k: p[k] for k in ("n_layer", "n_embd", "n_head", "n_kv_head", "ffn_hidden", "block_size")}
    with contextlib.redirect_stdout(io.StringIO()):
        model = GPT(GPTConfig(vocab_size=(tok.vocab_size + 63) // 64 * 64, **mc))
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    x = torch.randint(0, tok.vocab_size, (B, T))
    dtype = pick_dtype("cpu", args.dtype, verbose=False)

    for _ in range(3):
        bare_step(model, opt, x, accum, dtype)
    n = args.steps - log_every
    t0 = time.time()
    for _ in range(n):
        bare_step(model, opt, x, accum, dtype)
    bare = n * B * T * accum / (time.time() - t0)
    print(f"| path | tokens/s | vs bare |\n|---|---:|---:|\n| bare forward+backward+AdamW | {bare:,.0f} | 1.00× |\n"
          f"| mathlm.train.pretrain loop | {loop:,.0f} | {loop / bare:.3f}× |\n\n"
          f"loop overhead: {100 * (1 - loop / bare):.1f}% (B={B}, T={T}, grad_accum={accum}, {args.threads} thread(s), "
          f"{args.dtype})")


if __name__ == "__main__":
    main()
