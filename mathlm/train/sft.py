"""Supervised fine-tuning: teach the pretrained GPT to answer in the Q/A and chat formats.

    python -m mathlm.train.sft                          # the GPU recipe: 2 epochs at lr 3e-5
    python -m mathlm.train.sft --preset tiny            # 2 CPU cores, a couple of minutes
    python -m mathlm.train.sft --mixture gsm8k:2,math:1 --epochs 3
    python -m mathlm.train.sft --resume                 # continue exactly where it stopped
    torchrun --nproc_per_node 8 -m mathlm.train.sft     # DDP: same global batch, same steps

Reads: --init_from (checkpoint.pt from mathlm.train.pretrain), math_tokenizer/, and the Q/A
datasets named in --mixture: <name>.bin + <name>.idx.npy + <name>.meta.json (written by the
download_/generate_ stages; missing ones are named and skipped).
Writes: checkpoint_mathlm.pt (model, optimizer, step, configs, RNG + sampler state, tokenizer
hash, history) at every eval, every --ckpt_every steps and at the end, atomically;
checkpoint_mathlm.json (the same minus tensors: the train-loss curve, the per-domain val tables,
and tokens / train_seconds / tokens_per_s: tokens are the non-padding input tokens of every
example, questions included, the seconds those of the optimizer steps).

What is learned: only answer tokens. Labels are -100 on the question, on the role tokens
(<|user|>, <|assistant|>) and on the right padding; the answer's closing <|eos|> is learned, so
the model stops. Calculator calls: the model learns to write <|calc|> expr <|result|>, never the
result text and <|/result|> after it, which the decoder forces (calculator.forced_mask, read off
the token ids, so the data files need no extra field).
The loss of an optimizer step is the mean over all answer tokens of the step: every micro-batch
contributes sum(token losses) / (answer tokens in the whole step). That count
is known before any backward (all micro-batches are built first, on every rank, from the shared
sampler), so no all-reduce is needed, and a micro-batch with no answer token contributes exactly
0 — no NaN, no spike, no skipped step. Long answers thus weigh more than short ones, as in
pretraining, instead of a short answer's few tokens being blown up by a per-batch mean.

Formats: --chat_frac of the examples are rendered as chat (one or two turns,
<|user|>Q: ..\\nA:<|assistant|> ..\\n\\n<|eos|>), the rest as plain "Q: ..\\nA: ..\\n\\n<|eos|>".
The chat form is built from the stored prompt/answer spans and is token-for-token
mathlm.format.encode_chat (tests/test_sft.py checks it), so the chat CLI gets what SFT taught.

Validation: the last --val_examples of each domain's index (at most a tenth of it) are held out,
never trained on, and scored as plain Q/A: the token-weighted mean answer loss per domain, at the
start, every --eval_every steps (default once per epoch) and at the end, printed as one table.
A domain whose val loss rises more than --forget_threshold above its start value gets a
"WARNING catastrophic forgetting" line.
"""
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mathlm.common import autocast, check_range, cli, config_dict, die, parse_config
from mathlm.train.common import (DIVERGED, check_compatible, check_finite_model, get_lr, init_wandb,
                                 load_checkpoint, model_from_checkpoint, save_checkpoint, setup, stop_if_diverged,
                                 throughput, throughput_line, validate_optim, writer_lock, exit_if_distributed)
from mathlm.train.pretrain import maybe_compile, parse_mixture

DEFAULT_MIXTURE = "calculus:1,ml_math:1,word_problems:1,gsm8k:1,math:1,numina:0.5,openr1:0.5"


