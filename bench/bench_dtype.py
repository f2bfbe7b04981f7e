"""fp32 vs bf16 autocast on CPU: tokens/s of the bare forward + backward + AdamW step at the tiny
pretrain preset's shape, the two dtypes alternating round by round in one process, so that load
from other jobs on a shared machine hits both alike. Reports each dtype's median and the median of
the per-round ratios.

    python -m bench.bench_dtype [--rounds 10] [--steps 8] [--threads 1]
"""
import argparse
import contextlib
import io
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per dtype per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grad_accum", type=int, default=2)
    ap.add_argument("--vocab_size", type=int, default=4096, help="the tiny preset's tokenizer size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from bench.bench_pretrain import bare_step
    from mathlm.common import cpu_has_native_bf16
    from mathlm.model.gpt import GPT, GPTConfig
    from mathlm.train.pretrain import PRESETS

    p = PRESETS["tiny"]
    B, T, accum = p["batch_size"], p["block_size"], args.grad_accum
    mc = {k: p[k] for k in ("n_layer", "n_embd", "n_head", "n_kv_head", "ffn_hidden", "block_size")}
    with contextlib.redirect_stdout(io.StringIO()):
        model = GPT(GPTConfig(vocab_size=args.vocab_size, **mc))
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    x = torch.randint(0, args.vocab_size, (B, T))

    def step(dtype):
        bare_step(model, opt, x, accum, dtype)

    tok_s = {torch.float32: [], torch.bfloat16: []}
    for dtype in tok_s:  # warm-up: oneDNN builds its bf16 kernels on first use
        for _ in range(3):
            step(dtype)
    for _ in range(args.rounds):
        for dtype in tok_s:
            t0 = time.time()
            for _ in range(args.steps):
                step(dtype)
            tok_s[dtype].append(args.steps * B * T * accum / (time.time() - t0))
    fp32, bf16 = tok_s.values()
    ratios = [b / a for a, b in zip(fp32, bf16)]
    print(f"| dtype | tokens/s, median (range) | vs fp32, median of rounds (range) |\n|---|---:|---:|\n"
          f"| fp32 | {statistics.median(fp32):,.0f} ({min(fp32):,.0f}-{max(fp32):,.0f}) | 1.00× |\n"
          f"| bf16 autocast | {statistics.median(bf16):,.0f} ({min(bf16):,.0f}-{max(bf16):,.0f}) | "
          f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}-{max(ratios):.2f}) |\n\n"
          f"{model.num_params() / 1e6:.2f}M params, B={B}, T={T}, grad_accum={accum}, {args.threads} thread(s), "
          f"{args.rounds} rounds × {args.steps} steps; native bf16: {cpu_has_native_bf16()}")


if __name__ == "__main__":
    main()
