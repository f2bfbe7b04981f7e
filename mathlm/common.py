"""What every stage needs, in one small module: config → CLI flags, device and dtype
pick, autocast, atomic writes, one-line errors, seeding.

Nothing here does work at import time; every stage imports what it needs:
    from mathlm.common import parse_config, pick_device, atomic_save, die
"""
import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import sys
import typing


# -----------------------------------------------------------------------------
# errors: a stage that cannot go on says why in one line and exits non-zero

class MathlmError(Exception):
    """A problem with the user's input or environment, said in one line: what is wrong and what to
    do. Library code raises it; only a stage's `main` (wrapped in `cli`) turns it into an exit, so
    the demo and the Spaces app can show the same line to their user."""


def die(msg):
    """Raise MathlmError(msg): `error: msg` on stderr and exit status 1 once it reaches `cli`."""
    raise MathlmError(msg)


def os_error_line(e):
    """An OSError as one line that names the file: `cannot write out/x.pt: No space left on device`."""
    import errno
    what = {errno.ENOSPC: "the disk is full — free space and rerun (--resume continues)",
            errno.EROFS: "the file system is read-only — choose a writable --out/--out_dir",
            errno.EACCES: "permission denied — choose a writable folder",
            errno.ENOENT: "no such file or folder"}.get(e.errno, e.strerror or str(e))
    import re
    # a temp file's name is the output's plus .tmp.<pid> (atomic writes): name the output the user chose
    files = " -> ".join(re.sub(r"\.tmp\.\d+$", "", str(f)) for f in (e.filename, e.filename2) if f)
    return f"{files}: {what}" if files else what


def cli(main):
    """Wrap a stage's `main(argv)`: a MathlmError, or an OSError from reading or writing files
    (disk full, read-only folder), becomes one `error: ...` line on stderr and exit status 1, no
    traceback. Everything else is a bug in mathlm and keeps its traceback."""
    import functools

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv)
        except MathlmError as e:
            raise SystemExit(f"error: {e}") from None
        except OSError as e:
            if isinstance(e, (ConnectionError, TimeoutError)) or e.errno is None:
                raise
            raise SystemExit(f"error: {os_error_line(e)}") from None
    return wrapped


# -----------------------------------------------------------------------------
# config dataclass → argparse: every field is a flag spelled like the field

def _field_type(f):
    t = f.type
    if isinstance(t, str):  # `from __future__ import annotations` leaves strings
        t = {"int": int, "float": float, "str": str, "bool": bool}.get(t, t)
    return t


