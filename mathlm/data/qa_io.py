"""Q/A datasets on disk: the canonical text, the token file + index, and the one function every
downloader and generator ends with.

    write_qa_dataset("gsm8k", train_pairs, test_pairs, out_dir=".", tokenizer_dir="math_tokenizer")
    tokens, index = load_qa("gsm8k", ".", tok.hash)         # SFT
    prompt_ids, answer_ids = qa_example(tokens, index, i)

A pair is a dict with "question" and "answer" (plus any extra fields: "final", "level", ...).
Files a dataset <name> leaves in out_dir:
    <name>.jsonl       canonical train pairs, decontaminated — the text the tokenizer is trained on
    <name>_test.jsonl  held-out test pairs for the evals; never decontaminated away, never tokenized
    <name>.bin         per train pair: tokens of "Q: {q}\\nA:" then " {a}\\n\\n" + <|eos|>, back to back
    <name>.idx.npy     int64 (N, 3): token offset, prompt length, answer length (eos included)
    <name>.meta.json   tokens.write_meta + kind "qa", n_examples, sources, decontam drop counts
Prompt and answer are tokenized separately (mathlm.format.encode_qa), so the answer span in
the index is exactly the tokens SFT must learn, and decoding both spans gives the text back.

Every file is written to a temp name and os.replace'd; the .bin's meta is removed before the
new .bin goes in and written after, so a crash leaves either the old complete dataset or a
.bin that read_meta refuses as unfinished — never a .bin paired with the wrong meta.

Local sources (`--source PATH` of every downloader): a .jsonl or .parquet file in the hub
schema, or a folder searched recursively for files whose names start with train/test
(train.jsonl, test-00000-of-00001.parquet) or that sit in a folder named train/ or test/.
A jsonl line that is not a JSON object is skipped and reported (count + line numbers, one
line), never a traceback.
"""
import contextlib
import glob
import json
import os

import numpy as np

from mathlm.common import atomic_open, die, hold_lock, json_row, remove_orphans
from mathlm.data.decontam import decontaminate_by_source
from mathlm.data.tokens import (idx_path, meta_path, open_index, open_tokens, read_meta, rebuild_hint, token_dtype,
                                write_meta)
from mathlm.eval.extract import extract_boxed as last_boxed  # noqa: F401 — the project's one \boxed parser
from mathlm.format import qa_answer, qa_prompt

HUB_HINT = "pass --source PATH with local jsonl/parquet files in the hub schema"


def _tmp(path):
    return f"{path}.tmp.{os.getpid()}"


