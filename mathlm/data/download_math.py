"""Hendrycks MATH (competition problems, 7 subjects, levels 1-5) → the canonical Q/A files.

    python -m mathlm.data.download_math                          # EleutherAI/hendrycks_math, all 7 configs
    python -m mathlm.data.download_math --source DIR             # local *.parquet / train*.jsonl + test*.jsonl
    python -m mathlm.data.download_math --text_only

Hub id: EleutherAI/hendrycks_math — the original hendrycks/competition_math was taken off the
hub; this mirror keeps its fields (problem, solution, level, type) with one config per subject:
algebra, counting_and_probability, geometry, intermediate_algebra, number_theory, prealgebra,
precalculus (7,500 train / 5,000 test in all). A local --source uses the same fields; the hub
layout (`<subject>/train-*.parquet`, `<subject>/test-*.parquet`) can be passed as the folder.

Reads: the hub or --source.   Writes: math.jsonl, math_test.jsonl (all 5,000 test problems, for
the evals), and unless --text_only math.bin + math.idx.npy + math.meta.json.
The answer is the full solution, \\boxed{...} kept; "final" stores the last boxed content
(None when a solution boxes nothing), and "level"/"type" are kept for per-level evals.
"""
from dataclasses import dataclass

from mathlm.common import check_range, cli, parse_config
from mathlm.data.qa_io import convert_rows, dataset_lock, last_boxed, load_rows, write_qa_dataset

HUB_ID = "EleutherAI/hendrycks_math"
SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
            "number_theory", "prealgebra", "precalculus")


@dataclass
class Config:
    source: str = ""                 # local .jsonl/.parquet file or folder; "" = the hub
    out_dir: str = "."               # where the .jsonl (and .bin) files go
    tokenizer: str = "math_tokenizer"  # tokenizer folder (not needed with --text_only)
    text_only: bool = False          # write only the .jsonl text (to train the tokenizer on)
    max_examples: int = 0            # keep the first N train examples; 0 = all


def to_pair(row):
    return {"question": row["problem"].strip(), "answer": row["solution"].strip(),
            "final": last_boxed(row["solution"]), "level": row.get("level"), "type": row.get("type")}


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    check_range(cfg, "max_examples", lo=0, why="0 = all")  # -1 once meant train[:-1]
    with dataset_lock("math", cfg.out_dir):  # a second run on this dataset stops here, before the download
        return run(cfg)


def run(cfg):
    splits = load_rows(cfg.source, HUB_ID, SUBJECTS, columns=["problem", "solution", "level", "type"])
    train, _ = convert_rows(splits.get("train", []), to_pair, "math train")
    test, _ = convert_rows(splits.get("test", []), to_pair, "math test")
    if cfg.max_examples:
        train = train[:cfg.max_examples]
    source = cfg.source or f"hf:{HUB_ID}"
    return write_qa_dataset("math", train, test, cfg.out_dir, cfg.tokenizer, cfg.text_only, source)


if __name__ == "__main__":
    main()
