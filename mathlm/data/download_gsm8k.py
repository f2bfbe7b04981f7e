"""GSM8K (grade-school word problems) → the canonical Q/A files.

    python -m mathlm.data.download_gsm8k                                  # openai/gsm8k, config "main"
    python -m mathlm.data.download_gsm8k --source ../shared/data/gsm8k    # train.jsonl + test.jsonl (or *.parquet)
    python -m mathlm.data.download_gsm8k --text_only                      # before any tokenizer exists

Reads: the hub, or --source in the hub schema (question, answer; answer ends "#### N").
Writes: gsm8k.jsonl (7,473 train), gsm8k_test.jsonl (1,319 test, for the evals), and unless
--text_only gsm8k.bin + gsm8k.idx.npy + gsm8k.meta.json (see mathlm/data/qa_io.py).

Each example becomes "Q: {question}\\nA: {answer}\\n\\n"; the answer keeps its reasoning and its
closing "#### N", and "final" stores N (commas dropped) for the evals and rewards.
The "<<48/2=24>>" calculator annotations are removed by default (--keep_calculator keeps
them): this model has no calculator tool to call, and each annotation repeats the arithmetic
the sentence already shows ("48/2 = <<48/2=24>>24" → "48/2 = 24"); they are 29% of the
train answers' tokens (4k-vocab tokenizer trained on this text).
"""
import re
from dataclasses import dataclass

from mathlm.common import cli, parse_config
from mathlm.data.qa_io import convert_rows, load_rows, write_qa_dataset

HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"
CALCULATOR = re.compile(r"<<[^<>]*>>")


@dataclass
class Config:
    source: str = ""                 # local .jsonl/.parquet file or folder; "" = the hub
    out_dir: str = "."               # where the .jsonl (and .bin) files go
    tokenizer: str = "math_tokenizer"  # tokenizer folder (not needed with --text_only)
    text_only: bool = False          # write only the .jsonl text (to train the tokenizer on)
    max_examples: int = 0            # keep the first N train examples; 0 = all
    keep_calculator: bool = False    # keep the <<a*b=c>> calculator annotations


def to_pair(row, keep_calculator=False):
    answer = row["answer"] if keep_calculator else CALCULATOR.sub("", row["answer"])
    _, final = answer.rsplit("####", 1)  # ValueError (no "####") → row reported as malformed
    return {"question": row["question"].strip(), "answer": answer.strip(),
            "final": final.strip().replace(",", "")}


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    splits = load_rows(cfg.source, HUB_ID, (HUB_CONFIG,), columns=["question", "answer"])
    train, _ = convert_rows(splits.get("train", []), lambda r: to_pair(r, cfg.keep_calculator), "gsm8k train")
    test, _ = convert_rows(splits.get("test", []), lambda r: to_pair(r, cfg.keep_calculator), "gsm8k test")
    if cfg.max_examples:
        train = train[:cfg.max_examples]
    source = cfg.source or f"hf:{HUB_ID}/{HUB_CONFIG}"
    return write_qa_dataset("gsm8k", train, test, cfg.out_dir, cfg.tokenizer, cfg.text_only, source)


if __name__ == "__main__":
    main()
