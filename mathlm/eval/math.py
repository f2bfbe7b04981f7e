"""Accuracy per domain — GSM8K, calculus, ML-math, MATH — and paired checkpoint comparison.

    python -m mathlm.eval.math --checkpoint checkpoint_mathlm.pt --n 200
    python -m mathlm.eval.math --compare checkpoint_mathlm.pt checkpoint_mathlm_grpo.pt --n 200
    python -m mathlm.eval.math --samples 8 --temperature 0.7          # + maj@8 and pass@8

Reads: --checkpoint (or the two --compare checkpoints), --tokenizer, and the held-out test
files here (or --data_dir): gsm8k_test.jsonl, calculus_test.jsonl, ml_math_test.jsonl,
math_test.jsonl. A missing file is named and its domain skipped; none at all is an error.
Writes: <out>.json (per-domain n, correct, accuracy, 95% Wilson interval; with --compare
both sides, the delta and an exact McNemar p-value on the paired outcomes) and <out>.jsonl
(one row per problem and checkpoint: domain, index in the domain's subset, question, completion,
extracted, gold, kind, correct; with --compare also side "A"/"B", so rows pair by domain + index).

Each problem is asked zero-shot in the canonical format ("Q: ...\\nA:"), decoded greedily
with the KV cache in batches, and checked by the same functions GRPO rewards with
(mathlm/eval/answers.py): numbers exactly, expressions by the safe symbolic checker,
antiderivatives up to a constant, MATH's \\boxed{} answers as expressions or normalised text.
Each domain takes a fixed seeded subset of --n problems, so two runs (and the two sides of a
comparison) see the same problems.
"""
import json
import os
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from mathlm.common import atomic_write, atomic_write_json, die, parse_config, pick_device
from mathlm.eval.answers import (REWARD_KINDS, answers_match, extract_boxed, extract_final,
                                 extract_number, majority_key, reward_answer)
from mathlm.eval.harness import complete, load_for_eval, read_rows, subset
from mathlm.eval.stats import mcnemar_exact, pass_at_k, wilson_interval
from mathlm.format import qa_prompt

DOMAINS = {"gsm8k": "gsm8k_test.jsonl", "calculus": "calculus_test.jsonl",
           "ml_math": "ml_math_test.jsonl", "math": "math_test.jsonl"}


@dataclass
class Config:
    checkpoint: str = "checkpoint_mathlm.pt"  # the checkpoint to score
    compare: list[str] = field(default_factory=list)  # two checkpoints: A B
    tokenizer: str = "math_tokenizer"  # tokenizer folder; its hash must match the checkpoint's
    data_dir: str = "."            # where the <domain>_test.jsonl files are
    domains: str = "gsm8k,calculus,ml_math,math"  # comma-separated; a missing test file is skipped
    n: int = 200                   # problems per domain (seeded subset); 0 = all
    seed: int = 0                  # picks the subset and seeds the samples
    max_new_tokens: int = 256      # answer length cap
    batch_size: int = 32           # prompts per generate call
    samples: int = 0               # k > 0: also maj@k and pass@k from k samples per problem
    temperature: float = 0.7       # for --samples only; the main accuracy is greedy
    device: str = "auto"           # auto|cuda|mps|cpu
    out: str = "eval_math"         # writes <out>.json and <out>.jsonl


PRESETS = {"tiny": dict(n=100, max_new_tokens=128), "smoke": dict(n=10, max_new_tokens=32)}


def gold_and_kind(domain, row):
    """(gold answer string or None, kind). None: the row states no answer (a MATH solution that boxes
    nothing); such rows are left out of the test set."""
    kind = row.get("kind") or ("number" if domain == "gsm8k" else "expr")
    gold = row.get("final")
    answer = str(row.get("answer") or "")
    if gold is None and "####" in answer:  # a GSM8K-schema row: the gold follows ####
        gold = answer.rsplit("####", 1)[-1].strip()
    elif gold is None:  # a MATH-schema row: the last \boxed{} of the solution
        gold = extract_boxed(answer)
    return (None if gold is None or not str(gold).strip() else str(gold)), kind


def extract(completion, kind):
    """What the checker reads: a number (the #### one, else the last) for "number", else the final line."""
    return extract_number(completion) if kind == "number" else extract_final(completion)


def is_correct(completion, gold, kind):
    if kind in REWARD_KINDS:
        return reward_answer(completion, gold, kind) == 1.0
    pred = extract_final(completion)  # e.g. "text": shapes like "(32, 128)" compare as normalised text
    return pred is not None and answers_match(pred, gold)


def load_domains(cfg):
    wanted = [d.strip() for d in cfg.domains.split(",") if d.strip()]
    unknown = [d for d in wanted if d not in DOMAINS]
    if unknown:
        die(f"unknown domain(s) {unknown}; choose from {', '.join(DOMAINS)}")
    out = {}
    for d in wanted:
        path = os.path.join(cfg.data_dir, DOMAINS[d])
        if not os.path.exists(path):
            print(f"domain {d}: {path} not found, skipped")
            continue
        rows = read_rows(path)
        usable = [r for r in rows if gold_and_kind(d, r)[0] is not None]
        if len(usable) < len(rows):
            print(f"domain {d}: {len(rows) - len(usable)} row(s) without a gold answer left out")
        rows = subset(usable, cfg.n, cfg.seed)
        if rows:
            out[d] = rows
    if not out:
        die(f"no test files found in {cfg.data_dir} (looked for {', '.join(DOMAINS[d] for d in wanted)}) "
            "— run the download/generate stages first")
    return out


