"""build_pretrain vs a plain single-process encode_batch loop: throughput (MB/s) and peak memory.

    python -m bench.bench_build_pretrain                             # 50 MB + 200 MB, ~9 min on 2 cores
    python -m bench.bench_build_pretrain --small_mb 5 --big_mb 20    # a quick look

Builds everything in a temp dir from the real GSM8K train text (needs ../shared/data/gsm8k):
- a tokenizer trained on GSM8K (asked for 32,768 tokens; GSM8K is too small to fill it),
- a synthetic corpus of web-page-sized documents: 12 random GSM8K problems each (question,
  answer, a blank line between problems), every number redrawn at random with the same number
  of digits, documents separated by two blank lines; the small file is the start of the big one.
Then runs each contender as a subprocess on the same file, timing it, summing the CPU time of
its process tree, and sampling the summed RSS of its process tree (/proc, every 0.1 s):
  baseline, 1 thread   read the file in 4 MB pieces at line ends, tok.encode_batch(lines), write the
                       ids as uint16 — TOKENIZERS_PARALLELISM=false, so HF encodes on one core
  baseline, HF threads the same loop with HF's own thread pool (its default: all cores)
  build_pretrain       python -m mathlm.data.build_pretrain: one worker process per core (the
                       default) on both files, and --num_workers 1 (no pool) for its own 1-core rate
Last, in its own process on one thread: encode_batch on whole documents vs on the same documents
cut at build_pretrain.SAFE_CUT (the ids are identical; the short strings encode faster).
Prints the markdown tables for docs/BENCHMARKS.md, with the load average seen during each run
(other jobs on the machine slow every wall-clock number; MB per CPU-second is less affected).
"""
import argparse
import itertools
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from mathlm.tokenizer import MathTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GSM8K = os.path.join(ROOT, "..", "shared", "data", "gsm8k")


# -----------------------------------------------------------------------------
# the baseline: what one would write without build_pretrain (run in its own process)

def baseline(path, tokenizer_dir, out_path, chunk_chars=4_000_000):
    tok = MathTokenizer.load(tokenizer_dir)
    with open(path, encoding="utf-8") as f, open(out_path, "wb") as out:
        lines, size = [], 0
        for line in itertools.chain(f, [None]):
            if line is not None:
                lines.append(line)
                size += len(line)
            if lines and (size >= chunk_chars or line is None):
                ids = tok.encode_batch(lines)
                out.write(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.uint16).tobytes())
                lines, size = [], 0


# -----------------------------------------------------------------------------
# measuring a process tree

