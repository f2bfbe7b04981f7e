"""Token files: the contract between the data stages and the trainers.

A token file is a flat array of token ids, `<stem>.bin`, with a JSON meta beside it, `<stem>.meta.json`:
    {"format": "mathlm-tokens-v1", "dtype": "uint16", "n_tokens": 123456,
     "tokenizer_hash": "f033efc30a48d9f3", "vocab_size": 32768, "sources": [...], ...}
- dtype is uint16 while the vocabulary fits (< 65,536 ids), else uint32. The seed wrote int32;
  uint16 halves disk and page-cache traffic for the 32k vocab, and ids are never negative.
- The meta is written after the .bin, so its existence means the build completed; every
  reader checks the tokenizer hash, so a .bin made by another tokenizer is refused, not
  silently read as garbage.
- Q/A datasets add `<stem>.idx.npy`: int64 (n_examples, 3) = token offset, prompt length,
  answer length (answer includes the closing eos) — what SFT needs to mask exactly the answer.

Read with `open_tokens(path, tokenizer_hash)` → np.memmap (no full load into RAM).
"""
import json
import os

import numpy as np

from mathlm.common import atomic_write_json, die

FORMAT = "mathlm-tokens-v1"


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 65536 else np.uint32


def meta_path(bin_path):
    stem = bin_path[:-4] if bin_path.endswith(".bin") else bin_path
    return stem + ".meta.json"


def idx_path(bin_path):
    stem = bin_path[:-4] if bin_path.endswith(".bin") else bin_path
    return stem + ".idx.npy"


def write_meta(bin_path, dtype, n_tokens, tokenizer_hash, vocab_size, **extra):
    meta = {"format": FORMAT, "dtype": np.dtype(dtype).name, "n_tokens": int(n_tokens),
            "tokenizer_hash": tokenizer_hash, "vocab_size": int(vocab_size), **extra}
    atomic_write_json(meta_path(bin_path), meta)
    return meta


def read_meta(bin_path):
    mp = meta_path(bin_path)
    if not os.path.exists(bin_path):
        die(f"{bin_path} not found")
    if not os.path.exists(mp):
        die(f"{mp} missing: {bin_path} is from an unfinished build — rebuild it")
    try:
        with open(mp) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        die(f"{mp} is unreadable ({e}) — rebuild {bin_path}")
    if meta.get("format") != FORMAT:
        die(f"{mp}: unknown format {meta.get('format')!r} (want {FORMAT})")
    return meta


def check_hash(bin_path, meta, tokenizer_hash):
    if tokenizer_hash is not None and meta["tokenizer_hash"] != tokenizer_hash:
        die(f"{bin_path} was tokenized with tokenizer {meta['tokenizer_hash']}, but the current "
            f"tokenizer is {tokenizer_hash} — rebuild the .bin with the current tokenizer")


def open_tokens(bin_path, tokenizer_hash=None):
    """np.memmap of the token ids, after checking meta and tokenizer hash."""
    meta = read_meta(bin_path)
    check_hash(bin_path, meta, tokenizer_hash)
    dtype = np.dtype(meta["dtype"])
    size = os.path.getsize(bin_path)
    if size != meta["n_tokens"] * dtype.itemsize:
        die(f"{bin_path} has {size} bytes, its meta says {meta['n_tokens']} {dtype.name} tokens — rebuild it")
    if meta["n_tokens"] == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(bin_path, dtype=dtype, mode="r")


def open_index(bin_path):
    p = idx_path(bin_path)
    if not os.path.exists(p):
        die(f"{p} not found — rebuild {bin_path} with its download/generate stage")
    return np.load(p)
