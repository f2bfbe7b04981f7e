"""Pretrain the GPT on the weighted token mixture in the working directory.

    python -m mathlm.train.pretrain                         # the 40M GPU recipe (100k steps)
    python -m mathlm.train.pretrain --preset tiny           # 2 CPU cores, minutes
    python -m mathlm.train.pretrain --resume                # continue exactly where it stopped
    torchrun --nproc_per_node 8 -m mathlm.train.pretrain    # DDP: same global batch, 8x faster
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \
             --nproc_per_node 8 -m mathlm.train.pretrain    # two nodes (run on each)

Reads: math_tokenizer/, the .bin files named in --mixture (train.bin/val.bin from
build_pretrain, <name>.bin from the downloaders and generators).
Writes: checkpoint.pt (model, optimizer, step, configs, RNG + data-sampler state, tokenizer
hash) every --eval_every steps and at the end, atomically; checkpoint.json (the same minus
tensors, with the loss history, and tokens / train_seconds / tokens_per_s: tokens are the
global batch's, batch_size × block_size × grad_accum a step, the seconds those of the steps).

Global batch = batch_size × block_size × grad_accum tokens per optimizer step, whatever the
number of GPUs: each of N ranks runs grad_accum/N micro-steps. The micro-batches are drawn
from one seeded generator that every rank advances identically, and rank r takes micro-steps
r, r+N, ... — so one process and N processes see the same data and take the same steps.
"""
import math
import os
import time
from dataclasses import dataclass

import torch

from mathlm.common import autocast, check_range, cli, config_dict, die, parse_config
from mathlm.train.common import (DIVERGED, check_compatible, check_finite_model, get_lr, init_wandb, load_checkpoint,
                                 save_checkpoint, setup, stop_if_diverged, throughput, throughput_line,
                                 validate_optim, writer_lock, exit_if_distributed)

DEFAULT_MIXTURE = ("train.bin:0.6,numina.bin:0.1,openr1.bin:0.1,math.bin:0.05,gsm8k.bin:0.05,"
                   "calculus.bin:0.05,ml_math.bin:0.05")


@dataclass
class Config:
    # data
    data_dir: str = "."             # where the --mixture .bin files are
    tokenizer: str = "math_tokenizer"  # tokenizer folder; its hash is saved in the checkpoint
    mixture: str = DEFAULT_MIXTURE  # file:weight,...; missing files are named and skipped
    # model (GPTConfig fields; vocab_size comes from the tokenizer)
    n_layer: int = 8                # transformer blocks
    n_embd: int = 512               # residual stream width
    n_head: int = 8                 # query heads; head_dim = n_embd // n_head
    n_kv_head: int = 4              # key/value heads (GQA); divides n_head
    block_size: int = 512           # context length, tokens (at most 8192)
    ffn_hidden: int = 1408          # SwiGLU hidden width
    rope_theta: float = 10000.0     # RoPE base frequency
    n_expert: int = 0               # >0: sparse MoE with top-k routing
    expert_top_k: int = 2           # experts per token (MoE only)
    aux_loss_coef: float = 0.01     # weight of the MoE load-balancing loss
    # optimisation
    batch_size: int = 128           # micro-batch, sequences
    grad_accum: int = 8             # micro-steps per optimizer step (global, split across ranks)
    max_steps: int = 100_000        # optimizer steps
    lr: float = 3e-4                # peak LR after warmup; cosine to --min_lr at --max_steps
    min_lr: float = 3e-5            # LR at the end of the cosine
    warmup_steps: int = 2000        # linear LR warmup, steps
    weight_decay: float = 0.1       # AdamW decay on matrices (not norms)
    beta1: float = 0.9              # AdamW beta1
    beta2: float = 0.95             # AdamW beta2
    grad_clip: float = 1.0          # 0 = off
    # system
    device: str = "auto"            # auto|cuda|mps|cpu
    dtype: str = "auto"             # auto (bf16 on CUDA and on CPUs with native bf16, else fp32)|bf16|fp32
    compile: bool = True            # torch.compile; skipped with a note where unsupported
    seed: int = 1337                # model init and the data sampler
    # bookkeeping
    out: str = "checkpoint.pt"      # checkpoint path; a .json summary is written beside it
    resume: bool = False            # continue from --out if it exists
    eval_every: int = 500           # steps; also checkpoints; -1 = only at the end
    eval_iters: int = 20            # val batches per source
    log_every: int = 10             # steps between log lines
    wandb: bool = False             # log to Weights & Biases
    wandb_project: str = "mathlm"   # W&B project name
    run_name: str = "pretrain"      # W&B run name
    progress: bool = True           # tqdm bar besides the log lines


