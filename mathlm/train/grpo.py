"""GRPO: reinforce the SFT model with verifiable rewards (DeepSeekMath's group-relative PPO).

    python -m mathlm.train.grpo                           # the 40M GPU recipe
    python -m mathlm.train.grpo --preset tiny             # 2 CPU cores, minutes
    python -m mathlm.train.grpo --scale_rewards none      # Dr. GRPO: advantages not divided by the std
    python -m mathlm.train.grpo --loss_type dapo          # per-token mean instead of per-sequence mean
    python -m mathlm.train.grpo --max_resample 0          # no dynamic sampling: one rollout batch a step
    python -m mathlm.train.grpo --resume                  # continue exactly where it stopped
    torchrun --nproc_per_node 8 -m mathlm.train.grpo      # DDP: each rank rolls out its share of questions

Reads: --init_from (the SFT checkpoint: the policy's start and the frozen KL reference),
math_tokenizer/, <task>_rl.jsonl if it exists (questions kept out of SFT for RL; generate_calculus
--n_rl writes one), else <task>.jsonl (questions to train on), and <task>_test.jsonl (held-out
accuracy) for each task in --tasks. A row is {"question", "answer"} plus optionally "final"
(the gold answer; else the number after "####" in answer) and "kind" (number | expr |
antiderivative; default number).
Writes: checkpoint_mathlm_grpo.pt (+ .json with the history per step: reward, pass@1, pass@G,
groups_drawn, zero_signal, KL, tokens, tok_s, ...; the question pool's summary; tokens,
train_seconds, tokens_per_s) at every eval and at the end, atomically.

One step:
 1. draw questions; prefill each prompt once and sample its group_size (G) completions together
    from the KV cache (GPT.generate with num_samples=G);
 2. cut each completion at <|eos|> (kept, it is the model's decision to stop) or at the next
    "Q:" turn; score it with mathlm.eval.answers: the reward is correctness, 1/0 (a completion
    cut at max_new_tokens before declaring an answer earns 0). Format is logged, never rewarded;
 3. dynamic sampling (DAPO): a group whose G rewards are all equal (all right or all wrong) has
    zero advantage — no gradient, only KL and a diluted normaliser — so it is dropped and counted,
    and further rollout rounds draw as many new questions as groups with signal are still missing,
    until the step has questions_per_step of them or --max_resample extra rounds are spent;
 4. advantages within each kept group: (r - mean) / (std + eps), or r - mean with --scale_rewards
    none;
 5. loss on completion tokens: -min(ratio * A, clip(ratio, 1 ± clip_eps) * A) + beta * KL,
    KL the k3 estimator against the reference; averaged per sequence then over sequences
    (grpo) or over all tokens (dapo); ppo_epochs optimizer steps on the batch (ratio = 1 on
    the first: old log-probs are those of the policy that sampled).

The edge of competence: only questions the policy solves sometimes teach it anything — pass
rates of roughly 10% to 90%; outside that band G = 8 samples mostly agree (at a 10% pass rate
43% of the groups are all wrong). Every question's rollouts are recorded (draws, samples,
correct, draws solved G/G); one solved G/G in two draws is learned, one never solved in two
draws is out of reach for now, and both leave the pool (--retire_solved, --retire_unsolved), so
the draws concentrate on questions whose measured pass rate lies strictly between 0 and 1. A task
whose questions have all retired is no longer drawn; once every task's have, all are drawn again.
The records are in the checkpoint, so --resume continues with the same pool.

Logged per step: groups_drawn (over all rounds), zero_signal (the fraction of them dropped),
pass@1 (mean reward over every sample drawn) and pass@G (the fraction of drawn groups with at
least one correct sample); tokens = sampled tokens + the prompt and completion tokens of the
update's policy forward (once per ppo epoch; the reference's forward and padding not counted),
tok_s = those over the step's wall time, gen_tok_s = sampled tokens over the rollout time.
"""
import bisect
import copy
import math
import os
import random
import time
from dataclasses import dataclass

import torch

from mathlm.common import autocast, check_choice, check_range, cli, config_dict, die, parse_config, pick_dtype
from mathlm.calculator import forced_mask
from mathlm.format import STOP_STRINGS, cut_completion, qa_prompt, strip_calls
from mathlm.train.common import (check_compatible, check_finite_model, get_lr, init_wandb, load_checkpoint,
                                 model_from_checkpoint, save_checkpoint, setup, stop_if_diverged, throughput,
                                 throughput_line, validate_optim, writer_lock, exit_if_distributed)
from mathlm.train.pretrain import maybe_compile


@dataclass
class Config:
    # data
    init_from: str = "checkpoint_mathlm.pt"  # SFT checkpoint: policy init and frozen KL reference
    data_dir: str = "."             # where <task>.jsonl and <task>_test.jsonl are
    tokenizer: str = "math_tokenizer"  # tokenizer folder; its hash must match --init_from's
    tasks: str = "gsm8k:1,calculus:1"  # name:weight — questions from <name>.jsonl, held-out from <name>_test.jsonl
    # rollouts
    group_size: int = 8             # G completions per question
    questions_per_step: int = 16    # groups with signal wanted per step (global, split across ranks)
    max_resample: int = 3           # extra rollout rounds a step may draw to replace zero-variance groups; 0 = none
    oversample: float = 4.0         # a round draws missing / (the pool's measured signal rate) questions, at most
                                    # this many times the missing number; 1 = exactly the missing number
    retire_solved: bool = True      # a question solved G/G in two draws leaves the pool
    retire_unsolved: bool = True    # a question never solved in two draws leaves the pool
    max_new_tokens: int = 256       # GSM8K reference answers average 125 tokens (docs/BENCHMARKS.md): 128 cuts many
    temperature: float = 1.0        # rollout sampling temperature; > 0, or every group is zero-signal
    top_k: int = 0                  # 0 = off
    top_p: float = 1.0              # 1.0 = off
    # objective
    beta: float = 0.02              # KL-to-reference weight; 0 skips the reference forward pass
    clip_eps: float = 0.2           # PPO ratio clip
    scale_rewards: str = "group"    # group: (r - mean) / (std + eps) | none: r - mean (Dr. GRPO)
    loss_type: str = "grpo"         # grpo: mean per sequence, then over sequences | dapo: mean over all tokens
    ppo_epochs: int = 1             # optimizer steps per rollout batch (mu); > 1 stores the pre-update log-probs
    micro_batch: int = 32           # sequences per forward/backward in the update
    # optimisation
    max_steps: int = 500            # steps; each is one rollout batch and --ppo_epochs updates
    lr: float = 1e-5                # a third of SFT's 3e-5; 7B recipes use 1e-6 (not tuned at 40M)
    min_lr: float = 1e-5            # = lr: constant after warmup, the usual GRPO schedule
    warmup_steps: int = 10          # linear LR warmup, steps
    weight_decay: float = 0.0       # AdamW decay on matrices; 0 = none
    beta1: float = 0.9              # AdamW beta1
    beta2: float = 0.99             # AdamW beta2
    grad_clip: float = 1.0          # 0 = off
    # system
    device: str = "auto"            # auto|cuda|mps|cpu
    dtype: str = "auto"             # auto (bf16 on CUDA and on CPUs with native bf16, else fp32)|bf16|fp32
    rollout_dtype: str = "auto"     # the sampler's (and held-out eval's) weights: auto (bf16 where native, as
                                    # --dtype) | bf16 (a copy cast each step, GPT.decode_dtype) | fp32 (the policy)
    compile: bool = False           # torch.compile the update's forward; rollouts stay eager
    seed: int = 1337                # question sampler, rollouts and the held-out subset
    # bookkeeping
    out: str = "checkpoint_mathlm_grpo.pt"  # checkpoint path; a .json history is written beside it
    resume: bool = False            # continue from --out if it exists
    eval_every: int = 50            # steps; held-out greedy accuracy + checkpoint; -1 = only at the start and end
    n_eval: int = 200               # held-out questions per task (a fixed seeded subset)
    eval_batch: int = 64            # prompts per greedy generate call
    log_every: int = 1              # steps between log lines
    wandb: bool = False             # log to Weights & Biases
    wandb_project: str = "mathlm"   # W&B project name
    run_name: str = "grpo"          # W&B run name
    progress: bool = True           # tqdm bar besides the log lines


