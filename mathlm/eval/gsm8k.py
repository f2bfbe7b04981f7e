"""GSM8K accuracy: 2-shot chain-of-thought, batched greedy decoding, exact numeric match.

    python -m mathlm.eval.gsm8k --n 200         # the last pipeline stage's checkpoint here (GRPO > SFT > base)
    python -m mathlm.eval.gsm8k --checkpoint checkpoint_mathlm.pt --n 200
    python -m mathlm.eval.gsm8k --source ../shared/data/gsm8k/test.jsonl --n 0        # all 1,319
    python -m mathlm.eval.gsm8k --samples 8 --temperature 0.7                          # + maj@8, pass@8
    python -m mathlm.eval.gsm8k --tools both                                           # with vs without the calculator
    python -m mathlm.eval.gsm8k --dtype bf16 --speculate lookup --batch_size 1          # bf16 weights, speculation

Reads: --checkpoint, --tokenizer, the test set: --source (jsonl in the GSM8K schema,
question/answer "... #### N"), else gsm8k_test.jsonl here (written by download_gsm8k), else
the hub (openai/gsm8k, main, test).
Writes: <out>.jsonl (one row per problem: question, completion, extracted, gold, correct,
extracted_flexible, correct_flexible, and the samples when asked) and <out>.json (the summary:
accuracy with a 95% Wilson interval, flexible and flexible_ci95, majority_baseline and
majority_answer, n, shots, decoding settings, maj@k / pass@k).

The prompt: SHOTS (two fixed GSM8K train examples, below) in the canonical Q/A format, each
closed by <|eos|> as every example is in the training streams (format.encode_qa), then
"Q: {question}\\nA:". When the prompt plus max_new_tokens does not fit the model's context
(the tiny preset's 256 tokens), shots are dropped, and the summary says how many were used.
Extraction (mathlm/eval/answers.py): accuracy is strict, the number on the #### line (or in a
\\boxed{}) only, as lm-eval-harness's strict match; flexible also takes "the answer is N", a bare
answer and the last number. majority_baseline: the accuracy of always answering the most common
gold of these test rows, the floor a model must clear to be doing more than guessing.
--tools auto|on|off|both (mathlm/eval/harness.py tool_modes): with the calculator, the shots show
their arithmetic as calls (SHOTS_CALLS, as download_gsm8k writes them) and completions are scored on
strip_calls(completion). both: the same problems again without it; the summary is the tools-on one
plus tools_off {n, correct, accuracy, ci95}, tools_on_only / tools_off_only and tools_p_value
(exact McNemar), and each jsonl row adds completion_tools_off and correct_tools_off.
"""
import json
import os
import time
from dataclasses import dataclass

from tqdm import tqdm

from mathlm.common import atomic_write, atomic_write_json, check_range, cli, die, parse_config, pick_device
from mathlm.eval.answers import extract_number, gold_answer, majority_key, numbers_equal
from mathlm.eval.harness import (complete, eval_decoder, load_for_eval, output_lock, read_rows, subset, tool_modes,
                                 validate, wilson_str)
from mathlm.format import encode_qa, qa_prompt, strip_calls
from mathlm.infer.inference import pick_default_checkpoint

# GSM8K train examples #1 and #4 (0-based, openai/gsm8k main train): short, two-step. Their <<a*b=c>>
# calculator annotations are removed, as download_gsm8k removes them from the training data.
SHOTS = [
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
     "How much did she earn?",
     "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.\n#### 10"),
    ("James writes a 3-page letter to 2 different friends twice a week.  How many pages does he "
     "write a year?",
     "He writes each friend 3*2=6 pages a week\nSo he writes 6*2=12 pages every week\n"
     "That means he writes 12*52=624 pages a year\n#### 624"),
]
# the same two with their annotations as calculator calls (download_gsm8k's default), for --tools on
SHOTS_CALLS = [
    (SHOTS[0][0], "Weng earns 12/60 = $<|calc|>12/60<|result|>0.2<|/result|>0.2 per minute.\nWorking 50 minutes, "
                  "she earned 0.2 x 50 = $<|calc|>0.2*50<|result|>10<|/result|>10.\n#### 10"),
    (SHOTS[1][0], "He writes each friend 3*2=<|calc|>3*2<|result|>6<|/result|>6 pages a week\nSo he writes "
                  "6*2=<|calc|>6*2<|result|>12<|/result|>12 pages every week\nThat means he writes "
                  "12*52=<|calc|>12*52<|result|>624<|/result|>624 pages a year\n#### 624"),
]


