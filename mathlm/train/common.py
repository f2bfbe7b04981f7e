"""What the three trainers (pretrain, sft, grpo) share: LR schedule, DDP setup, the WandB
no-op, checkpoints, and building a model from one.

Checkpoint layout (a dict of tensors and plain Python data; `torch.load(weights_only=True)` works):
    model          state_dict of the raw (uncompiled, un-DDP'd) GPT
    model_config   GPTConfig as a dict
    config         the stage's Config as a dict
    step           optimizer steps done
    optimizer      AdamW state_dict (absent in exported/stripped checkpoints)
    rng            {"data": torch.Generator state, "torch": torch RNG state}
    tokenizer_hash the vocabulary the model was trained with
    stage          "pretrain" | "sft" | "grpo"
    history        list of plain dicts (the logged curves, for the report card)
    tokens         tokens processed by this stage so far (each trainer's docstring says which)
    train_seconds  seconds spent in training steps (evals and checkpoint writes excluded)
    tokens_per_s   tokens / train_seconds (None before the first step)
A `<checkpoint>.json` summary beside it repeats everything but the tensors (and any bulky
per-item state the trainer names in `json_exclude`).
"""
import contextlib
import dataclasses
import json
import math
import os
import sys
import warnings

import torch

from mathlm.common import SEED_MAX, atomic_save, atomic_write_json, check_device, check_range, die, hold_lock


# -----------------------------------------------------------------------------
# learning rate: linear warmup, then cosine from lr to min_lr

def get_lr(step, lr, min_lr, warmup_steps, max_steps):
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps  # never 0 at step 0: the first step still learns
    if step >= max_steps:
        return min_lr
    ratio = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


# -----------------------------------------------------------------------------
# flags every trainer has, and divergence: nothing non-finite is trained on or saved

def validate_optim(cfg):
    """Check the optimizer, schedule, seed, logging and device flags the three trainers share."""
    # AdamW moves every weight by about lr a step (init std 0.02): above 1 a run only diverges
    check_range(cfg, "lr", above=0, hi=1)
    check_range(cfg, "min_lr", lo=0, hi=1)
    check_range(cfg, "warmup_steps", lo=0)
    check_range(cfg, "weight_decay", lo=0)
    for k in ("beta1", "beta2"):
        check_range(cfg, k, lo=0, below=1, why="AdamW's moment decay")
    check_range(cfg, "grad_clip", lo=0, why="0 = off")
    check_range(cfg, "log_every", lo=1)
    check_range(cfg, "seed", lo=0, hi=SEED_MAX)
    check_device(cfg)


def nonfinite(state_dict):
    """Names of the floating-point tensors in `state_dict` that hold a NaN or an inf."""
    return [k for k, t in state_dict.items()
            if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]


DIVERGED = "training diverged; {out} keeps its last good checkpoint — lower --lr (or raise --warmup_steps) and rerun"


def stop_if_diverged(step, loss, grad_norm, out):
    """Stop at step `step`'s first non-finite loss or gradient norm: called before the optimizer
    applies it, so nothing non-finite reaches the weights or `out` (issue 14: `--lr inf` once saved
    an all-NaN checkpoint over the last good one, with exit 0)."""
    loss, grad_norm = float(loss), float(grad_norm)
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        die(f"step {step}: loss {loss:g}, grad_norm {grad_norm:g} — " + DIVERGED.format(out=out))


@torch.no_grad()
def check_finite_model(model, out):
    """Refuse to save `model` over `out` when a weight is non-finite, or when its logits on a fixed
    input are (finite weights so large that the activations overflow). A tiny forward: cheap next to
    a save. The per-step check (stop_if_diverged) is what normally stops a diverging run first."""
    bad = nonfinite(model.state_dict())
    if not bad:
        T = min(8, model.config.block_size)
        idx = torch.arange(T, device=next(model.parameters()).device)[None] % model.config.vocab_size
        was_training = model.training
        model.eval()
        logits = model(idx)[0]
        model.train(was_training)
        bad = [] if torch.isfinite(logits).all() else ["logits on a fixed input"]
    if bad:
        die(f"not saving: NaN or inf in the model's {bad[0]} — " + DIVERGED.format(out=out))


# -----------------------------------------------------------------------------
# distributed: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; without them this is one process

