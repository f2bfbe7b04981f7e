"""Accuracy per domain — GSM8K, calculus, ML-math, word problems, MATH — and paired comparisons.

    python -m mathlm.eval.math --n 200          # the last pipeline stage's checkpoint here (GRPO > SFT > base)
    python -m mathlm.eval.math --checkpoint checkpoint_mathlm.pt --n 200
    python -m mathlm.eval.math --compare checkpoint_mathlm.pt checkpoint_mathlm_grpo.pt --n 200
    python -m mathlm.eval.math --samples 8 --temperature 0.7          # + maj@8 and pass@8
    python -m mathlm.eval.math --tools both --domains word_problems   # with vs without the calculator
    python -m mathlm.eval.math --dtype bf16                            # bf16 weights (greedy may differ from fp32)
    python -m mathlm.eval.math --speculate lookup --batch_size 1       # exact speculative decoding, one at a time

Reads: --checkpoint (or the two --compare checkpoints), --tokenizer, and the held-out test
files here (or --data_dir): gsm8k_test.jsonl, calculus_test.jsonl, ml_math_test.jsonl,
word_problems_test.jsonl, math_test.jsonl. A missing file is named and its domain skipped; none at all is an error.
Writes: <out>.json (per domain: n, correct, accuracy, 95% Wilson interval, flexible and
flexible_ci95, topics {topic: n, correct, accuracy, ci95} when rows carry a topic, and
majority_baseline / majority_answer / majority_from; with --compare both sides, the delta and an
exact McNemar p-value on the paired outcomes) and <out>.jsonl (one row per problem and
checkpoint: domain, index in the domain's subset, question, completion, extracted, gold, kind,
correct, correct_flexible, topic and level when the row has them; with --compare also side
"A"/"B", so rows pair by domain + index). <out> is --out, by default eval_math, or
eval_math_compare with --compare, so a comparison never replaces a one-checkpoint summary; the
last line says what was written where, and a replaced summary of other checkpoints is named.

accuracy is strict: only the declared answer (the "####" line, else \\boxed{}) counts, as in
lm-eval-harness's strict match; flexible adds the fallbacks ("the answer is N", a bare answer, the
last number) — a gap between them is answers the model did not declare. majority_baseline is the
accuracy of always answering the domain's most common gold (of its train file <domain>.jsonl when
it is here, else of the test rows): a gain has to clear it to be more than guessing.

Each problem is asked zero-shot in the canonical format ("Q: ...\\nA:"), decoded greedily
with the KV cache in batches, and checked by the same functions GRPO rewards with
(mathlm/eval/answers.py): numbers exactly, expressions by the safe symbolic checker,
antiderivatives up to a constant, MATH's \\boxed{} answers as expressions or normalised text.
Each domain takes a fixed seeded subset of --n problems, so two runs (and the two sides of a
comparison) see the same problems.

--tools (mathlm/eval/harness.py tool_modes): auto (the default) decodes with the calculator when the
checkpoint's tokenizer has its tokens; on / off force it; both scores the same checkpoint on the same
problems with and without it. Completions are scored on strip_calls(completion) (calls removed, as
a reader sees the text); the jsonl keeps them and says "tools" on/off per row. With both, each
domain's summary is the tools-on one plus tools_off (its n, accuracy, ci95, ...), tools_on_only /
tools_off_only (problems only one side solved) and tools_p_value (exact McNemar on those pairs).
"""
import json
import os
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from mathlm.common import atomic_write, atomic_write_json, cli, die, parse_config, pick_device
from mathlm.eval.answers import (REWARD_KINDS, answers_match, extract_answer, extract_number, gold_answer,
                                 majority_key, reward_answer)
from mathlm.eval.harness import (complete, eval_decoder, load_for_eval, output_lock, read_rows, subset, tool_modes,
                                 validate)
from mathlm.eval.stats import majority_vote, mcnemar_exact, pass_at_k, wilson_interval
from mathlm.infer.inference import pick_default_checkpoint
from mathlm.format import qa_prompt, strip_calls

# calculus_typed: held-out calculus questions in the phrasings people type, which the generator
# never trains on (generate_calculus --n_typed_test)
DOMAINS = {"gsm8k": "gsm8k_test.jsonl", "calculus": "calculus_test.jsonl",
           "calculus_typed": "calculus_typed_test.jsonl", "ml_math": "ml_math_test.jsonl",
           "word_problems": "word_problems_test.jsonl", "math": "math_test.jsonl"}