@dataclass
class Config:
    checkpoint: str = ""           # the checkpoint to score; "" = the last pipeline stage's here (GRPO > SFT > base)
    tokenizer: str = "math_tokenizer"  # tokenizer folder; its hash must match the checkpoint's
    source: str = ""               # GSM8K-schema jsonl; default gsm8k_test.jsonl, else the hub
    n: int = 200                   # problems (a seeded subset); 0 = all
    seed: int = 0                  # picks the subset and seeds the samples
    shots: int = 2                 # worked examples before the question (0-2); dropped if they do not fit
    max_new_tokens: int = 256      # answer length cap
    batch_size: int = 32           # prompts per generate call
    samples: int = 0               # k > 0: also k sampled completions per problem → maj@k, pass@k
    temperature: float = 0.7       # for the samples; the main accuracy is always greedy
    top_p: float = 1.0             # for the samples; 1.0 = off
    device: str = "auto"           # auto|cuda|mps|cpu
    tools: str = "auto"            # calculator in decoding: auto (on if the tokenizer has its tokens) | on | off | both
    dtype: str = "fp32"            # decoding weights: fp32 (as trained: the reported scores) | bf16 | auto (bf16 where native)
    speculate: str = "off"         # off | lookup | draft: exact speculative decoding, used at --batch_size 1
    spec_k: int = 0                # tokens drafted per round; 0 = auto (4 lookup, 8 draft: speculative.AUTO_K)
    draft_checkpoint: str = ""     # --speculate draft: a smaller model on the same tokenizer
    out: str = "eval_gsm8k"        # writes <out>.jsonl and <out>.json


PRESETS = {"tiny": dict(n=100, max_new_tokens=160), "smoke": dict(n=20, max_new_tokens=48)}


def load_test(source):
    if source:
        if os.path.isdir(source):  # the folder download_gsm8k --source takes
            source = os.path.join(source, "test.jsonl")
        return read_rows(source)
    if os.path.exists("gsm8k_test.jsonl"):
        return read_rows("gsm8k_test.jsonl")
    from mathlm.data.qa_io import offline_unless_reachable
    offline_unless_reachable()  # offline, a failure in seconds, not after 25 s of retries
    try:
        from datasets import load_dataset
        return [dict(r) for r in load_dataset("openai/gsm8k", "main", split="test")]
    except Exception as e:
        die(f"no GSM8K test set: no gsm8k_test.jsonl here and the hub failed ({str(e).splitlines()[0][:80]}) "
            "— pass --source path/to/test.jsonl")


def build_prompt(question, shots, block_size, max_new_tokens, tok, calls=False):
    """Few-shot prompt as token ids, and the number of shots used: shots are dropped until the
    prompt plus room for an answer (max_new_tokens, at most 64) fits the context. calls: the shots
    written with calculator calls (SHOTS_CALLS)."""
    shot_ids = [sum(encode_qa(tok, q, a), []) for q, a in (SHOTS_CALLS if calls else SHOTS)[:shots]]
    ids = tok.encode(qa_prompt(question))
    for k in range(shots, -1, -1):
        p = [t for s in shot_ids[:k] for t in s] + ids
        if len(p) + min(max_new_tokens, 64) <= block_size:
            return p, k
    return ids, 0


def pass_at_k_mean(flags, k):
    from mathlm.eval.stats import pass_at_k
    return sum(pass_at_k(len(f), sum(f), k) for f in flags) / max(1, len(flags))


@cli
def main(argv=None):
    cfg = parse_config(Config, PRESETS, argv)
    validate(cfg)
    check_range(cfg, "shots", lo=0, hi=len(SHOTS))
    check_range(cfg, "top_p", above=0, hi=1, why="1 = off")
    if not cfg.checkpoint:  # the same rule as inference and the demo, said with why
        cfg.checkpoint = pick_default_checkpoint(print)
    if not os.path.exists(cfg.checkpoint):  # before the test set, which may come from the hub
        die(f"checkpoint {cfg.checkpoint} not found — train one or pass --checkpoint PATH")
    with output_lock(cfg.out):
        return run(cfg)