def field_comments(cls):
    """{field: its trailing comment} from the source of dataclass `cls` (and its bases): the
    `name: type = default   # comment` lines, plus comment-only lines right below that start at
    the same column (a comment continued). These comments are the flags' documentation."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize
    out = {}
    for k in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        try:
            src = textwrap.dedent(inspect.getsource(k))
        except (OSError, TypeError):  # built in, or defined where no source is kept
            continue
        node = ast.parse(src).body[0]
        if not isinstance(node, ast.ClassDef):
            continue
        comments, code_lines = {}, set()  # line → (column, text); lines holding code
        for t in tokenize.generate_tokens(io.StringIO(src).readline):
            if t.type == tokenize.COMMENT:
                comments[t.start[0]] = (t.start[1], t.string.lstrip("#").strip())
            elif t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                code_lines.update(range(t.start[0], t.end[0] + 1))
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            line = next((n for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments), None)
            if line is None:
                continue
            col, text = comments[line]
            parts = [text]
            while line + 1 in comments and line + 1 not in code_lines and comments[line + 1][0] == col:
                line += 1
                parts.append(comments[line][1])
            out[stmt.target.id] = " ".join(p for p in parts if p)
    return out


def finite_float(text):
    """argparse type for every float flag: NaN and ±inf are refused here, at parse time, so no stage
    ever trains on them (`x <= 0` is False for NaN, which is how `--lr nan` once got through)."""
    import math
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def _show_default(v):
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v)) if v else "none"
    return '""' if v == "" else str(v)


def _description(cls):
    """The stage module's docstring: its first paragraph, then its usage lines (the indented
    lines opening the next paragraph) when the first paragraph has none."""
    # never cls.__doc__: without a docstring of its own, a dataclass's __doc__ is its signature
    doc = getattr(sys.modules.get(cls.__module__), "__doc__", None) or ""
    paras = [p for p in doc.strip("\n").split("\n\n") if p.strip()]
    if not paras:
        return None
    keep = paras[0].rstrip().splitlines()
    if len(paras) > 1 and not any(ln.startswith((" ", "\t")) for ln in keep):
        usage = []
        for ln in paras[1].splitlines():
            if not ln.startswith((" ", "\t")):
                break
            usage.append(ln.rstrip())
        if usage:
            keep += [""] + usage
    return "\n".join(keep)


def _prog(cls):
    # `python -m mathlm.x.y` rather than argparse's `y.py`; run as a script path, argparse's default
    spec = getattr(sys.modules.get(cls.__module__), "__spec__", None)
    name = getattr(spec, "name", "") or ""
    return f"python -m {name}" if name.startswith("mathlm.") else None


def build_parser(cls, presets=None, description=None):
    """The argparse parser for dataclass `cls`: one flag per field, its help the field's comment
    and its default; the description is the stage module's docstring (summary + usage lines)."""
    import textwrap
    epilog = None
    if presets:  # what each preset sets, spelled as the flags it stands for
        def flag(k, v):
            return (f"--{k}" if v else f"--no-{k}") if isinstance(v, bool) else f"--{k} {_show_default(v)}"
        epilog = "presets (explicit flags override them):\n" + "\n".join(
            textwrap.fill(" ".join(flag(k, v) for k, v in presets[name].items()) or "(the defaults)", 100,
                          initial_indent=f"  {name:<8} ", subsequent_indent=" " * 11)
            for name in sorted(presets))
    p = argparse.ArgumentParser(prog=_prog(cls), usage="%(prog)s [options]", epilog=epilog,
                                description=description or _description(cls),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if presets:
        p.add_argument("--preset", choices=sorted(presets), default=None,
                       help=f"named recipe: {', '.join(sorted(presets))} (below); explicit flags override it")
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        t = _field_type(f)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        flag = f"--{f.name}"
        # argparse's own default stays None, so parse_config can tell "not given" from "given"
        helptext = f"{comments[f.name]} (default: {_show_default(default)})" if f.name in comments \
            else f"(default: {_show_default(default)})"
        helptext = helptext.replace("%", "%%")  # argparse %-formats help strings
        if t is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        elif typing.get_origin(t) is list or t is list:
            args = typing.get_args(t)
            item = args[0] if args else str
            p.add_argument(flag, nargs="+", type=finite_float if item is float else item, default=None,
                           help=helptext)
        else:
            p.add_argument(flag, type=finite_float if t is float else t, default=None, help=helptext)
    return p


def parse_config(cls, presets=None, argv=None, description=None):
    """Defaults ← preset ← explicit flags. Returns an instance of the dataclass `cls`."""
    p = build_parser(cls, presets, description)
    args = p.parse_args(argv)
    kw = {}
    preset = getattr(args, "preset", None) if presets else None
    if preset:
        kw.update(presets[preset])
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name)
        if v is not None:
            kw[f.name] = v
    unknown = set(kw) - {f.name for f in dataclasses.fields(cls)}
    if unknown:  # a preset naming a field that does not exist is a bug in the stage
        raise ValueError(f"preset {preset!r} sets unknown fields {sorted(unknown)}")
    cfg = cls(**kw)
    if presets and hasattr(cfg, "preset"):
        cfg.preset = preset or getattr(cfg, "preset")
    return cfg


def config_dict(cfg):
    """A config as plain data, for checkpoints and JSON."""
    return dataclasses.asdict(cfg)