PRESETS = {
    # the tiny SFT model on 2 CPU cores: a few minutes
    # calculus only: a 3M model solves almost no GSM8K problem, so GSM8K groups would be all zero-signal
    # lr and batch, measured on one SFT model (held-out calculus 86.5%, n = 1,000): 8 questions a step at
    # 1e-4 LOWERED it (84.1%, McNemar p = 0.014; Adam turns a weak, noisy gradient into full-size steps),
    # 16 questions a step at 3e-5 for 40 steps raised it to 88.6% (p = 0.004) in the same rollout budget;
    # on another SFT model (84.3%, n = 1,000) 5e-5 gave 86.3% at step 40 (p = 0.006) and 87.2% at step 80
    # (p = 0.0002), where 3e-5 gave 85.3-85.9% at 40: 80 steps did not fit the 30-minute budget at ~12 s a step
    # max_new_tokens 212: quotient-rule and integral answers run to 160-230 tokens; a cap of 160 scored
    # right-but-long solutions 0 and taught the policy nothing on exactly the topics SFT leaves at 40-60%;
    # 212 (0.8% of the SFT answers are longer) leaves 44 tokens of prompt, more than the longest RL question
    # (41), so every question is drawn (224 dropped the 8% over 32 tokens, 26% of the level-2 definite
    # integrals) and a round is one generate call (rollout() gives longer prompts a call of their own)
    # rollout_dtype fp32: this model's rollouts (16 questions x 8, 224 tokens) sample 1.19x faster with fp32
    # weights than under bf16 autocast, 1.16x than with bf16 weights, on the avx512_bf16 CPU (docs/BENCHMARKS.md)
    # 70 steps: the fp32 sampler and length-sorted update micro-batches took a step from ~12 s to ~8 s
    # ppo_epochs 2: on one SFT model (83.8%, n = 1,000), 70 steps reached 86.5% (+47/-20, McNemar p = 0.001)
    # with two optimizer steps per rollout batch, 84.7% (p = 0.30) with one, 84.9% (p = 0.26) with four; two
    # cost ~10% more time, four 1.8x (docs/HISTORY.md)
    # group_size 8 x 16 questions, not 4 x 32 (the same 128 rows an update, twice the questions): on the seed-1
    # SFT model 4 x 32 gained more (GRPO seeds 1/2/3: 86.5/87.4/86.5% against 86.5/85.0/85.3%), but in the
    # seed-2 pipeline +4.0 where 8 x 16 gave +4.4, and that model answered "derivative of x^5?" with
    # 6*x^5 + 5*x^4 (docs/HISTORY.md)
    "tiny": dict(tasks="calculus:1", group_size=8, questions_per_step=16, max_new_tokens=212, max_steps=70,
                 ppo_epochs=2, lr=5e-5, min_lr=5e-5, warmup_steps=5, micro_batch=64, eval_every=70, n_eval=200,
                 eval_batch=100, rollout_dtype="fp32"),
    # the pipeline's smoke run: seconds
    "smoke": dict(group_size=4, questions_per_step=4, max_new_tokens=32, max_steps=4, warmup_steps=1,
                  micro_batch=16, eval_every=2, n_eval=8, eval_batch=8, lr=1e-4, min_lr=1e-4),
}


def validate(cfg):
    for k in ("questions_per_step", "max_new_tokens", "max_steps", "ppo_epochs", "micro_batch", "n_eval",
              "eval_batch"):
        check_range(cfg, k, lo=1)
    check_range(cfg, "group_size", lo=2, why="advantages compare completions within a group")
    check_range(cfg, "max_resample", lo=0, why="0 = no dynamic sampling")
    check_range(cfg, "oversample", lo=1, hi=64, why="1 = draw exactly the missing number")
    check_choice(cfg, "scale_rewards", ("group", "none"))
    check_choice(cfg, "loss_type", ("grpo", "dapo"))
    check_choice(cfg, "rollout_dtype", ("auto", "bf16", "fp32"))
    check_range(cfg, "beta", lo=0, why="0 = no KL term")
    check_range(cfg, "clip_eps", lo=0)
    check_range(cfg, "temperature", above=0, why="0 samples G identical completions, so no group has signal")
    check_range(cfg, "top_p", above=0, hi=1, why="1 = off; 0 is greedy: G identical completions")
    check_range(cfg, "top_k", lo=0, why="0 = off")
    check_range(cfg, "eval_every", lo=-1, why="-1 = only at the start and end")
    validate_optim(cfg)


# -----------------------------------------------------------------------------
# the objective: pure functions of tensors (tests check them against hand computations)

def group_advantages(rewards, scale="group", eps=1e-4):
    """rewards (B, G) → (advantages (B, G), zero_signal (B,) bool).
    scale "group": (r - mean) / (std + eps), std the unbiased one over the G samples (as TRL);
    scale "none": r - mean (Dr. GRPO: dividing by std up-weights groups that are nearly solved or
    nearly hopeless). zero_signal marks groups whose rewards are all equal: their advantages are 0."""
    rewards = rewards.float()
    adv = rewards - rewards.mean(1, keepdim=True)
    if scale == "group":
        adv = adv / (rewards.std(1, keepdim=True) + eps)
    elif scale != "none":
        raise ValueError(f"scale must be 'group' or 'none', got {scale!r}")
    zero_signal = (rewards == rewards[:, :1]).all(1)
    return adv, zero_signal


