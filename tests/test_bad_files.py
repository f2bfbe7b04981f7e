"""Bad files and bad places, issue 14 (D6-D9, D12-D14 of ../shared/notes/reliability-probe.md): each
damaged checkpoint, token file, index, jsonl line, output folder or pipeline.json ends a stage in
exactly one `error: ...` line with exit status 1, and changes no file in the working directory; a
malformed jsonl line is skipped with a warning; a second writer of the same output stops at once,
naming the first one's pid.

Table-driven: each case damages a fresh copy of one small run (a 1k-token tokenizer, GSM8K sample
data, a 2-step smoke pretrain and SFT checkpoint), then calls the stage's `main([...])` in-process
(cheaper than a subprocess per case; `cli` turns a MathlmError or OSError into SystemExit("error:
...") exactly as on the command line, and anything else escapes as the traceback it would be). The
lock test runs two real build_pretrain processes.
"""
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import REPO, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def quiet(fn, *a, **k):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        return fn(*a, **k), out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def base(gsm8k_workdir, tmp_path_factory):
    """A finished smoke run: gsm8k data, train.bin/val.bin, checkpoint.pt (pretrain), checkpoint_mathlm.pt
    (SFT), pipeline.json."""
    from mathlm.data import build_pretrain
    from mathlm.train import pretrain, sft
    d = tmp_path_factory.mktemp("bad_files") / "run"
    shutil.copytree(gsm8k_workdir, d)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        quiet(build_pretrain.main, ["--input", "gsm8k.jsonl", "--val_frac", "0.2", "--num_workers", "1"])
        quiet(pretrain.main, ["--preset", "smoke", "--mixture", "train.bin:1", "--max_steps", "2", "--eval_every", "2",
                              "--device", "cpu"])
        quiet(sft.main, ["--preset", "smoke", "--mixture", "gsm8k:1", "--max_steps", "2", "--eval_every", "2",
                         "--device", "cpu"])
    finally:
        os.chdir(cwd)
    with open(d / "pipeline.json", "w") as f:
        json.dump({"stages": {"pretrain": {"status": "done", "fingerprint": "x", "cmd": [], "seconds": 1.0}}}, f)
    return d


# --- ways to damage a copy of the run ----------------------------------------------------------

def edit_ckpt(src, dst, fn):
    def setup(d):
        c = torch.load(d / src, weights_only=True)
        fn(c)
        torch.save(c, d / dst)
    return setup