# -----------------------------------------------------------------------------
# config checks: each stage's validate(cfg) refuses a meaningless value before any work, in one
# line naming the flag, the value and what is allowed: `error: --n_layer 0: must be ≥ 1`

SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit unsigned: --seed -1 was a ValueError traceback


def _num(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


def check_range(cfg, name, lo=None, hi=None, above=None, below=None, also=(), why=""):
    """Refuse `cfg.<name>` outside lo ≤ v ≤ hi (inclusive) and above < v < below (exclusive);
    the values in `also` pass whatever the range (e.g. -1 = never). NaN and ±inf never pass.
    `why` follows the allowed range after a dash. Returns the value."""
    import math
    v = getattr(cfg, name)
    if v in also:
        return v
    ok = (not isinstance(v, float) or math.isfinite(v)) and \
        (lo is None or v >= lo) and (hi is None or v <= hi) and \
        (above is None or v > above) and (below is None or v < below)
    if not ok:
        left = f"[{_num(lo)}" if lo is not None else f"({_num(above)}" if above is not None else None
        right = f"{_num(hi)}]" if hi is not None else f"{_num(below)})" if below is not None else None
        if left and right:
            allowed = f"in {left}, {right}"
        elif left:
            allowed = f"{'≥' if lo is not None else '>'} {left[1:]}"
        else:
            allowed = f"{'≤' if hi is not None else '<'} {right[:-1]}"
        if also:
            allowed += " or " + " or ".join(_num(a) for a in also)
        die(f"--{name} {_num(v)}: must be {allowed}" + (f" — {why}" if why else ""))
    return v


def check_choice(cfg, name, choices):
    """Refuse `cfg.<name>` unless it is one of `choices`: `--dtype fp8: use one of auto, bf16, fp32`."""
    v = getattr(cfg, name)
    if v not in choices:
        die(f"--{name} {v!r}: use one of {', '.join(choices)}")
    return v


def device_error(device):
    """Why `device` is not a device mathlm runs on (None when it is one): auto, cpu, mps, cuda, cuda:N."""
    import re
    if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(device)):
        return None
    return f"--device {device!r}: use auto, cpu, cuda, cuda:N or mps"


def check_device(cfg):
    if device_error(cfg.device):
        die(device_error(cfg.device))


# -----------------------------------------------------------------------------
# device and precision

def pick_device(device="auto", verbose=True):
    """auto → cuda, then mps, then cpu."""
    import torch
    if device_error(device):  # torch's own message for "tpu" is a traceback
        die(device_error(device))
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        die(f"--device {device} asked for, but torch sees no CUDA GPU; use --device auto or cpu")
    return device


def cpu_has_native_bf16():
    """The bf16 instructions this CPU has ("avx512_bf16", "amx", "avx512_bf16+amx"), or None. Not
    torch.ops.mkldnn._is_mkldnn_bf16_supported(): it is true on plain avx512 too, where oneDNN only
    emulates bf16, and bf16 is many times slower than fp32 (issue 13)."""
    import torch
    has = [name for name, ok in (("avx512_bf16", torch.cpu._is_avx512_bf16_supported()),
                                 ("amx", torch.cpu._is_amx_tile_supported())) if ok]
    return "+".join(has) or None


def pick_dtype(device, dtype="auto", verbose=True):
    """The autocast dtype for `device`; 'auto' = bf16 where it is native (CUDA with bf16, a CPU
    with avx512_bf16 or AMX), else fp32 (MPS too). Returns a torch.dtype and prints the choice
    with its reason."""
    import torch
    device_type = device.split(":")[0]
    if dtype == "auto":
        native = cpu_has_native_bf16() if device_type == "cpu" else None
        if device_type == "cuda" and torch.cuda.is_bf16_supported():
            out, why = torch.bfloat16, "cuda supports bf16"
        elif native:
            # the tiny preset's training step: 1.31x the fp32 tokens/s here (docs/BENCHMARKS.md, bf16 on CPU)
            out, why = torch.bfloat16, f"cpu has native bf16: {native}"
        elif device_type in ("cuda", "cpu"):
            out, why = torch.float32, f"bf16 → fp32: {device_type} without native bf16"
        else:
            out, why = torch.float32, f"bf16 → fp32: {device_type}"
    else:
        out = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
               "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}.get(dtype)
        if out is None:
            die(f"unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32")
        why = "asked for"
    if verbose:
        print(f"device {device} | dtype {str(out).replace('torch.', '')} ({why})")
    return out