PRESETS = {
    # 2 CPU cores, ~6 minutes at the measured ~16k tokens/s (bf16): 2.4M params (1.9M without the
    # embedding) with a 4k vocab, 5.7M tokens ≈ 1.9 passes over the calculus corpus
    "tiny": dict(n_layer=4, n_embd=192, n_head=6, n_kv_head=3, ffn_hidden=512, block_size=256,
                 batch_size=16, grad_accum=1, max_steps=1400, lr=2e-3, min_lr=2e-4, warmup_steps=60,
                 eval_every=700, eval_iters=8, log_every=100, compile=False),
    # the pipeline's smoke run: seconds
    "smoke": dict(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, ffn_hidden=172, block_size=128,
                  batch_size=8, grad_accum=1, max_steps=30, lr=3e-3, min_lr=3e-4, warmup_steps=5,
                  eval_every=15, eval_iters=2, log_every=5, compile=False),
}

MODEL_FIELDS = ("n_layer", "n_embd", "n_head", "n_kv_head", "block_size", "ffn_hidden", "rope_theta",
                "n_expert", "expert_top_k")


def parse_mixture(spec):
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, w = part.partition(":")
        try:
            out[name] = float(w) if w else 1.0
        except ValueError:
            die(f"--mixture entry {part!r} is not file:weight")
        if not 0 <= out[name] < float("inf"):  # NaN fails this too: a NaN weight was a traceback in multinomial
            die(f"--mixture weight for {name} is {w}; weights must be finite and ≥ 0")
    if not out:
        die("--mixture is empty; give file:weight pairs, e.g. train.bin:1.0")
    return out


# attention costs block_size² per sequence: --block_size 100000 ran past the probe's 150 s limit on the
# smoke data with no error (issue 14). The recipes train at 256-512 (GPT-2: 1024); a source shorter than
# one window is left out of the mix (data/mixture.py), so the data caps it too
MAX_BLOCK_SIZE = 8192


