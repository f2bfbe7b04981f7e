"""Tokenize the pretraining text into train.bin + val.bin, in parallel, in bounded memory.

    python -m mathlm.data.build_pretrain                              # openwebmath.txt → train.bin, val.bin
    python -m mathlm.data.build_pretrain --input 'data/*.txt' gsm8k.jsonl calculus.jsonl
    python -m mathlm.data.build_pretrain --input '*.jsonl'            # offline: from the Q/A files alone

Reads: the --input files (paths or globs), math_tokenizer/.
Writes: train.bin, val.bin (flat token ids, each document followed by <|eos|>) and beside each a
train.meta.json / val.meta.json (mathlm.data.tokens.write_meta: dtype, n_tokens, tokenizer hash,
vocab size, source files with sizes and sha256, document count, val_frac, seed).

What a document is:
- plain text (any file not ending in .jsonl): documents are separated by two or more blank
  (whitespace-only) lines; write a corpus with "\\n\\n\\n".join(docs). A single blank line is a
  paragraph break inside a document and is kept: web pages (OpenWebMath) separate paragraphs
  that way, and an eos at every paragraph would teach the model that documents end there.
  Blank lines before and after a document are dropped; its lines keep their line ends.
  A document longer than --max_doc_mb is cut before a line into separate documents, so a file
  with no separators is not one giant document held in memory. A single line is never split.
  Files are read as UTF-8; invalid bytes become U+FFFD.
- Q/A jsonl (`<name>.jsonl` from the downloaders and generators, one JSON object per line with
  "question" and "answer"): each row is the document mathlm.format.qa_text(q, a) =
  "Q: {q}\\nA: {a}\\n\\n". `*_test.jsonl` files are skipped: held-out test pairs never go into training.

Token dtype: uint16 while the vocabulary fits, else uint32 — mathlm/data/tokens.py says why
(the seed wrote int32: twice the disk and page-cache traffic for a 32k vocab, and ids are
never negative). Readers use tokens.open_tokens(path, tok.hash), which refuses a .bin built
with another tokenizer.

Val split: a document goes to val.bin when a keyed hash of its text (key = --seed) falls below
--val_frac. The choice depends on the text alone, so it does not change with --num_workers or
--chunk_mb, and exact duplicate documents always land in the same split (no train/val leak).

Parallelism and memory: the main process reads documents in order, packs them into chunks of
about --chunk_mb, and hands them to a pool of --num_workers processes (each loads the tokenizer
once); at most 2 chunks per worker are in flight and results come back in input order, so the
output bytes are the same for any number of workers and peak memory depends on chunk_mb ×
workers, not on the input size. Tokens stream into train.bin.tmp.<pid> / val.bin.tmp.<pid>; the .tmp files
become train.bin / val.bin only when everything is encoded, and the metas are written last
(the old metas are removed first), so an interrupted build never leaves a .bin with a meta
that vouches for it. A build holds a lock on train.bin and val.bin (mathlm.common.hold_lock): a
second build in the same folder stops at once, naming the first one's pid.
"""
import contextlib
import glob
import hashlib
import itertools
import multiprocessing as mp
import os
import re
import signal
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from mathlm.common import SEED_MAX, check_range, cli, die, hold_lock, json_row, parse_config
from mathlm.data.tokens import meta_path, token_dtype, write_meta
from mathlm.format import qa_text
from mathlm.tokenizer import MathTokenizer

# a worker encodes ~1M chars per encode_batch call: HF Encoding objects cost ~150 B/token (~50 MB here);
# 256K-char calls measured ~15% slower per byte on the bench corpus, 4M-char ones no faster within noise
ENCODE_BATCH_CHARS = 1 << 20
# Where a line ends in a visible ASCII char and the next line starts with one, the pre-tokenizer
# (SPLIT_PATTERN in mathlm/tokenizer.py) always ends a piece at that "\n": no alternative reaches
# across it and no lookahead sees past it. Cutting a document there gives exactly the document's
# tokens (tested), and HF encodes such ~100-byte strings 1.04-1.45x faster per byte than the
# 6 KB documents they come from (three runs on a shared 2-core box: docs/BENCHMARKS.md).
SAFE_CUT = re.compile(r"(?<=[!-~]\n)(?=[!-~])")


