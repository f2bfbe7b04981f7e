"""Bad flags are one `error:` line naming the flag, and nothing is written (issue 14).

The cases are the reproducers of D5, D10 and D11 in ../shared/notes/reliability-probe.md (NaN/inf and
out-of-range flags, a NaN init checkpoint, --resume from another stage's checkpoint), plus the flags the
issue lists. Each runs a stage's `main` in-process, in a copy of a finished smoke run (the checks all
fire before any work), and asserts: a non-zero exit, exactly one line holding `error:` and it names the
flag, no traceback, and every file in the folder byte-identical afterwards. A few run as real
subprocesses, as a user types them. The divergence tests check that `--lr 1e30` on --resume stops with
one line and leaves the previous checkpoint byte-identical."""
import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys

import pytest
import torch

from mathlm.train.common import save_checkpoint
from tests.conftest import snapshot

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: smoke models, one thread

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRE = ["--preset", "smoke", "--mixture", "gsm8k.bin:1", "--no-progress", "--device", "cpu"]
SFT = ["--preset", "smoke", "--mixture", "gsm8k:1", "--no-progress", "--device", "cpu"]
GRPO = ["--preset", "smoke", "--init_from", "checkpoint.pt", "--tasks", "gsm8k:1", "--no-progress",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(gsm8k_workdir, tmp_path_factory, one_thread):
    """gsm8k_workdir plus a smoke pretrain's checkpoint.pt (30 steps), a copy of it with NaN weights
    (nan.pt), one labelled as a GRPO checkpoint (grpo_stage.pt: D11) and an empty text file."""
    from mathlm.train import pretrain
    d = tmp_path_factory.mktemp("bad_flags")
    shutil.copytree(gsm8k_workdir, d, dirs_exist_ok=True)
    cwd = os.getcwd()
    try:
        os.chdir(d)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            pretrain.main(PRE + ["--eval_every", "-1"])
    finally:
        os.chdir(cwd)
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    save_checkpoint(str(d / "grpo_stage.pt"), {**ck, "stage": "grpo"})
    ck["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in ck["model"].items()}
    save_checkpoint(str(d / "nan.pt"), ck)
    (d / "empty.txt").write_bytes(b"")
    return d


def assert_one_error_line(text, names):
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if "error:" in ln]
    assert len(lines) == 1, text
    for name in names:
        assert name in lines[0], lines[0]


# (stage, flags, what the error line must name); the stage's own required flags come from ARGS
ARGS = {"mathlm.train.pretrain": PRE, "mathlm.train.sft": SFT, "mathlm.train.grpo": GRPO,
        "mathlm.eval.math": ["--preset", "smoke", "--checkpoint", "checkpoint.pt"],
        "mathlm.eval.gsm8k": ["--preset", "smoke", "--checkpoint", "checkpoint.pt"],
        "mathlm.infer.inference": ["--checkpoint", "checkpoint.pt", "--prompt", "2+3?"],
        "mathlm.data.build_pretrain": ["--input", "gsm8k.jsonl", "--out_dir", "new"],
        "scripts.train_tokenizer": ["--input", "gsm8k.jsonl", "--out_dir", "new_tokenizer"]}
CASES = [
    # D5: non-finite or meaningless numbers that trained on NaN or crashed
    ("mathlm.train.pretrain", ["--lr", "inf"], ["--lr"]),
    ("mathlm.train.pretrain", ["--lr", "nan"], ["--lr"]),
    ("mathlm.train.pretrain", ["--min_lr", "nan"], ["--min_lr"]),
    ("mathlm.train.pretrain", ["--weight_decay", "nan"], ["--weight_decay"]),
    ("mathlm.train.pretrain", ["--rope_theta", "-1"], ["--rope_theta"]),
    ("mathlm.train.pretrain", ["--beta1", "2"], ["--beta1"]),
    ("mathlm.train.pretrain", ["--seed", "-1"], ["--seed"]),
    ("mathlm.train.pretrain", ["--n_embd", "-64"], ["--n_embd"]),
    ("mathlm.train.pretrain", ["--mixture", "gsm8k.bin:nan"], ["--mixture"]),
    ("mathlm.train.pretrain", ["--mixture", "gsm8k.bin:inf"], ["--mixture"]),
    ("mathlm.train.pretrain", ["--device", "tpu"], ["--device"]),
    ("mathlm.train.sft", ["--epochs", "nan", "--max_steps", "0"], ["--epochs"]),
    ("mathlm.train.sft", ["--init_from", "nan.pt"], ["nan.pt", "NaN"]),
    ("mathlm.train.grpo", ["--clip_eps", "nan"], ["--clip_eps"]),
    ("mathlm.train.grpo", ["--beta", "nan"], ["--beta"]),
    ("mathlm.train.grpo", ["--temperature", "nan"], ["--temperature"]),
    ("mathlm.train.grpo", ["--init_from", "nan.pt"], ["nan.pt", "NaN"]),
    ("mathlm.eval.math", ["--temperature", "nan"], ["--temperature"]),
    ("mathlm.eval.gsm8k", ["--temperature", "nan"], ["--temperature"]),
    ("mathlm.infer.inference", ["--temperature", "nan"], ["--temperature"]),
    ("mathlm.eval.math", ["--samples", "-1"], ["--samples"]),
    ("mathlm.eval.gsm8k", ["--samples", "-1"], ["--samples"]),
    ("mathlm.eval.math", ["--checkpoint", "nan.pt"], ["nan.pt", "NaN"]),
    ("mathlm.data.build_pretrain", ["--chunk_mb", "nan"], ["--chunk_mb"]),
    ("mathlm.data.build_pretrain", ["--max_doc_mb", "inf"], ["--max_doc_mb"]),
    ("mathlm.data.build_pretrain", ["--num_workers", "-1"], ["--num_workers"]),
    ("scripts.train_tokenizer", ["--vocab_size", "-5"], ["--vocab_size"]),
    ("scripts.train_tokenizer", ["--min_frequency", "-1"], ["--min_frequency"]),
    # D10: bad values that were accepted in silence
    ("mathlm.train.pretrain", ["--n_layer", "0"], ["--n_layer"]),
    ("mathlm.train.pretrain", ["--warmup_steps", "-10"], ["--warmup_steps"]),
    ("mathlm.train.pretrain", ["--grad_clip", "nan"], ["--grad_clip"]),
    ("mathlm.train.pretrain", ["--block_size", "100000"], ["--block_size"]),
    ("mathlm.data.download_gsm8k", ["--max_examples", "-1"], ["--max_examples"]),
    ("mathlm.data.download_math", ["--max_examples", "-1"], ["--max_examples"]),
    ("mathlm.data.download_numina", ["--max_examples", "-1"], ["--max_examples"]),
    ("mathlm.data.download_openr1", ["--max_examples", "-1"], ["--max_examples"]),
    ("mathlm.eval.math", ["--n", "-1"], ["--n"]),
    ("mathlm.eval.gsm8k", ["--n", "-1"], ["--n"]),
    ("mathlm.eval.math", ["--max_new_tokens", "-1"], ["--max_new_tokens"]),
    ("mathlm.eval.gsm8k", ["--max_new_tokens", "-1"], ["--max_new_tokens"]),
    ("scripts.train_tokenizer", ["--input", "empty.txt"], ["empty.txt"]),
    ("scripts.train_tokenizer", ["--vocab_size", "0"], ["--vocab_size"]),
    ("scripts.train_tokenizer", ["--vocab_size", "10"], ["--vocab_size"]),
    ("scripts.train_tokenizer", ["--max_mb", "-1"], ["--max_mb"]),
    ("mathlm.infer.inference", ["--temperature", "-1"], ["--temperature"]),
    ("mathlm.infer.inference", ["--top_k", "-5"], ["--top_k"]),
    ("mathlm.infer.inference", ["--top_p", "nan"], ["--top_p"]),
    ("mathlm.infer.inference", ["--top_p", "0"], ["--top_p"]),
    ("mathlm.infer.inference", ["--max_new_tokens", "-1"], ["--max_new_tokens"]),
    ("mathlm.train.grpo", ["--top_p", "0"], ["--top_p"]),
    ("mathlm.train.grpo", ["--top_k", "-1"], ["--top_k"]),
    ("mathlm.train.grpo", ["--temperature", "inf"], ["--temperature"]),
    # D11: --resume from another stage's checkpoint
    ("mathlm.train.pretrain", ["--resume", "--out", "grpo_stage.pt"], ["grpo", "pretrain"]),
    ("mathlm.train.sft", ["--resume", "--out", "grpo_stage.pt"], ["grpo", "sft"]),
    # the rest of the list
    ("mathlm.train.pretrain", ["--grad_clip", "-1"], ["--grad_clip"]),
    ("mathlm.train.pretrain", ["--lr", "1e30"], ["--lr"]),  # AdamW moves each weight ~lr a step
    ("mathlm.train.pretrain", ["--n_embd", "60", "--n_head", "4"], ["head_dim"]),  # odd head_dim: RoPE pairs
    ("mathlm.train.sft", ["--beta2", "1"], ["--beta2"]),
    ("mathlm.train.sft", ["--warmup_steps", "-1"], ["--warmup_steps"]),
    ("mathlm.train.grpo", ["--seed", "-1"], ["--seed"]),
    ("mathlm.train.grpo", ["--device", "tpu"], ["--device"]),
]


@pytest.mark.parametrize("stage,flags,names", CASES,
                         ids=[f"{s.split('.')[-1]} {' '.join(f)}" for s, f, _ in CASES])
def test_bad_flag_is_one_error_line_and_writes_nothing(run_dir, monkeypatch, capsys, stage, flags, names):
    monkeypatch.chdir(run_dir)
    before = snapshot(run_dir)
    with pytest.raises(SystemExit) as e:
        importlib.import_module(stage).main(ARGS.get(stage, []) + flags)
    code = e.value.code
    assert code not in (0, None)
    # cli exits with its `error: ...` line as the code (Python prints it); argparse prints its own, exit 2
    assert_one_error_line(capsys.readouterr().err + (code if isinstance(code, str) else ""), names)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("cmd,names", [
    (["-m", "mathlm.train.pretrain", *PRE, "--n_layer", "0"], ["--n_layer"]),
    (["-m", "mathlm.train.pretrain", *PRE, "--lr", "inf"], ["--lr"]),
    (["-m", "mathlm.eval.math", "--preset", "smoke", "--samples", "-1"], ["--samples"]),
    (["-m", "mathlm.infer.inference", "--prompt", "2+3?", "--top_p", "0"], ["--top_p"]),
    ([os.path.join(REPO, "scripts", "train_tokenizer.py"), "--vocab_size", "10"], ["--vocab_size"]),
], ids=["pretrain n_layer 0", "pretrain lr inf", "eval samples -1", "inference top_p 0", "tokenizer vocab 10"])
def test_bad_flag_from_the_shell(run_dir, cmd, names):
    before = snapshot(run_dir)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, *cmd], cwd=run_dir, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert_one_error_line(p.stdout + p.stderr, names)
    assert snapshot(run_dir) == before


