"""GSM8K (grade-school word problems) → the canonical Q/A files.

    python -m mathlm.data.download_gsm8k                                  # openai/gsm8k, config "main"
    python -m mathlm.data.download_gsm8k --source ../shared/data/gsm8k    # train.jsonl + test.jsonl (or *.parquet)
    python -m mathlm.data.download_gsm8k --text_only                      # before any tokenizer exists

Reads: the hub, or --source in the hub schema (question, answer; answer ends "#### N").
Writes: gsm8k.jsonl (7,473 train), gsm8k_test.jsonl (1,319 test, for the evals), and unless
--text_only gsm8k.bin + gsm8k.idx.npy + gsm8k.meta.json (see mathlm/data/qa_io.py).

Each example becomes "Q: {question}\\nA: {answer}\\n\\n"; the answer keeps its reasoning and its
closing "#### N", and "final" stores N (commas dropped) for the evals and rewards.
The "<<48/2=24>>" calculator annotations (--calculator):
    call   (default) each becomes a calculator call (mathlm/format.py), the sentence kept:
           "48/2 = <<48/2=24>>24 clips" → "48/2 = <|calc|>48/2<|result|>24<|/result|>24 clips".
           The result is the calculator's own output for the expression (mathlm/calculator.py), never
           the annotation's text, so what the data shows after <|result|> is exactly what the decoder
           forces (nanochat's pitfall: a tool printing 10.0 where the data says 10). Where GSM8K wrote
           the result otherwise (32.00, .4) the sentence keeps GSM8K's text; those are counted and
           printed, as are annotations the calculator cannot compute (dropped, as with strip).
    strip  removed ("48/2 = 24 clips"): each repeats the arithmetic the sentence already shows;
           they are 29% of the train answers' tokens (4k-vocab tokenizer trained on this text).
    keep   left as GSM8K writes them.
"""
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from mathlm.common import check_range, cli, die, parse_config
from mathlm.data.qa_io import convert_rows, dataset_lock, load_rows, write_qa_dataset
from mathlm.format import calc_call

HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"
CALCULATOR = re.compile(r"<<([^<>]*)>>")
MODES = ("call", "strip", "keep")


@dataclass
class Config:
    source: str = ""                 # local .jsonl/.parquet file or folder; "" = the hub
    out_dir: str = "."               # where the .jsonl (and .bin) files go
    tokenizer: str = "math_tokenizer"  # tokenizer folder (not needed with --text_only)
    text_only: bool = False          # write only the .jsonl text (to train the tokenizer on)
    max_examples: int = 0            # keep the first N train examples; 0 = all
    calculator: str = "call"         # the <<a*b=c>> annotations: call (calculator calls) | strip | keep


def same_number(a, b):
    try:
        return Fraction(a) == Fraction(b.replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return False


def to_calls(answer, counts=None):
    """Each <<expr=result>> → calc_call(expr, calculate(expr)); one the calculator cannot compute is
    removed. counts (a Counter) gets calls, differs (GSM8K wrote the result otherwise, e.g. 32.00),
    wrong (GSM8K's result is another number) and errors."""
    from mathlm.calculator import CALC_ERROR, calculate
    counts = Counter() if counts is None else counts

    def call(m):
        expr, _, written = m.group(1).rpartition("=")
        result = calculate(expr.strip()) if expr.strip() else CALC_ERROR
        if result == CALC_ERROR:
            counts["errors"] += 1
            return ""
        counts["calls"] += 1
        if result != written.strip():
            counts["differs"] += 1
            counts["wrong"] += not same_number(result, written)
        return calc_call(expr.strip(), result)

    return CALCULATOR.sub(call, answer)


def to_pair(row, calculator="call", counts=None):
    answer = row["answer"]
    if calculator == "call":
        answer = to_calls(answer, counts)
    elif calculator == "strip":
        answer = CALCULATOR.sub("", answer)
    _, final = answer.rsplit("####", 1)  # ValueError (no "####") → row reported as malformed
    return {"question": row["question"].strip(), "answer": answer.strip(),
            "final": final.strip().replace(",", "")}


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    check_range(cfg, "max_examples", lo=0, why="0 = all")  # -1 once meant train[:-1]
    if cfg.calculator not in MODES:
        die(f"--calculator {cfg.calculator!r}: choose one of {', '.join(MODES)}")
    with dataset_lock("gsm8k", cfg.out_dir):  # a second run on this dataset stops here, before the download
        return run(cfg)


def run(cfg):
    splits = load_rows(cfg.source, HUB_ID, (HUB_CONFIG,), columns=["question", "answer"])
    counts = {"train": Counter(), "test": Counter()}
    train, _ = convert_rows(splits.get("train", []), lambda r: to_pair(r, cfg.calculator, counts["train"]),
                            "gsm8k train")
    test, _ = convert_rows(splits.get("test", []), lambda r: to_pair(r, cfg.calculator, counts["test"]),
                           "gsm8k test")
    for split, c in counts.items():
        if c["calls"] or c["errors"]:
            print(f"gsm8k {split}: {c['calls']:,} annotations → calls | {c['differs']:,} where GSM8K writes the "
                  f"result otherwise ({c['wrong']:,} another number), sentences kept | {c['errors']:,} the "
                  f"calculator cannot compute, removed")
    if cfg.max_examples:
        train = train[:cfg.max_examples]
    source = cfg.source or f"hf:{HUB_ID}/{HUB_CONFIG}"
    return write_qa_dataset("gsm8k", train, test, cfg.out_dir, cfg.tokenizer, cfg.text_only, source)


if __name__ == "__main__":
    main()