@dataclass
class Config:
    """Tokenize text and Q/A jsonl files into train.bin + val.bin (see the module docstring)."""
    input: list[str] = field(default_factory=lambda: ["openwebmath.txt"])  # files or globs; .jsonl = Q/A rows
    out_dir: str = "."                # where train.bin, val.bin and their metas go
    tokenizer: str = "math_tokenizer"  # folder holding tokenizer.json
    val_frac: float = 0.005           # fraction of documents held out in val.bin (by hash of the text)
    chunk_mb: float = 4.0             # text per task handed to a worker
    max_doc_mb: float = 1.0           # longer documents are cut at a line into separate documents
    num_workers: int = 0              # encoding processes; 0 = one per available core, 1 = no pool
    seed: int = 1337                  # key of the val-split hash


# the data build is the same on a laptop and a GPU box; accepted so every stage takes --preset tiny
PRESETS = {"tiny": dict(), "smoke": dict()}  # the defaults already suit both; accepted so every stage takes --preset


# -----------------------------------------------------------------------------
# inputs → documents

def find_inputs(patterns):
    """Expand the --input files/globs; die naming every pattern that matches no file."""
    paths, missing = [], []
    for pat in patterns:
        found = [p for p in sorted(glob.glob(pat)) if os.path.isfile(p)]
        for p in found:
            if p.endswith("_test.jsonl"):
                print(f"skipping {p}: held-out test pairs never go into pretraining")
        found = [p for p in found if not p.endswith("_test.jsonl")]
        if not found:
            missing.append(pat)
        paths += [p for p in found if p not in paths]
    if missing:
        die(f"no input file matches {', '.join(missing)} (looked in {os.path.abspath('.')}) — put "
            "openwebmath.txt there, pass --input FILES/GLOBS, or build offline from the Q/A files "
            "of the downloaders/generators: --input '*.jsonl'")
    return paths


def read_text_docs(path, max_doc_bytes, sha):
    """Yield (document, bytes read since the last yield) from a plain text file (see the top)."""
    doc, blanks, size, nbytes = [], [], 0, 0
    with open(path, "rb") as f:  # binary: lines split on b"\n" only, multi-byte chars stay whole
        for line in f:
            sha.update(line)
            nbytes += len(line)
            if line.isspace():
                blanks.append(line)
                continue
            if doc and (len(blanks) >= 2 or size >= max_doc_bytes):
                yield b"".join(doc).decode("utf-8", errors="replace"), nbytes
                doc, size, nbytes = [], 0, 0
            if doc:  # one blank line inside a document: a paragraph break, kept
                doc += blanks
                size += sum(map(len, blanks))
            blanks = []
            doc.append(line)
            size += len(line)
    if doc:
        yield b"".join(doc).decode("utf-8", errors="replace"), nbytes


