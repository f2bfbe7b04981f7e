"""OpenR1-Math-220k ("default" config: ~94k NuminaMath-1.5 problems) → the canonical Q/A files.

    python -m mathlm.data.download_openr1                       # open-r1/OpenR1-Math-220k, default
    python -m mathlm.data.download_openr1 --source DIR          # local data/train-*.parquet or .jsonl
    python -m mathlm.data.download_openr1 --text_only

Reads: the hub or --source in the hub schema (problem, solution, answer, source,
correctness_math_verify, ...). Writes: openr1.jsonl and unless --text_only openr1.bin +
openr1.idx.npy + openr1.meta.json. No openr1_test.jsonl: the hub has only a train split and
we hold none out — the evals are GSM8K and MATH, and every OpenR1 problem is decontaminated
against their test splits (run those downloaders first).

Choices:
- the answer is the reference `solution` (NuminaMath's worked solution), not the DeepSeek-R1
  `generations`: those run to thousands of tokens, far past what a 40M model's context holds.
- a row is kept only if at least one R1 generation was verified correct by Math-Verify
  (any(correctness_math_verify)): then the reference `answer` was reached independently.
  Rows checked only by the Llama judge, or with an empty solution, are left out (counted in
  the log). Local files without that column keep every row with a solution.
- "final" stores the `answer` field (the reference final answer) for rewards.
"""
from dataclasses import dataclass

from mathlm.common import check_range, cli, parse_config
from mathlm.data.qa_io import convert_rows, dataset_lock, load_rows, write_qa_dataset

HUB_ID, HUB_CONFIG = "open-r1/OpenR1-Math-220k", "default"
COLUMNS = ["problem", "solution", "answer", "source", "problem_type", "question_type", "correctness_math_verify"]


@dataclass
class Config:
    source: str = ""                 # local .jsonl/.parquet file or folder; "" = the hub
    out_dir: str = "."               # where the .jsonl (and .bin) files go
    tokenizer: str = "math_tokenizer"  # tokenizer folder (not needed with --text_only)
    text_only: bool = False          # write only the .jsonl text (to train the tokenizer on)
    max_examples: int = 0            # keep the first N train examples; 0 = all


def to_pair(row):
    verified = row.get("correctness_math_verify")
    if verified is not None and not any(verified):
        return None
    solution = row["solution"] or ""
    if not solution.strip():
        return None
    return {"question": row["problem"].strip(), "answer": solution.strip(), "final": row.get("answer"),
            "source": row.get("source"), "problem_type": row.get("problem_type"),
            "question_type": row.get("question_type")}


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    check_range(cfg, "max_examples", lo=0, why="0 = all")  # -1 once meant train[:-1]
    with dataset_lock("openr1", cfg.out_dir):  # a second run on this dataset stops here, before the download
        return run(cfg)


def run(cfg):
    splits = load_rows(cfg.source, HUB_ID, (HUB_CONFIG,), columns=COLUMNS)
    rows = splits.get("train", [])
    train, left_out = convert_rows(rows, to_pair, "openr1 train")
    print(f"openr1: kept {len(train):,} of {len(rows):,} rows ({left_out:,} left out: no Math-Verify-checked "
          "generation or no solution)")
    if cfg.max_examples:
        train = train[:cfg.max_examples]
    source = cfg.source or f"hf:{HUB_ID}/{HUB_CONFIG}"
    return write_qa_dataset("openr1", train, [], cfg.out_dir, cfg.tokenizer, cfg.text_only, source)


if __name__ == "__main__":
    main()