def validate(cfg):
    for k in ("n_layer", "n_embd", "n_head", "n_kv_head", "ffn_hidden", "expert_top_k", "batch_size",
              "grad_accum", "max_steps", "eval_iters"):
        check_range(cfg, k, lo=1)
    check_range(cfg, "block_size", lo=1, hi=MAX_BLOCK_SIZE, why="attention costs block_size² a sequence")
    check_range(cfg, "n_expert", lo=0, why="0 = a dense MLP")
    check_range(cfg, "aux_loss_coef", lo=0)
    check_range(cfg, "rope_theta", above=1, why="the RoPE base, e.g. 10000")
    check_range(cfg, "eval_every", lo=-1, why="-1 = only at the end")
    if cfg.n_embd % cfg.n_head == 0 and (cfg.n_embd // cfg.n_head) % 2:
        die(f"--n_embd {cfg.n_embd} / --n_head {cfg.n_head} = head_dim {cfg.n_embd // cfg.n_head}: RoPE rotates "
            "pairs of dimensions, so head_dim must be even")
    validate_optim(cfg)
    parse_mixture(cfg.mixture)


def model_config(cfg, vocab_size):
    mc = {k: getattr(cfg, k) for k in MODEL_FIELDS}
    mc["vocab_size"] = (vocab_size + 63) // 64 * 64  # a multiple of 64 keeps the matmuls aligned
    return mc


def maybe_compile(model, cfg, device):
    if not cfg.compile:
        return model
    if device == "mps":
        print("compile: skipped (not supported well on mps)")
        return model
    try:
        return torch.compile(model)
    except Exception as e:  # an old torch or a platform without a compiler: run eagerly
        print(f"compile: skipped ({str(e).splitlines()[0][:80]})")
        return model


# -----------------------------------------------------------------------------

@cli
def main(argv=None):
    cfg = parse_config(Config, PRESETS, argv)
    validate(cfg)
    with writer_lock(cfg.out):  # a second run on this --out stops here, before anything is loaded
        history = run(cfg)
    exit_if_distributed()  # under torchrun the process ends here, not in the interpreter's teardown
    return history


def run(cfg):
    from mathlm.data.mixture import Mixture
    from mathlm.model.gpt import GPT, GPTConfig

    dist, dtype, local_accum, tok = setup(cfg, "grad_accum")
    device = dist.device
    mc = model_config(cfg, tok.vocab_size)
    weights = parse_mixture(cfg.mixture)
    data = Mixture(weights, tokenizer_hash=tok.hash, block_size=cfg.block_size,
                   data_dir=cfg.data_dir, val_paths={"train.bin": "val.bin"})

    # --- model, optimizer, state ---------------------------------------------
    try:
        gcfg = GPTConfig(**mc)
    except ValueError as e:
        die(str(e))
    raw_model = GPT(gcfg).to(device)
    optimizer = raw_model.configure_optimizers(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2),
                                               device.split(":")[0])
    data_gen = torch.Generator().manual_seed(cfg.seed)  # the data sampler: its state is the position
    step, history = 0, []
    tokens, train_seconds = 0, 0.0  # totals over the run, resumed ones included
    if cfg.resume and os.path.exists(cfg.out):
        ckpt = load_checkpoint(cfg.out, resume=True)
        check_compatible(cfg.out, ckpt, mc, tok.hash, stage="pretrain")
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        data_gen.set_state(ckpt["rng"]["data"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        step, history = ckpt["step"], ckpt.get("history", [])
        tokens, train_seconds = ckpt.get("tokens", 0), ckpt.get("train_seconds", 0.0)
        if dist.master:
            print(f"resumed from {cfg.out} at step {step:,}")
    elif cfg.resume and dist.master:
        print(f"--resume: {cfg.out} not found, starting fresh")
    model = dist.wrap(maybe_compile(raw_model, cfg, device))
    logger = init_wandb(cfg.wandb, cfg.wandb_project, cfg.run_name, config_dict(cfg), dist.master)

    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum
    if dist.master:
        print(f"tokens/step {tokens_per_step:,} = {cfg.batch_size} × {cfg.block_size} × {cfg.grad_accum} accum"
              f" ({dist.world} process{'es' if dist.world > 1 else ''}) | {cfg.max_steps:,} steps")

    def to_dev(t):
        return t.pin_memory().to(device, non_blocking=True) if device.startswith("cuda") else t.to(device)

    @torch.no_grad()
    def estimate_loss():
        """Mean val loss per source on fixed batches (a fresh seeded generator: comparable across evals)."""
        raw_model.eval()
        out = {}
        for src in data.sources:
            g = torch.Generator().manual_seed(cfg.seed + 1)
            losses = []
            for _ in range(cfg.eval_iters):
                x, y = data.get_batch_from(src, "val", cfg.batch_size, g)
                with autocast(device, dtype):
                    _, loss, _ = raw_model(to_dev(x), to_dev(y))
                losses.append(loss.item())
            out[src] = sum(losses) / len(losses)
        raw_model.train()
        out["all"] = sum(out[s] * data.weights[s] for s in data.sources)  # the mixture-weighted val loss
        return out

    def checkpoint(val=None):
        if not dist.master:
            return
        check_finite_model(raw_model, cfg.out)
        ckpt = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "model_config": mc, "config": config_dict(cfg), "step": step,
                "rng": {"data": data_gen.get_state(), "torch": torch.get_rng_state()},
                "tokenizer_hash": tok.hash, "stage": "pretrain", "history": history,
                "n_params": raw_model.num_params(), **throughput(tokens, train_seconds)}
        save_checkpoint(cfg.out, ckpt)

    def evaluate_and_save():
        val = estimate_loss()
        val = {k: dist.mean(v) for k, v in val.items()}
        if not math.isfinite(val["all"]):
            die(f"step {step}: val_loss {val['all']:g} — " + DIVERGED.format(out=cfg.out))
        history.append({"step": step, "val_loss": val["all"], **{f"val_loss/{k}": v for k, v in val.items() if k != "all"}})
        checkpoint()
        if dist.master:
            per = " | ".join(f"val_loss/{k} {v:.4f}" for k, v in val.items() if k != "all")
            print(f"step {step:05d}/{cfg.max_steps:05d} | val_loss {val['all']:.4f} | {per} | saved {cfg.out}")
            logger.log({"val_loss": val["all"], **{f"val/{k}": v for k, v in val.items()}}, step=step)

    # --- the loop ------------------------------------------------------------
    bar = None
    if dist.master and cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_steps, initial=step, desc="pretrain", unit="step", leave=False,
                   dynamic_ncols=True, disable=None)
    t_log, tokens_since = time.time(), 0
    start_step = step
    if step == 0 and cfg.eval_every > 0:
        evaluate_and_save()
    while step < cfg.max_steps:
        t0 = time.time()
        lr = get_lr(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # every rank draws all micro-batches from the shared generator and keeps its own share
        batches = [data.get_batch("train", cfg.batch_size, data_gen) for _ in range(cfg.grad_accum)]
        mine = batches[dist.rank::dist.world]
        loss_sum = 0.0
        for i, (x, y) in enumerate(mine):
            x, y = to_dev(x), to_dev(y)
            if dist.enabled:  # sync gradients only on the last micro-step
                model.require_backward_grad_sync = i == local_accum - 1
            with autocast(device, dtype):
                _, loss, aux = model(x, y)
                total = loss + cfg.aux_loss_coef * aux if cfg.n_expert else loss
            # backward() sums grads over micro-steps: divide so the LR does not depend on accumulation
            (total / local_accum).backward()
            loss_sum += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        stop_if_diverged(step + 1, loss_sum, grad_norm, cfg.out)  # before the step: no NaN reaches the weights
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_since += tokens_per_step
        tokens += tokens_per_step
        train_seconds += time.time() - t0
        if bar is not None:
            bar.update(1)

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            train_loss = dist.mean(loss_sum / local_accum)
            dt = (time.time() - t_log) / max(1, tokens_since // tokens_per_step)
            tok_s = tokens_since / (time.time() - t_log)
            eta = (cfg.max_steps - step) * dt
            mfu = ""
            if device.startswith("cuda"):
                mfu = f" | mfu {100 * raw_model.estimate_mfu(tokens_per_step // dist.world, dt):.1f}%"
            history.append({"step": step, "loss": train_loss, "lr": lr, "grad_norm": float(grad_norm),
                            "tok_s": tok_s})
            if dist.master:
                line = (f"step {step:05d}/{cfg.max_steps:05d} ({100 * step / cfg.max_steps:.1f}%) | loss {train_loss:.4f}"
                        f" | lr {lr:.1e} | grad_norm {float(grad_norm):.2f} | dt {1000 * dt:.0f}ms"
                        f" | tok/s {tok_s:,.0f}{mfu} | eta {eta / 60:.1f}m")
                (bar.write if bar is not None else print)(line)
                logger.log({"loss": train_loss, "lr": lr, "grad_norm": float(grad_norm), "tok_s": tok_s}, step=step)
            t_log, tokens_since = time.time(), 0

        if cfg.eval_every > 0 and step % cfg.eval_every == 0 and step != cfg.max_steps:
            evaluate_and_save()
    if bar is not None:
        bar.close()
    if step > start_step or not os.path.exists(cfg.out):
        evaluate_and_save()
    if dist.master:
        print(f"wrote {cfg.out} (step {step:,}, {raw_model.num_params() / 1e6:.2f}M params)")
        print(throughput_line("pretrain", step, tokens, train_seconds))
    logger.finish()
    dist.close()
    return history


if __name__ == "__main__":
    main()
