"""Train the 32k byte-level BPE math tokenizer.

    python scripts/train_tokenizer.py                         # openwebmath.txt, else the Q/A jsonl here
    python scripts/train_tokenizer.py --input 'corpus/*.txt' --vocab_size 32768
    python scripts/train_tokenizer.py --preset tiny           # 4k vocab, for the CPU pipeline

Reads: --input files or globs (.txt read as raw text; .jsonl as canonical Q/A rows with
"question"/"answer", rendered as "Q: ...\\nA: ...\\n\\n"). When the default openwebmath.txt is
absent, it falls back to every `<name>.jsonl` training file in --data_dir (never `*_test.jsonl`,
so no test question shapes the vocabulary) — the offline default the downloaders'
`--text_only` mode prepares.
Writes: --out_dir (math_tokenizer/): tokenizer.json, vocab.json, merges.txt, tokenizer_config.json.
The folder is built beside the target and swapped in whole, so a crash leaves the old one intact.
"""
import glob
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mathlm.common import check_range, cli, die, hold_lock, json_row, parse_config, qa_fields_ok  # noqa: E402
from mathlm.format import qa_text  # noqa: E402
from mathlm.tokenizer import SPECIAL_TOKENS, MathTokenizer, iter_text_files  # noqa: E402


@dataclass
class Config:
    input: list[str] = field(default_factory=lambda: ["openwebmath.txt"])  # files or globs
    data_dir: str = "."              # where the fallback <name>.jsonl files are looked for
    out_dir: str = "math_tokenizer"  # the tokenizer folder written
    vocab_size: int = 32768          # including the 6 special tokens and the 3 tool tokens
    min_frequency: int = 2           # a pair seen once is noise, not a merge
    tools: bool = True               # add the calculator tokens <|calc|> <|result|> <|/result|> (ids 6..8)
    max_mb: int = 0                  # stop reading after this many MB of text (0 = all)


PRESETS = {"tiny": dict(vocab_size=4096), "smoke": dict(vocab_size=1024)}


def resolve_inputs(cfg):
    files = []
    for pat in cfg.input:
        hits = sorted(glob.glob(pat)) or sorted(glob.glob(os.path.join(cfg.data_dir, pat)))
        files += [h for h in hits if os.path.isfile(h)]
    if files:
        return files
    if cfg.input == ["openwebmath.txt"]:  # the default is absent: fall back to the Q/A text here
        files = sorted(p for p in glob.glob(os.path.join(cfg.data_dir, "*.jsonl"))
                       if not p.endswith("_test.jsonl"))
        if files:
            print(f"openwebmath.txt not found; training on {len(files)} Q/A jsonl file(s) in {cfg.data_dir}")
            return files
    die(f"no input text found (looked for {', '.join(cfg.input)} and *.jsonl in {cfg.data_dir}) — "
        "pass --input FILES, or run a downloader/generator with --text_only first")


def iter_texts(files, max_mb=0):
    """Stream text pieces; .jsonl rows become canonical Q/A text. Stops after max_mb."""
    budget = max_mb * 1e6 if max_mb else float("inf")
    seen = 0
    for path in files:
        if path.endswith(".jsonl"):
            with open(path, "rb") as f:  # bytes: a line of invalid UTF-8 is skipped, not a crash
                buf = []
                for line in f:
                    row = json_row(line)
                    if row is None or "answer" not in row or not qa_fields_ok(row):
                        continue  # the data stages report malformed rows; here they just don't count
                    buf.append(qa_text(row["question"], row["answer"]))
                    if len(buf) == 1000:
                        piece = "".join(buf)
                        buf = []
                        seen += len(piece)
                        yield piece
                        if seen >= budget:
                            return
                if buf:
                    piece = "".join(buf)
                    seen += len(piece)
                    yield piece
        else:
            for piece in iter_text_files([path]):
                seen += len(piece)
                yield piece
                if seen >= budget:
                    return
        if seen >= budget:
            return


@cli
def main(argv=None):
    cfg = parse_config(Config, PRESETS, argv)
    check_range(cfg, "vocab_size", above=256 + len(SPECIAL_TOKENS),
                why="256 byte tokens and the special tokens come first; merges fill the rest")
    check_range(cfg, "min_frequency", lo=1)
    check_range(cfg, "max_mb", lo=0, why="0 = all")
    files = resolve_inputs(cfg)
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    if mb == 0:
        die(f"no text to train on: {', '.join(files)} {'is' if len(files) == 1 else 'are'} empty — pass --input "
            "FILES with text in them")
    # one writer of --out_dir (a second run stops here, naming this one's pid), and a writable folder,
    # checked before the training (mathlm.common.hold_lock; the lock file is <out_dir>.lock beside it)
    with hold_lock(os.path.abspath(cfg.out_dir.rstrip("/")), hint="choose another --out_dir"):
        return run(cfg, files, mb)


def run(cfg, files, mb):
    print(f"training a {cfg.vocab_size:,}-token BPE on {len(files)} file(s), {mb:,.1f} MB")
    t0 = time.time()
    tok = MathTokenizer.train(iter_texts(files, cfg.max_mb), vocab_size=cfg.vocab_size,
                              min_frequency=cfg.min_frequency, show_progress=sys.stderr.isatty(), tools=cfg.tools)
    merges = json.loads(tok.tk.to_str())["model"]["merges"]
    if not merges:  # a bytes-only tokenizer: 0 merges learned
        die(f"no merge learned from {mb:,.3f} MB of text (vocab {tok.vocab_size}) — give more text "
            "or a larger --vocab_size")
    out = os.path.abspath(cfg.out_dir.rstrip("/"))
    tmp, old = f"{out}.tmp.{os.getpid()}", out + ".old"  # a killed run's tmp folder goes at the next start
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save(tmp)
    if os.path.exists(out):  # swap the finished folder in whole
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    probe = "∇f = 2x, ∫ x^2 dx"
    pieces = [tok.id_to_token(i) for i in tok.encode(probe)]
    print(f"vocab {tok.vocab_size:,} | hash {tok.hash} | {time.time() - t0:.1f}s | {probe!r} → {len(pieces)} tokens")
    if tok.vocab_size < cfg.vocab_size:  # BPE stops when the most frequent pair left is below min_frequency
        print(f"vocab {tok.vocab_size:,}, not the {cfg.vocab_size:,} asked: after {len(merges):,} merges no pair of "
              f"adjacent tokens within a word occurs {cfg.min_frequency}+ times in this {mb:,.1f} MB "
              "(--min_frequency); more text gives more merges")
    print(f"wrote {cfg.out_dir}/ (tokenizer.json, vocab.json, merges.txt, tokenizer_config.json)")
    return tok


if __name__ == "__main__":
    main()