class Dist:
    def __init__(self, device):
        self.enabled = int(os.environ.get("RANK", -1)) != -1
        if self.enabled:
            import torch.distributed as dist
            self.rank = int(os.environ["RANK"])
            self.world = int(os.environ["WORLD_SIZE"])
            self.local_rank = int(os.environ["LOCAL_RANK"])
            if device.startswith("cuda"):
                device = f"cuda:{self.local_rank}"
                torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        else:
            self.rank, self.world, self.local_rank = 0, 1, 0
        self.device = device
        self.master = self.rank == 0

    def wrap(self, model):
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [self.local_rank] if self.device.startswith("cuda") else None
        return DDP(model, device_ids=ids)

    def mean(self, x):
        """Average a float across ranks (for logging identical numbers everywhere)."""
        if not self.enabled:
            return float(x)
        import torch.distributed as dist
        t = torch.tensor([float(x)], dtype=torch.float64)
        if self.device.startswith("cuda"):
            t = t.to(self.device)
        dist.all_reduce(t)
        return t.item() / self.world

    def all_sum(self, t):
        """Sum a tensor across ranks; returned on the CPU (the tensor itself in one process)."""
        if not self.enabled:
            return t
        import torch.distributed as dist
        t = t.to(self.device)
        dist.all_reduce(t)
        return t.cpu()

    def barrier(self):
        if self.enabled:
            import torch.distributed as dist
            dist.barrier()

    def close(self):
        if self.enabled:
            import torch.distributed as dist
            # leave together: a rank that exits while its peer still holds live gloo pairs can make the
            # peer's transport thread throw "Connection reset by peer" and abort it (SIGABRT, -6)
            dist.barrier()
            dist.destroy_process_group()


def exit_if_distributed():
    """The last line of a trainer's main, after Dist.close and the --out lock's release: under torchrun,
    end the process here (os._exit(0)) instead of through the interpreter's teardown.

    DDP keeps the process group alive after destroy_process_group: its gloo threads (gloo_tcp_loop and
    two pt_gloo_runloop) still run, where without DDP they are joined there (measured, torch 2.13).
    A normal exit then finalizes Python and runs the C++ static destructors around live gloo threads
    while the peer rank exits too: a script ending as the trainers do (DDP, all_reduce, barrier,
    destroy_process_group, exit) aborted in 1 of 45 torchrun runs on a loaded 2-core machine with
    "terminate called without an active exception" (SIGABRT), and the DDP test in 1 of 4, after the
    checkpoint was written. os._exit skips that teardown. Nothing is lost: the checkpoint and its .json
    are already written and fsync'd (atomic_save), wandb has finished, and the logs are flushed here."""
    if int(os.environ.get("RANK", -1)) == -1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def setup(cfg, split_field):
    """The first lines of every trainer: processes and device, autocast dtype, seed, tokenizer.
    `split_field` names the config field counted globally (micro-steps, questions) that the
    ranks split between them; returns (dist, dtype, that field's per-rank share, tokenizer)."""
    from mathlm.common import pick_device, pick_dtype, set_seed
    from mathlm.tokenizer import MathTokenizer
    dist = Dist(pick_device(cfg.device))
    total = getattr(cfg, split_field)
    if total % dist.world:
        die(f"--{split_field} {total} must be divisible by the number of processes ({dist.world})")
    dtype = pick_dtype(dist.device, cfg.dtype, verbose=dist.master)
    set_seed(cfg.seed)
    try:
        tok = MathTokenizer.load(os.path.join(cfg.data_dir, cfg.tokenizer))
    except ValueError as e:
        die(str(e))
    return dist, dtype, total // dist.world, tok


# -----------------------------------------------------------------------------
# logging: WandB only when asked, and a failure to reach it never stops training

class DummyWandb:
    def log(self, *a, **k):
        pass

    def finish(self):
        pass


def init_wandb(enabled, project, run_name, config, master=True):
    if not (enabled and master):
        return DummyWandb()
    try:
        import wandb
        if not (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled")
                or wandb.api.api_key):
            raise RuntimeError("not logged in (run `wandb login` or set WANDB_API_KEY)")
        return wandb.init(project=project, name=run_name, config=config,
                          settings=wandb.Settings(init_timeout=30))
    except Exception as e:  # no login, no network, no package: one warning, training goes on
        warnings.warn(f"wandb disabled: {str(e).splitlines()[0][:120]}", stacklevel=2)
        return DummyWandb()


# -----------------------------------------------------------------------------
# checkpoints

def summary_path(path):
    """checkpoint.pt → checkpoint.json"""
    return os.path.splitext(path)[0] + ".json"


def checkpoint_summary(ckpt):
    """The JSON summary of a checkpoint: everything but its tensors and the keys it lists in
    `summary_exclude`, as plain JSON data (what reading the .json back gives)."""
    skip = {"model", "optimizer", "rng", *ckpt.get("summary_exclude", ())}
    return json.loads(json.dumps({k: v for k, v in ckpt.items() if k not in skip}))


