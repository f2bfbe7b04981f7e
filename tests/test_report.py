"""The report card on a hand-made working directory: every number in report.json against the counts
the fixture was built from, and every section saying "not run" when its inputs are missing."""
import json

import pytest

from mathlm import report
from mathlm.eval.stats import mcnemar_exact, wilson_interval


def acc(recs, key="correct"):
    k = sum(r[key] for r in recs)
    return {"n": len(recs), "correct": k, "accuracy": k / len(recs), "ci95": list(wilson_interval(k, len(recs)))}


def summary(recs):
    """What mathlm.eval.math writes per domain, from its per-problem rows."""
    s = acc(recs)
    flex = acc(recs, "correct_flexible")
    s.update(flexible=flex["accuracy"], flexible_ci95=flex["ci95"], majority_baseline=0.1, majority_answer="0",
             majority_from="calculus.jsonl")
    topics = sorted({r["topic"] for r in recs if "topic" in r})
    if topics:
        s["topics"] = {t: acc([r for r in recs if r.get("topic") == t]) for t in topics}
    return s


# 40 calculus problems: 0-19 power_rule, 20-39 chain_rule, levels alternating 1, 2.
# base right when i % 4 == 0 (10); SFT right unless i % 4 == 3 (30): SFT-only 20, base-only 0.
# GRPO keeps SFT on power_rule; on chain_rule it is right only when i % 4 == 0: SFT-only 10, GRPO-only 0.
def right(tag, i):
    if tag == "base":
        return i % 4 == 0
    if tag == "sft" or i < 20:
        return i % 4 != 3
    return i % 4 == 0


