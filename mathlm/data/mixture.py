"""Mixture: "these .bin token files with these weights" → (x, y) batches for the training stages.

    mix = Mixture({"train.bin": 1.0}, tok.hash, block_size=512, val_paths={"train.bin": "val.bin"})
    mix = Mixture({"gsm8k.bin": 3, "math.bin": 1}, tok.hash, block_size=512)
    g = torch.Generator().manual_seed(1337)
    x, y = mix.get_batch("train", 16, g)               # int64 (B, T); y is x shifted left by one
    x, y = to_device(x, y, device="cuda")
    vx, vy = mix.get_batch_from("gsm8k", "val", 16, g)  # per-source val loss

Reads token files through mathlm.data.tokens (meta + tokenizer-hash check); nothing is written.

- Sampling: each row of a batch picks its source with probability weight / sum(weights of the
  sources present), then a uniformly random window of block_size + 1 tokens inside that
  source's split. Windows cross document boundaries (<|eos|> separates them), as in nanoGPT.
- All randomness comes from the torch.Generator passed in: saving generator.get_state() in a
  checkpoint and restoring it makes a resumed run draw exactly the batches it would have drawn.
- val split: a source named in val_paths takes all of its file as train and the named file as
  val (pretraining's train.bin / val.bin). Any other source holds out its tail: max(0.5% of its
  tokens, 4 windows), at most half of it — the tail, not random windows, so no val token is
  ever inside a train window. A source too small for one window in each split is left out,
  with a log line saying so.
- Missing sources are named in one log line, with the stages that build them, and the others are
  renormalised; a run with no source at all stops with the list of what was looked for. Weight 0
  leaves a source out (logged).
- The memmap is re-opened for every batch, as nanoGPT does: a memmap kept open grows the
  process's resident memory as pages are touched over a long run.
"""
import os

import numpy as np
import torch

from mathlm.common import die
from mathlm.data.tokens import open_tokens

VAL_FRAC = 0.005
# the stage that writes each known <name>.bin, for the one line naming what is missing
BUILT_BY = {"train": "build_pretrain", "val": "build_pretrain", "gsm8k": "download_gsm8k", "math": "download_math",
            "numina": "download_numina", "openr1": "download_openr1", "calculus": "generate_calculus",
            "ml_math": "generate_ml_math", "word_problems": "generate_word_problems"}
MIN_VAL_WINDOWS = 4


def _resolve(path, data_dir):
    """"gsm8k" or "gsm8k.bin" → data_dir/gsm8k.bin; a path with a folder in it is taken as given."""
    if not path.endswith(".bin"):
        path += ".bin"
    return path if os.path.isabs(path) or os.path.dirname(path) else os.path.join(data_dir, path)


def _name(path):
    return os.path.basename(path)[:-4]