def token_logprobs(logits, tokens):
    """logits (N, T, V), tokens (N, T) → log p(tokens) (N, T), computed in fp32. Through cross_entropy's
    fused log-softmax: its backward is faster than gather - logsumexp's on CPU (a 64 x 160 micro-batch of
    the tiny model, forward + backward: 1.03 s against 1.59 s, bench/bench_grpo_step), the values log_softmax's."""
    logits = logits.float()
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens.reshape(-1), reduction="none")
    return -nll.view(tokens.shape)


def kl_k3(logp, ref_logp):
    """Per-token k3 estimate of KL(policy || reference) from log-probs of the policy's own samples:
    exp(d) - d - 1 with d = ref - logp. Unbiased, never negative, low variance (Schulman 2020)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def grpo_loss(logp, old_logp, ref_logp, adv, mask, clip_eps=0.2, beta=0.0, loss_type="grpo"):
    """The clipped surrogate plus beta * KL, on completion tokens.

    logp (N, T) log-probs under the policy being trained (with grad); old_logp (N, T) those of the
    policy that sampled (no grad); ref_logp (N, T) the reference's, or None when beta == 0;
    adv (N,) one advantage per sequence; mask (N, T) 1 on completion tokens.
    loss_type "grpo": each sequence's mean over its tokens, then the mean over sequences (those with
    at least one token); "dapo": the mean over all tokens of the batch (long answers weigh more).
    Returns (loss, stats) with stats floats: kl (mean per token; nan without a reference),
    clip_frac (tokens where the clipped term was the smaller), ratio (mean per token)."""
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    a = adv.to(logp.dtype)[:, None]  # (N, 1): every token of a sequence shares its advantage
    unclipped = ratio * a
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * a
    per_token = -torch.min(unclipped, clipped)
    kl = None
    if beta > 0:
        kl = kl_k3(logp, ref_logp)
        per_token = per_token + beta * kl
    elif ref_logp is not None:
        kl = kl_k3(logp, ref_logp)  # logged only
    n_tok = mask.sum()
    if loss_type == "grpo":
        per_seq_n = mask.sum(1)
        has = per_seq_n > 0
        per_seq = (per_token * mask).sum(1) / per_seq_n.clamp(min=1)
        loss = per_seq[has].sum() / has.sum().clamp(min=1)
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / n_tok.clamp(min=1)
    else:
        raise ValueError(f"loss_type must be 'grpo' or 'dapo', got {loss_type!r}")
    with torch.no_grad():
        denom = n_tok.clamp(min=1)
        stats = {"kl": float((kl * mask).sum() / denom) if kl is not None else float("nan"),
                 "clip_frac": float(((clipped < unclipped).to(mask.dtype) * mask).sum() / denom),
                 "ratio": float((ratio * mask).sum() / denom)}
    return loss, stats


# -----------------------------------------------------------------------------
# data: questions with their gold answers

def parse_tasks(spec):
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, w = part.partition(":")
        try:
            out[name.removesuffix(".jsonl")] = float(w) if w else 1.0
        except ValueError:
            die(f"--tasks entry {part!r} is not name:weight")
        if out[name.removesuffix(".jsonl")] < 0:
            die(f"--tasks weight for {name} is negative")
    if not out or sum(out.values()) <= 0:
        die("--tasks is empty; give name:weight pairs, e.g. gsm8k:1,calculus:1")
    return out


def load_questions(path, task):
    """<task>.jsonl → [{"question", "gold", "kind", "task", "topic", "level"}]; rows without a question or
    gold are skipped. topic and level (None where a source has none) are what QuestionPool steers by."""
    from mathlm.data.qa_io import read_jsonl
    from mathlm.eval.answers import REWARD_KINDS, gold_answer
    out = []
    for row in read_jsonl(path):
        q, (gold, kind) = row.get("question"), gold_answer(row)  # the gold reader the evals use too
        if kind not in REWARD_KINDS:
            die(f"{path}: kind {kind!r} is not one of {REWARD_KINDS} — fix the generator that wrote it")
        if isinstance(q, str) and q.strip() and gold:
            out.append({"question": q, "gold": gold, "kind": kind, "task": task,
                        "topic": row.get("topic"), "level": row.get("level")})
    return out


def load_tasks(cfg, verbose=True):
    """(train questions per task, their weights, held-out subset) for --tasks; missing files are named."""
    weights = parse_tasks(cfg.tasks)
    train, w, heldout = {}, {}, []
    for name, weight in weights.items():
        path = os.path.join(cfg.data_dir, f"{name}.jsonl")
        rl_path = os.path.join(cfg.data_dir, f"{name}_rl.jsonl")
        if os.path.exists(rl_path):  # questions kept for RL (never in SFT): the policy errs on them as on new ones
            path = rl_path
        if not os.path.exists(path):
            if verbose:
                print(f"tasks: {path} not found — skipping {name}")
            continue
        rows = load_questions(path, name)
        if not rows:
            if verbose:
                print(f"tasks: {path} has no usable rows — skipping {name}")
            continue
        train[name], w[name] = rows, weight
        test_path = os.path.join(cfg.data_dir, f"{name}_test.jsonl")
        if os.path.exists(test_path):
            test = load_questions(test_path, name)
            # a fixed seeded subset: test files are often ordered (by topic, by difficulty)
            heldout += random.Random(cfg.seed).sample(test, min(cfg.n_eval, len(test)))
        elif verbose:
            print(f"tasks: {test_path} not found — no held-out accuracy for {name}")
        if verbose:
            print(f"tasks: {name} weight {weight:g} | {len(rows):,} train questions from {os.path.basename(path)}")
    if not train or sum(w.values()) <= 0:
        die(f"no task in --tasks {cfg.tasks!r} has a <name>.jsonl in {cfg.data_dir} — run its "
            "mathlm.data download_/generate_ stage first")
    return train, w, heldout


def fit_prompts(rows, tok, limit):
    """The rows whose prompt has at most `limit` tokens (so the answer has room in the block), and
    how many were dropped."""
    lens = [len(ids) for ids in tok.encode_batch([qa_prompt(r["question"]) for r in rows])]
    kept = [r for r, n in zip(rows, lens) if n <= limit]
    return kept, len(rows) - len(kept)


# -----------------------------------------------------------------------------
# the question pool: every question's rollout record, and the edge-of-competence filter

def pass_at(correct):
    """correct (B, G) 1/0 → (pass@1, pass@G): the mean over all B*G samples, and the fraction of the
    B groups with at least one correct sample. nan for an empty batch."""
    correct = correct.float()
    if correct.numel() == 0:
        return float("nan"), float("nan")
    return float(correct.mean()), float((correct.max(1).values > 0).float().mean())


def retired(rec, solved=True, unsolved=True):
    """rec = [draws, samples, correct, draws solved G/G] → whether the question leaves the pool: solved
    G/G in two draws (learned: its groups are zero-variance) or never solved in two draws (out of reach
    for now: zero-variance too)."""
    draws, _, correct, all_right = rec
    return (solved and all_right >= 2) or (unsolved and draws >= 2 and correct == 0)


def bucket_of(row):
    """The (topic, level) a row belongs to, as one string: the unit whose pass rate steers drawing."""
    return f"{row.get('topic')}/{row.get('level')}" if isinstance(row, dict) else "None/None"


class QuestionPool:
    """The training questions of each task, keyed (task, row index), with a record per question drawn
    and the sorted list of those still drawn (live). Drawing is a task by weight among those with a live
    question, then (when the task's rows carry several topics/levels) a bucket — a (topic, level) — by its
    measured chance that a group has signal, (signal groups + 1) / (groups + 2), then a live question of
    it uniformly; all from the caller's seeded generator. So steps go where the model is at the edge of
    its competence, and topics it always or never solves fade out. The records are plain data
    (`state`/`load`), so a resumed run draws what the uninterrupted one would."""

    def __init__(self, train, weights, retire_solved=True, retire_unsolved=True):
        self.train, self.weights = train, weights
        self.solved, self.unsolved = retire_solved, retire_unsolved
        self.stats = {t: {} for t in train}  # {task: {row index: [draws, samples, correct, all_right]}}
        self.bucket = {t: [bucket_of(r) for r in rows] for t, rows in train.items()}
        self.bstats = {t: {} for t in train}  # {task: {bucket: [groups, groups with signal]}}
        self._relive()

    def _relive(self):
        self.live = {t: [i for i in range(len(rows)) if i not in self.stats[t]
                         or not retired(self.stats[t][i], self.solved, self.unsolved)] for t, rows in self.train.items()}
        self.live_b = {}
        for t, live in self.live.items():
            self.live_b[t] = {}
            for i in live:
                self.live_b[t].setdefault(self.bucket[t][i], []).append(i)

    def row(self, key):
        return self.train[key[0]][key[1]]

    def draw(self, n, gen):
        """n (task, index) keys, with replacement. Once every question has retired, all are drawn again."""
        names = [t for t in self.train if self.weights[t] > 0]
        names = [t for t in names if self.live[t]] or names
        p = torch.tensor([self.weights[t] for t in names], dtype=torch.float)
        tasks = torch.multinomial(p, n, replacement=True, generator=gen).tolist() if n else []
        # each task's live buckets and their weights, once per call: nothing is recorded while drawing
        weighted = {}
        for t in set(names[k] for k in tasks):
            buckets = sorted(self.live_b[t]) if self.live[t] else []
            if len(buckets) > 1:
                rec = [self.bstats[t].get(b, [0, 0]) for b in buckets]
                weighted[t] = buckets, torch.tensor([(sig + 1) / (groups + 2) for groups, sig in rec])
        out = []
        for k in tasks:
            t = names[k]
            live = self.live[t] or range(len(self.train[t]))
            if t in weighted:
                buckets, w = weighted[t]
                live = self.live_b[t][buckets[int(torch.multinomial(w, 1, generator=gen))]]
            out.append((t, live[int(torch.randint(len(live), (1,), generator=gen))]))
        return out

    def record(self, key, correct, group_size):
        """One group's result: `correct` of its group_size samples were right."""
        t, i = key
        rec = self.stats[t].setdefault(i, [0, 0, 0, 0])
        rec[0] += 1
        rec[1] += group_size
        rec[2] += correct
        rec[3] += int(correct == group_size)
        b = self.bstats[t].setdefault(self.bucket[t][i], [0, 0])
        b[0] += 1
        b[1] += int(0 < correct < group_size)
        if retired(rec, self.solved, self.unsolved):
            for live in (self.live[t], self.live_b[t].get(self.bucket[t][i], [])):
                j = bisect.bisect_left(live, i)
                if j < len(live) and live[j] == i:
                    del live[j]
            if not self.live_b[t].get(self.bucket[t][i], True):
                del self.live_b[t][self.bucket[t][i]]

    def state(self):
        return {"questions": {t: {i: list(r) for i, r in recs.items()} for t, recs in self.stats.items()},
                "buckets": {t: {b: list(r) for b, r in bs.items()} for t, bs in self.bstats.items()}}

    def load(self, state):
        state = state or {}
        for t in self.train:
            self.stats[t] = {int(i): list(r) for i, r in state.get("questions", {}).get(t, {}).items()}
            self.bstats[t] = {b: list(r) for b, r in state.get("buckets", {}).get(t, {}).items()}
        self._relive()

    def signal_rate(self):
        """The chance that a drawn group has signal, measured over every group recorded so far:
        (signal groups + 1) / (groups + 2), so 1/2 before the first."""
        recs = [r for bs in self.bstats.values() for r in bs.values()]
        return (sum(r[1] for r in recs) + 1) / (sum(r[0] for r in recs) + 2)

    def buckets_summary(self):
        """{task: {bucket: {groups, signal}}} for the .json: where the signal was."""
        return {t: {b: {"groups": r[0], "signal": r[1]} for b, r in sorted(bs.items())} for t, bs in self.bstats.items()}

    def signal_keys(self):
        """The (task, index) of every question drawn with right and wrong samples both seen (the summary's
        "edge"), sorted: the questions the policy gradient trained on."""
        return sorted((t, i) for t, recs in self.stats.items() for i, r in recs.items() if 0 < r[2] < r[1])

    def summary(self):
        """Counts for the log and the .json: questions, drawn (at least once), edge (drawn, pass rate
        strictly between 0 and 1), retired_solved, retired_unsolved, live."""
        recs = [r for recs in self.stats.values() for r in recs.values()]
        return {"questions": sum(len(rows) for rows in self.train.values()), "drawn": len(recs),
                "edge": len(self.signal_keys()),
                "retired_solved": sum(retired(r, self.solved, False) for r in recs),
                "retired_unsolved": sum(retired(r, False, self.unsolved) for r in recs),
                "live": sum(len(v) for v in self.live.values())}


# -----------------------------------------------------------------------------
# rollouts

def cut_tokens(tok, ids):
    """Generated ids → (kept ids, answer text). Kept: up to and including <|eos|>, or, when the model
    starts a new "Q:" turn itself, the tokens that end before it (at least one, so every completion
    carries its advantage). The text is format.cut_completion of the kept text: what the reward sees."""
    eos = tok.eos_id
    if eos in ids:
        ids = ids[:ids.index(eos) + 1]
        body = ids[:-1]
    else:
        body = ids
    text = tok.decode(body)
    stops = [i for i in (text.find(s) for s in STOP_STRINGS) if i != -1]
    if not stops:
        return ids, cut_completion(text)
    cut = min(stops)
    lo, hi = 0, len(body)  # the largest k whose decoded prefix ends at or before the cut
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tok.decode(body[:mid])) <= cut:
            lo = mid
        else:
            hi = mid - 1
    return body[:max(lo, 1)], cut_completion(text)