def test_block_size_longer_than_the_data_is_one_line(run_dir):
    """Below the stated cap (8192) the data caps --block_size: a window must fit in each split."""
    from mathlm.common import MathlmError
    from mathlm.data.mixture import Mixture
    from mathlm.tokenizer import MathTokenizer
    tok = MathTokenizer.load(str(run_dir / "math_tokenizer"))
    n = len(open(run_dir / "gsm8k.bin", "rb").read()) // 2  # uint16 ids
    with contextlib.redirect_stdout(io.StringIO()), \
            pytest.raises(MathlmError, match=f"block_size {n}: every source is too small .* lower --block_size"):
        Mixture({"gsm8k.bin": 1}, tok.hash, block_size=n, data_dir=str(run_dir))


# -----------------------------------------------------------------------------
# divergence: a non-finite loss stops the run before anything is written (D5)

def diverge(monkeypatch):
    """From now on every training forward (grad on, train mode) gives NaN logits and loss: a run
    that diverges at its next step. Evaluation forwards are left alone."""
    from mathlm.model.gpt import GPT
    real = GPT.forward

    def forward(self, idx, targets=None, **kw):
        logits, loss, aux = real(self, idx, targets, **kw)
        if self.training and torch.is_grad_enabled():
            logits = logits * float("nan")
            loss = None if loss is None else loss * float("nan")
        return logits, loss, aux
    monkeypatch.setattr(GPT, "forward", forward)