def write_evals(d, tags=("base", "sft", "grpo"), jsonl=True):
    for tag in tags:
        recs = []
        for i in range(40):
            ok = right(tag, i)
            recs.append({"domain": "calculus", "index": i, "question": f"Differentiate x^{i}.\nShow the steps.",
                         "completion": f"line one of {tag} {i}\nline two\nline three\nline four\nline five\n#### {i}",
                         "extracted": str(i) if ok else "7", "gold": str(i), "kind": "expr", "correct": ok,
                         "correct_flexible": ok or i % 4 == 3, "topic": "power_rule" if i < 20 else "chain_rule",
                         "level": 1 + i % 2})
        for i in range(6):  # a domain without topics or levels
            ok = (i < 2) if tag == "base" else (i < 4)
            recs.append({"domain": "gsm8k", "index": i, "question": f"Sam has {i} apples.",
                         "completion": f"{i} apples <|calc|>{i}*1<|result|>{i}<|/result|>{i}\n#### {i}",
                         "extracted": str(i), "gold": str(i), "kind": "number", "correct": ok, "correct_flexible": ok})
        doms = {dom: summary([r for r in recs if r["domain"] == dom]) for dom in ("calculus", "gsm8k")}
        (d / f"eval_{tag}.json").write_text(json.dumps({"task": "math", "domains": doms}))
        if jsonl:
            (d / f"eval_{tag}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


MODEL = {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_kv_head": 2, "ffn_hidden": 172, "block_size": 128,
         "vocab_size": 1024}


def write_checkpoints(d):
    pre = {"step": 30, "n_params": 123456, "stage": "pretrain", "model_config": MODEL,
           "config": {"lr": 3e-3, "batch_size": 8, "block_size": 128, "grad_accum": 1, "max_steps": 30},
           "history": [{"step": 10, "loss": 5.0, "tok_s": 1000.0}, {"step": 20, "loss": 4.0, "tok_s": 3000.0},
                       {"step": 30, "val_loss": 3.5}]}
    sft = {"step": 12, "stage": "sft", "model_config": MODEL, "config": {"lr": 1e-4, "epochs": 2},
           "tokens": 50_000, "train_seconds": 25.0, "tokens_per_s": 2000.0,
           "history": [{"step": 0, "val_loss": 2.5, "val": {"calculus": 3.0, "gsm8k": 2.0}},
                       {"step": 6, "loss": 2.0, "tok_s": 1.0},
                       {"step": 12, "val_loss": 1.5, "val": {"calculus": 0.5, "gsm8k": 2.5}}]}
    grpo = {"step": 3, "stage": "grpo", "model_config": MODEL, "config": {"lr": 1e-5, "group_size": 4},
            "history": [{"step": 0, "heldout_acc": 0.3},
                        {"step": 1, "reward": 0.2, "pass@1": 0.2, "pass@G": 0.5, "zero_signal": 0.75, "tok_s": 900.0},
                        {"step": 2, "reward": 0.4, "pass@1": 0.4, "pass@G": 0.75, "zero_signal": 0.5, "tok_s": 1100.0},
                        {"step": 3, "trained_n": 8, "trained_acc_sft": 0.25, "trained_acc": 0.875},
                        {"step": 3, "heldout_acc": 0.45}]}
    for name, ck in (("checkpoint", pre), ("checkpoint_mathlm", sft), ("checkpoint_mathlm_grpo", grpo)):
        (d / f"{name}.json").write_text(json.dumps(ck))
        (d / f"{name}.pt").write_bytes(b"x")  # the "Try it" section names the checkpoints present
    (d / "calculus.meta.json").write_text(json.dumps({"n_tokens": 12345, "n_examples": 40,
                                                      "sources": ["calculus.jsonl"], "decontam": {"gsm8k_test": 2}}))
    (d / "pipeline.json").write_text(json.dumps({
        "preset": "tiny", "datasets": {"gsm8k": "hub"},
        "skipped": {"math": "no --data_source folder and the hub is unreachable"},
        "stages": {"pretrain": {"status": "done", "seconds": 61.25}, "sft": {"status": "done", "seconds": 30.0},
                   "grpo": {"status": "done", "seconds": 12.0}, "eval/eval_base": {"status": "done", "seconds": 5.0},
                   # the pipeline writes this before it starts the report: it is the report itself
                   "report": {"status": "running", "seconds": 0.0}}}))


def sections(md):
    """{section title: its body} of report.md."""
    parts = md.split("\n## ")[1:]
    return {p.split("\n", 1)[0]: p.split("\n", 1)[1] for p in parts}


@pytest.fixture
def full_report(tmp_path, monkeypatch):
    write_evals(tmp_path)
    write_checkpoints(tmp_path)
    monkeypatch.chdir(tmp_path)
    rep = report.main([])
    return tmp_path, json.loads((tmp_path / "report.json").read_text()), (tmp_path / "report.md").read_text(), rep


def test_every_section_heading(full_report):
    _, _, md, _ = full_report
    assert list(sections(md)) == report.SECTIONS
    assert "not run" not in md


def test_accuracy_majority_and_flexible(full_report):
    d, rep, md, _ = full_report
    for tag, f in (("base", "eval_base.json"), ("SFT", "eval_sft.json"), ("GRPO", "eval_grpo.json")):
        assert rep["accuracy"]["calculus"][tag] == json.loads((d / f).read_text())["domains"]["calculus"]
    assert rep["accuracy"]["calculus"]["base"]["accuracy"] == 0.25
    assert rep["accuracy"]["calculus"]["SFT"]["accuracy"] == 0.75
    assert rep["majority"]["calculus"]["majority_baseline"] == 0.1
    sf = rep["strict_vs_flexible"]["calculus"]["SFT"]
    assert (sf["strict"], sf["flexible"]) == (0.75, 1.0) and sf["gap"] == pytest.approx(0.25)
    assert "25.0% [" in md and "flex 100.0%" in md and "10.0% (`0`)" in md


def topic_row(rep, domain, label):
    (row,) = [r for r in rep["topics"][domain] if r["label"] == label]
    return row


def test_topic_table_mcnemar_on_paired_rows(full_report):
    _, rep, md, _ = full_report
    overall = topic_row(rep, "calculus", "overall")
    assert overall["base"]["accuracy"] == 0.25 and overall["SFT"]["accuracy"] == 0.75
    assert overall["base"]["ci95"] == list(wilson_interval(10, 40))
    assert overall["sft_vs_base"] == {"n": 40, "base_only": 0, "sft_only": 20, "p": mcnemar_exact(0, 20)}
    chain = topic_row(rep, "calculus", "chain_rule")
    assert chain["SFT"]["correct"] == 15 and chain["GRPO"]["correct"] == 5
    assert chain["grpo_vs_sft"] == {"n": 20, "sft_only": 10, "grpo_only": 0, "p": mcnemar_exact(10, 0),
                                    "grpo_worse": True}
    power = topic_row(rep, "calculus", "power_rule")
    assert power["grpo_vs_sft"]["p"] == 1.0 and not power["grpo_vs_sft"]["grpo_worse"]
    lv = topic_row(rep, "calculus", "power_rule L1")  # levels vary, so (topic, level) rows too
    assert lv["level"] == 1 and lv["base"]["n"] == 10
    # 0, 4, 8, 12, 16 are level 1 and right for base; SFT right on the level-1 ones unless i % 4 == 3: all 10
    assert (lv["base"]["correct"], lv["SFT"]["correct"]) == (5, 10)
    assert lv["sft_vs_base"]["p"] == mcnemar_exact(0, 5)
    assert [r["label"] for r in rep["topics"]["gsm8k"]] == ["overall"]  # no topics: only the overall row
    (chain_line,) = [line for line in md.splitlines() if line.startswith("| chain_rule |")]
    assert "▼ worse" in chain_line
    assert not any("▼ worse" in line for line in md.splitlines() if line.startswith("| power_rule |"))


def test_level_rows_only_where_a_topic_has_several_levels():
    meta = {("calculus", 0): {"topic": "a", "level": 1}, ("calculus", 1): {"topic": "a", "level": 2},
            ("calculus", 2): {"topic": "b", "level": 3}, ("calculus", 3): {"topic": "a", "level": 10}}
    groups = report.topic_groups(sorted(meta), meta)
    assert [(g[0], g[3]) for g in groups] == [
        ("overall", sorted(meta)), ("a", [("calculus", 0), ("calculus", 1), ("calculus", 3)]),
        ("a L1", [("calculus", 0)]), ("a L2", [("calculus", 1)]), ("a L10", [("calculus", 3)]),
        ("b", [("calculus", 2)])]


def test_samples_same_problems_for_every_checkpoint(full_report, tmp_path):
    d, rep, md, _ = full_report
    picks = rep["samples"]["calculus"]
    assert len(picks) == 3 and len(rep["samples"]["gsm8k"]) == 3
    for s in picks:
        assert set(s["answers"]) == {"base", "SFT", "GRPO"}
        for tag, a in s["answers"].items():
            assert a["correct"] == right(tag.lower(), s["index"])
            assert a["mark"] == ("✓" if a["correct"] else "✗")
            assert a["completion"].splitlines() == [f"line one of {tag.lower()} {s['index']}", "line two", "…",
                                                    f"#### {s['index']}"]  # head and the answer line
        assert s["gold"] == str(s["index"])
    assert {s["answers"]["GRPO"]["correct"] for s in picks} == {True, False}  # a mix of right and wrong
    assert "✓" in md and "✗" in md and f"#{picks[0]['index']} · " in md
    for s in rep["samples"]["gsm8k"]:  # a calculator call reads as the CLI shows it, not as raw tool tokens
        i = s["index"]
        assert s["answers"]["SFT"]["completion"] == f"{i} apples [calc {i}*1 = {i}]{i}\n#### {i}"
    assert "[calc " in md and "<|calc|>" not in md and "<|result|>" not in md
    again = report.main(["--out", "again"])  # seeded: the same picks
    assert [s["index"] for s in again["samples"]["calculus"]] == [s["index"] for s in picks]


def test_hyperparameters_throughput_and_stages(full_report):
    _, rep, md, _ = full_report
    hp = rep["hyperparameters"]
    assert hp["pretrain"]["config"]["lr"] == 3e-3 and hp["grpo"]["config"]["group_size"] == 4
    assert hp["sft"]["model_config"] == MODEL
    assert "lr=0.003" in md and "group_size=4" in md and "n_layer=2" in md
    thr = rep["throughput"]
    assert thr["sft"] == {"steps": 12, "tokens": 50_000, "train_seconds": 25.0, "tokens_per_s": 2000.0,
                          "wall_seconds": 30.0, "source": "checkpoint"}
    assert thr["pretrain"]["tokens"] == 30 * 8 * 128  # steps × batch × block × accum
    assert thr["pretrain"]["tokens_per_s"] == 2000.0  # mean of the logged tok/s
    assert "history" in thr["pretrain"]["source"] and thr["pretrain"]["wall_seconds"] == 61.25
    assert thr["grpo"]["tokens_per_s"] == 1000.0
    assert rep["stages"]["pretrain"] == {"seconds": 61.2, "status": "done"}
    assert "| sft | 12 | 50,000 | 25.0s | 2,000 | 30.0s | checkpoint |" in md
    assert "| pretrain | 30 | 30,720 | – | 2,000 | 61.2s | history (mean logged tok/s) |" in md


def test_stages_leave_out_the_report_itself_and_say_interrupted(full_report, monkeypatch):
    d, rep, md, _ = full_report
    assert "report" not in rep["stages"] and "| report |" not in md and "running" not in md
    assert "| **total** | **1.8 min** | |" in md  # 61.25 + 30 + 12 + 5 s
    state = json.loads((d / "pipeline.json").read_text())
    state["stages"]["grpo"]["status"] = "running"  # a pipeline killed during GRPO, the report run by hand
    del state["stages"]["report"]
    (d / "pipeline.json").write_text(json.dumps(state))
    assert report.main(["--out", "again"])["stages"]["grpo"] == {"seconds": 12.0, "status": "interrupted"}


def test_sft_val_loss_per_domain(full_report):
    _, rep, md, _ = full_report
    assert rep["sft"]["val_loss_by_domain"] == {"calculus": {"start": 3.0, "end": 0.5},
                                                "gsm8k": {"start": 2.0, "end": 2.5}}
    assert "Per domain: calculus 3.000 → 0.500, gsm8k 2.000 → 2.500 (a rise is forgetting)." in sections(md)["SFT"]
    assert report.domain_curves([{"step": 0, "val": {"a": 1.0}}, {"step": 5, "loss": 2.0},
                                 {"step": 9, "val": {"a": 0.5, "b": float("nan")}}]) == {"a": ([0, 9], [1.0, 0.5])}


def test_loss_plots_use_a_log_axis_with_plain_labels(tmp_path, monkeypatch):
    """Pretraining starts near ln(vocab) ≈ 9 nats: on a linear axis everything below 1 was a flat line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)  # keep the figure to look at
    report.plot(str(tmp_path / "a.png"), {"val": ([0, 10, 20], [9.8, 2.0, 0.6])}, "t", "loss", logy=True)
    report.plot(str(tmp_path / "b.png"), {"reward": ([0, 1], [0.0, 0.5])}, "t", "reward", logy=True)
    (ax,), (ax_b,) = figs[0].axes, figs[1].axes
    labels = [t.get_text() for minor in (False, True) for t in ax.get_yticklabels(minor=minor) if t.get_text()]
    assert ax.get_yscale() == "log" and "1" in labels and not any("e" in s or "times" in s for s in labels), labels
    assert ax_b.get_yscale() == "linear"  # a zero cannot go on a log axis


def test_vocab_padding_is_explained():
    pre = {"n_params": 1, "model_config": dict(MODEL, vocab_size=1408)}
    line = report.model_section(pre, 1358)[1][0]
    assert "vocab 1,408 (the tokenizer's 1,358 tokens padded to a multiple of 64 for aligned matmuls)" in line
    assert "padded" not in report.model_section(pre, 1408)[1][0]
    assert "padded" not in report.model_section(pre, 300)[1][0]  # not this model's tokenizer: no claim
    assert "padded" not in report.model_section(pre)[1][0]


def test_try_it_names_the_checkpoints_and_commands(full_report):
    d, rep, md, _ = full_report
    t = rep["try_it"]
    assert t["default"] == "checkpoint_mathlm_grpo.pt"  # inference's rule: the last pipeline stage
    assert t["checkpoints"] == {"grpo": "checkpoint_mathlm_grpo.pt", "sft": "checkpoint_mathlm.pt",
                                "base": "checkpoint.pt"}
    body = sections(md)["Try it"]
    assert "`python -m mathlm.infer.inference --chat`" in body and "`python -m mathlm.infer.demo`" in body
    assert "scripts/upload_hf.py --out_dir mathlm-hf" in body and "use `checkpoint_mathlm_grpo.pt` (grpo" in body


def test_grpo_curves_and_skipped(full_report):
    d, rep, md, _ = full_report
    g = rep["grpo"]
    assert (g["reward_first"], g["reward_last"]) == (0.2, 0.4)
    assert (g["pass_at_1_last"], g["pass_at_g_last"], g["zero_signal_first"]) == (0.4, 0.75, 0.75)
    assert g["zero_signal_mean"] == 0.625 and (g["heldout_acc_first"], g["heldout_acc_last"]) == (0.3, 0.45)
    for png in ("report_grpo_reward.png", "report_grpo_signal.png", "report_pretrain_loss.png", "report_sft_loss.png"):
        assert (d / png).exists() and f"]({png})" in md
    assert "| pass@4 | 50.0% | 75.0% |" in md
    # what GRPO fitted (its own signal questions) beside what carried over (held-out 30% → 45%)
    assert g["trained"] == {"n": 8, "sft": 0.25, "grpo": 0.875}
    assert "On 8 of the questions it trained on (right and wrong samples both seen), greedy: SFT 25.0% → GRPO 87.5%." in md
    assert rep["skipped"] == {"math": "no --data_source folder and the hub is unreachable"}
    assert "| math | no --data_source folder and the hub is unreachable |" in md
    assert rep["preset"] == "tiny"
    assert rep["data"][0]["decontam_dropped"] == 2 and "| calculus.bin | 12,345 | 40 | 2 | calculus.jsonl |" in md


def test_empty_directory_says_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rep = report.main([])
    body = sections((tmp_path / "report.md").read_text())
    assert list(body) == report.SECTIONS
    for title, text in body.items():
        if title != "Hardware":
            assert "not run" in text, title
    assert rep["accuracy"] == {} and rep["topics"] == {} and rep["samples"] == {} and rep["grpo"] is None
    assert json.loads((tmp_path / "report.json").read_text())["hyperparameters"] == \
        {"pretrain": None, "sft": None, "grpo": None}


def test_summaries_without_rows_and_other_key_spellings(tmp_path, monkeypatch):
    """Only the .json summaries: the topic cells come from them, unpaired; a GRPO history with pass@4 spelled
    with its number and no zero-signal key draws what it has."""
    write_evals(tmp_path, tags=("base", "sft"), jsonl=False)
    (tmp_path / "checkpoint_mathlm_grpo.json").write_text(json.dumps(
        {"step": 2, "config": {"group_size": 4}, "history": [{"step": 1, "reward": 0.1, "pass@4": 0.5}]}))
    (tmp_path / "pipeline.json").write_text(json.dumps({"preset": "tiny", "stages": {}}))
    monkeypatch.chdir(tmp_path)
    rep = report.main([])
    chain = topic_row(rep, "calculus", "chain_rule")
    assert chain["SFT"]["accuracy"] == 0.75 and chain["GRPO"] is None and chain["sft_vs_base"] is None
    assert rep["grpo"]["pass_at_g_last"] == 0.5 and rep["grpo"]["zero_signal_last"] is None
    assert (tmp_path / "report_grpo_reward.png").exists() and not (tmp_path / "report_grpo_signal.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert "| zero-signal groups | not logged | | |" in md
    assert "not recorded" in sections(md)["Datasets skipped"]
    assert "not run (no eval_*.jsonl)" in sections(md)["Samples"]
