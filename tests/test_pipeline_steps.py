"""The pipeline's bookkeeping without running a stage: a changed preset changes the fingerprint of
the stages it changes (and only those), data_bin tokenizes what data_text wrote instead of
generating it again, and pretraining reads the generators' prose corpus when there is one."""
import sys

from mathlm import pipeline
from mathlm.train import sft


def test_fingerprint_follows_the_resolved_preset(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    argv = [sys.executable, "-m", "mathlm.train.sft", "--preset", "tiny"]
    pre = [sys.executable, "-m", "mathlm.train.pretrain", "--preset", "tiny"]
    a, p = pipeline.fingerprint(argv, []), pipeline.fingerprint(pre, [])
    assert pipeline.fingerprint(argv, []) == a                    # stable
    monkeypatch.setitem(sft.PRESETS, "tiny", dict(sft.PRESETS["tiny"], lr=1.234e-3))
    assert pipeline.fingerprint(argv, []) != a                    # same command, other preset contents
    assert pipeline.fingerprint(pre, []) == p                     # another stage is untouched
    assert pipeline.resolved_config(argv)["lr"] == 1.234e-3


def test_data_bin_tokenizes_the_written_jsonl(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for n in ("calculus", "ml_math", "gsm8k"):
        (tmp_path / f"{n}.jsonl").write_text("{}\n")
    cfg = pipeline.Config(preset="tiny")
    (argv, ins, outs), = pipeline.stage_commands("data_bin", cfg, {"gsm8k": None})
    assert argv[2:] == ["mathlm.data.tokenize_qa", "gsm8k", "calculus", "ml_math"]
    assert outs == ["gsm8k.bin", "calculus.bin", "ml_math.bin"] and "calculus.jsonl" in ins
    for argv, _, _ in pipeline.stage_commands("data_text", cfg, {"gsm8k": None}):
        assert "--text_only" in argv


def test_pretraining_reads_the_corpus(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "calculus.jsonl").write_text("{}\n")
    assert pipeline.pretrain_text() == ["calculus.jsonl"]         # no corpus: the Q/A text
    (tmp_path / "calculus_corpus.txt").write_text("text\n")
    assert pipeline.pretrain_text() == ["calculus_corpus.txt"]
    (argv, ins, _), = pipeline.stage_commands("tokenizer", pipeline.Config(preset="tiny"), {})
    assert argv[-2:] == ["calculus_corpus.txt", "calculus.jsonl"]
    (tmp_path / "openwebmath.txt").write_text("web\n")
    assert pipeline.pretrain_text() == ["openwebmath.txt"]
