"""Tokenize Q/A jsonl files that a downloader or generator already wrote (with --text_only).

    python -m mathlm.data.tokenize_qa calculus ml_math gsm8k
    python -m mathlm.data.tokenize_qa calculus --data_dir runs/a --tokenizer runs/a/math_tokenizer

Reads <name>.jsonl (train pairs, already decontaminated when it was written) and the tokenizer;
writes <name>.bin, <name>.idx.npy and <name>.meta.json beside it, the same files the stage
itself writes without --text_only. The pipeline's data_bin step runs this, so a dataset is
generated (or downloaded) once and tokenized once, not made twice.
"""
import os
from dataclasses import dataclass, field

from mathlm.common import cli, die, parse_config


@dataclass
class Config:
    names: list[str] = field(default_factory=list)  # dataset names: reads <name>.jsonl for each
    data_dir: str = "."                              # where the jsonl files are and the .bin files go
    tokenizer: str = "math_tokenizer"                # tokenizer folder


@cli
def main(argv=None):
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    # the names are positional, like a file list: `tokenize_qa calculus ml_math`
    names = []
    while argv and not argv[0].startswith("-"):
        names.append(argv.pop(0))
    cfg = parse_config(Config, None, argv)
    cfg.names = names + list(cfg.names)
    if not cfg.names:
        die("name at least one dataset, e.g. python -m mathlm.data.tokenize_qa calculus")
    from mathlm.data.qa_io import check_pairs, dataset_lock, read_jsonl, write_qa_bin
    from mathlm.tokenizer import MathTokenizer
    try:
        tok = MathTokenizer.load(cfg.tokenizer)
    except ValueError as e:
        die(str(e))
    for name in cfg.names:
        path = os.path.join(cfg.data_dir, f"{name}.jsonl")
        if not os.path.isfile(path):
            die(f"{path} not found: write it first (python -m mathlm.data.generate_{name} --text_only, "
                f"or the dataset's downloader)")
        with dataset_lock(name, cfg.data_dir):  # not while its downloader/generator writes it
            pairs = check_pairs(read_jsonl(path), f"{name} train")
            if not pairs:
                die(f"{path} has no Q/A pairs")
            write_qa_bin(name, pairs, tok, cfg.data_dir, source=f"mathlm.data.tokenize_qa {path}")


if __name__ == "__main__":
    main()