def save_checkpoint(path, ckpt, json_exclude=()):
    """Atomic torch.save plus a JSON summary (everything but tensors and `json_exclude`) beside it.

    Two files cannot be replaced in one atomic step, so the order decides what a kill can leave:
    the summary is written and fsync'd to its temp file first, then the .pt is saved atomically, then
    the summary's temp is renamed into place. The summary never describes a checkpoint that is not on
    disk (a failed .pt save removes its temp), and it can lag the .pt only during that last rename
    (microseconds), where writing it after the .pt left a whole JSON write + fsync open (4 of 16
    mid-write kills in issue 14's probe). Even then nothing trusts it alone: read_summary takes the
    .pt's word, and the next trainer on this --out removes the orphan temp and rewrites it (writer_lock)."""
    if json_exclude:  # kept in the checkpoint, so a summary rebuilt from it leaves out the same keys
        ckpt = {**ckpt, "summary_exclude": list(json_exclude)}
    json_path = summary_path(path)
    tmp = f"{json_path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(checkpoint_summary(ckpt), indent=2) + "\n")  # as atomic_write_json writes it
            f.flush()
            os.fsync(f.fileno())
        atomic_save(ckpt, path)
        os.replace(tmp, json_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_summary(path):
    """The summary of checkpoint `path`: rebuilt from the .pt when it loads (read lazily, mmap: the
    tensors are not read), so it is never behind it; else its .json; None when neither reads."""
    try:
        return checkpoint_summary(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except Exception:  # no .pt (a hand-made run, a deleted checkpoint) or not a readable one
        return read_json(summary_path(path))


def heal_summary(path):
    """Rewrite `path`'s .json from the .pt where they disagree (a kill between save_checkpoint's two
    writes). Call it holding the lock on `path`. Returns True when it rewrote the summary."""
    if not os.path.exists(path):
        return False
    try:
        want = checkpoint_summary(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except Exception:  # corrupt: --resume says so; a fresh run overwrites it
        return False
    if read_json(summary_path(path)) == want:
        return False
    atomic_write_json(summary_path(path), want)
    return True


@contextlib.contextmanager
def writer_lock(path):
    """`with writer_lock(cfg.out):` — the trainer's lock on its --out (common.hold_lock), taken before
    anything is loaded; holding it, orphan temp files go and a lagging .json is rebuilt.

    Under torchrun only global rank 0 takes it: rank 0 is the only writer of --out. A lock on every
    rank would refuse the run itself (the ranks of one job share the --out), and per-rank locks would
    guard nothing, since no other rank writes. If rank 0 refuses, it exits 1 and torchrun stops the
    other ranks (they wait for it in init_process_group)."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with hold_lock(path):
        heal_summary(path)
        yield


def _load_error(e):
    """Why torch.load failed, in a few words. A refused pickle says what it refused (`unsupported
    GLOBAL posix.system`), which sits lines below torch's long preamble; an empty message (a 0-byte
    file) gives the exception's type."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    refused = [ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln]
    if refused:
        return f"it holds Python code that weights-only loading refuses: {refused[0][:160]}"
    return (lines[0].split(". ")[0][:120] if lines else type(e).__name__) + " — it is corrupt or not a mathlm checkpoint"


def check_checkpoint(path, ckpt, resume=False):
    """Refuse, in one line, a checkpoint whose parts do not fit together, before any stage uses it:
    model_config must build a GPTConfig (no unknown keys), and the weights must be exactly the tensors,
    of exactly the shapes, of the GPT it describes (checked on the meta device: no memory, no compute).
    `resume=True` also wants the optimizer and rng state a resumed run restores. Every loader goes
    through load_checkpoint, so upload_hf never exports a folder whose config.json and weights disagree."""
    import contextlib
    import io

    from mathlm.model.gpt import GPT, GPTConfig
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or \
            not isinstance(ckpt.get("model_config"), dict):
        die(f"{path} is not a mathlm checkpoint (no model/model_config dicts)")
    mc = ckpt["model_config"]
    unknown = sorted(set(mc) - {f.name for f in dataclasses.fields(GPTConfig)})
    if unknown:
        die(f"{path}: model_config has unknown key {unknown[0]!r} — it was made by another mathlm version "
            "or edited; retrain or re-export it")
    try:
        with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):  # GPT() prints its size
            want = {k: tuple(t.shape) for k, t in GPT(GPTConfig(**mc)).state_dict().items()}
    except Exception as e:  # a value GPTConfig/GPT cannot build from (a string, 0 heads, ...)
        die(f"{path}: model_config {mc} does not describe a GPT ({str(e).splitlines()[0][:100] if str(e) else type(e).__name__})")
    got = ckpt["model"]
    missing, extra = [k for k in want if k not in got], [k for k in got if k not in want]
    shape = next((k for k in want if k in got and (not torch.is_tensor(got[k]) or tuple(got[k].shape) != want[k])), None)
    if missing or extra or shape:
        what = (f"lacks {missing[0]}" if missing else f"has an extra tensor {extra[0]}" if extra else
                f"has {shape} of shape {tuple(getattr(got[shape], 'shape', ()))}, model_config implies {want[shape]}")
        die(f"{path}: its weights do not match its model_config (n_layer={mc.get('n_layer')}, "
            f"n_embd={mc.get('n_embd')}, vocab_size={mc.get('vocab_size')}): it {what} — the checkpoint is "
            "corrupt or edited; use another one")
    if resume:
        rng = ckpt.get("rng")
        need = {"optimizer": isinstance(ckpt.get("optimizer"), dict),
                "rng": isinstance(rng, dict) and torch.is_tensor(rng.get("data")) and torch.is_tensor(rng.get("torch")),
                "step": isinstance(ckpt.get("step"), int)}
        lacking = [k for k, ok in need.items() if not ok]
        if lacking:
            die(f"{path} lacks the {'/'.join(lacking)} state --resume restores (a stripped or exported "
                "checkpoint?) — rerun without --resume to start fresh, or fine-tune from it with --init_from")


def load_checkpoint(path, map_location="cpu", resume=False):
    """The checkpoint dict at `path`, checked (check_checkpoint; `resume=True` for --resume). Loaded
    with weights_only=True: a file holding pickled code is refused, never run."""
    if not os.path.exists(path):
        die(f"checkpoint {path} not found")
    if os.path.isdir(path):
        die(f"checkpoint {path} is a folder — give a .pt file")
    if os.path.getsize(path) == 0:
        die(f"checkpoint {path} is empty (0 bytes) — it is not a checkpoint; use another one or retrain")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        die(f"checkpoint {path} is unreadable: {_load_error(e)}")
    check_checkpoint(path, ckpt, resume)
    bad = nonfinite(ckpt["model"]) if isinstance(ckpt["model"], dict) else []
    if bad:  # a diverged run's weights: every answer would be garbage, every further step NaN
        die(f"{path} holds NaN or inf weights ({len(bad)} of {len(ckpt['model'])} tensors, e.g. {bad[0]}) — "
            "it comes from a diverged run; use an earlier checkpoint")
    return ckpt


def model_from_checkpoint(ckpt, device="cpu", verbose=False):
    """Build the GPT a checkpoint describes and load its weights."""
    import contextlib
    import io

    from mathlm.model.gpt import GPT, GPTConfig
    mc = GPTConfig(**ckpt["model_config"])
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        model = GPT(mc)
    model.load_state_dict(ckpt["model"])
    return model.to(device)


def check_compatible(path, ckpt, model_config, tokenizer_hash, stage=None):
    """Refuse to resume or fine-tune from a checkpoint made with another shape or tokenizer, or
    (`stage` given: --resume) by another stage: its sampler state means something else there."""
    if stage is not None and ckpt.get("stage", stage) != stage:
        die(f"{path} is a {ckpt['stage']} checkpoint; {stage} --resume continues a {stage} one — "
            f"pass this stage's own --out, or start it without --resume")
    if tokenizer_hash is not None and ckpt.get("tokenizer_hash") not in (None, tokenizer_hash):
        die(f"{path} was trained with tokenizer {ckpt.get('tokenizer_hash')}, the current one is "
            f"{tokenizer_hash} — use the matching math_tokenizer/ or start a new run")
    if model_config is not None:
        diff = {k: (ckpt["model_config"].get(k), v) for k, v in model_config.items()
                if ckpt["model_config"].get(k) != v}
        if diff:
            k, (a, b) = next(iter(diff.items()))
            die(f"{path} has {k}={a}, this run asks for {k}={b} — pass matching flags or start a new run")


def throughput(tokens, seconds):
    """The checkpoint's throughput keys: tokens, train_seconds, tokens_per_s (None before any step)."""
    return {"tokens": int(tokens), "train_seconds": seconds,
            "tokens_per_s": tokens / seconds if seconds > 0 else None}


def throughput_line(stage, steps, tokens, seconds):
    """The last line of a trainer: `pretrain: 600 steps, 1,228,800 tokens in 301 s (4,082 tok/s)`."""
    rate = f"{tokens / seconds:,.0f}" if seconds > 0 else "-"
    return f"{stage}: {steps:,} steps, {int(tokens):,} tokens in {seconds:,.1f} s ({rate} tok/s)"


def write_history(path, history):
    atomic_write_json(path, history)


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default