def autocast(device, dtype):
    """Mixed-precision context for the forward pass; a no-op for fp32."""
    import torch
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def set_seed(seed):
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -----------------------------------------------------------------------------
# outputs: write a temp file, then os.replace — a crash mid-write leaves the old file whole

def _tmp(path):
    """`<path>.tmp.<pid>`: unique per process, so two writers never share a temp file, and a temp
    file whose process is gone is known to be an orphan (remove_orphans)."""
    return f"{path}.tmp.{os.getpid()}"


def atomic_save(obj, path):
    """torch.save(obj) to `path` atomically; fsync'd like atomic_write, so a power loss right
    after the rename cannot leave a renamed but empty file."""
    import torch
    tmp = _tmp(path)
    try:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:
            # a full disk reaches torch's zip writer as "[enforce fail ...] unexpected pos": say it as the
            # OSError it is, so the stage ends in one line (cli) rather than a C++ traceback
            import errno
            import shutil
            if "unexpected pos" in str(e) or shutil.disk_usage(os.path.dirname(os.path.abspath(tmp))).free < 1 << 20:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from None
            raise
        fd = os.open(tmp, os.O_RDONLY)  # fsync flushes the file's data whatever mode the fd was opened in
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path, data):
    """Write str or bytes to `path` atomically."""
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path, obj):
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """`with atomic_open(p) as f:` — f is a temp file that becomes `p` only if the block finishes."""
    tmp = _tmp(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# -----------------------------------------------------------------------------
# one writer per output: an OS file lock on `<output>.lock`

def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_orphans(path):
    """Remove the temp files a killed writer of `path` left behind: `<path>.tmp.<pid>` and those of
    its companions written beside it (`<stem>.*.tmp.<pid>`: the .json summary of a .pt, the .idx.npy
    and .meta.json of a .bin) whose process is no longer alive. Returns the removed paths.

    A SIGKILL during torch.save leaves a temp file as large as the checkpoint; its process is gone,
    so it can never be renamed into place. A live process's temp file is never touched (pids are
    this machine's: a writer on another host sharing the folder would look dead, which is one more
    reason the lock, below, must not be shared across hosts)."""
    import glob
    import re
    stem = os.path.splitext(path)[0]
    removed = []
    for f in sorted(set(glob.glob(glob.escape(path) + ".tmp.*") + glob.glob(glob.escape(stem) + ".*.tmp.*"))):
        m = re.search(r"\.tmp\.(\d+)$", f)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):  # another starting writer removed it first
                if os.path.isdir(f) and not os.path.islink(f):  # a folder built beside its output (train_tokenizer)
                    import shutil
                    shutil.rmtree(f)
                else:
                    os.remove(f)
                removed.append(f)
    return removed


def check_writable(path):
    """Raise OSError naming `path` unless a file can be written beside it: its folder exists, is
    writable and not on a read-only or full file system. Stages call it (through hold_lock) before
    their slow part, so an eval stops before generating, not after, and a trainer before step 0.
    A probe file `<path>.tmp.<pid>` gets one byte and is removed; `path` itself is not touched."""
    probe = _tmp(path)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"\0")
            os.fsync(fd)  # a full disk may only say so once the byte must reach it
        finally:
            os.close(fd)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)


