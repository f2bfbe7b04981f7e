"""What both evals share: load a checkpoint and its tokenizer, read test rows, take a seeded
subset, and turn a list of prompts into completions with batched KV-cache decoding.

    model, tok = load_for_eval("checkpoint_mathlm.pt", "math_tokenizer", device)
    texts = complete(model, tok, prompts, max_new_tokens=256, batch_size=32)         # greedy
    texts = complete(model, tok, prompts, num_samples=8, temperature=0.7, seed=0)    # sampled

Prompts are strings or token-id lists (gsm8k.py passes ids: its shots are closed by <|eos|>).
Batching: prompts are sorted by length so each batch pads little (left padding, per-row
positions: mathlm/model/gpt.py), and results come back in the caller's order. Greedy decoding
of a row does not depend on its batch mates (tests/test_eval.py checks batched == one-at-a-time):
a prompt so long that the context, not max_new_tokens, bounds its answer is batched only with
prompts of its own length, so it gets the same number of new tokens as alone (`batches`).
Batch 32 runs the GSM8K eval 4.6x faster than batch 1 on one CPU thread (docs/BENCHMARKS.md).
A row stops at eos or once its text reaches the next "Q:" (the model starting a new question).
tools=tok runs the calculator inside decoding (GPT.generate): a completion then holds its calls,
and the evals score strip_calls(completion), the text a reader sees. --tools on|off|both|auto
(`tool_modes`): auto is on when the checkpoint's tokenizer has the calculator tokens.
"""
import os
import random

import torch

from mathlm.common import SEED_MAX, check_choice, check_device, check_range, die, hold_lock, json_row, qa_fields_ok
from mathlm.format import cut_completion

# checked every few steps: decoding every row every step would cost more than it saves
STOP_CHECK_EVERY = 4


def tool_modes(tools, tok):
    """--tools → the modes to decode in, in order: ["on"], ["off"] or ["on", "off"] (both: the same
    checkpoint and problems with and without the calculator, for a paired comparison)."""
    has = getattr(tok, "calc_ids", None) is not None
    if tools not in ("auto", "on", "off", "both"):
        die(f"--tools {tools!r}: choose auto, on, off or both")
    if tools in ("on", "both") and not has:
        die(f"--tools {tools}: the tokenizer has no calculator tokens (<|calc|> <|result|> <|/result|>) — "
            "retrain it, or use --tools off")
    return {"auto": ["on" if has else "off"], "on": ["on"], "off": ["off"], "both": ["on", "off"]}[tools]


def validate(cfg):
    """The flags both evals have: `--n -1` once meant all problems and `--max_new_tokens -1` an
    empty answer scored 0%, both with exit 0."""
    check_range(cfg, "n", lo=0, why="0 = all")
    check_range(cfg, "seed", lo=0, hi=SEED_MAX)
    check_range(cfg, "max_new_tokens", lo=1)
    check_range(cfg, "batch_size", lo=1)
    check_range(cfg, "samples", lo=0, why="0 = greedy only")
    if cfg.samples > 0:  # at temperature 0 the k samples are k copies of the greedy answer
        check_range(cfg, "temperature", above=0, why="the samples are drawn at it")
    check_choice(cfg, "dtype", ("auto", "fp32", "bf16"))
    from mathlm.infer.inference import check_speculate
    check_speculate(cfg.speculate, cfg.spec_k, cfg.draft_checkpoint)
    check_device(cfg)


def output_lock(out):
    """`with output_lock(out):` around an eval's work: it is the one writer of <out>.json / <out>.jsonl
    (a second eval on the same --out stops at once, naming the first's pid), and their folder is
    checked writable before any generation, not after it (mathlm.common.hold_lock)."""
    return hold_lock(out + ".json", hint="choose another --out")


def load_for_eval(checkpoint, tokenizer_dir, device, dtype="fp32"):
    """(model, tok) in eval mode; dtype fp32 (the weights as trained: what reported scores use) | bf16 |
    auto (bf16 where the device has native bf16: faster decoding; bf16 vs fp32 agreement in docs/BENCHMARKS.md)."""
    from mathlm.common import pick_dtype
    from mathlm.tokenizer import MathTokenizer
    from mathlm.train.common import load_checkpoint, model_from_checkpoint
    ckpt = load_checkpoint(checkpoint)
    try:
        tok = MathTokenizer.load(tokenizer_dir)
    except ValueError as e:
        die(str(e))
    if ckpt.get("tokenizer_hash") not in (None, tok.hash):
        die(f"{checkpoint} was trained with tokenizer {ckpt['tokenizer_hash']}, {tokenizer_dir} is {tok.hash} "
            "— pass the matching --tokenizer")
    model = model_from_checkpoint(ckpt, device)
    model.decode_dtype(pick_dtype(device, dtype, verbose=False)).eval()
    return model, tok