def coin_rewards(monkeypatch):
    """A smoke model never answers a GSM8K question: reward each completion by a deterministic coin
    (crc32 of its text) so GRPO's groups carry signal and it takes gradient steps."""
    import zlib

    from mathlm.train import grpo

    def score(texts, questions, group_size, cut=None):
        r = torch.tensor([float(zlib.crc32(t.encode()) % 2) for t in texts]).view(len(questions), group_size)
        return r, torch.zeros_like(r), torch.zeros_like(r)
    monkeypatch.setattr(grpo, "score", score)


@pytest.mark.parametrize("stage", ["pretrain", "sft", "grpo"])
def test_divergence_stops_before_writing(run_dir, tmp_path, monkeypatch, capsys, stage):
    """A finished run resumed with --resume, whose next step's loss is NaN: one error line naming the
    step and the checkpoint, and every file in --out's folder byte-identical (D5: `--lr inf` once saved
    an all-NaN checkpoint over the last good one, with exit 0)."""
    mod = importlib.import_module(f"mathlm.train.{stage}")
    here = ["--data_dir", str(run_dir), "--tokenizer", os.path.join(run_dir, "math_tokenizer")]
    if stage == "pretrain":  # the fixture's finished smoke run (step 30), copied
        for f in ("checkpoint.pt", "checkpoint.json"):
            shutil.copy(run_dir / f, tmp_path / f)
        args, more = PRE + here + ["--out", str(tmp_path / "checkpoint.pt")], ["--max_steps", "40"]
    else:
        coin_rewards(monkeypatch)
        args = {"sft": SFT, "grpo": GRPO}[stage] + here + [
            "--init_from", os.path.join(run_dir, "checkpoint.pt"), "--out", str(tmp_path / f"{stage}.pt"),
            "--eval_every", "1"]
        mod.main(args + ["--max_steps", "2"])
        more = ["--max_steps", "4"]
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    diverge(monkeypatch)
    with pytest.raises(SystemExit) as e:
        mod.main(args + more + ["--resume"])
    msg = str(e.value)
    first = {"pretrain": 31, "sft": 3, "grpo": 3}[stage]
    assert msg.startswith(f"error: step {first}: loss nan") and "diverged" in msg, msg
    assert_one_error_line(capsys.readouterr().err + msg, [os.path.basename(args[args.index("--out") + 1])])
    assert snapshot(tmp_path) == before  # the checkpoint and its .json byte-identical, no temp file left


def test_stop_if_diverged_and_check_finite_model():
    from mathlm.common import MathlmError
    from mathlm.model.gpt import GPT, GPTConfig
    from mathlm.train.common import check_finite_model, stop_if_diverged
    stop_if_diverged(5, 2.5, torch.tensor(0.7), "ck.pt")  # finite: goes on
    for loss, norm in [(float("nan"), 1.0), (2.0, torch.tensor(float("inf"))), (float("inf"), 1.0)]:
        with pytest.raises(MathlmError, match="step 5: loss .* diverged; ck.pt keeps its last good checkpoint"):
            stop_if_diverged(5, loss, norm, "ck.pt")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_embd=32, n_head=2, n_kv_head=1, ffn_hidden=64))
    check_finite_model(model, "ck.pt")
    with torch.no_grad():  # finite weights so large that the activations overflow to inf, then NaN
        model.transformer.h[0].attn.v_proj.weight.mul_(1e30)
        model.transformer.h[0].attn.o_proj.weight.mul_(1e30)
    with pytest.raises(MathlmError, match="logits"):
        check_finite_model(model, "ck.pt")
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(MathlmError, match="NaN or inf in the model's transformer.wte.weight"):
        check_finite_model(model, "ck.pt")