def _short(e):
    """An exception as a short one-line reason."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:120]}" if msg else type(e).__name__


def _numbers(ns, limit=20):
    return ", ".join(map(str, ns[:limit])) + (f" … ({len(ns) - limit} more)" if len(ns) > limit else "")


# -----------------------------------------------------------------------------
# jsonl

def read_jsonl(path):
    """Rows of a jsonl file. Blank lines are ignored; lines that are not a JSON object are
    skipped and reported in one warning line with their line numbers."""
    if not os.path.isfile(path):
        die(f"{path} not found")
    rows, bad = [], []
    with open(path, "rb") as f:  # bytes: a line of invalid UTF-8 is one bad line, not a crash
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json_row(line)  # None: not UTF-8, not JSON, nested too deep, not an object
            if row is not None:
                rows.append(row)
            else:
                bad.append(i)
    if bad:
        print(f"warning: {path}: skipped {len(bad)} malformed line(s) (not a JSON object): "
              f"line {_numbers(bad)}")
    return rows


def write_jsonl(path, rows):
    """One JSON object per line (keys sorted, UTF-8 kept readable), atomically."""
    with atomic_open(path, "wb") as f:
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))


# -----------------------------------------------------------------------------
# loading a source: the hub, or local files in the hub schema

def _split_of(path):
    name, parent = os.path.basename(path).lower(), os.path.basename(os.path.dirname(path)).lower()
    for split in ("train", "test"):
        if name.startswith(split) or parent == split:
            return split
    return None


def _read_rows(path, columns=None):
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            names = pq.read_schema(path).names
            cols = [c for c in columns if c in names] if columns else None
            return pq.read_table(path, columns=cols).to_pylist()
        except (OSError, ValueError, pa.ArrowException) as e:
            die(f"{path} is not a readable parquet file ({_short(e)})")
    rows = read_jsonl(path)
    if columns:  # drop what the stage does not use (OpenR1 rows carry MBs of generations)
        rows = [{k: r[k] for k in columns if k in r} for r in rows]
    return rows


def load_local(path, columns=None):
    """--source PATH → {"train": rows, "test": rows}. A single file is the train split unless
    its name starts with "test"; a folder is searched recursively for train*/test* files."""
    if not os.path.exists(path):
        die(f"--source {path} does not exist — give a .jsonl/.parquet file or a folder holding "
            "train.jsonl/test.jsonl or *.parquet")
    if os.path.isfile(path):
        if not path.endswith((".jsonl", ".parquet")):
            die(f"--source {path}: want a .jsonl or .parquet file (or a folder of them)")
        files = [(path, "test" if _split_of(path) == "test" else "train")]
    else:
        found = sorted(p for ext in ("jsonl", "parquet")
                       for p in glob.glob(os.path.join(path, "**", f"*.{ext}"), recursive=True))
        files = [(p, _split_of(p)) for p in found if _split_of(p)]
        ignored = [os.path.relpath(p, path) for p in found if not _split_of(p)]
        if ignored:
            print(f"note: --source {path}: ignoring {len(ignored)} file(s) named neither train* nor "
                  f"test*: {', '.join(ignored[:5])}")
        if not any(s == "train" for _, s in files):
            die(f"--source {path}: no train*.jsonl or train*.parquet file found in it")
    out = {"train": [], "test": []}
    for p, split in files:
        rows = _read_rows(p, columns)
        print(f"read {len(rows):,} {split} rows from {p}")
        out[split].extend(rows)
    return out


def offline_unless_reachable():
    """Call before `import datasets`. Offline, huggingface_hub retries the host 5 times with backoff
    before load_dataset gives up (25 s measured for download_gsm8k); one quick probe first (the
    pipeline's), and when it fails HF_HUB_OFFLINE=1 for this process (read when datasets is first
    imported): a dataset in the local cache still loads, anything else fails at once. Returns
    whether the hub answered."""
    from mathlm.pipeline import hub_reachable
    if hub_reachable():
        return True
    os.environ["HF_HUB_OFFLINE"] = "1"
    return False


def load_hub(hub_id, configs=(None,), columns=None):
    """Every split of `hub_id` (each config in turn, concatenated) → {split: rows}.
    Any failure (offline, renamed, gated) ends in one line saying how to use local files."""
    reachable = offline_unless_reachable()
    import datasets
    out = {}
    for config in configs:
        what = hub_id + (f" ({config})" if config else "")
        try:
            dd = datasets.load_dataset(hub_id, config)
        except Exception as e:  # network, auth, schema: the same way out for all of them
            why = "" if reachable else "; huggingface.co is unreachable and it is not in the datasets cache"
            die(f"could not load {what} from the hub ({_short(e)}{why}) — {HUB_HINT}")
        for split, ds in dd.items():
            cols = [c for c in columns if c in ds.column_names] if columns else ds.column_names
            rows = ds.select_columns(cols).to_list()
            print(f"loaded {len(rows):,} {split} rows of {what} from the hub")
            out.setdefault(split, []).extend(rows)
    return out


def load_rows(source, hub_id, configs=(None,), columns=None):
    """--source given → local files, else the hub."""
    return load_local(source, columns) if source else load_hub(hub_id, configs, columns)


def convert_rows(rows, fn, what):
    """[fn(row)] for every row; fn returns a pair, or None to leave the row out on purpose.
    Rows fn cannot read (missing or mistyped hub fields) are skipped and reported in one line.
    Returns (pairs, number left out by fn)."""
    pairs, bad, left_out = [], [], 0
    for i, r in enumerate(rows, 1):
        try:
            p = fn(r)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError):
            bad.append(i)
            continue
        if p is None:
            left_out += 1
        else:
            pairs.append(p)
    if bad:
        print(f"warning: {what}: skipped {len(bad)} row(s) missing the expected fields: row {_numbers(bad)}")
    return pairs, left_out


# -----------------------------------------------------------------------------
# token file + index

def write_qa_bin(name, pairs, tok, out_dir=".", source="", decontam=None, chunk_size=4096):
    """Tokenize pairs into <name>.bin + <name>.idx.npy, then <name>.meta.json last. Returns the meta.
    Token-for-token equal to mathlm.format.encode_qa per pair; encode_batch over chunks is the
    fast path (the Rust tokenizer runs a chunk on all cores)."""
    from tqdm import tqdm
    bin_path = os.path.join(out_dir, f"{name}.bin")
    dtype = token_dtype(tok.vocab_size)
    index = np.zeros((len(pairs), 3), dtype=np.int64)  # offset, prompt_len, answer_len
    tmp_bin, tmp_idx = _tmp(bin_path), _tmp(idx_path(bin_path))
    n_tokens = 0
    try:
        with open(tmp_bin, "wb") as f, tqdm(total=len(pairs), desc=f"tokenize {name}", unit="ex",
                                            mininterval=1.0, disable=None) as bar:
            for s in range(0, len(pairs), chunk_size):
                chunk = pairs[s:s + chunk_size]
                prompts = tok.encode_batch([qa_prompt(p["question"]) for p in chunk])
                answers = tok.encode_batch([qa_answer(p["answer"]) for p in chunk])
                buf = []
                for j, (p_ids, a_ids) in enumerate(zip(prompts, answers)):
                    a_ids = a_ids + [tok.eos_id]
                    index[s + j] = (n_tokens, len(p_ids), len(a_ids))
                    n_tokens += len(p_ids) + len(a_ids)
                    buf += p_ids
                    buf += a_ids
                f.write(np.asarray(buf, dtype=dtype).tobytes())
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        with open(tmp_idx, "wb") as f:
            np.save(f, index)
            f.flush()
            os.fsync(f.fileno())
        # swap in: old meta out first, new meta in last (see the top docstring)
        if os.path.exists(meta_path(bin_path)):
            os.remove(meta_path(bin_path))
        os.replace(tmp_bin, bin_path)
        os.replace(tmp_idx, idx_path(bin_path))
    finally:
        for t in (tmp_bin, tmp_idx):
            if os.path.exists(t):
                os.remove(t)
    meta = write_meta(bin_path, dtype, n_tokens, tok.hash, tok.vocab_size, kind="qa",
                      n_examples=len(pairs), sources=[source] if source else [], decontam=decontam or {})
    print(f"wrote {bin_path} ({n_tokens:,} tokens, {len(pairs):,} examples, {np.dtype(dtype).name}) "
          f"+ {os.path.basename(idx_path(bin_path))} + {os.path.basename(meta_path(bin_path))}")
    return meta


def load_qa(name, data_dir=".", tokenizer_hash=None):
    """(tokens memmap, index int64 (N, 3)) of a Q/A dataset, after checking meta, tokenizer hash
    and that the index tiles the token file exactly (tokens.open_index)."""
    bin_path = name if name.endswith(".bin") else os.path.join(data_dir, f"{name}.bin")
    if not os.path.exists(bin_path):
        die(f"{bin_path} not found — build it with its download_/generate_ stage in mathlm.data")
    meta = read_meta(bin_path)
    tokens = open_tokens(bin_path, tokenizer_hash)
    index = open_index(bin_path, len(tokens))
    if len(index) != meta.get("n_examples"):
        die(f"{idx_path(bin_path)} has {len(index)} rows, its meta says {meta.get('n_examples')} "
            f"examples — {rebuild_hint(bin_path)}")
    return tokens, index


def qa_example(tokens, index, i):
    """(prompt_ids, answer_ids) of example i as int lists; answer_ids end with eos."""
    off, n_p, n_a = (int(v) for v in index[i])
    return tokens[off:off + n_p].tolist(), tokens[off + n_p:off + n_p + n_a].tolist()


# -----------------------------------------------------------------------------
# the one function every downloader / generator calls, and the lock each holds from its start

@contextlib.contextmanager
def dataset_lock(name, out_dir):
    """`with dataset_lock("gsm8k", cfg.out_dir):` around a Q/A stage's whole work: one writer per dataset
    (common.hold_lock on <name>.jsonl, which also removes the <name>.* temp files of a killed writer and
    checks the folder is writable), taken before the download or generation, so a second run on the same
    dataset and folder stops at once naming the first one's pid, and a read-only folder stops it before
    the slow part. The companions <name>_test.jsonl, <name>_typed_test.jsonl and <name>_corpus.txt
    are this writer's too: their orphan temp files go as well."""
    with hold_lock(os.path.join(out_dir, f"{name}.jsonl"), hint="choose another --out_dir"):
        for extra in ("_test.jsonl", "_typed_test.jsonl", "_corpus.txt"):
            remove_orphans(os.path.join(out_dir, name + extra))
        yield