def eval_decoder(cfg, model, tok, device):
    """--speculate off|lookup|draft (with --spec_k, --draft_checkpoint) → the speculative.Decoder that
    complete() decodes with, or None for off. Speculation is exact (greedy: the same tokens as plain
    decoding), and it runs at batch 1 only: with --batch_size 1 it speeds a latency-bound eval, while
    a batched eval decodes plainly whatever the flag says."""
    if cfg.speculate == "off":
        return None
    from mathlm.infer.inference import make_decoder
    return make_decoder(model, tok, cfg.speculate, cfg.spec_k, cfg.draft_checkpoint, cfg.tokenizer, device,
                        cfg.dtype, verbose=False)


def read_rows(path):
    """Test rows from a jsonl file; malformed lines are counted and reported, not fatal."""
    if not os.path.exists(path):
        die(f"test file {path} not found")
    rows, bad = [], []
    with open(path, "rb") as f:  # bytes: a line of invalid UTF-8 is one bad line, not a crash
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json_row(line)
            if row is not None and qa_fields_ok(row):
                rows.append(row)
            else:  # not a JSON object, or a question/answer that is not a string
                bad.append(i)
    if bad:
        print(f"warning: {path}: skipped {len(bad)} malformed line(s): {bad[:10]}")
    return rows


def subset(rows, n, seed=0):
    """A fixed, seeded subset of n rows (all rows when n <= 0 or n >= len), in file order."""
    if n <= 0 or n >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def batches(lengths, max_new_tokens, block_size, batch_size):
    """Index batches over prompts sorted by length. A row gets min(max_new_tokens, block_size - its
    length) new tokens alone; in a batch the longest prompt bounds everyone (left padding shares the
    cache slots), so a prompt that close to the context end only shares a batch with prompts of its
    own length: every row then gets the same budget in any batch, as greedy equality needs."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    budget = lambda i: min(max_new_tokens, block_size - lengths[i])
    out = []
    for i in order:
        if out and len(out[-1]) < batch_size and budget(i) == budget(out[-1][0]):
            out[-1].append(i)
        else:
            out.append([i])
    return out


@torch.no_grad()
def complete(model, tok, prompts, max_new_tokens=256, batch_size=32, num_samples=1,
             temperature=0.0, top_k=None, top_p=None, seed=0, progress=None, tools=None, decoder=None):
    """Completions for `prompts` (strings, or token-id lists), cut at eos / next "Q:". Returns a list
    of len(prompts) lists of num_samples strings (num_samples=1: a list of strings). tools: the
    tokenizer to run calculator calls with (GPT.generate), None for none. decoder: a speculative.Decoder
    (speculation runs at batch_size 1 with one sample; larger batches decode plainly)."""
    enc = [list(p) if isinstance(p, (list, tuple)) else tok.encode(p) for p in prompts]
    block = model.config.block_size
    for i, ids in enumerate(enc):
        if len(ids) >= block:
            enc[i] = ids[-(block - 1):]  # keep the question end; the shots at the front give way
    out = [None] * len(enc)
    for idx in batches([len(p) for p in enc], max_new_tokens, block, batch_size):
        batch = [enc[i] for i in idx]
        steps = max(1, min(max_new_tokens, block - max(len(p) for p in batch)))
        rows = [[] for _ in range(len(batch) * num_samples)]
        done = [False] * len(rows)
        # the seed follows the batch's first prompt, so a rerun with the same batch_size draws the same samples
        generate = model.generate if decoder is None else (lambda *a, **kw: decoder.generate(model, *a, **kw))
        gen = generate(batch, steps, temperature=temperature, top_k=top_k, top_p=top_p,
                       seed=seed + idx[0], eos_id=tok.eos_id, num_samples=num_samples, tools=tools)
        for t, step_tokens in enumerate(gen):
            for r, token in enumerate(step_tokens.tolist()):
                if not done[r]:
                    if token == tok.eos_id:
                        done[r] = True
                    else:
                        rows[r].append(token)
            if (t + 1) % STOP_CHECK_EVERY == 0:
                for r in range(len(rows)):
                    # cheap test on the newest tokens first; the full decode only when "Q:" may be there
                    if not done[r] and "Q:" in tok.decode(rows[r][-8:]) and \
                            cut_completion(tok.decode(rows[r])) != tok.decode(rows[r]).strip():
                        done[r] = True
            if all(done):
                break
        for j, i in enumerate(idx):
            texts = [cut_completion(tok.decode(rows[j * num_samples + s])) for s in range(num_samples)]
            out[i] = texts if num_samples > 1 else texts[0]
        if progress is not None:
            progress.update(len(idx))
    return out


def wilson_str(k, n):
    from mathlm.eval.stats import wilson_interval
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / max(n, 1):.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