def prompt_ids(tok, question):
    return tok.encode(qa_prompt(question))  # exactly SFT's prompt tokens (format.encode_qa)


@torch.no_grad()
def rollout(model, tok, questions, group_size, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
            seed=None, device="cpu", dtype=torch.float32, tools=True):
    """Sample group_size completions per question in one batched generate (each prompt prefilled once; a
    second call for prompts too long to leave max_new_tokens).
    tools: the calculator computes the model's calls when the tokenizer has the tool tokens.
    Returns a dict: prompts (B lists), completions (B*G kept id lists, question-major, calls and the
    calculator's forced results included), texts (B*G answer strings, calls stripped: format.strip_calls),
    n_generated (tokens generated, eos included), room (B*G: the steps each completion's generate call ran; one
    that long without <|eos|> was cut by its room, not ended by the model)."""
    if not questions:  # a DDP rank whose share of a small resample round is empty
        return {"prompts": [], "completions": [], "texts": [], "n_generated": 0, "room": []}
    prompts = [prompt_ids(tok, q["question"]) for q in questions]
    # generate gives a whole batch the room its longest prompt leaves (block_size - T), so prompts too long
    # for the full max_new_tokens go in a second call of their own: each then gets all the room it has (what
    # the evals give it), and the others keep max_new_tokens
    fits = [len(p) + max_new_tokens <= model.config.block_size for p in prompts]
    rows, room = [None] * (len(prompts) * group_size), [0] * len(prompts)
    for part in ([i for i, f in enumerate(fits) if f], [i for i, f in enumerate(fits) if not f]):
        if not part:
            continue
        with autocast(device, dtype):
            steps = list(model.generate([prompts[i] for i in part], max_new_tokens, temperature=temperature,
                                        top_k=top_k or None, top_p=top_p if top_p < 1.0 else None, seed=seed,
                                        eos_id=tok.eos_id, num_samples=group_size, tools=tok if tools else None))
        got = torch.stack(steps, 1).tolist() if steps else [[] for _ in range(len(part) * group_size)]
        for k, i in enumerate(part):  # back in question-major order
            rows[i * group_size:(i + 1) * group_size] = got[k * group_size:(k + 1) * group_size]
            room[i] = len(steps)  # the steps this call ran: a row this long without eos ran out of room
    completions, texts, n_generated = [], [], 0
    for r in rows:
        n_generated += r.index(tok.eos_id) + 1 if tok.eos_id in r else len(r)
        kept, text = cut_tokens(tok, r) if r else ([tok.eos_id], "")
        completions.append(kept)
        texts.append(strip_calls(text))
    return {"prompts": prompts, "completions": completions, "texts": texts, "n_generated": n_generated,
            "room": [r for r in room for _ in range(group_size)]}