class Mixture:
    def __init__(self, paths_and_weights, tokenizer_hash, block_size, data_dir=".", val_paths=None,
                 val_frac=VAL_FRAC):
        self.block_size = T = block_size
        val_paths = val_paths or {}
        self._parts = {}    # name -> {"train": (path, dtype, lo, hi), "val": (...)}
        weights, looked, too_small, missing = {}, [], [], []
        for key, w in paths_and_weights.items():
            path = _resolve(key, data_dir)
            name = _name(path)
            looked.append(path)
            if w < 0:
                die(f"mixture weight for {key} is {w}; weights must be >= 0")
            if name in self._parts:
                die(f"mixture names {name} twice — give each source once")
            if not os.path.exists(path):
                missing.append((path, name, w))
                continue
            if w == 0:
                print(f"mixture: {path} has weight 0 — not in the mix")
                continue
            tokens = open_tokens(path, tokenizer_hash)  # checks meta + tokenizer hash
            n, dtype = len(tokens), tokens.dtype
            vkey = val_paths.get(key, val_paths.get(name))
            if vkey:
                vpath = _resolve(vkey, data_dir)
                if not os.path.exists(vpath):
                    die(f"val file {vpath} for {path} not found — build it, or drop it from val_paths "
                        "to hold out the tail of the train file")
                vtokens = open_tokens(vpath, tokenizer_hash)
                parts = {"train": (path, dtype, 0, n), "val": (vpath, vtokens.dtype, 0, len(vtokens))}
                how = f"val from {vpath}"
            else:
                n_val = min(max(int(n * val_frac), MIN_VAL_WINDOWS * (T + 1)), n // 2)
                parts = {"train": (path, dtype, 0, n - n_val), "val": (path, dtype, n - n_val, n)}
                how = "val = tail"
            sizes = {s: hi - lo for s, (_, _, lo, hi) in parts.items()}
            if min(sizes.values()) < T + 1:
                print(f"mixture: {path} is too small ({n:,} tokens; train {sizes['train']:,} / val "
                      f"{sizes['val']:,}) for windows of {T + 1} tokens — not in the mix")
                too_small.append(path)
                continue
            self._parts[name] = parts
            weights[name] = float(w)
            print(f"mixture: {path} | {n:,} tokens | weight {w:g} | train {sizes['train']:,} / "
                  f"val {sizes['val']:,} ({how})")
        if missing and self._parts:  # one line for all of them: the default mix names sources few runs build
            stages = sorted({f"python -m mathlm.data.{BUILT_BY[n]}" for _, n, _ in missing if n in BUILT_BY})
            print(f"mixture: not built here, left out (the rest renormalised): "
                  f"{', '.join(f'{os.path.basename(p)} ({w:g})' for p, _, w in missing)} — to add them run "
                  f"{' / '.join(stages) or 'their mathlm.data stage'} here first, or drop them from --mixture")
        if not self._parts and too_small:
            die(f"block_size {T}: every source is too small for one window of {T + 1} tokens in its train "
                f"and val splits ({', '.join(too_small)}) — lower --block_size or add data")
        if not self._parts:
            die(f"no training data: looked for {', '.join(looked)} (data_dir {data_dir}) — build them "
                "with the mathlm.data stages (download_*, generate_*, build_pretrain)")
        self.sources = list(self._parts)
        total = sum(weights.values())
        self.weights = {k: v / total for k, v in weights.items()}  # normalised over sources present
        self._probs = torch.tensor([self.weights[k] for k in self.sources], dtype=torch.float64)

    def n_tokens(self, source, split="train"):
        _, _, lo, hi = self._parts[source][split]
        return hi - lo

    def _windows(self, source, split, n, generator):
        """(n, T + 1) int64 windows drawn uniformly from one source's split."""
        if source not in self._parts:
            die(f"{source!r} is not in the mixture (sources: {', '.join(self.sources)})")
        if split not in ("train", "val"):
            die(f"split must be 'train' or 'val', not {split!r}")
        path, dtype, lo, hi = self._parts[source][split]
        T = self.block_size
        starts = lo + torch.randint(hi - lo - T, (n,), generator=generator)  # window end <= hi
        data = np.memmap(path, dtype=dtype, mode="r")
        return torch.from_numpy(np.stack([data[s:s + T + 1] for s in starts.tolist()]).astype(np.int64))

    def get_batch_from(self, source, split, batch_size, generator):
        buf = self._windows(source, split, batch_size, generator)  # (B, T + 1)
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()

    def get_batch(self, split, batch_size, generator):
        """(x, y) int64 (B, T); row i comes from a source drawn by weight."""
        choice = torch.multinomial(self._probs, batch_size, replacement=True, generator=generator)
        buf = torch.empty(batch_size, self.block_size + 1, dtype=torch.int64)
        for k, source in enumerate(self.sources):  # fixed order: the generator is consumed reproducibly
            rows = (choice == k).nonzero().flatten()
            if len(rows):
                buf[rows] = self._windows(source, split, len(rows), generator)
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()


def to_device(*tensors, device):
    """Move batch tensors to `device`; on CUDA via pinned memory, asynchronously (the copy
    overlaps the previous step's compute)."""
    if str(device).startswith("cuda"):
        return tuple(t.pin_memory().to(device, non_blocking=True) for t in tensors)
    return tuple(t.to(device) for t in tensors)