TRAIN_FILES = {d: f.replace("_typed", "").replace("_test", "") for d, f in DOMAINS.items()}  # for the majority baseline


@dataclass
class Config:
    checkpoint: str = ""           # the checkpoint to score; "" = the last pipeline stage's here (GRPO > SFT > base)
    compare: list[str] = field(default_factory=list)  # two checkpoints: A B
    tokenizer: str = "math_tokenizer"  # tokenizer folder; its hash must match the checkpoint's
    data_dir: str = "."            # where the <domain>_test.jsonl files are
    domains: str = "gsm8k,calculus,calculus_typed,ml_math,word_problems,math"  # comma-separated; a missing test file is skipped
    n: int = 200                   # problems per domain (seeded subset); 0 = all
    seed: int = 0                  # picks the subset and seeds the samples
    max_new_tokens: int = 256      # answer length cap
    batch_size: int = 32           # prompts per generate call
    samples: int = 0               # k > 0: also maj@k and pass@k from k samples per problem
    temperature: float = 0.7       # for --samples only; the main accuracy is greedy
    device: str = "auto"           # auto|cuda|mps|cpu
    tools: str = "auto"            # calculator in decoding: auto (on if the tokenizer has its tokens) | on | off | both
    dtype: str = "fp32"            # decoding weights: fp32 (as trained: the reported scores) | bf16 | auto (bf16 where native)
    speculate: str = "off"         # off | lookup | draft: exact speculative decoding, used at --batch_size 1
    spec_k: int = 0                # tokens drafted per round; 0 = auto (4 lookup, 8 draft: speculative.AUTO_K)
    draft_checkpoint: str = ""     # --speculate draft: a smaller model on the same tokenizer
    out: str = ""                  # writes <out>.json and .jsonl; "" = eval_math (eval_math_compare with --compare)


# tiny: 1,000 problems per domain (all of calculus's held-out set): enough to see a 5-point step.
# max_new_tokens 256 = the tiny context: the tiny SFT data's longest answers (quotient rule, integrals)
# run to 160-230 tokens, and a cap of 160 once cut 135 of 274 wrong calculus answers before their
# `####` line (measured on a tiny SFT checkpoint) — a measurement artefact, not a wrong answer.
PRESETS = {"tiny": dict(n=1000, max_new_tokens=256, batch_size=64), "smoke": dict(n=10, max_new_tokens=32)}


def extract(completion, kind, mode="strict"):
    """What the checker reads: a number for "number", else the answer string (answers.extract_answer)."""
    return extract_number(completion, mode) if kind == "number" else extract_answer(completion, mode)


def is_correct(completion, gold, kind, mode="strict"):
    if kind in REWARD_KINDS:
        return reward_answer(completion, gold, kind, mode) == 1.0
    pred = extract_answer(completion, mode)  # a kind GRPO refuses: compared as answers_match compares strings
    return pred is not None and answers_match(pred, gold)