def check_pairs(pairs, what):
    """Pairs whose question and answer are non-empty strings; the rest reported in one line."""
    good, bad = [], []
    for i, p in enumerate(pairs, 1):
        if (isinstance(p, dict) and isinstance(p.get("question"), str) and p["question"].strip()
                and isinstance(p.get("answer"), str) and p["answer"].strip()):
            good.append(p)
        else:
            bad.append(i)
    if bad:
        print(f"warning: {what}: skipped {len(bad)} pair(s) without a question and an answer: "
              f"pair {_numbers(bad)}")
    return good


def write_qa_dataset(name, train_pairs, test_pairs, out_dir=".", tokenizer_dir="math_tokenizer",
                     text_only=False, source_desc=""):
    """Write <name>_test.jsonl, decontaminate the train pairs against every *_test.jsonl in
    out_dir (this one included), write <name>.jsonl, then (unless text_only) the .bin + index
    + meta. Returns {"train": n written, "test": n, "dropped": {test file: n}}."""
    train_pairs = check_pairs(train_pairs, f"{name} train")
    test_pairs = check_pairs(test_pairs, f"{name} test")
    if not train_pairs:
        die(f"no {name} training examples to write — check the source")
    tok = None
    if not text_only:  # before the slow part: a missing tokenizer should fail in a second
        from mathlm.tokenizer import MathTokenizer
        try:
            tok = MathTokenizer.load(tokenizer_dir)
        except ValueError as e:
            die(f"{e}; or pass --text_only to write only the text")
    os.makedirs(out_dir, exist_ok=True)

    if test_pairs:
        test_path = os.path.join(out_dir, f"{name}_test.jsonl")
        write_jsonl(test_path, test_pairs)
        print(f"wrote {test_path} ({len(test_pairs):,} test examples; for the evals, never trained on)")
    test_sets = {os.path.basename(p): [r["question"] for r in read_jsonl(p) if isinstance(r.get("question"), str)]
                 for p in sorted(glob.glob(os.path.join(out_dir, "*_test.jsonl")))}
    kept, dropped = decontaminate_by_source(train_pairs, test_sets, progress=len(train_pairs) > 50_000)
    if test_sets:
        by = ", ".join(f"{k} {v:,}" for k, v in dropped.items())
        print(f"decontaminate {name}: dropped {sum(dropped.values()):,} of {len(train_pairs):,} train "
              f"examples overlapping a test question ({by})")
    else:
        print(f"decontaminate {name}: no *_test.jsonl in {out_dir} to check against — run the "
              "GSM8K and MATH downloaders first to decontaminate against their test splits")
    if not kept:
        die(f"every {name} training example overlaps a test split — check the source")

    train_path = os.path.join(out_dir, f"{name}.jsonl")
    write_jsonl(train_path, kept)
    print(f"wrote {train_path} ({len(kept):,} train examples)")
    if tok is not None:
        write_qa_bin(name, kept, tok, out_dir, source=source_desc, decontam=dropped)
    elif os.path.exists(os.path.join(out_dir, f"{name}.bin")):
        print(f"note: {name}.bin in {out_dir} is from an earlier build, not this text — rerun without "
              "--text_only to rebuild it")
    return {"train": len(kept), "test": len(test_pairs), "dropped": dropped}