def run(cfg):
    rows = subset(load_test(cfg.source), cfg.n, cfg.seed)
    if not rows:
        die("the test set is empty")
    device = pick_device(cfg.device)
    model, tok = load_for_eval(cfg.checkpoint, cfg.tokenizer, device, cfg.dtype)
    decoder = eval_decoder(cfg, model, tok, device)
    modes = tool_modes(cfg.tools, tok)
    tools = tok if modes[0] == "on" else None
    prompts, used = zip(*(build_prompt(r["question"], cfg.shots, model.config.block_size,
                                       cfg.max_new_tokens, tok, calls=tools is not None) for r in rows))
    t0 = time.time()
    with tqdm(total=len(rows), desc=f"gsm8k greedy, tools {modes[0]}", unit="q", disable=None) as bar:
        greedy = complete(model, tok, list(prompts), cfg.max_new_tokens, cfg.batch_size, progress=bar, tools=tools,
                          decoder=decoder)
    dt_greedy = time.time() - t0
    greedy_off = None
    if len(modes) == 2:   # --tools both: the same problems without the calculator (and shots without calls)
        prompts_off = [build_prompt(r["question"], cfg.shots, model.config.block_size, cfg.max_new_tokens, tok)[0]
                       for r in rows]
        with tqdm(total=len(rows), desc="gsm8k greedy, tools off", unit="q", disable=None) as bar:
            greedy_off = complete(model, tok, prompts_off, cfg.max_new_tokens, cfg.batch_size, progress=bar,
                                  decoder=decoder)
    samples = None
    if cfg.samples > 0:
        with tqdm(total=len(rows), desc=f"gsm8k {cfg.samples} samples", unit="q", disable=None) as bar:
            samples = complete(model, tok, list(prompts), cfg.max_new_tokens, max(1, cfg.batch_size // cfg.samples),
                               num_samples=cfg.samples, temperature=cfg.temperature,
                               top_p=cfg.top_p if cfg.top_p < 1 else None, seed=cfg.seed, progress=bar,
                               tools=tools)
            samples = [[strip_calls(t) for t in (s if isinstance(s, list) else [s])] for s in samples]
    dt = time.time() - t0

    out_rows, correct, correct_flex, maj_ok, sample_flags = [], 0, 0, 0, []
    for i, (row, comp) in enumerate(zip(rows, greedy)):
        gold = gold_answer(row)[0]  # None (no gold): the row counts as wrong
        text = strip_calls(comp)    # scored as a reader sees it; the record keeps the calls
        pred, flex = extract_number(text, "strict"), extract_number(text, "flexible")
        ok = pred is not None and gold is not None and numbers_equal(pred, gold)
        ok_flex = flex is not None and gold is not None and numbers_equal(flex, gold)
        correct += ok
        correct_flex += ok_flex
        rec = {"question": row["question"], "completion": comp, "extracted": pred, "gold": gold,
               "correct": bool(ok), "extracted_flexible": flex, "correct_flexible": bool(ok_flex),
               "shots": used[i]}
        if greedy_off is not None:
            p_off = extract_number(strip_calls(greedy_off[i]), "strict")
            rec.update(completion_tools_off=greedy_off[i],
                       correct_tools_off=bool(p_off is not None and gold is not None and numbers_equal(p_off, gold)))
        if samples is not None:
            preds = [extract_number(s, "strict") for s in samples[i]]
            flags = [p is not None and gold is not None and numbers_equal(p, gold) for p in preds]
            keys = [majority_key(p) for p in preds if p is not None]
            vote = max(keys, key=keys.count) if keys else None  # ties: the first seen
            maj = vote is not None and gold is not None and numbers_equal(vote, gold)
            maj_ok += maj
            sample_flags.append(flags)
            rec.update(samples=samples[i], sample_correct=flags, majority=vote, majority_correct=bool(maj))
        out_rows.append(rec)

    from mathlm.eval.stats import majority_vote, wilson_interval
    n = len(rows)
    lo, hi = wilson_interval(correct, n)
    golds = [r["gold"] for r in out_rows]
    common = majority_vote(golds)
    summary = {"task": "gsm8k", "checkpoint": cfg.checkpoint, "n": n, "correct": correct,
               "accuracy": correct / n, "ci95": [lo, hi], "flexible": correct_flex / n,
               "flexible_ci95": list(wilson_interval(correct_flex, n)),
               "majority_baseline": sum(g is not None and numbers_equal(g, common) for g in golds) / n,
               "majority_answer": common, "shots": cfg.shots,
               "shots_used_min": min(used), "decoding": "greedy", "max_new_tokens": cfg.max_new_tokens,
               "batch_size": cfg.batch_size, "seconds": dt, "seconds_greedy": dt_greedy,
               "problems_per_s": n / dt_greedy if dt_greedy > 0 else None, "tools": modes}
    if greedy_off is not None:
        from mathlm.eval.stats import mcnemar_exact
        c_off = sum(r["correct_tools_off"] for r in out_rows)
        on_only = sum(r["correct"] and not r["correct_tools_off"] for r in out_rows)
        off_only = sum(r["correct_tools_off"] and not r["correct"] for r in out_rows)
        summary.update(tools_off={"n": n, "correct": c_off, "accuracy": c_off / n,
                                  "ci95": list(wilson_interval(c_off, n))},
                       tools_on_only=on_only, tools_off_only=off_only, tools_p_value=mcnemar_exact(on_only, off_only))
    if samples is not None:
        k = cfg.samples
        summary.update({f"maj@{k}": maj_ok / n, f"pass@{k}": pass_at_k_mean(sample_flags, k),
                        "pass@1_sampled": pass_at_k_mean(sample_flags, 1), "temperature": cfg.temperature})
    atomic_write(cfg.out + ".jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out_rows))
    atomic_write_json(cfg.out + ".json", summary)
    extra = "".join(f" | {k} {100 * v:.1f}%" for k, v in summary.items() if k.startswith(("maj@", "pass@")))
    print(f"gsm8k | {cfg.checkpoint} | accuracy {wilson_str(correct, n)} ({correct}/{n})"
          f" | flexible {100 * correct_flex / n:.1f}% | majority {100 * summary['majority_baseline']:.1f}%{extra}"
          f" | {dt:.1f}s")
    if greedy_off is not None:
        print(f"gsm8k | tools on {wilson_str(correct, n)} vs off {wilson_str(summary['tools_off']['correct'], n)}"
              f" | on only {summary['tools_on_only']}, off only {summary['tools_off_only']}"
              f" | McNemar p {summary['tools_p_value']:.3g}")
    print(f"wrote {cfg.out}.jsonl and {cfg.out}.json")
    return summary


if __name__ == "__main__":
    main()
