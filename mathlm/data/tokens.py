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

Read with `open_tokens(path, tokenizer_hash)` → np.memmap (no full load into RAM), and
`open_index(path, n_tokens)`. Both check what they read (meta keys and types, ids below vocab_size,
an index tiling the tokens) and refuse a damaged file in one line naming it and what to rerun.
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


def rebuild_hint(bin_path):
    """What rewrites `bin_path`: build_pretrain for train/val, else the Q/A dataset's stages."""
    name = os.path.basename(bin_path)[:-4] if bin_path.endswith(".bin") else os.path.basename(bin_path)
    if name in ("train", "val"):
        return "rebuild it: python -m mathlm.data.build_pretrain"
    return (f"rebuild it: python -m mathlm.data.tokenize_qa {name} (or rerun the download_/generate_ "
            "stage that wrote it)")


# the keys every reader relies on, and what each must be; checked once in read_meta so a hand-edited
# or foreign meta is one line naming the file, not a KeyError deep in a trainer
META_KEYS = {"dtype": str, "n_tokens": int, "tokenizer_hash": str, "vocab_size": int}


def read_meta(bin_path):
    mp = meta_path(bin_path)
    if not os.path.exists(bin_path):
        die(f"{bin_path} not found")
    if not os.path.exists(mp):
        die(f"{mp} missing: {bin_path} is from an unfinished build — {rebuild_hint(bin_path)}")
    try:
        with open(mp, "rb") as f:
            meta = json.loads(f.read())
    except (OSError, ValueError, RecursionError) as e:
        die(f"{mp} is unreadable ({str(e)[:100] or type(e).__name__}) — {rebuild_hint(bin_path)}")
    if not isinstance(meta, dict):
        die(f"{mp} holds a JSON {type(meta).__name__}, not a token-file meta object — {rebuild_hint(bin_path)}")
    if meta.get("format") != FORMAT:
        die(f"{mp}: unknown format {meta.get('format')!r} (want {FORMAT}) — {rebuild_hint(bin_path)}")
    for k, t in META_KEYS.items():
        v = meta.get(k)
        if k not in meta:
            die(f"{mp} lacks {k!r} — {rebuild_hint(bin_path)}")
        if not isinstance(v, t) or isinstance(v, bool) or (t is int and v < 0):
            die(f"{mp}: {k} is {v!r}, want {'a count' if t is int else 'a string'} — {rebuild_hint(bin_path)}")
    try:
        dtype = np.dtype(meta["dtype"])
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "ui":
        die(f"{mp}: dtype {meta['dtype']!r} is not an integer token dtype (uint16/uint32) — {rebuild_hint(bin_path)}")
    if "n_examples" in meta and (not isinstance(meta["n_examples"], int) or meta["n_examples"] < 0):
        die(f"{mp}: n_examples is {meta['n_examples']!r}, want a count — {rebuild_hint(bin_path)}")
    return meta


def check_hash(bin_path, meta, tokenizer_hash):
    if tokenizer_hash is not None and meta["tokenizer_hash"] != tokenizer_hash:
        die(f"{bin_path} was tokenized with tokenizer {meta['tokenizer_hash']}, but the current "
            f"tokenizer is {tokenizer_hash} — rebuild the .bin with the current tokenizer")


def open_tokens(bin_path, tokenizer_hash=None):
    """np.memmap of the token ids, after checking meta, tokenizer hash, size, and that every id is
    below the meta's vocab_size (one pass over the file at open: a .bin of random bytes would
    otherwise reach the embedding as an out-of-range index, mid-run, after a checkpoint was written)."""
    meta = read_meta(bin_path)
    check_hash(bin_path, meta, tokenizer_hash)
    dtype = np.dtype(meta["dtype"])
    size = os.path.getsize(bin_path)
    if size != meta["n_tokens"] * dtype.itemsize:
        die(f"{bin_path} has {size} bytes, its meta says {meta['n_tokens']} {dtype.name} tokens — "
            f"{rebuild_hint(bin_path)}")
    if meta["n_tokens"] == 0:
        return np.zeros(0, dtype=dtype)
    tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    top = max(int(tokens[i:i + (1 << 26)].max()) for i in range(0, len(tokens), 1 << 26))  # 64M ids a pass
    if top >= meta["vocab_size"] or (dtype.kind == "i" and int(tokens.min()) < 0):
        die(f"{bin_path} holds token id {top}, outside its vocabulary of {meta['vocab_size']} — the file is "
            f"corrupt; {rebuild_hint(bin_path)}")
    return tokens


def open_index(bin_path, n_tokens):
    """The (N, 3) int64 index of a Q/A token file: offset, prompt length, answer length per example.
    Refuses, naming the file, an index that is unreadable, of another dtype or shape, or whose spans
    do not tile the file's n_tokens back to back from 0 (as write_qa_bin writes them): a negative or
    shifted offset would otherwise train SFT on the wrong tokens, in silence."""
    p = idx_path(bin_path)
    if not os.path.exists(p):
        die(f"{p} not found — {rebuild_hint(bin_path)}")
    try:
        index = np.load(p)  # allow_pickle=False: an object array is refused (ValueError), never unpickled
    except (OSError, ValueError, EOFError) as e:
        die(f"{p} is unreadable ({str(e).splitlines()[0][:100] if str(e) else type(e).__name__}) — {rebuild_hint(bin_path)}")
    if not isinstance(index, np.ndarray) or index.dtype != np.int64 or index.ndim != 2 or index.shape[1] != 3:
        die(f"{p} holds a {getattr(index, 'dtype', '?')} array of shape {getattr(index, 'shape', '?')}, want int64 "
            f"(N, 3) — {rebuild_hint(bin_path)}")
    ends = index.sum(axis=1)
    starts = np.concatenate([[0], ends[:-1]])
    wrong = (index[:, 0] != starts) | (index[:, 1:] < 0).any(axis=1)
    if wrong.any() or (len(index) and ends[-1] != n_tokens):
        row = int(np.argmax(wrong)) if wrong.any() else len(index) - 1
        die(f"{p}: example {row} spans tokens {index[row, 0]}..{ends[row]}, which does not tile the {n_tokens:,} "
            f"tokens of {os.path.basename(bin_path)} — {rebuild_hint(bin_path)}")
    return index