def _lock_holder(fd):
    """The pid the holder wrote into its lock file ('?' if it has not written it yet)."""
    import time
    for _ in range(50):  # the holder writes its pid right after it takes the lock: wait up to 0.5 s
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "?"


def _acquire(path, hint):
    import fcntl
    lock_path = f"{path}.lock"
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only or missing folder: name the output, not its lock file
            raise OSError(e.errno, e.strerror, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _lock_holder(fd)
            os.close(fd)
            die(f"{path} is being written by another run (pid {pid}) — wait for it or {hint}")
        # a holder unlinks its lock file before releasing it (below); if that happened between our
        # open and flock we hold a lock on a file nobody else can see: open the path again
        try:
            st, now = os.fstat(fd), os.stat(lock_path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return lock_path, fd


def _release(lock_path, fd):
    import fcntl
    with contextlib.suppress(OSError):
        st, now = os.fstat(fd), os.stat(lock_path)
        if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
            os.remove(lock_path)  # while still locked: a waiter that opened it sees the unlink and reopens
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def hold_lock(*paths, hint="choose another --out"):
    """`with hold_lock(out):` — this process is the only writer of each output in `paths` while the
    block runs. A second run on the same output stops at once with one line naming the holder:
    `error: checkpoint.pt is being written by another run (pid 1234) — wait for it or choose
    another --out`. Holding the lock, it removes the output's orphan temp files (remove_orphans).

    The lock is `fcntl.flock` on `<output>.lock`, which holds the writer's pid. The kernel releases
    it when the process dies, so a SIGKILLed run never leaves a stale lock: a `.lock` file left by a
    killed run is harmless, the next run simply takes it (a clean exit removes the file). Missing
    parent folders are made, and removed again on exit if still empty; then check_writable, so a
    read-only, missing or full folder stops the stage here, before its work. flock is per host: on NFS
    it may not lock across machines, so never run two writers of one output on two hosts.
    Windows has no fcntl: there hold_lock only removes orphans and does not refuse a second run."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        fcntl = None
    held, made = [], []
    try:
        for path in paths:
            parent = os.path.dirname(os.path.abspath(path))
            missing = []
            while not os.path.isdir(parent):
                missing.append(parent)
                parent = os.path.dirname(parent)
            if missing:
                try:
                    os.makedirs(missing[0])
                except OSError as e:
                    raise OSError(e.errno, e.strerror, path) from None
                made += missing  # deepest first
            check_writable(path)
            if fcntl is not None:
                held.append(_acquire(path, hint))
            remove_orphans(path)
        yield
    finally:
        for lock_path, fd in reversed(held):
            _release(lock_path, fd)
        for d in made:  # only the folders this lock made, only when the stage left them empty
            with contextlib.suppress(OSError):
                os.rmdir(d)


def json_row(line):
    """One jsonl line (bytes or str) → the JSON object it holds, or None when it holds none: invalid
    UTF-8, not JSON, nested too deep for the parser (a RecursionError, not a ValueError), or JSON that
    is not an object. Every jsonl reader goes through it, so a bad line is skipped and reported, never
    a traceback (issue 14)."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None
    return row if isinstance(row, dict) else None


def qa_fields_ok(row, fields=("question", "answer")):
    """True when each of `fields` present in `row` is a string and "question" is a non-empty one:
    an int question is a bad row, skipped like a malformed line, not an AttributeError later."""
    return isinstance(row.get("question"), str) and row["question"].strip() != "" and \
        all(isinstance(row[k], str) for k in fields if k in row)


def sha256_file(path, n=None):
    """Hex sha256 of a file's bytes; `n` keeps the first n hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n] if n else h.hexdigest()


def human(n):
    """12345678 → '12.3M'."""
    for unit in ["", "K", "M", "G", "T"]:
        if abs(n) < 1000:
            return f"{n:.3g}{unit}" if unit else f"{n:g}"
        n /= 1000
    return f"{n:.3g}P"


def eprint(*a):
    print(*a, file=sys.stderr)