def majority_baseline(domain, rows, data_dir):
    """The accuracy on `rows` of always answering the domain's most common gold, with that answer and
    where it came from: the train file when it is in data_dir (no peeking at the test set), else `rows`."""
    path = os.path.join(data_dir, TRAIN_FILES[domain])
    source = read_rows(path) if os.path.exists(path) else rows
    answer = majority_vote([gold_answer(r)[0] for r in source])
    if answer is None:
        return {"majority_baseline": 0.0, "majority_answer": None, "majority_from": None}
    hits = sum(is_correct(f"#### {answer}", *gold_answer(r)) for r in rows)
    return {"majority_baseline": hits / len(rows), "majority_answer": answer,
            "majority_from": TRAIN_FILES[domain] if source is not rows else DOMAINS[domain]}


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
        usable = [r for r in rows if gold_answer(r)[0] is not None]
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
    """{tools mode ("on"/"off", per --tools): {domain: list of per-problem records}} for one checkpoint."""
    model, tok = load_for_eval(checkpoint, cfg.tokenizer, device, cfg.dtype)
    decoder = eval_decoder(cfg, model, tok, device)
    modes = tool_modes(cfg.tools, tok)
    runs = {}
    total = sum(len(r) for r in domains.values()) * len(modes)
    with tqdm(total=total * (2 if cfg.samples else 1), desc=os.path.basename(checkpoint), unit="q",
              disable=None) as bar:
        for mode in modes:
            tools = tok if mode == "on" else None
            results = runs[mode] = {}
            for d, rows in domains.items():
                prompts = [qa_prompt(r["question"]) for r in rows]
                greedy = complete(model, tok, prompts, cfg.max_new_tokens, cfg.batch_size, progress=bar, tools=tools,
                                  decoder=decoder)
                sampled = None
                if cfg.samples:
                    sampled = complete(model, tok, prompts, cfg.max_new_tokens, max(1, cfg.batch_size // cfg.samples),
                                       num_samples=cfg.samples, temperature=cfg.temperature, seed=cfg.seed,
                                       progress=bar, tools=tools)
                    sampled = [[strip_calls(t) for t in (s if isinstance(s, list) else [s])] for s in sampled]
                recs = []
                for i, (row, comp) in enumerate(zip(rows, greedy)):
                    gold, kind = gold_answer(row)
                    text = strip_calls(comp)   # scored as a reader sees it; the record keeps the calls
                    rec = {"domain": d, "index": i, "checkpoint": checkpoint, "tools": mode, "question": row["question"],
                           "completion": comp, "extracted": extract(text, kind), "gold": gold, "kind": kind,
                           "correct": is_correct(text, gold, kind),
                           "correct_flexible": is_correct(text, gold, kind, "flexible")}
                    rec.update({k: row[k] for k in ("topic", "level") if row.get(k) is not None})
                    if sampled is not None:
                        flags = [is_correct(s, gold, kind) for s in sampled[i]]
                        keys = [majority_key(extract(s, kind)) for s in sampled[i]]
                        keys = [k for k in keys if k is not None]
                        vote = max(keys, key=keys.count) if keys else None
                        rec.update(samples=sampled[i], sample_correct=flags, majority=vote,
                                   majority_correct=vote is not None and is_correct(f"#### {vote}", gold, kind))
                    recs.append(rec)
                results[d] = recs
    return runs


def paired(ra, rb):
    """(A right B wrong, B right A wrong, exact McNemar p) over the same problems."""
    b = sum(x["correct"] and not y["correct"] for x, y in zip(ra, rb))
    c = sum(y["correct"] and not x["correct"] for x, y in zip(ra, rb))
    return b, c, mcnemar_exact(b, c)


def _accuracy(recs, key="correct"):
    n, c = len(recs), sum(r[key] for r in recs)
    return {"n": n, "correct": c, "accuracy": c / n if n else 0.0, "ci95": list(wilson_interval(c, n))}


def summarize(recs, k=0):
    s = _accuracy(recs)
    n = s["n"]
    flexible = _accuracy(recs, "correct_flexible")
    s.update(flexible=flexible["accuracy"], flexible_ci95=flexible["ci95"])
    topics = sorted({r["topic"] for r in recs if "topic" in r})
    if topics:
        s["topics"] = {t: _accuracy([r for r in recs if r.get("topic") == t]) for t in topics}
    if k:
        s[f"maj@{k}"] = sum(r["majority_correct"] for r in recs) / n
        s[f"pass@{k}"] = sum(pass_at_k(len(r["sample_correct"]), sum(r["sample_correct"]), k) for r in recs) / n
    return s


def pct(s):
    return f"{100 * s['accuracy']:5.1f}% [{100 * s['ci95'][0]:.0f},{100 * s['ci95'][1]:.0f}]"


def scored_by(path):
    """The checkpoints an existing eval summary at `path` scored, or None (no file, or not one of ours)."""
    try:
        with open(path) as f:
            s = json.load(f)
        return list(s["checkpoints"]) if isinstance(s, dict) and isinstance(s.get("checkpoints"), list) else None
    except (OSError, ValueError):
        return None


@cli
def main(argv=None):
    cfg = parse_config(Config, PRESETS, argv)
    validate(cfg)
    if cfg.compare and len(cfg.compare) != 2:
        die("--compare takes exactly two checkpoints: A B")
    if cfg.compare and cfg.tools == "both":
        die("--tools both compares one checkpoint with itself; with --compare pass --tools on, off or auto")
    if not cfg.compare and not cfg.checkpoint:  # the same rule as inference and the demo, said with why
        cfg.checkpoint = pick_default_checkpoint(print)
    ckpts = cfg.compare or [cfg.checkpoint]
    for c in ckpts:
        if not os.path.exists(c):
            die(f"checkpoint {c} not found — train one or pass --checkpoint PATH")
    out = cfg.out or ("eval_math_compare" if cfg.compare else "eval_math")
    with output_lock(out):
        return run(cfg, ckpts, out)


def run(cfg, ckpts, out):
    domains = load_domains(cfg)
    device = pick_device(cfg.device)
    t0 = time.time()
    by_mode = [evaluate(c, cfg, domains, device) for c in ckpts]   # each {tools mode: {domain: recs}}
    tools = [list(m) for m in by_mode]
    runs = [next(iter(m.values())) for m in by_mode]               # tools on when both were run
    summary = {"task": "math", "checkpoints": ckpts, "seconds": time.time() - t0, "n_per_domain": cfg.n,
               "tools": tools[0] if len(ckpts) == 1 else tools, "domains": {}}
    if len(runs) == 1 and len(tools[0]) == 2:   # --tools both: the same checkpoint and problems, paired
        on, off = by_mode[0]["on"], by_mode[0]["off"]
        print(f"{'domain':<14} {'n':>5}  {'tools on [95% CI]':<22} {'tools off [95% CI]':<22} {'Δ (on−off)':>10}  McNemar p")
        for d in on:
            s, s_off = summarize(on[d], cfg.samples), summarize(off[d], cfg.samples)
            b, c, p = paired(on[d], off[d])
            s.update(majority_baseline(d, domains[d], cfg.data_dir))
            s.update(tools="on", tools_off=s_off, tools_on_only=b, tools_off_only=c, tools_p_value=p)
            summary["domains"][d] = s
            print(f"{d:<14} {s['n']:>5}  {pct(s):<22} {pct(s_off):<22} "
                  f"{100 * (s['accuracy'] - s_off['accuracy']):>+9.1f}%  {p:.3g}")
    elif len(runs) == 1:
        print(f"{'domain':<14} {'n':>5}  strict [95% CI]     flexible  majority   (tools {tools[0][0]})")
        for d, recs in runs[0].items():
            s = summarize(recs, cfg.samples)
            s.update(majority_baseline(d, domains[d], cfg.data_dir))
            summary["domains"][d] = s
            extra = "".join(f"  {k} {100 * v:.1f}%" for k, v in s.items() if k.startswith(("maj@", "pass@")))
            print(f"{d:<14} {s['n']:>5}  {pct(s)}  {100 * s['flexible']:6.1f}%  {100 * s['majority_baseline']:6.1f}%"
                  f"{extra}")
    else:
        a_name, b_name = (os.path.basename(c) for c in ckpts)
        print(f"{'domain':<10} {'n':>5}  {'A: ' + a_name:<28} {'B: ' + b_name:<28} {'Δ (B−A)':>8}  McNemar p")
        for d in runs[0]:
            ra, rb = runs[0][d], runs[1][d]
            sa, sb = summarize(ra, cfg.samples), summarize(rb, cfg.samples)
            b, c, p = paired(ra, rb)  # A right B wrong, B right A wrong
            delta = sb["accuracy"] - sa["accuracy"]
            summary["domains"][d] = {"A": sa, "B": sb, "delta": delta, "a_only": b, "b_only": c, "p_value": p,
                                     **majority_baseline(d, domains[d], cfg.data_dir)}
            print(f"{d:<10} {sa['n']:>5}  {pct(sa):<28} {pct(sb):<28} {100 * delta:>+7.1f}%  {p:.3g}")
    rows = [dict(r, side="AB"[j]) if len(runs) == 2 else r
            for j, modes in enumerate(by_mode) for run in modes.values() for recs in run.values() for r in recs]
    replaced = scored_by(out + ".json")
    atomic_write(out + ".jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_json(out + ".json", summary)
    what = " vs ".join(f"{side} = {ck}" for side, ck in zip("AB", ckpts)) if cfg.compare else ckpts[0]
    print(f"wrote {os.path.abspath(out)}.json and .jsonl ({what}; {time.time() - t0:.1f}s)")
    if replaced and replaced != ckpts:  # a different run's numbers are gone: say so, never silently
        print(f"note: this replaced {out}.json of {' vs '.join(replaced)} — pass --out NAME to keep runs apart")
    return summary


if __name__ == "__main__":
    main()