def tree_rss(root):
    """Summed VmRSS (bytes) of `root` and all its descendants."""
    parent, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/status") as f:
                rss[int(d)] = next((int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:")), 0)
        except (OSError, IndexError, ValueError):  # the process ended while we looked
            continue
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier += kids
    return sum(rss.get(p, 0) for p in tree)


def measure(cmd, env, mb):
    """Run cmd; return wall s, tree CPU s, peak tree RSS (MB), mean load average."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        peak, loads = 0, []
        while p.poll() is None:
            peak = max(peak, tree_rss(p.pid))
            loads.append(os.getloadavg()[0])
            time.sleep(0.1)
        wall = time.time() - t0
        if p.returncode != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd)} failed:\n{err.read().decode()[-2000:]}")
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)  # the pool's workers are reaped too
    row = dict(mb=mb, wall=wall, cpu=cpu, rss=peak / 1e6, load=sum(loads) / max(len(loads), 1))
    print(f"  {' '.join(cmd[2:4])}: {mb:.0f} MB in {wall:.1f}s = {mb / wall:.2f} MB/s | cpu {cpu:.1f}s | "
          f"peak tree RSS {peak / 1e6:.0f} MB | load {row['load']:.1f}", flush=True)
    return row


def pieces_vs_docs(text_path, tok, mb=3, reps=3):
    """In this process, one thread: MB per CPU-second of encode_batch on whole documents vs on the
    same documents cut at build_pretrain.SAFE_CUT (identical ids). Best of `reps`."""
    from mathlm.data.build_pretrain import SAFE_CUT
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    with open(text_path, encoding="utf-8") as f:
        text = f.read(int(mb * 1e6))
    docs = text.split("\n\n\n")
    pieces = [p for d in docs for p in SAFE_CUT.split(d)]
    assert [i for ids in tok.encode_batch(pieces) for i in ids] == [i for ids in tok.encode_batch(docs) for i in ids]
    best = {}
    for _ in range(reps):
        for name, items in [("whole documents", docs), ("cut at SAFE_CUT", pieces)]:
            t0 = time.process_time()
            tok.encode_batch(items)
            best[name] = max(best.get(name, 0), len(text.encode()) / 1e6 / (time.process_time() - t0))
    n = {"whole documents": len(docs), "cut at SAFE_CUT": len(pieces)}
    return {name: (len(text.encode()) / n[name], v) for name, v in best.items()}


# -----------------------------------------------------------------------------
# the corpus

def make_corpus(tmp, small_mb, big_mb, seed=0):
    with open(os.path.join(GSM8K, "train.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    problems = [re.split(r"(\d+)", r["question"] + "\n" + r["answer"] + "\n") for r in rows]  # odd = numbers
    rng = random.Random(seed)

    def redraw(parts):
        return "".join(p if i % 2 == 0 else str(rng.randrange(10 ** (len(p) - 1) if len(p) > 1 else 0, 10 ** len(p)))
                       for i, p in enumerate(parts))

    small, big = os.path.join(tmp, "small.txt"), os.path.join(tmp, "big.txt")
    size = 0
    with open(small, "w") as fs, open(big, "w") as fb:
        while size < big_mb * 1e6:
            doc = "\n".join(redraw(rng.choice(problems)) for _ in range(12)) + "\n\n"
            fb.write(doc)
            if size < small_mb * 1e6:
                fs.write(doc)
            size += len(doc.encode())
    return small, big, [r["question"] + "\n" + r["answer"] for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small_mb", type=float, default=50)
    ap.add_argument("--big_mb", type=float, default=200)
    ap.add_argument("--vocab_size", type=int, default=32768)
    ap.add_argument("--baseline", nargs=3, metavar=("TEXT", "TOKENIZER", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline:
        return baseline(*args.baseline)

    tmp = tempfile.mkdtemp(prefix="bench_build_pretrain_")
    t0 = time.time()
    small, big, texts = make_corpus(tmp, args.small_mb, args.big_mb)
    tok_dir = os.path.join(tmp, "tok")
    tok = MathTokenizer.train(texts, vocab_size=args.vocab_size, show_progress=False)
    tok.save(tok_dir)
    mb = {p: os.path.getsize(p) / 1e6 for p in (small, big)}
    print(f"corpus {mb[small]:.0f} + {mb[big]:.0f} MB, tokenizer vocab {tok.vocab_size:,} "
          f"({time.time() - t0:.0f}s) in {tmp} | {os.cpu_count()} cpus", flush=True)

    env = {**os.environ, "PYTHONPATH": ROOT}
    one_thread = {**env, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("TOKENIZERS_PARALLELISM", None)
    py = [sys.executable, "-m"]
    build = lambda text, out: py + ["mathlm.data.build_pretrain", "--input", text, "--tokenizer", tok_dir,
                                    "--out_dir", os.path.join(tmp, out)]
    base = lambda text: py + ["bench.bench_build_pretrain", "--baseline", text, tok_dir, os.path.join(tmp, "base.bin")]
    n = os.cpu_count()
    rows = [  # the extra rows run on the small file only, to keep the bench short
        ("baseline, 1 thread", measure(base(big), one_thread, mb[big])),
        (f"baseline, HF threads ({n})", measure(base(small), env, mb[small])),
        ("build_pretrain, 1 worker (no pool)", measure(build(small, "one") + ["--num_workers", "1"], one_thread, mb[small])),
        (f"build_pretrain, {n} workers", measure(build(small, "small"), env, mb[small])),
        (f"build_pretrain, {n} workers", measure(build(big, "big"), env, mb[big])),
    ]
    ids = np.fromfile(os.path.join(tmp, "big", "train.bin"), dtype=np.uint16)
    print(f"(build_pretrain {mb[big]:.0f} MB: {len(ids):,} train tokens; total bench {time.time() - t0:.0f}s)\n")

    cut = pieces_vs_docs(small, tok)
    ref = rows[0][1]
    print("| run | input | wall | MB/s | vs baseline, 1 thread | MB per CPU-s | peak RSS, process tree | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['mb']:.0f} MB | {r['wall']:.0f}s | {r['mb'] / r['wall']:.2f} | "
              f"{(r['mb'] / r['wall']) / (ref['mb'] / ref['wall']):.2f}× | {r['mb'] / r['cpu']:.2f} | "
              f"{r['rss']:.0f} MB | {r['load']:.1f} |")
    print("\n| encode_batch on (one thread, same text, same ids) | mean string | MB per CPU-s |")
    print("|---|---|---|")
    for name, (mean_len, v) in cut.items():
        print(f"| {name} | {mean_len:,.0f} B | {v:.2f} |")


if __name__ == "__main__":
    main()