def evaluate(checkpoint, cfg, domains, device):
    """{domain: list of per-problem records} for one checkpoint."""
    model, tok = load_for_eval(checkpoint, cfg.tokenizer, device)
    results = {}
    total = sum(len(r) for r in domains.values())
    with tqdm(total=total * (2 if cfg.samples else 1), desc=os.path.basename(checkpoint), unit="q",
              disable=None) as bar:
        for d, rows in domains.items():
            prompts = [qa_prompt(r["question"]) for r in rows]
            greedy = complete(model, tok, prompts, cfg.max_new_tokens, cfg.batch_size, progress=bar)
            sampled = None
            if cfg.samples:
                sampled = complete(model, tok, prompts, cfg.max_new_tokens, max(1, cfg.batch_size // cfg.samples),
                                   num_samples=cfg.samples, temperature=cfg.temperature, seed=cfg.seed, progress=bar)
                sampled = [s if isinstance(s, list) else [s] for s in sampled]
            recs = []
            for i, (row, comp) in enumerate(zip(rows, greedy)):
                gold, kind = gold_and_kind(d, row)
                rec = {"domain": d, "index": i, "checkpoint": checkpoint, "question": row["question"],
                       "completion": comp, "extracted": extract(comp, kind), "gold": gold, "kind": kind,
                       "correct": is_correct(comp, gold, kind)}
                if sampled is not None:
                    flags = [is_correct(s, gold, kind) for s in sampled[i]]
                    keys = [majority_key(extract(s, kind)) for s in sampled[i]]
                    keys = [k for k in keys if k is not None]
                    vote = max(keys, key=keys.count) if keys else None
                    rec.update(samples=sampled[i], sample_correct=flags, majority=vote,
                               majority_correct=vote is not None and is_correct(f"#### {vote}", gold, kind))
                recs.append(rec)
            results[d] = recs
    return results


def summarize(recs, k=0):
    n = len(recs)
    c = sum(r["correct"] for r in recs)
    lo, hi = wilson_interval(c, n)
    s = {"n": n, "correct": c, "accuracy": c / n if n else 0.0, "ci95": [lo, hi]}
    if k:
        s[f"maj@{k}"] = sum(r["majority_correct"] for r in recs) / n
        s[f"pass@{k}"] = sum(pass_at_k(len(r["sample_correct"]), sum(r["sample_correct"]), k) for r in recs) / n
    return s


def pct(s):
    return f"{100 * s['accuracy']:5.1f}% [{100 * s['ci95'][0]:.0f},{100 * s['ci95'][1]:.0f}]"


def main(argv=None):
    cfg = parse_config(Config, PRESETS, argv)
    if cfg.compare and len(cfg.compare) != 2:
        die("--compare takes exactly two checkpoints: A B")
    ckpts = cfg.compare or [cfg.checkpoint]
    for c in ckpts:
        if not os.path.exists(c):
            die(f"checkpoint {c} not found — train one or pass --checkpoint PATH")
    domains = load_domains(cfg)
    device = pick_device(cfg.device)
    t0 = time.time()
    runs = [evaluate(c, cfg, domains, device) for c in ckpts]
    summary = {"task": "math", "checkpoints": ckpts, "seconds": time.time() - t0, "n_per_domain": cfg.n,
               "domains": {}}
    if len(runs) == 1:
        print(f"{'domain':<10} {'n':>5}  accuracy [95% CI]")
        for d, recs in runs[0].items():
            s = summarize(recs, cfg.samples)
            summary["domains"][d] = s
            extra = "".join(f"  {k} {100 * v:.1f}%" for k, v in s.items() if k.startswith(("maj@", "pass@")))
            print(f"{d:<10} {s['n']:>5}  {pct(s)}{extra}")
    else:
        a_name, b_name = (os.path.basename(c) for c in ckpts)
        print(f"{'domain':<10} {'n':>5}  {'A: ' + a_name:<28} {'B: ' + b_name:<28} {'Δ (B−A)':>8}  McNemar p")
        for d in runs[0]:
            ra, rb = runs[0][d], runs[1][d]
            sa, sb = summarize(ra, cfg.samples), summarize(rb, cfg.samples)
            b = sum(x["correct"] and not y["correct"] for x, y in zip(ra, rb))  # A right, B wrong
            c = sum(y["correct"] and not x["correct"] for x, y in zip(ra, rb))  # B right, A wrong
            p = mcnemar_exact(b, c)
            delta = sb["accuracy"] - sa["accuracy"]
            summary["domains"][d] = {"A": sa, "B": sb, "delta": delta, "a_only": b, "b_only": c, "p_value": p}
            print(f"{d:<10} {sa['n']:>5}  {pct(sa):<28} {pct(sb):<28} {100 * delta:>+7.1f}%  {p:.3g}")
    rows = [dict(r, side="AB"[j]) if len(runs) == 2 else r
            for j, run in enumerate(runs) for recs in run.values() for r in recs]
    atomic_write(cfg.out + ".jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_json(cfg.out + ".json", summary)
    print(f"wrote {cfg.out}.json and {cfg.out}.jsonl ({time.time() - t0:.1f}s)")
    return summary


if __name__ == "__main__":
    main()