def score(texts, questions, group_size, cut=None):
    """(correct (B, G), format (B, G), truncated (B, G)) rewards and flags, 1.0/0.0 each, from
    mathlm.eval.answers. cut[i]: completion i ran to max_new_tokens (no <|eos|>, no next "Q:"). Cut
    before it declared an answer (#### or \\boxed{}), it is truncated and earns 0: what it ended on is a
    guess, and paying it teaches the policy to babble common numbers."""
    from mathlm.eval.answers import format_reward, has_final_answer, reward_answer
    truncated = [bool(cut and cut[i]) and not has_final_answer(t) for i, t in enumerate(texts)]
    correct = [0.0 if truncated[i] else reward_answer(t, questions[i // group_size]["gold"],
                                                      questions[i // group_size]["kind"])
               for i, t in enumerate(texts)]
    fmt = [format_reward(t) for t in texts]
    B = len(questions)
    return (torch.tensor(correct, dtype=torch.float).view(B, group_size),
            torch.tensor(fmt, dtype=torch.float).view(B, group_size),
            torch.tensor(truncated, dtype=torch.float).view(B, group_size))


def pack(prompts, completions, pad_id, multiple=1, calc_ids=None):
    """Right-padded prompt+completion rows for one causal forward.
    Returns idx (N, T) and mask (N, T-1): mask[i, t] = 1 where idx[i, t+1] is a completion token
    the model chose, i.e. the positions whose logits predict the completion (targets = idx[:, 1:]);
    with calc_ids the calculator's forced tokens are 0 (no policy gradient, no KL: calculator.forced_mask).
    T is the longest row rounded up to `multiple` (bounded shapes for torch.compile)."""
    T = max(len(p) + len(c) for p, c in zip(prompts, completions))
    T = -(-T // multiple) * multiple
    idx = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), T - 1)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        idx[i, :len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        mask[i, len(p) - 1:len(p) - 1 + len(c)] = 1
        if calc_ids is not None:
            mask[i, len(p) - 1:len(p) - 1 + len(c)] -= torch.tensor(forced_mask(c, calc_ids), dtype=mask.dtype)
    return idx, mask


def sequence_logprobs(model, idx, device, dtype, temperature=1.0):
    """log p(idx[:, 1:] | prefix) under model at this sampling temperature, (N, T-1) fp32: the policy that
    samples at temperature T is softmax(logits / T), so that is the one the ratio and KL are taken on."""
    with autocast(device, dtype):
        logits, _, _ = model(idx)
    logits = logits[:, :-1].float()
    return token_logprobs(logits / temperature if temperature != 1.0 else logits, idx[:, 1:])


# -----------------------------------------------------------------------------
# held-out accuracy: greedy, fixed questions

@torch.no_grad()
def heldout_accuracy(model, tok, rows, max_new_tokens, batch_size=64, device="cpu", progress=False):
    """Greedy answers to `rows` ({"question", "gold", "kind", "task"}) → (accuracy, {task: accuracy})."""
    from mathlm.eval.answers import reward_answer
    was_training = model.training
    model.eval()
    hits = {}
    batches = range(0, len(rows), batch_size)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="held-out", unit="batch", leave=False, dynamic_ncols=True, disable=None)
    for s in batches:
        chunk = rows[s:s + batch_size]
        out = rollout(model, tok, chunk, 1, max_new_tokens, temperature=0.0, device=device)
        for q, text in zip(chunk, out["texts"]):
            hits.setdefault(q["task"], []).append(reward_answer(text, q["gold"], q["kind"]))
    model.train(was_training)
    per_task = {k: sum(v) / len(v) for k, v in hits.items()}
    n = sum(len(v) for v in hits.values())
    return (sum(sum(v) for v in hits.values()) / n if n else float("nan")), per_task


def fit_vs_transfer(pool, sft_model, policy, tok, max_new_tokens, n, seed, batch_size=64, device="cpu"):
    """Greedy accuracy of the SFT model and of the policy on up to n questions GRPO trained on (a seeded
    sample of pool.signal_keys()) → {"n", "of", "sft", "grpo"}, or None when there is none. Set
    beside the held-out curve it says how much of what GRPO learned carries to problems it never saw:
    on the tiny model, +12 to +16 points on these and +1 to +4 held-out (docs/HISTORY.md)."""
    keys = pool.signal_keys()
    if not keys:
        return None
    rows = [pool.row(k) for k in random.Random(seed).sample(keys, min(n, len(keys)))]
    sft, _ = heldout_accuracy(sft_model, tok, rows, max_new_tokens, batch_size, device)
    grpo, _ = heldout_accuracy(policy, tok, rows, max_new_tokens, batch_size, device)
    return {"n": len(rows), "of": len(keys), "sft": sft, "grpo": grpo}


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
    dist, dtype, _, tok = setup(cfg, "questions_per_step")
    device = dist.device
    train, weights, heldout = load_tasks(cfg, verbose=dist.master)

    # --- policy, reference, optimizer, state ---------------------------------
    resuming = cfg.resume and os.path.exists(cfg.out)
    if cfg.resume and not resuming and dist.master:
        print(f"--resume: {cfg.out} not found, starting fresh from {cfg.init_from}")
    need_init = not resuming or cfg.beta > 0
    init = None
    if need_init:
        if not os.path.exists(cfg.init_from):
            die(f"{cfg.init_from} not found — run python -m mathlm.train.sft first (or pass --init_from)")
        init = load_checkpoint(cfg.init_from)
        check_compatible(cfg.init_from, init, None, tok.hash)
    state = load_checkpoint(cfg.out, resume=True) if resuming else init
    check_compatible(cfg.out if resuming else cfg.init_from, state, None, tok.hash,
                     stage="grpo" if resuming else None)
    if init is not None and resuming:
        check_compatible(cfg.out, state, init["model_config"], None)
    mc = state["model_config"]
    raw_model = model_from_checkpoint(state, device)
    if cfg.max_new_tokens >= mc["block_size"]:
        die(f"--max_new_tokens {cfg.max_new_tokens} leaves no room for the prompt in block_size {mc['block_size']}")
    # a prompt too long for prompt + max_new_tokens to fit the block is rolled out in a call of its own with
    # the room it has (rollout()); one that leaves less than half of max_new_tokens is dropped: its answers
    # would be cut before they end (the tiny preset used to drop every prompt over 32 tokens, 26% of the
    # level-2 definite integrals, so GRPO never practised their longer phrasings)
    limit = mc["block_size"] - cfg.max_new_tokens // 2
    for name in list(train):
        train[name], dropped = fit_prompts(train[name], tok, limit)
        if dropped and dist.master:
            print(f"tasks: {name}: dropped {dropped:,} questions longer than {limit} tokens "
                  f"(block_size {mc['block_size']} - max_new_tokens {cfg.max_new_tokens} / 2)")
        if not train[name]:
            del train[name], weights[name]
    if not train:
        die(f"no question fits block_size {mc['block_size']} with --max_new_tokens {cfg.max_new_tokens} — lower it")
    heldout, dropped = fit_prompts(heldout, tok, limit)
    if dropped and dist.master:
        print(f"tasks: held-out: dropped {dropped:,} questions longer than {limit} tokens")
    ref_model = None
    if cfg.beta > 0:
        ref_model = model_from_checkpoint(init, device).eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
    del init
    optimizer = raw_model.configure_optimizers(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), device.split(":")[0])
    data_gen = torch.Generator().manual_seed(cfg.seed)  # question sampler: identical on every rank
    pool = QuestionPool(train, weights, cfg.retire_solved, cfg.retire_unsolved)  # identical on every rank too
    step, history = 0, []
    tokens, train_seconds = 0, 0.0  # totals over the run, resumed ones included
    if resuming:
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        data_gen.set_state(state["rng"]["data"])
        torch.set_rng_state(state["rng"]["torch"])
        pool.load(state.get("question_stats"))
        step, history = state["step"], state.get("history", [])
        tokens, train_seconds = state.get("tokens", 0), state.get("train_seconds", 0.0)
        if dist.master:
            print(f"resumed from {cfg.out} at step {step:,}")
    del state
    model = dist.wrap(maybe_compile(raw_model, cfg, device))  # the update's forward; rollouts use raw_model
    # Decoding reads every weight once per token, so the sampler is the policy with its weights cast
    # (GPT.decode_dtype: bf16 blocks, fp32 logits), not under autocast, which casts them on every
    # forward: that is what inference does too. At the tiny shape on a CPU with native bf16, fp32 decodes
    # faster than either (oneDNN's bf16 calls cost more at these sizes), so the tiny preset sets fp32.
    roll_dtype = pick_dtype(device, cfg.rollout_dtype, verbose=False)
    if dist.master:
        print(f"rollouts and held-out evals decode with {str(roll_dtype).replace('torch.', '')} weights")

    def sampler(model=raw_model):
        """The current policy (or another model) as rollouts decode it: itself in fp32, else a cast copy,
        made again each step as the weights change (one copy reads the weights once, as one decoded token does)."""
        if roll_dtype == torch.float32:
            return model
        return copy.deepcopy(model).decode_dtype(roll_dtype)
    multiple = 64 if cfg.compile else 1  # compiled: a few padded lengths instead of a recompile per length
    logger = init_wandb(cfg.wandb, cfg.wandb_project, cfg.run_name, config_dict(cfg), dist.master)
    G, Q = cfg.group_size, cfg.questions_per_step
    if dist.master:
        retire = [k for k, on in (("solved", cfg.retire_solved), ("unsolved", cfg.retire_unsolved)) if on]
        print(f"rollouts/step {Q * G:,} = {Q} questions × {G} samples ({dist.world} process"
              f"{'es' if dist.world > 1 else ''}), up to {cfg.max_resample} resample rounds | retire "
              f"{' and '.join(retire) or 'none'} | {cfg.max_new_tokens} new tokens max | beta {cfg.beta:g} | "
              f"{cfg.loss_type} loss, {cfg.scale_rewards} scaling | {cfg.max_steps:,} steps")

    def checkpoint():
        if not dist.master:
            return
        check_finite_model(raw_model, cfg.out)
        save_checkpoint(cfg.out, {
            "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "model_config": mc,
            "config": config_dict(cfg), "step": step,
            "rng": {"data": data_gen.get_state(), "torch": torch.get_rng_state()},
            "tokenizer_hash": tok.hash, "stage": "grpo", "history": history, "n_params": raw_model.num_params(),
            **throughput(tokens, train_seconds), "pool": pool.summary(), "pool_buckets": pool.buckets_summary(), "question_stats": pool.state()},
            json_exclude=("question_stats",))  # one record per question drawn: the .json keeps the summary

    def evaluate_and_save():
        if dist.master:
            msg = ""
            if heldout:
                acc, per = heldout_accuracy(sampler(), tok, heldout, cfg.max_new_tokens, cfg.eval_batch, device,
                                            progress=cfg.progress)
                history.append({"step": step, "heldout_acc": acc, **{f"heldout_acc/{k}": v for k, v in per.items()}})
                logger.log({"heldout_acc": acc, **{f"heldout/{k}": v for k, v in per.items()}}, step=step)
                msg = f" | heldout_acc {acc:.3f} | " + " | ".join(f"{k} {v:.3f}" for k, v in per.items())
            checkpoint()
            print(f"step {step:05d}/{cfg.max_steps:05d}{msg} | saved {cfg.out}")
        dist.barrier()

    # --- one update on a rollout batch ---------------------------------------
    def update(idx, mask, adv, lengths, n_rows_all, n_tok_all):
        """ppo_epochs optimizer steps on this rank's rows, sorted by length (lengths: each row's unpadded
        length). The loss of each micro-batch is scaled so that, summed over micro-batches and averaged
        over ranks by DDP, it is grpo_loss on the global batch; a micro-batch is cut to its own longest
        row, so with sorted rows it carries little padding (every row used to be padded to the batch's
        longest)."""
        N = idx.size(0)
        chunks = []
        for s in range(0, N, cfg.micro_batch):
            T = -(-int(lengths[s:s + cfg.micro_batch].max()) // multiple) * multiple
            chunks.append((slice(s, s + cfg.micro_batch), slice(0, T), slice(0, T - 1)))
        chunks = chunks or [(slice(0, 0), slice(None), slice(None))]
        to = lambda t: t.to(device)
        old, ref = [None] * len(chunks), [None] * len(chunks)
        with torch.no_grad():
            for j, (c, t, t1) in enumerate(chunks):
                # the policy's log-probs before this update, from its training forward (not the rollout's cast
                # copy: the ratio compares like with like); with one epoch logp.detach() is the same
                if N and cfg.ppo_epochs > 1:
                    old[j] = sequence_logprobs(raw_model, to(idx[c, t]), device, dtype, cfg.temperature)
                if N and ref_model is not None:
                    ref[j] = sequence_logprobs(ref_model, to(idx[c, t]), device, dtype, cfg.temperature)
        # this rank's share of the global loss, and token sums of the per-token stats (normalised globally)
        stats = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0}
        grad_norm = 0.0
        for epoch in range(cfg.ppo_epochs):
            loss_sum = 0.0  # this epoch's share of the loss, to stop at the first non-finite one
            for j, (c, t, t1) in enumerate(chunks):
                if dist.enabled:  # sync gradients once, on the last micro-batch
                    model.require_backward_grad_sync = j == len(chunks) - 1
                if N == 0:  # this rank drew only zero-signal groups: a zero loss keeps DDP's all-reduce in step
                    logits, _, _ = model(torch.zeros(1, 1, dtype=torch.long, device=device))
                    (0.0 * logits.sum()).backward()
                    continue
                m = to(mask[c, t1])
                logp = sequence_logprobs(model, to(idx[c, t]), device, dtype, cfg.temperature)
                old_logp = old[j] if old[j] is not None else logp.detach()
                loss, st = grpo_loss(logp, old_logp, ref[j], to(adv[c]), m, cfg.clip_eps, cfg.beta, cfg.loss_type)
                # this micro-batch's share of the global normaliser (sequences for grpo, tokens for dapo);
                # × world because DDP averages gradients over ranks
                share = (m.size(0) / n_rows_all) if cfg.loss_type == "grpo" else (float(m.sum()) / n_tok_all)
                (loss * share * dist.world).backward()
                loss_sum += float(loss.detach()) * share
                if epoch == cfg.ppo_epochs - 1:  # stats of the last epoch
                    stats["loss"] += float(loss.detach()) * share
                    for k in ("kl", "clip_frac"):
                        stats[k] += st[k] * float(m.sum())
            grad_norm = float(torch.nn.utils.clip_grad_norm_(
                raw_model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")))
            stop_if_diverged(step + 1, loss_sum, grad_norm, cfg.out)  # before the step: no NaN reaches the weights
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        stats["grad_norm"] = grad_norm
        return stats

    # --- one step's rollouts: DAPO's dynamic sampling ------------------------
    def sample_groups():
        """Rollout rounds until Q groups have signal or max_resample extra rounds are spent; round k draws
        as many questions as signal groups are still missing. Every rank draws each round's questions from
        the shared generator and rolls out its share; the (n, G) correct matrix is summed across ranks, so
        every rank records the same results in the pool and draws the same next round.
        Returns (this rank's signal rows: prompts, completions, advantages (one per group, (G,) each);
        the global correct matrix of every group drawn, (groups_drawn, G); rounds; this rank's sums)."""
        policy = sampler()
        prompts, comps, advs, drawn = [], [], [], []
        sums = {"format": 0.0, "truncated": 0.0, "len": 0, "samples": 0, "generated": 0}
        n_signal, rounds = 0, 0
        while n_signal < Q and rounds <= cfg.max_resample:
            # as many questions as should yield the missing signal groups at the measured rate, so a step
            # is one or two large rounds (tiny: 4 rounds a step at exactly the missing number, 1-2 with
            # this); both bounds are >= missing, as the rate is <= 1 and oversample >= 1
            missing = Q - n_signal
            n_draw = min(math.ceil(missing / pool.signal_rate()), math.ceil(missing * cfg.oversample))
            keys = pool.draw(n_draw, data_gen)
            mine = list(range(dist.rank, len(keys), dist.world))
            questions = [pool.row(keys[j]) for j in mine]
            ro = rollout(policy, tok, questions, G, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p,
                         seed=cfg.seed + 7919 * step + 104_729 * rounds + dist.rank, device=device)
            # ran out of room: as long as its generate call ran (max_new_tokens, or less for a long prompt's)
            cut = [len(c) >= r and tok.eos_id not in c for c, r in zip(ro["completions"], ro["room"])]
            correct, fmt, truncated = score(ro["texts"], questions, G, cut)
            everyone = torch.zeros(len(keys), G, dtype=torch.float64)
            everyone[mine] = correct.double()
            everyone = dist.all_sum(everyone)  # (n, G): every rank's groups, on every rank
            counts = [int(c) for c in everyone.sum(1).tolist()]
            for key, c in zip(keys, counts):
                pool.record(key, c, G)
            # rewards are 1/0: a group has zero variance exactly when none or all of its G samples are right
            adv, _ = group_advantages(correct, cfg.scale_rewards)
            for b, j in enumerate(mine):
                if 0 < counts[j] < G:
                    prompts += [ro["prompts"][b]] * G
                    comps += ro["completions"][b * G:(b + 1) * G]
                    advs.append(adv[b])
            n_signal += sum(0 < c < G for c in counts)
            drawn.append(everyone)
            sums["format"] += float(fmt.sum())
            sums["truncated"] += float(truncated.sum())
            sums["len"] += sum(len(c) for c in ro["completions"])
            sums["samples"] += len(ro["completions"])
            sums["generated"] += ro["n_generated"]
            rounds += 1
        return prompts, comps, advs, torch.cat(drawn), rounds, sums

    # --- the loop ------------------------------------------------------------
    bar = None
    if dist.master and cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_steps, initial=step, desc="grpo", unit="step", leave=False, dynamic_ncols=True,
                   disable=None)
    start_step = step
    if step == 0:
        evaluate_and_save()  # the SFT model's held-out accuracy: the baseline the curve starts from
    while step < cfg.max_steps:
        t0 = time.time()
        lr = get_lr(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        raw_model.eval()
        prompts, comps, advs, drawn, rounds, sums = sample_groups()
        t_gen = time.time() - t0
        raw_model.train()
        counts = drawn.sum(1)
        signal = (counts > 0) & (counts < G)  # the groups kept, over all ranks and rounds

        # zero-variance groups were dropped: they would only add KL and dilute the normaliser
        n_rows_all = int(signal.sum()) * G
        n_tok_all = dist.mean(sum(len(c) - sum(forced_mask(c, tok.calc_ids)) for c in comps)) * dist.world
        skipped = n_rows_all == 0
        stats = {"loss": float("nan"), "kl": float("nan"), "clip_frac": float("nan"), "grad_norm": float("nan")}
        if not skipped:  # no group of any round had signal: no gradient, no optimizer step
            if prompts:
                # shortest rows first, so each micro-batch holds rows of similar length (update())
                adv_k = torch.cat(advs)
                order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(comps[i]))
                prompts, comps, adv_k = [prompts[i] for i in order], [comps[i] for i in order], adv_k[order]
                idx, mask = pack(prompts, comps, tok.pad_id, multiple, tok.calc_ids)
                lengths = torch.tensor([len(p) + len(c) for p, c in zip(prompts, comps)])
            else:
                idx, mask, adv_k = torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 0), torch.zeros(0)
                lengths = torch.zeros(0, dtype=torch.long)
            stats = update(idx, mask, adv_k, lengths, n_rows_all, n_tok_all)
        step += 1
        dt = time.time() - t0
        # tokens through the policy: those sampled, and the update's rows once per epoch (no padding)
        my_tokens = sums["generated"] + cfg.ppo_epochs * sum(len(p) + len(c) for p, c in zip(prompts, comps))
        step_tokens = round(dist.mean(my_tokens) * dist.world)
        tokens += step_tokens
        train_seconds += dt
        if bar is not None:
            bar.update(1)

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            p1, pg = pass_at(drawn)
            n_samples = max(dist.mean(sums["samples"]) * dist.world, 1)
            pool_now = pool.summary()
            row = {"step": step, "reward": p1, "pass@1": p1, "pass@G": pg,
                   "groups_drawn": drawn.size(0), "groups_signal": int(signal.sum()),
                   "zero_signal": 1.0 - float(signal.float().mean()), "rounds": rounds,
                   "retired_solved": pool_now["retired_solved"], "retired_unsolved": pool_now["retired_unsolved"],
                   "format": dist.mean(sums["format"]) * dist.world / n_samples,
                   "truncated": dist.mean(sums["truncated"]) * dist.world,  # completions cut before an answer
                   "kl": dist.mean(stats["kl"]) * dist.world / max(n_tok_all, 1),
                   "len": dist.mean(sums["len"]) * dist.world / n_samples,
                   "loss": dist.mean(stats["loss"]) * dist.world,
                   "clip_frac": dist.mean(stats["clip_frac"]) * dist.world / max(n_tok_all, 1),
                   "grad_norm": stats["grad_norm"], "lr": lr, "skipped": skipped,
                   "tokens": tokens, "step_tokens": step_tokens, "tok_s": step_tokens / max(dt, 1e-9),
                   "gen_tok_s": dist.mean(sums["generated"]) * dist.world / max(t_gen, 1e-9), "dt": dt}
            history.append(row)
            if dist.master:
                eta = (cfg.max_steps - step) * dt
                kl = "-" if row["kl"] != row["kl"] else f"{row['kl']:.4f}"  # nan (no reference pass) prints as -
                line = (f"step {step:05d}/{cfg.max_steps:05d} ({100 * step / cfg.max_steps:.1f}%)"
                        f" | pass@1 {p1:.3f} | pass@{G} {pg:.3f} | groups {row['groups_drawn']} in {rounds} rounds"
                        f" | zero_signal {row['zero_signal']:.2f} | retired {row['retired_solved']} solved"
                        f" {row['retired_unsolved']} unsolved | format {row['format']:.2f}"
                        f" | truncated {row['truncated']:.0f} | kl {kl} | len {row['len']:.1f} | lr {lr:.1e}"
                        f" | dt {dt:.1f}s | tok {step_tokens:,} | tok/s {row['tok_s']:,.0f} | eta {eta / 60:.1f}m"
                        + (" | skipped: every group zero-signal" if skipped else ""))
                (bar.write if bar is not None else print)(line)
                logger.log({k: v for k, v in row.items() if k != "step"}, step=step)

        if cfg.eval_every > 0 and step % cfg.eval_every == 0 and step != cfg.max_steps:
            evaluate_and_save()
    if bar is not None:
        bar.close()
    if step > start_step or not os.path.exists(cfg.out):
        if dist.master and step > start_step and heldout:  # beside the held-out number, or it says little
            # the SFT model (the frozen reference when beta > 0, else read again from --init_from), decoded as
            # the policy is: the same numbers for both
            sft_model = ref_model or model_from_checkpoint(load_checkpoint(cfg.init_from), device).eval()
            fit = fit_vs_transfer(pool, sampler(sft_model), sampler(), tok, cfg.max_new_tokens, cfg.n_eval, cfg.seed,
                                  cfg.eval_batch, device)
            if fit:
                history.append({"step": step, "trained_n": fit["n"], "trained_acc_sft": fit["sft"],
                                "trained_acc": fit["grpo"]})
                print(f"questions it trained on ({fit['n']:,} of the {fit['of']:,} with right and wrong samples), "
                      f"greedy: SFT {100 * fit['sft']:.1f}% → GRPO {100 * fit['grpo']:.1f}% (held-out below: how "
                      f"much of it carries to new problems)")
        evaluate_and_save()
    if dist.master:
        print(f"wrote {cfg.out} (step {step:,}, {raw_model.num_params() / 1e6:.2f}M params)")
        print(throughput_line("grpo", step, tokens, train_seconds))
    logger.finish()
    dist.close()
    return history


if __name__ == "__main__":
    main()