def write(name, data):
    def setup(d):
        (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def edit_meta(name, fn):
    def setup(d):
        m = json.loads((d / name).read_text())
        fn(m)
        (d / name).write_text(json.dumps(m))
    return setup


def edit_index(fn):
    def setup(d):
        a = np.load(d / "gsm8k.idx.npy")
        np.save(d / "gsm8k.idx.npy", fn(a), allow_pickle=True)
    return setup


def evil_pickle(d):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {d / 'marker'}",))
    torch.save({"model": Evil(), "model_config": {}}, d / "c.pt")


def random_bin(d):
    n = os.path.getsize(d / "train.bin")
    (d / "train.bin").write_bytes(np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes())


def a_file_named(name):  # an --out under a file: no such folder can exist, for root too
    return write(name, "not a folder")


def stage(module):
    def main(argv):
        import importlib
        return importlib.import_module(module).main(argv)
    return main


def upload_main(argv):
    from scripts import upload_hf
    return upload_hf.main(argv)


PRETRAIN = stage("mathlm.train.pretrain")
SFT = stage("mathlm.train.sft")
EVAL_MATH = stage("mathlm.eval.math")
EVAL_GSM8K = stage("mathlm.eval.gsm8k")
INFER = stage("mathlm.infer.inference")
BUILD = stage("mathlm.data.build_pretrain")
PIPELINE = stage("mathlm.pipeline")
RESUME = ["--preset", "smoke", "--mixture", "train.bin:1", "--resume", "--max_steps", "4", "--device", "cpu"]
SFT_ARGS = ["--preset", "smoke", "--mixture", "gsm8k:1", "--max_steps", "3", "--device", "cpu"]
EVAL_ARGS = ["--preset", "smoke", "--n", "2", "--device", "cpu"]
SFT_RESUME = SFT_ARGS[:-2] + ["--resume", "--max_steps", "4", "--device", "cpu"]
N3 = lambda c: c["model_config"].update(n_layer=3)  # noqa: E731

# (id, damage, stage main, argv, words the error line must hold)
CASES = [
    # D6: checkpoints, in each of the loaders
    ("empty-ckpt-infer", write("c.pt", b""), INFER, ["--checkpoint", "c.pt", "--prompt", "hi"], "empty"),
    ("empty-ckpt-resume", write("checkpoint.pt", b""), PRETRAIN, RESUME, "empty"),
    ("empty-ckpt-sft", write("c.pt", b""), SFT, SFT_ARGS + ["--init_from", "c.pt", "--out", "s.pt"], "empty"),
    ("empty-ckpt-eval-math", write("c.pt", b""), EVAL_MATH, EVAL_ARGS + ["--checkpoint", "c.pt"], "empty"),
    ("empty-ckpt-eval-gsm8k", write("c.pt", b""), EVAL_GSM8K, EVAL_ARGS + ["--checkpoint", "c.pt"], "empty"),
    ("empty-ckpt-upload", write("c.pt", b""), upload_main, ["--checkpoint", "c.pt", "--out_dir", "hf"], "empty"),
    ("truncated-ckpt", lambda d: write("c.pt", (d / "checkpoint.pt").read_bytes()[:3000])(d), INFER,
     ["--checkpoint", "c.pt", "--prompt", "hi"], "unreadable"),
    ("resume-no-optimizer", edit_ckpt("checkpoint.pt", "checkpoint.pt", lambda c: c.pop("optimizer")), PRETRAIN, RESUME,
     "optimizer"),
    ("resume-no-rng", edit_ckpt("checkpoint_mathlm.pt", "checkpoint_mathlm.pt", lambda c: c.pop("rng")), SFT, SFT_RESUME,
     "rng"),
    ("config-vs-weights-eval", edit_ckpt("checkpoint.pt", "bad.pt", N3), EVAL_MATH, EVAL_ARGS + ["--checkpoint", "bad.pt"],
     "do not match its model_config"),
    ("config-vs-weights-sft", edit_ckpt("checkpoint.pt", "bad.pt", N3), SFT, SFT_ARGS + ["--init_from", "bad.pt"],
     "do not match its model_config"),
    ("config-vs-weights-upload", edit_ckpt("checkpoint.pt", "bad.pt", N3), upload_main,
     ["--checkpoint", "bad.pt", "--out_dir", "hf"], "do not match its model_config"),
    ("config-unknown-key", edit_ckpt("checkpoint.pt", "bad.pt", lambda c: c["model_config"].update(zzz=1)), EVAL_GSM8K,
     EVAL_ARGS + ["--checkpoint", "bad.pt"], "unknown key 'zzz'"),
    ("pickle-payload", evil_pickle, INFER, ["--checkpoint", "c.pt", "--prompt", "hi"], "GLOBAL posix.system"),
    # D7: token files and indexes
    ("meta-missing-keys", write("train.meta.json", '{"format": "mathlm-tokens-v1"}'), PRETRAIN, RESUME[:4],
     "train.meta.json lacks"),
    ("meta-a-list", write("train.meta.json", "[]"), PRETRAIN, RESUME[:4], "JSON list"),
    ("meta-bad-dtype", edit_meta("train.meta.json", lambda m: m.update(dtype="float128x")), PRETRAIN, RESUME[:4],
     "float128x"),
    ("bin-random-bytes", random_bin, PRETRAIN, RESUME[:4], "outside its vocabulary"),
    ("idx-truncated", lambda d: write("gsm8k.idx.npy", (d / "gsm8k.idx.npy").read_bytes()[:100])(d), SFT, SFT_ARGS,
     "gsm8k.idx.npy is unreadable"),
    ("idx-empty", write("gsm8k.idx.npy", b""), SFT, SFT_ARGS, "gsm8k.idx.npy is unreadable"),
    ("idx-object-array", edit_index(lambda a: np.array([{}, 1], dtype=object)), SFT, SFT_ARGS, "unreadable"),
    ("idx-negative-offset", edit_index(lambda a: (a.__setitem__((5, 0), -7), a)[1]), SFT, SFT_ARGS, "example 5"),
    ("idx-floats", edit_index(lambda a: a.astype(float)), SFT, SFT_ARGS, "float64"),
    # D9: outputs that cannot be written, found before the work
    ("out-under-a-file-pretrain", a_file_named("f"), PRETRAIN, RESUME[:4] + ["--out", "f/x.pt"], "f/x.pt"),
    ("out-under-a-file-eval", a_file_named("f"), EVAL_MATH, EVAL_ARGS + ["--checkpoint", "checkpoint_mathlm.pt",
                                                                       "--out", "f/ev"], "f/ev.json"),
    ("out-under-a-file-build", a_file_named("f"), BUILD, ["--input", "gsm8k.jsonl", "--out_dir", "f/d"], "f/d"),
    ("out-under-a-file-upload", a_file_named("f"), upload_main, ["--checkpoint", "checkpoint_mathlm.pt", "--out_dir",
                                                                 "f/hf"], "f/hf"),
    # D12: pipeline.json of the wrong shape
    ("pipeline-json-list", write("pipeline.json", "[1]"), PIPELINE, ["--preset", "smoke"], "JSON list"),
    ("pipeline-json-stages-int", write("pipeline.json", '{"stages": 5}'), PIPELINE, ["--preset", "smoke"], "'stages'"),
    ("pipeline-json-str-seconds",
     write("pipeline.json", '{"stages": {"pretrain": {"status": "running", "seconds": "x"}}}'), PIPELINE,
     ["--preset", "smoke"], "seconds 'x'"),
]


@pytest.mark.parametrize("damage,main,argv,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_file_is_one_error_line_and_changes_nothing(base, tmp_path, monkeypatch, damage, main, argv, words):
    d = tmp_path / "run"
    shutil.copytree(base, d)
    monkeypatch.chdir(d)
    damage(d)
    before = snapshot(d)

    def no_generation(*a, **k):  # D9: an unwritable --out is found before any answer is generated
        raise AssertionError("generated answers before checking the output can be written")
    import importlib
    for m in ("mathlm.eval.harness", "mathlm.eval.math", "mathlm.eval.gsm8k"):
        monkeypatch.setattr(importlib.import_module(m), "complete", no_generation)
    with pytest.raises(SystemExit) as e:
        _, log = quiet(main, argv)
    msg = str(e.value.code)
    assert msg.startswith("error: ") and "\n" not in msg, msg
    assert words in msg, msg
    assert snapshot(d) == before  # no file written, removed or left behind (lock and temp files included)
    assert not (d / "marker").exists()  # the pickle's payload never ran


def test_pickle_refusal_says_what_was_refused():
    from mathlm.train.common import _load_error
    e = Exception("Weights only load failed. In PyTorch 2.6, we changed the default ... \n\n\n"
                  "Trying to load unsupported GLOBAL posix.system whose module posix is blocked.\n\nCheck the docs")
    assert "unsupported GLOBAL posix.system" in _load_error(e)
    assert _load_error(IndexError()) == "IndexError — it is corrupt or not a mathlm checkpoint"


# --- D8: jsonl lines every reader skips with its warning ----------------------------------------

BAD_LINES = [b'{"question": "q", "answer": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # RecursionError
             b"\xff\xfe x",                                                             # not UTF-8
             b'{"question": 5, "answer": "#### 5"}',                                    # not a string
             b'{"question": "q?", "answer": 7}',
             b"[1, 2]"]
GOOD = b'{"question": "What is 2+2?", "answer": "2+2=4\\n#### 4"}'


def test_every_jsonl_reader_skips_bad_lines(tmp_path, capsys):
    from mathlm.data.qa_io import read_jsonl
    from mathlm.eval.harness import read_rows
    from scripts.train_tokenizer import iter_texts
    p = tmp_path / "t.jsonl"
    p.write_bytes(b"\n".join([GOOD] + BAD_LINES + [GOOD]) + b"\n")
    rows = read_rows(str(p))
    assert [r["question"] for r in rows] == ["What is 2+2?"] * 2
    assert "skipped 5 malformed line(s): [2, 3, 4, 5, 6]" in capsys.readouterr().out
    assert len(read_jsonl(str(p))) == 4  # the JSON objects: fields are the data stages' check_pairs to judge
    assert "line 2, 3, 6" in capsys.readouterr().out
    assert "".join(iter_texts([str(p)])).count("Q: What is 2+2?") == 2


def test_build_pretrain_refuses_a_too_deep_line_in_one_line(base, tmp_path, monkeypatch):
    from mathlm.data import build_pretrain
    shutil.copy(base / "gsm8k.jsonl", tmp_path / "g.jsonl")
    with open(tmp_path / "g.jsonl", "ab") as f:
        f.write(BAD_LINES[0] + b"\n")
    shutil.copytree(base / "math_tokenizer", tmp_path / "math_tokenizer")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"^error: g\.jsonl:201 is not JSON"):
        quiet(build_pretrain.main, ["--input", "g.jsonl", "--out_dir", "o", "--num_workers", "1"])


# --- D13: leftovers of a killed writer ----------------------------------------------------------

def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_orphan_temp_files_go_and_a_lagging_summary_is_healed(base, tmp_path, monkeypatch):
    from mathlm.train import pretrain
    d = tmp_path / "run"
    shutil.copytree(base, d)
    monkeypatch.chdir(d)
    pid = dead_pid()
    (d / f"checkpoint.pt.tmp.{pid}").write_bytes(b"half a checkpoint")
    (d / f"checkpoint.json.tmp.{pid}").write_text("{")
    (d / f"train.bin.tmp.{pid}").write_bytes(b"\0" * 10)
    summary = json.loads((d / "checkpoint.json").read_text())
    (d / "checkpoint.json").write_text(json.dumps({**summary, "step": 0}))  # one checkpoint behind its .pt
    quiet(pretrain.main, RESUME[:-4] + ["--max_steps", "2", "--device", "cpu"])  # at max_steps: loads, saves nothing
    assert not list(d.glob("checkpoint.*.tmp.*"))
    assert json.loads((d / "checkpoint.json").read_text())["step"] == summary["step"]
    from mathlm.data import build_pretrain
    quiet(build_pretrain.main, ["--input", "gsm8k.jsonl", "--val_frac", "0.2", "--num_workers", "1"])
    assert not list(d.glob("*.tmp.*"))


# --- D14: two writers of one output --------------------------------------------------------------

def test_second_build_in_a_folder_stops_naming_the_first(base, tmp_path):
    """A takes the lock, is paused (SIGSTOP) so it holds it for certain, B runs and must stop at once
    with one error line naming A's pid; A is resumed and finishes. Exactly one of them succeeds."""
    d = tmp_path / "run"
    shutil.copytree(base, d)
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mathlm.data.build_pretrain", "--input", "gsm8k.jsonl", "--val_frac", "0.2",
           "--num_workers", "1"]
    a = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = d / "train.bin.lock"
    deadline = time.time() + 60
    try:
        while not (lock.exists() and lock.read_text().strip() == str(a.pid)):
            assert a.poll() is None, f"A finished before its lock was seen: {a.communicate()}"
            assert time.time() < deadline, "A never took the lock"
            time.sleep(0.001)
        os.kill(a.pid, signal.SIGSTOP)
        b = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=120)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    out_a, err_a = a.communicate(timeout=120)
    assert a.returncode == 0, err_a
    assert b.returncode == 1 and "Traceback" not in b.stderr
    errors = [ln for ln in b.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"pid {a.pid}" in errors[0] and "train.bin" in errors[0], b.stderr
    from mathlm.data.tokens import open_tokens
    assert len(open_tokens(str(d / "train.bin"))) > 0  # A's build is whole: its meta vouches for its .bin
    assert not list(d.glob("*.lock")) and not list(d.glob("*.tmp*"))
