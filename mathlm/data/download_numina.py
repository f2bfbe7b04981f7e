"""NuminaMath-CoT (~860k problems with chain-of-thought solutions) → the canonical Q/A files.

    python -m mathlm.data.download_numina                       # AI-MO/NuminaMath-CoT
    python -m mathlm.data.download_numina --source DIR          # local train*/test* .parquet or .jsonl
    python -m mathlm.data.download_numina --max_examples 100000 --text_only

Reads: the hub or --source in the hub schema (problem, solution, source; splits train, test).
Writes: numina.jsonl, numina_test.jsonl (its 100 test problems), and unless --text_only
numina.bin + numina.idx.npy + numina.meta.json.
The answer is the solution as written (most end in \\boxed{...}); "final" stores the last boxed
content (None if none) and "source" the origin (gsm8k, math, olympiads, cn_k12, ...).
Run download_gsm8k and download_math first: NuminaMath includes problems from both, and
decontamination can only drop copies of test questions whose *_test.jsonl is already there.
"""
from dataclasses import dataclass

from mathlm.common import check_range, cli, parse_config
from mathlm.data.qa_io import convert_rows, dataset_lock, last_boxed, load_rows, write_qa_dataset

HUB_ID = "AI-MO/NuminaMath-CoT"


@dataclass
class Config:
    source: str = ""                 # local .jsonl/.parquet file or folder; "" = the hub
    out_dir: str = "."               # where the .jsonl (and .bin) files go
    tokenizer: str = "math_tokenizer"  # tokenizer folder (not needed with --text_only)
    text_only: bool = False          # write only the .jsonl text (to train the tokenizer on)
    max_examples: int = 0            # keep the first N train examples; 0 = all


def to_pair(row):
    return {"question": row["problem"].strip(), "answer": row["solution"].strip(),
            "final": last_boxed(row["solution"]), "source": row.get("source")}


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    check_range(cfg, "max_examples", lo=0, why="0 = all")  # -1 once meant train[:-1]
    with dataset_lock("numina", cfg.out_dir):  # a second run on this dataset stops here, before the download
        return run(cfg)


def run(cfg):
    splits = load_rows(cfg.source, HUB_ID, columns=["problem", "solution", "source"])
    train, _ = convert_rows(splits.get("train", []), to_pair, "numina train")
    test, _ = convert_rows(splits.get("test", []), to_pair, "numina test")
    if cfg.max_examples:
        train = train[:cfg.max_examples]
    source = cfg.source or f"hf:{HUB_ID}"
    return write_qa_dataset("numina", train, test, cfg.out_dir, cfg.tokenizer, cfg.text_only, source)


if __name__ == "__main__":
    main()
