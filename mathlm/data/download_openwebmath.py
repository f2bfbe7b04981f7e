"""OpenWebMath (14.7B tokens of mathematical web pages, ODC-By) → openwebmath.txt, the pretraining text.

    python -m mathlm.data.download_openwebmath --max_mb 500        # stream the first 500 MB from the hub
    python -m mathlm.data.download_openwebmath --max_docs 100000
    python -m mathlm.data.download_openwebmath --source DIR        # local *.parquet / *.jsonl with a "text" column

Reads: open-web-math/open-web-math from the hub, streamed (nothing but what is kept is downloaded,
and the full 27 GB never lands on disk), or --source in the hub schema (a "text" field per row).
Writes: openwebmath.txt — documents separated by three newlines, which is how build_pretrain and
train_tokenizer tell documents apart (a single blank line is a paragraph break inside a web page).
Then:
    python scripts/train_tokenizer.py --input openwebmath.txt
    python -m mathlm.data.build_pretrain --input openwebmath.txt

Memory is bounded: rows are read and written one at a time, for the hub and for local files
alike (parquet by record batches, jsonl by lines). --max_mb counts UTF-8 bytes written.
"""
import glob
import json
import os
import re
import time
from dataclasses import dataclass

from mathlm.common import atomic_open, cli, die, hold_lock, parse_config
from mathlm.data.qa_io import HUB_HINT, _short

HUB_ID = "open-web-math/open-web-math"
DOC_SEP = "\n\n\n"  # build_pretrain: two or more blank lines end a document
BLANK_RUN = re.compile(r"\n[^\S\n]*\n(?:[^\S\n]*\n)+")  # ≥ 2 blank (whitespace-only) lines


@dataclass
class Config:
    source: str = ""                 # local .jsonl/.parquet file or folder with a "text" column; "" = the hub
    out: str = "openwebmath.txt"     # the text file to write
    max_docs: int = 0                # stop after N documents; 0 = no limit
    max_mb: float = 0.0              # stop after N MB of text; 0 = no limit


def local_texts(path):
    """Yield the "text" of every row of a .jsonl/.parquet file or of every such file in a folder."""
    if not os.path.exists(path):
        die(f"--source {path} does not exist — give a .jsonl/.parquet file or a folder of them")
    files = [path] if os.path.isfile(path) else sorted(
        p for ext in ("parquet", "jsonl") for p in glob.glob(os.path.join(path, "**", f"*.{ext}"), recursive=True))
    if not files:
        die(f"--source {path}: no .parquet or .jsonl file in it")
    for p in files:
        if p.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq
            try:
                pf = pq.ParquetFile(p)
                if "text" not in pf.schema_arrow.names:
                    die(f"{p} has no 'text' column (columns: {', '.join(pf.schema_arrow.names[:8])})")
                for batch in pf.iter_batches(columns=["text"], batch_size=256):
                    yield from batch.column(0).to_pylist()
            except (OSError, pa.ArrowException) as e:
                die(f"{p} is not a readable parquet file ({_short(e)})")
        elif p.endswith(".jsonl"):
            bad = 0
            with open(p, "rb") as f:
                for line in f:
                    try:
                        row = json.loads(line.decode("utf-8"))
                    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
                        bad += 1
                        continue
                    if isinstance(row, dict) and isinstance(row.get("text"), str):
                        yield row["text"]
                    else:
                        bad += 1
            if bad:
                print(f"warning: {p}: skipped {bad:,} line(s) that are not a JSON object with a string 'text'")
        else:
            die(f"--source {p}: want a .jsonl or .parquet file")


def hub_texts():
    """Stream the hub's train split row by row."""
    import datasets
    try:
        ds = datasets.load_dataset(HUB_ID, split="train", streaming=True)
        it = iter(ds)
        first = next(it)  # the first row is where an offline machine fails
    except Exception as e:  # network, auth, schema: the same way out for all of them
        die(f"could not load {HUB_ID} from the hub ({_short(e)}) — {HUB_HINT}")
    yield first["text"]
    for row in it:
        yield row["text"]


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    if cfg.max_docs < 0 or cfg.max_mb < 0:
        die("--max_docs and --max_mb must be ≥ 0 (0 = no limit)")
    out_dir = os.path.dirname(os.path.abspath(cfg.out))
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        die(f"cannot write {cfg.out}: {out_dir} is not a writable folder")
    # one writer of --out, and a writable folder, checked before the download (mathlm.common.hold_lock)
    with hold_lock(cfg.out, hint="choose another --out"):
        return run(cfg)


def run(cfg):
    texts = local_texts(cfg.source) if cfg.source else hub_texts()
    max_bytes = int(cfg.max_mb * 1e6)
    n_docs, n_bytes, t0 = 0, 0, time.time()
    with atomic_open(cfg.out, "wb") as f:  # an interrupted download leaves no half file behind
        for text in texts:
            text = (text or "").strip()
            if not text:
                continue
            # two or more blank lines inside a page would split it into documents: keep one
            text = BLANK_RUN.sub("\n\n", text)
            data = ((DOC_SEP if n_docs else "") + text).encode("utf-8", "replace")
            f.write(data)
            n_docs, n_bytes = n_docs + 1, n_bytes + len(data)
            if n_docs % 10_000 == 0:
                rate = n_bytes / 1e6 / max(time.time() - t0, 1e-9)
                print(f"{n_docs:,} documents | {n_bytes / 1e6:,.1f} MB | {rate:.1f} MB/s", flush=True)
            if (cfg.max_docs and n_docs >= cfg.max_docs) or (max_bytes and n_bytes >= max_bytes):
                break
        f.write(b"\n")
    if n_docs == 0:
        os.remove(cfg.out)
        die(f"no documents with text in {cfg.source or HUB_ID}")
    source = cfg.source or f"hf:{HUB_ID}"
    print(f"wrote {cfg.out} ({n_docs:,} documents, {n_bytes / 1e6:,.1f} MB from {source}) — next: "
          f"python scripts/train_tokenizer.py --input {cfg.out}")


if __name__ == "__main__":
    main()