def read_qa_docs(path, sha):
    """Yield (qa_text(question, answer), bytes) per row of a canonical Q/A jsonl file."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            sha.update(line)
            if line.isspace():
                continue
            row = json_row(line)  # None for bad UTF-8 or JSON, and JSON nested too deep to parse
            if row is None:
                die(f"{path}:{lineno} is not JSON (or not a JSON object) — regenerate {path} or remove the line")
            if not (isinstance(row.get("question"), str)
                    and isinstance(row.get("answer"), str)):
                die(f"{path}:{lineno} lacks string fields 'question' and 'answer' — regenerate {path}")
            yield qa_text(row["question"], row["answer"]), len(line)


def read_chunks(paths, shas, chunk_bytes, max_doc_bytes):
    """Yield (documents, input bytes) in input order, ~chunk_bytes of text per chunk."""
    docs, size, nbytes = [], 0, 0
    for path in paths:
        reader = (read_qa_docs(path, shas[path]) if path.endswith(".jsonl")
                  else read_text_docs(path, max_doc_bytes, shas[path]))
        for doc, n in reader:
            docs.append(doc)
            size += len(doc)
            nbytes += n
            if size >= chunk_bytes:
                yield docs, nbytes
                docs, size, nbytes = [], 0, 0
    if docs:
        yield docs, nbytes


# -----------------------------------------------------------------------------
# workers: text → tokens

_W = {}  # per-process state: set by _init_worker, the tokenizer loaded once per worker by _tokenizer


def _init_worker(tokenizer_dir, tokenizer_hash, val_frac, seed, in_pool=True):
    if in_pool:
        # one worker = one core: HF's own thread pool on top would oversubscribe the cores
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _W.clear()
    _W.update(tokenizer=(tokenizer_dir, tokenizer_hash), key=str(seed).encode(), val_cut=int(val_frac * 2**64))


def _tokenizer():
    # loaded in the first task, not in the initializer: a Pool respawns a worker whose initializer
    # raises, forever, while an exception in a task reaches the main process
    if "tok" not in _W:
        tokenizer_dir, tokenizer_hash = _W["tokenizer"]
        tok = MathTokenizer.load(tokenizer_dir)
        if tok.hash != tokenizer_hash:  # replaced mid-build: the metas would vouch for the wrong tokenizer
            raise RuntimeError(f"{tokenizer_dir} changed during the build ({tokenizer_hash} → {tok.hash})")
        _W.update(tok=tok, dtype=token_dtype(tok.vocab_size))
    return _W["tok"]


def in_val(text, key, val_cut):
    h = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=key).digest()
    return int.from_bytes(h, "big") < val_cut


def _batches(docs, max_chars):
    batch, size = [], 0
    for d in docs:
        batch.append(d)
        size += len(d)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _encode_chunk(docs):
    """Documents → (train ids, val ids, n train docs, n val docs); every document ends with eos."""
    tok, dtype = _tokenizer(), _W["dtype"]
    train, val = [], []
    for batch in _batches(docs, ENCODE_BATCH_CHARS):
        pieces = [SAFE_CUT.split(text) for text in batch]
        encoded = iter(tok.encode_batch([p for ps in pieces for p in ps]))
        for text, ps in zip(batch, pieces):
            ids = [i for piece_ids in itertools.islice(encoded, len(ps)) for i in piece_ids]
            ids.append(tok.eos_id)
            split = val if in_val(text, _W["key"], _W["val_cut"]) else train
            split.append(np.array(ids, dtype=dtype))
    cat = lambda arrays: np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)
    return cat(train), cat(val), len(train), len(val)


def encode_chunks(chunks, num_workers, initargs):
    """Yield (train ids, val ids, n train docs, n val docs, input bytes) per chunk, in input order."""
    if num_workers == 1:
        _init_worker(*initargs, in_pool=False)
        for docs, nbytes in chunks:
            yield _encode_chunk(docs) + (nbytes,)
        return
    # spawn, not fork: the parent may already have run HF's thread pool (fork after that can deadlock)
    with mp.get_context("spawn").Pool(num_workers, _init_worker, initargs) as pool:
        pending = deque()  # ordered; bounded so reading never runs ahead of encoding (Pool.imap would)
        for docs, nbytes in chunks:
            pending.append((pool.apply_async(_encode_chunk, (docs,)), nbytes))
            if len(pending) >= 2 * num_workers:  # 2 per worker: each has its next chunk queued
                result, n = pending.popleft()
                yield result.get() + (n,)
        while pending:
            result, n = pending.popleft()
            yield result.get() + (n,)


def available_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# -----------------------------------------------------------------------------

@cli
def main(argv=None):
    cfg = parse_config(Config, PRESETS, argv)
    check_range(cfg, "val_frac", lo=0, below=1)
    check_range(cfg, "chunk_mb", above=0)
    check_range(cfg, "max_doc_mb", above=0)
    check_range(cfg, "num_workers", lo=0, why="0 = one per core, 1 = no pool")
    check_range(cfg, "seed", lo=0, hi=SEED_MAX)
    paths = find_inputs(cfg.input)
    os.makedirs(cfg.out_dir, exist_ok=True)
    bins = {s: os.path.join(cfg.out_dir, f"{s}.bin") for s in ("train", "val")}
    # one build per folder: a second one stops here naming this one's pid (two once shared train.bin.tmp
    # and left a train.bin without meta); the lock also checks the folder is writable, before any work
    with hold_lock(*bins.values(), hint="choose another --out_dir"):
        build(cfg, paths, bins)


def build(cfg, paths, bins):
    """Tokenize `paths` into bins["train"] / bins["val"] and their metas (main holds their lock)."""
    try:
        tok = MathTokenizer.load(cfg.tokenizer)
    except ValueError as e:
        die(str(e))
    dtype = token_dtype(tok.vocab_size)
    num_workers = cfg.num_workers or available_cpus()
    total = sum(os.path.getsize(p) for p in paths)
    print(f"build_pretrain | {len(paths)} file(s), {total / 1e6:,.1f} MB | tokenizer {tok.hash} "
          f"(vocab {tok.vocab_size:,} → {np.dtype(dtype).name}) | {num_workers} worker(s)")

    tmps = {s: f"{p}.tmp.{os.getpid()}" for s, p in bins.items()}  # a killed build's are removed by hold_lock
    shas = {p: hashlib.sha256() for p in paths}
    n_tokens, n_docs = {"train": 0, "val": 0}, {"train": 0, "val": 0}
    chunks = read_chunks(paths, shas, int(cfg.chunk_mb * 1e6), int(cfg.max_doc_mb * 1e6))
    initargs = (cfg.tokenizer, tok.hash, cfg.val_frac, cfg.seed)
    t0 = time.time()
    try:
        with open(tmps["train"], "wb") as ftrain, open(tmps["val"], "wb") as fval, \
                contextlib.closing(encode_chunks(chunks, num_workers, initargs)) as results, \
                tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", smoothing=0.05, disable=None) as bar:
            for train_ids, val_ids, n_train, n_val, nbytes in results:
                ftrain.write(train_ids.tobytes())
                fval.write(val_ids.tobytes())
                n_tokens["train"] += len(train_ids)
                n_tokens["val"] += len(val_ids)
                n_docs["train"] += n_train
                n_docs["val"] += n_val
                bar.update(nbytes)
            bar.update(total - bar.n)  # blank lines after the last document are read but never reported
            for f in (ftrain, fval):
                f.flush()
                os.fsync(f.fileno())
        n = n_docs["train"] + n_docs["val"]
        if n_docs["train"] == 0 or (cfg.val_frac > 0 and n_docs["val"] == 0):
            die(f"{n:,} document(s) gave {n_docs['train']:,} train and {n_docs['val']:,} val documents "
                f"(--val_frac {cfg.val_frac}) — give more text, or change --val_frac; plain text "
                "documents are separated by 2+ blank lines")
        for s in bins:
            if os.path.exists(meta_path(bins[s])):  # no moment where an old meta vouches for a new .bin
                os.remove(meta_path(bins[s]))
            os.replace(tmps[s], bins[s])
    finally:
        for tmp in tmps.values():
            if os.path.exists(tmp):
                os.remove(tmp)
    dt = time.time() - t0

    sources = [{"path": p, "bytes": os.path.getsize(p), "sha256": shas[p].hexdigest()} for p in paths]
    for s in bins:
        write_meta(bins[s], dtype, n_tokens[s], tok.hash, tok.vocab_size, split=s, n_documents=n_docs[s],
                   eos_id=tok.eos_id, val_frac=cfg.val_frac, seed=cfg.seed, sources=sources)
    print(f"wrote {bins['train']} ({n_tokens['train']:,} tokens, {n_docs['train']:,} docs) and "
          f"{bins['val']} ({n_tokens['val']:,} tokens, {n_docs['val']:,} docs) | "
          f"{total / 1e6:,.1f} MB in {dt:.1f}s ({total / 1e6 / max(dt, 1e-9):.2f} MB/s)")


if __name__ == "__main__":
    main()