@dataclass
class Config:
    # data
    init_from: str = "checkpoint.pt"  # the pretrained model; its shape is the model's shape
    data_dir: str = "."               # where the <name>.bin datasets are
    tokenizer: str = "math_tokenizer"  # tokenizer folder; its hash must match --init_from's
    mixture: str = DEFAULT_MIXTURE    # name:weight over <name>.bin Q/A datasets; missing ones are skipped
    chat_frac: float = 0.25           # share of examples in the chat form (role tokens, 1-2 turns)
    val_examples: int = 256           # held out per domain from the end of its index (at most 1/10 of it)
    # optimisation
    batch_size: int = 32              # micro-batch, examples
    length_groups: int = 1            # run each micro-batch as this many forwards of similar-length examples
    grad_accum: int = 4               # micro-steps per optimizer step (global, split across ranks)
    epochs: float = 2.0               # passes over the train examples of all domains together
    max_steps: int = 0                # > 0 overrides --epochs
    lr: float = 3e-5                  # low: a tenth of pretraining, to keep what pretraining learned
    min_lr: float = 3e-6              # LR at the end of the cosine
    warmup_steps: int = 100           # linear LR warmup, steps
    weight_decay: float = 0.0         # no pull toward 0, away from the pretrained weights
    beta1: float = 0.9                # AdamW beta1
    beta2: float = 0.95               # AdamW beta2
    grad_clip: float = 1.0            # 0 = off
    aux_loss_coef: float = 0.01       # MoE load-balancing loss weight (ignored for a dense model)
    # system
    device: str = "auto"              # auto|cuda|mps|cpu
    dtype: str = "auto"               # auto (bf16 on CUDA and on CPUs with native bf16, else fp32)|bf16|fp32
    compile: bool = True              # torch.compile; skipped with a note where unsupported
    seed: int = 1337                  # the example sampler (and chat-form choice)
    # bookkeeping
    out: str = "checkpoint_mathlm.pt"  # checkpoint path; a .json summary is written beside it
    resume: bool = False              # continue from --out if it exists
    eval_every: int = 0               # steps; 0 = once per epoch; -1 = only at the start and end
    ckpt_every: int = 500             # steps between checkpoints besides the evals; 0 = only at evals
    forget_threshold: float = 0.3     # val-loss rise over the start value that prints a warning
    log_every: int = 10               # steps between log lines
    wandb: bool = False               # log to Weights & Biases
    wandb_project: str = "mathlm"     # W&B project name
    run_name: str = "sft"             # W&B run name
    progress: bool = True             # tqdm bar besides the log lines


PRESETS = {
    # on top of the tiny pretrain checkpoint: 2 CPU cores, a couple of minutes
    # 1.5 passes over the 16k calculus + 1k ML-math pairs, ~7 minutes at ~8k answer tokens/s
    "tiny": dict(batch_size=32, length_groups=4, grad_accum=1, epochs=1.5, max_steps=0, lr=1.5e-3, min_lr=1.5e-4, warmup_steps=30,
                 val_examples=64, eval_every=400, log_every=50, compile=False),
    # the pipeline's smoke run: seconds
    "smoke": dict(batch_size=8, grad_accum=1, max_steps=30, lr=1e-3, min_lr=1e-4, warmup_steps=3,
                  val_examples=16, eval_every=15, ckpt_every=0, log_every=5, compile=False),
}


def validate(cfg):
    for k in ("batch_size", "grad_accum", "val_examples", "length_groups"):
        check_range(cfg, k, lo=1)
    if cfg.max_steps <= 0:  # documented: --max_steps ≤ 0 trains by --epochs
        check_range(cfg, "epochs", above=0, why="or give --max_steps")
    check_range(cfg, "chat_frac", lo=0, hi=1)
    check_range(cfg, "aux_loss_coef", lo=0)
    check_range(cfg, "eval_every", lo=-1, why="0 = once per epoch, -1 = only at the start and end")
    check_range(cfg, "ckpt_every", lo=0, why="0 = only at evals")
    check_range(cfg, "forget_threshold", lo=0)
    validate_optim(cfg)
    parse_mixture(cfg.mixture)


# -----------------------------------------------------------------------------
# data: Q/A datasets, held-out val rows, the two renderings

