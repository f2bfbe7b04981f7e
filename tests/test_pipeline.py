"""The smoke pipeline end to end, offline, on real GSM8K (the committed sample): killed with
SIGKILL in the middle of pretraining, rerun, it skips the finished stages, resumes pretraining,
and finishes with a report whose numbers are the stage outputs' numbers."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import GSM8K_SAMPLE, REPO

pytestmark = pytest.mark.slow


def start(cwd):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mathlm.pipeline", "--preset", "smoke", "--no-hub",
                             "--data_source", GSM8K_SAMPLE], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    p = start(d)
    deadline, killed_at = time.time() + 600, None
    while time.time() < deadline and p.poll() is None:
        state = read(d / "pipeline.json") or {}
        ck = read(d / "checkpoint.json") or {}
        if state.get("stages", {}).get("pretrain", {}).get("status") == "running" and 0 < ck.get("step", 0) < 30:
            os.killpg(p.pid, signal.SIGKILL)  # the pipeline and the trainer it runs
            killed_at = ck["step"]
            break
        time.sleep(0.01)
    first = p.communicate(timeout=60)[0]
    assert killed_at is not None, "pretraining was never caught mid-run:\n" + first[-3000:]
    p = start(d)
    second = p.communicate(timeout=900)[0]
    assert p.returncode == 0, second[-4000:]
    return d, killed_at, second


def test_rerun_skips_finished_stages_and_resumes_pretraining(smoke_run):
    d, killed_at, log = smoke_run
    for stage in ("data_text/gsm8k", "data_text/calculus", "tokenizer", "data_bin", "pretrain_data"):
        assert f"[pipeline] skip {stage}: up to date" in log
    assert "[pipeline] run  pretrain" in log
    assert f"resumed from checkpoint.pt at step {killed_at}" in log


def test_every_stage_output_exists(smoke_run):
    d = smoke_run[0]
    for f in ["math_tokenizer/tokenizer.json", "gsm8k.jsonl", "gsm8k_test.jsonl", "gsm8k.bin", "calculus.bin",
              "calculus_test.jsonl", "ml_math.bin", "ml_math_test.jsonl", "word_problems.bin",
              "word_problems_test.jsonl", "train.bin", "val.bin", "checkpoint.pt",
              "checkpoint_mathlm.pt", "checkpoint_mathlm_grpo.pt", "eval_base.json", "eval_sft.json",
              "eval_grpo.json", "eval_gsm8k.json", "report.md", "report.json", "report_pretrain_loss.png",
              "report_sft_loss.png", "report_grpo_reward.png"]:
        assert (d / f).exists(), f
    state = read(d / "pipeline.json")
    assert all(s["status"] == "done" for s in state["stages"].values())


def test_report_has_every_section_and_matches_stage_outputs(smoke_run):
    from mathlm.report import SECTIONS
    d = smoke_run[0]
    md = (d / "report.md").read_text()
    for s in SECTIONS:
        assert f"## {s}" in md
    for png in ("report_pretrain_loss.png", "report_sft_loss.png", "report_grpo_reward.png"):
        assert f"]({png})" in md
    rep = read(d / "report.json")
    pre = read(d / "checkpoint.json")
    assert rep["model"]["n_params"] == pre["n_params"]
    assert rep["pretrain"]["val_loss_end"] == [h["val_loss"] for h in pre["history"] if "val_loss" in h][-1]
    assert rep["pretrain"]["steps"] == pre["step"] == 30
    for tag, f in (("base", "eval_base.json"), ("SFT", "eval_sft.json"), ("GRPO", "eval_grpo.json")):
        ev = read(d / f)
        for dom, s in ev["domains"].items():
            assert rep["accuracy"][dom][tag] == s
            assert f"{100 * s['accuracy']:.1f}%" in md
    assert set(rep["accuracy"]) == {"gsm8k", "calculus", "ml_math", "word_problems"}
    metas = {r["name"]: r["tokens"] for r in rep["data"]}
    for name in ("gsm8k", "calculus", "ml_math", "word_problems", "train", "val"):
        assert metas[name] == read(d / f"{name}.meta.json")["n_tokens"]
    state = read(d / "pipeline.json")
    assert {k: round(v["seconds"], 1) for k, v in state["stages"].items() if k != "report"} == \
        {k: v["seconds"] for k, v in rep["stages"].items() if k != "report"}
    grpo = read(d / "checkpoint_mathlm_grpo.json")
    assert rep["grpo"]["reward_last"] == [h["reward"] for h in grpo["history"] if "reward" in h][-1]
    fit = [h for h in grpo["history"] if "trained_acc" in h]  # the smoke run's groups had signal, or none
    assert rep["grpo"].get("trained") == (fit and {"n": fit[-1]["trained_n"], "sft": fit[-1]["trained_acc_sft"],
                                                   "grpo": fit[-1]["trained_acc"]} or None)