class Domain:
    """One Q/A dataset: its token memmap and its index rows (offset, prompt_len, answer_len),
    split into train rows and the val rows held out from the end of the index."""

    def __init__(self, name, tokens, index, val_examples, block_size):
        n = len(index)
        if n < 2:
            die(f"{name}.bin has {n} example(s); SFT needs at least 2 (one to train, one to validate)")
        n_val = max(1, min(val_examples, n // 10))
        # the prompt and both role tokens must leave room for at least one answer token
        fits = index[:, 1] + 2 < block_size
        self.name, self.tokens = name, tokens
        self.train, self.val = index[:n - n_val][fits[:n - n_val]], index[n - n_val:][fits[n - n_val:]]
        self.dropped = int((~fits).sum())
        self.cut = int((fits & (index[:, 1] + index[:, 2] > block_size + 1)).sum())  # answers losing their tail
        if len(self.train) == 0 or len(self.val) == 0:
            die(f"{name}: no example's prompt fits block_size {block_size} — raise block_size or check the data")

    def example(self, row):
        """(prompt_ids, answer_ids) as int lists; answer_ids end with eos."""
        off, n_p, n_a = (int(v) for v in row)
        return self.tokens[off:off + n_p].tolist(), self.tokens[off + n_p:off + n_p + n_a].tolist()


def load_domains(weights, data_dir, tokenizer_hash, block_size, val_examples, verbose=True):
    from mathlm.data.qa_io import load_qa
    wanted = {n.removesuffix(".bin"): w for n, w in weights.items() if w > 0}
    paths = {n: os.path.join(data_dir, f"{n}.bin") for n in wanted}
    missing = [n for n in wanted if not os.path.exists(paths[n])]
    if len(missing) == len(wanted):
        die(f"none of the SFT datasets exist: looked for {', '.join(paths.values())} — build them with "
            "the mathlm.data download_/generate_ stages (or pass --data_dir / --mixture)")
    domains = {}
    for n in wanted:
        if n not in missing:
            tokens, index = load_qa(n, data_dir, tokenizer_hash)
            domains[n] = Domain(n, tokens, index, val_examples, block_size)
    if verbose:
        if missing:
            print(f"sft data: skipping missing {', '.join(f'{n}.bin' for n in missing)}")
        total = sum(wanted[n] for n in domains)
        for d in domains.values():
            drop = f" | dropped {d.dropped:,} with prompts over block_size {block_size}" if d.dropped else ""
            drop += f" | {d.cut:,} answers cut at block_size" if d.cut else ""
            print(f"sft data: {d.name} | weight {wanted[d.name] / total:.3f} | {len(d.train):,} train"
                  f" | {len(d.val):,} val{drop}")
    return domains, torch.tensor([wanted[n] for n in domains], dtype=torch.float64)


def qa_ids(prompt, answer):
    """Plain Q/A, the layout of format.encode_qa → (ids, answer_mask)."""
    return prompt + answer, [False] * len(prompt) + [True] * len(answer)


def chat_ids(turns, user_id, assistant_id):
    """Chat from stored (prompt, answer) spans: <|user|> prompt <|assistant|> answer per turn —
    token-for-token format.encode_chat, whose prompt/answer are the same encode_qa spans.
    Every assistant answer is learned; the role tokens and questions are not."""
    ids, mask = [], []
    for p, a in turns:
        ids += [user_id] + p + [assistant_id] + a
        mask += [False] * (len(p) + 2) + [True] * len(a)
    return ids, mask


def draw_examples(domains, probs, n, gen, chat_frac, user_id, assistant_id, block_size):
    """n training examples [(ids, answer_mask)]: domain by weight, example uniform within it.
    The generator is advanced by the same amount whatever is drawn, so its state alone fixes
    the data order (resume restores it)."""
    names = list(domains)
    d = torch.multinomial(probs, n, replacement=True, generator=gen).tolist()
    u, c, t, u0 = torch.rand(4, n, generator=gen, dtype=torch.float64).tolist()
    out = []
    for i in range(n):
        dom = domains[names[d[i]]]
        p, a = dom.example(dom.train[min(int(u[i] * len(dom.train)), len(dom.train) - 1)])
        if c[i] >= chat_frac:
            out.append(qa_ids(p, a))
            continue
        turns = [(p, a)]
        if t[i] < 0.5:  # half the chats get an earlier turn, when the whole conversation fits
            p0, a0 = dom.example(dom.train[min(int(u0[i] * len(dom.train)), len(dom.train) - 1)])
            if len(p0) + len(a0) + len(p) + len(a) + 4 <= block_size + 1:
                turns.insert(0, (p0, a0))
        out.append(chat_ids(turns, user_id, assistant_id))
    return out


def length_groups(examples, k):
    """The micro-batch as k groups of similar length (sorted, then cut into k near-equal parts). Each
    group is padded only to its own longest example, and since every forward's loss is divided by the
    step's answer-token count, the k forwards' gradients add up to the whole batch's: the same step
    with less padding. The tiny SFT data runs from ~60-token derivatives to ~230-token integrals, so
    one batch padded to its longest spends about half its compute on padding."""
    k = max(1, min(k, len(examples)))
    order = sorted(examples, key=lambda e: len(e[0]))
    cuts = [round(i * len(order) / k) for i in range(k + 1)]
    return [order[a:b] for a, b in zip(cuts, cuts[1:])]


def build_batch(examples, pad_id, block_size, multiple=1, calc_ids=None):
    """[(ids, answer_mask)] → x, y: (B, T) int64. x = ids[:-1] right-padded with pad_id;
    y[t] = ids[t + 1] where that token is an answer token, else -100 (question, role tokens,
    padding, and with calc_ids the calculator's forced result tokens). A sequence longer than
    block_size + 1 loses the end of its answer.
    T is the longest sequence rounded up to `multiple` (bounded shapes for torch.compile)."""
    from mathlm.calculator import forced_mask
    seqs = [(ids[:block_size + 1], mask[:block_size + 1]) for ids, mask in examples]
    if calc_ids is not None:
        seqs = [(ids, [m and not f for m, f in zip(mask, forced_mask(ids, calc_ids))]) for ids, mask in seqs]
    T = max(1, max(len(ids) for ids, _ in seqs) - 1)
    T = min(block_size, -(-T // multiple) * multiple)
    x = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    y = torch.full((len(seqs), T), -100, dtype=torch.long)
    for i, (ids, mask) in enumerate(seqs):
        n = len(ids) - 1
        if n <= 0:
            continue
        x[i, :n] = torch.tensor(ids[:-1])
        y[i, :n] = torch.where(torch.tensor(mask[1:]), torch.tensor(ids[1:]), -100)
    return x, y


def masked_loss(logits, labels, n_tokens=None):
    """Sum of the cross-entropy over labels != -100, divided by n_tokens (default: how many
    there are here, at least 1). logits (B, T, V), labels (B, T). With no answer token it is
    exactly 0 with a zero gradient, never NaN."""
    loss_sum = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                               ignore_index=-100, reduction="sum")
    if n_tokens is None:
        n_tokens = int((labels != -100).sum())
    return loss_sum / max(n_tokens, 1)


# -----------------------------------------------------------------------------
# validation: per-domain answer loss, the table, the forgetting warning

@torch.no_grad()
def domain_val_losses(model, val_sets, pad_id, block_size, batch_size, device="cpu",
                      dtype=torch.float32, rank=0, world=1, reduce=None, calc_ids=None):
    """{domain: mean answer-token loss over its val examples} — token-weighted, so it does not
    depend on how the examples are batched. val_sets: {domain: [(ids, answer_mask)]}.
    Under DDP rank r scores batches r, r+world, ... and `reduce` sums the (D, 2) tensor of
    (loss sum, tokens) across ranks."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(val_sets), 2, dtype=torch.float64)
    for j, examples in enumerate(val_sets.values()):
        examples = sorted(examples, key=lambda e: len(e[0]))  # similar lengths together: less padding
        for b, s in enumerate(range(0, len(examples), batch_size)):
            if b % world != rank:
                continue
            x, y = build_batch(examples[s:s + batch_size], pad_id, block_size, calc_ids=calc_ids)
            x, y = x.to(device), y.to(device)
            with autocast(device, dtype):
                logits, _, _ = model(x)
            sums[j, 0] += float(masked_loss(logits, y, n_tokens=1))
            sums[j, 1] += int((y != -100).sum())
    if reduce is not None:
        sums = reduce(sums)
    model.train(was_training)
    return {name: float(sums[j, 0] / sums[j, 1].clamp(min=1)) for j, name in enumerate(val_sets)}


def val_table(start, now, title=""):
    """The per-domain val losses as one table: domain | start | now | Δ, and their mean."""
    w = max([6] + [len(d) for d in now])
    lines = [title] if title else []
    lines.append(f"{'domain':<{w}} | {'start':>7} | {'now':>7} | {'Δ':>7}")
    rows = list(now) + ["mean"]
    s_mean = sum(start[d] for d in now if d in start) / max(1, sum(d in start for d in now))
    n_mean = sum(now.values()) / max(1, len(now))
    for d in rows:
        s, n = (s_mean, n_mean) if d == "mean" else (start.get(d, float("nan")), now[d])
        lines.append(f"{d:<{w}} | {s:7.4f} | {n:7.4f} | {n - s:+7.4f}")
    return "\n".join(lines)


def forgetting_warnings(start, now, threshold):
    """One warning line per domain whose val loss rose more than `threshold` above its start."""
    return [f"WARNING catastrophic forgetting: {d} val loss rose {now[d] - start[d]:.2f} "
            f"({start[d]:.2f} → {now[d]:.2f})"
            for d in now if d in start and now[d] - start[d] > threshold]


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
    dist, dtype, local_accum, tok = setup(cfg, "grad_accum")
    device = dist.device

    # --- model: from the run being resumed, else from the pretrained checkpoint -------------
    resume = cfg.resume and os.path.exists(cfg.out)
    if cfg.resume and not resume and dist.master:
        print(f"--resume: {cfg.out} not found, starting fresh from {cfg.init_from}")
    src = cfg.out if resume else cfg.init_from
    if not os.path.exists(src):
        die(f"{src} not found — run python -m mathlm.train.pretrain first (or pass --init_from)")
    ckpt = load_checkpoint(src, resume=resume)  # refuses NaN weights: a diverged --init_from is never fine-tuned
    check_compatible(src, ckpt, None, tok.hash, stage="sft" if resume else None)
    mc = ckpt["model_config"]
    if tok.vocab_size > mc["vocab_size"]:
        die(f"{src} has vocab_size {mc['vocab_size']}, the tokenizer has {tok.vocab_size} tokens — "
            "use the tokenizer the model was pretrained with")
    block_size = mc["block_size"]
    raw_model = model_from_checkpoint(ckpt, device)
    optimizer = raw_model.configure_optimizers(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2),
                                               device.split(":")[0])
    data_gen = torch.Generator().manual_seed(cfg.seed)  # the example sampler: its state is the position
    step, history, val_start = 0, [], None
    tokens, train_seconds = 0, 0.0  # totals over the run, resumed ones included
    if resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        data_gen.set_state(ckpt["rng"]["data"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        step, history, val_start = ckpt["step"], ckpt.get("history", []), ckpt.get("val_start")
        tokens, train_seconds = ckpt.get("tokens", 0), ckpt.get("train_seconds", 0.0)
        if dist.master:
            print(f"resumed from {cfg.out} at step {step:,}")
    init_from = ckpt.get("init_from", cfg.init_from) if resume else cfg.init_from
    del ckpt

    weights = parse_mixture(cfg.mixture)
    domains, probs = load_domains(weights, cfg.data_dir, tok.hash, block_size, cfg.val_examples,
                                  verbose=dist.master)
    val_sets = {n: [qa_ids(*d.example(r)) for r in d.val] for n, d in domains.items()}
    n_train = sum(len(d.train) for d in domains.values())
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = max(1, math.ceil(n_train / per_step))
    max_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, round(cfg.epochs * steps_per_epoch))
    eval_every = steps_per_epoch if cfg.eval_every == 0 else cfg.eval_every
    # a few padded lengths, not one per batch: compiled, no recompile per length; eager on CPU, oneDNN
    # reuses its kernels per shape (measured: 1.7x the tokens/s at the tiny shape in bf16)
    multiple = 64

    model = dist.wrap(maybe_compile(raw_model, cfg, device))
    logger = init_wandb(cfg.wandb, cfg.wandb_project, cfg.run_name, config_dict(cfg), dist.master)
    if dist.master:
        print(f"examples/step {per_step:,} = {cfg.batch_size} × {cfg.grad_accum} accum ({dist.world} "
              f"process{'es' if dist.world > 1 else ''}) | {n_train:,} train examples | 1 epoch = "
              f"{steps_per_epoch:,} steps | {max_steps:,} steps ({max_steps / steps_per_epoch:.2f} epochs)"
              f" | block_size {block_size} | chat {cfg.chat_frac:.0%}")

    def to_dev(t):
        return t.pin_memory().to(device, non_blocking=True) if device.startswith("cuda") else t.to(device)

    def all_reduce_sum(t):
        if not dist.enabled:
            return t
        import torch.distributed as tdist
        t = t.to(device)
        tdist.all_reduce(t)
        return t.cpu()

    def checkpoint():
        if not dist.master:
            return
        check_finite_model(raw_model, cfg.out)
        save_checkpoint(cfg.out, {
            "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "model_config": mc,
            "config": config_dict(cfg), "step": step,
            "rng": {"data": data_gen.get_state(), "torch": torch.get_rng_state()},
            "tokenizer_hash": tok.hash, "stage": "sft", "history": history, "val_start": val_start,
            "init_from": init_from, "n_params": raw_model.num_params(), **throughput(tokens, train_seconds),
            "domains": {n: {"weight": float(p), "train": len(d.train), "val": len(d.val)}
                        for (n, d), p in zip(domains.items(), (probs / probs.sum()).tolist())}})

    def evaluate_and_save():
        nonlocal val_start
        val = domain_val_losses(raw_model, val_sets, tok.pad_id, block_size, cfg.batch_size, device, dtype,
                                dist.rank, dist.world, all_reduce_sum, calc_ids=tok.calc_ids)
        if val_start is None:
            val_start = dict(val)
        warnings = forgetting_warnings(val_start, val, cfg.forget_threshold)
        epoch = step / steps_per_epoch
        mean = sum(val.values()) / len(val)
        if not math.isfinite(mean):
            die(f"step {step}: val_loss {mean:g} — " + DIVERGED.format(out=cfg.out))
        history.append({"step": step, "epoch": epoch, "val_loss": mean, "val": val,
                        "forgetting": [d for d in val if val[d] - val_start[d] > cfg.forget_threshold]})
        checkpoint()
        if dist.master:
            title = f"step {step:05d}/{max_steps:05d} | epoch {epoch:.2f} | val_loss {mean:.4f} | saved {cfg.out}"
            out = (bar.write if bar is not None else print)
            out(val_table(val_start, val, title))
            for w in warnings:
                out(w)
            logger.log({"val_loss": mean, **{f"val/{k}": v for k, v in val.items()}}, step=step)

    # --- the loop ------------------------------------------------------------
    bar = None
    if dist.master and cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=max_steps, initial=step, desc="sft", unit="step", leave=False, dynamic_ncols=True,
                   disable=None)
    t_log, steps_since, tokens_since = time.time(), 0, 0
    start_step = step
    if step == 0:
        evaluate_and_save()
    while step < max_steps:
        t0 = time.time()
        lr = get_lr(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # every rank draws all micro-batches from the shared generator and keeps its own share;
        # so every rank also knows the step's answer-token count, the loss denominator
        micro = [draw_examples(domains, probs, cfg.batch_size, data_gen, cfg.chat_frac, tok.user_id,
                               tok.assistant_id, block_size) for _ in range(cfg.grad_accum)]
        batches = [[build_batch(g, tok.pad_id, block_size, multiple, tok.calc_ids)
                    for g in length_groups(ex, cfg.length_groups)] for ex in micro]
        n_answer = sum(int((y != -100).sum()) for groups in batches for _, y in groups)
        loss_sum = 0.0
        local = [(i, j, xy) for i, groups in enumerate(batches[dist.rank::dist.world]) for j, xy in enumerate(groups)]
        for i, j, (x, y) in local:
            x, y = to_dev(x), to_dev(y)
            if dist.enabled:  # sync gradients only on the last forward of the last micro-step
                model.require_backward_grad_sync = i == local_accum - 1 and j == len(batches[0]) - 1
            with autocast(device, dtype):
                logits, _, aux = model(x)
            # this forward's share of the step's mean answer-token loss (0 if it has no answer
            # token); × world because DDP averages the ranks' gradients rather than summing them
            loss = masked_loss(logits, y, n_answer)
            total = loss * dist.world
            if mc.get("n_expert", 0):
                total = total + cfg.aux_loss_coef * aux / len(local)
            total.backward()
            loss_sum += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        stop_if_diverged(step + 1, loss_sum, grad_norm, cfg.out)  # before the step: no NaN reaches the weights
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        steps_since += 1
        n_tok = sum(min(len(ids) - 1, block_size) for ex in micro for ids, _ in ex)  # inputs, padding not counted
        tokens_since += n_tok
        tokens += n_tok
        train_seconds += time.time() - t0
        if bar is not None:
            bar.update(1)

        if step % cfg.log_every == 0 or step == max_steps:
            train_loss = dist.mean(loss_sum) * dist.world  # the ranks' shares add up to the step's mean
            dt = (time.time() - t_log) / steps_since
            tok_s = tokens_since / (time.time() - t_log)
            eta = (max_steps - step) * dt
            history.append({"step": step, "epoch": step / steps_per_epoch, "loss": train_loss, "lr": lr,
                            "grad_norm": float(grad_norm), "tok_s": tok_s})
            if dist.master:
                line = (f"step {step:05d}/{max_steps:05d} ({100 * step / max_steps:.1f}%) | epoch "
                        f"{step / steps_per_epoch:.2f} | loss {train_loss:.4f} | lr {lr:.1e} | grad_norm "
                        f"{float(grad_norm):.2f} | dt {1000 * dt:.0f}ms | tok/s {tok_s:,.0f} | eta {eta / 60:.1f}m")
                (bar.write if bar is not None else print)(line)
                logger.log({"loss": train_loss, "lr": lr, "grad_norm": float(grad_norm), "tok_s": tok_s},
                           step=step)
            t_log, steps_since, tokens_since = time.time(), 0, 0

        if step == max_steps:
            break
        if eval_every > 0 and step % eval_every == 0:
            evaluate_and_save()
        elif cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0:
            checkpoint()
    if bar is not None:
        bar.close()
        bar = None
    if step > start_step or not os.path.exists(cfg.out):
        evaluate_and_save()
    if dist.master:
        print(f"wrote {cfg.out} (step {step:,}, {raw_model.num_params() / 1e6:.2f}M params, from {init_from})")
        print(throughput_line("sft", step, tokens, train_seconds))
    logger.finish()
    dist.close()
    return history


if __name__ == "__main__":
    main()
