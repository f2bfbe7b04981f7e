"""SFT: answer-only loss masking, token-weighted steps, per-domain val losses, the forgetting
warning, the chat layout, and an end-to-end run with exact resume."""
import dataclasses
import json
import os
import random
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mathlm.format import encode_chat, encode_qa
from mathlm.model.gpt import GPT, GPTConfig
from mathlm.train import sft
from mathlm.train.common import save_checkpoint
from mathlm.train.sft import (build_batch, chat_ids, domain_val_losses, draw_examples, forgetting_warnings,
                              length_groups, masked_loss, qa_ids, val_table)

PAD = 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second thread only adds sync cost, and on a loaded machine
    (a parallel test run) spinning threads make a 1 s test take a minute."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_gpt(vocab=64, block_size=32, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=1, n_embd=32, n_head=2,
                         n_kv_head=1, ffn_hidden=64))


def random_examples(n, seed, vocab=64):
    """[(ids, answer_mask)]: a prompt of 3-8 tokens, then an answer of 1-6 tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = [rng.randrange(6, vocab) for _ in range(rng.randint(3, 8))]
        a = [rng.randrange(6, vocab) for _ in range(rng.randint(1, 6))]
        out.append(qa_ids(p, a))
    return out


# -----------------------------------------------------------------------------
# batches and the masked loss

def test_build_batch_labels_by_hand():
    plain = qa_ids([10, 11, 12], [20, 21, 1])                 # Q/A: prompt 3, answer 2 + eos
    chat = chat_ids([([10, 11], [22, 1])], user_id=4, assistant_id=5)
    assert chat == ([4, 10, 11, 5, 22, 1], [False, False, False, False, True, True])
    x, y = build_batch([plain, chat], PAD, block_size=16)
    assert x.tolist() == [[10, 11, 12, 20, 21], [4, 10, 11, 5, 22]]
    # label t predicts token t+1: learned only where that token is an answer token (eos included)
    assert y.tolist() == [[-100, -100, 20, 21, 1], [-100, -100, -100, 22, 1]]
    short = qa_ids([10, 11], [20, 1])
    x, y = build_batch([plain, short], PAD, block_size=16)
    assert x[1].tolist() == [10, 11, 20, PAD, PAD]            # right padding, never learned
    assert y[1].tolist() == [-100, 20, 1, -100, -100]


def test_build_batch_truncates_the_answer_tail_at_block_size():
    ex = qa_ids([10, 11, 12], list(range(20, 30)))
    x, y = build_batch([ex], PAD, block_size=6)
    assert x.tolist() == [[10, 11, 12, 20, 21, 22]]
    assert y.tolist() == [[-100, -100, 20, 21, 22, 23]]
    x, _ = build_batch([qa_ids([10], [20, 1])], PAD, block_size=64, multiple=8)
    assert x.shape == (1, 8)                                  # padded up to the multiple


def test_length_groups_give_the_whole_batchs_gradient_with_less_padding():
    """k forwards over length-sorted groups, each loss divided by the step's answer-token count, add up
    to the gradient of one padded batch; the groups hold every example once and pad less."""
    ex = random_examples(13, seed=4) + [qa_ids(list(range(6, 26)), list(range(6, 20)))]  # one long one
    n_answer = int((build_batch(ex, PAD, 32)[1] != -100).sum())
    grads = []
    for k in (1, 3, 4):
        groups = length_groups(ex, k)
        assert len(groups) == k and sorted(map(len, groups)) == sorted(len(ex) // k + (i < len(ex) % k) for i in range(k))
        assert sorted(e[0] for g in groups for e in g) == sorted(e[0] for e in ex)
        model = tiny_gpt()
        padded = 0
        for g in groups:
            x, y = build_batch(g, PAD, 32)
            padded += x.numel()
            masked_loss(model(x)[0], y, n_answer).backward()
        grads.append((torch.cat([p.grad.flatten() for p in model.parameters()]), padded))
    whole, padded1 = grads[0]
    for g, padded in grads[1:]:
        torch.testing.assert_close(g, whole, atol=1e-6, rtol=1e-4)
        assert padded < padded1
    assert length_groups(ex[:2], 4) == [sorted(ex[:2], key=lambda e: len(e[0]))[:1], sorted(ex[:2], key=lambda e: len(e[0]))[1:]]


def test_masked_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=g)
    labels = torch.tensor([[-100, 3, 0, -100], [6, -100, -100, 2]])
    logp = logits.log_softmax(-1)
    picked = [(0, 1, 3), (0, 2, 0), (1, 0, 6), (1, 3, 2)]
    want = -sum(logp[b, t, k] for b, t, k in picked) / len(picked)
    torch.testing.assert_close(masked_loss(logits, labels), want)
    # the same against the model's own loss on a real batch
    model = tiny_gpt()
    x, y = build_batch(random_examples(4, seed=1), PAD, 32)
    logits, ref, _ = model(x, y)
    torch.testing.assert_close(masked_loss(logits, y), ref)


def test_prompt_labels_change_neither_loss_nor_gradients():
    model = tiny_gpt()
    examples = random_examples(3, seed=2)
    x, y = build_batch(examples, PAD, 32)
    answer = y != -100
    full = torch.cat([x[:, 1:], torch.full((x.size(0), 1), PAD)], 1)  # every next token, unmasked
    full = torch.where(answer, y, full)

    def loss_and_grads(labels):
        model.zero_grad()
        logits, _, _ = model(x)
        loss = masked_loss(logits, torch.where(answer, labels, -100))
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss0, grads0 = loss_and_grads(full)
    rng = random.Random(0)
    for b, t in (~answer).nonzero().tolist():  # every prompt / role / pad position, one at a time
        changed = full.clone()
        changed[b, t] = (int(changed[b, t]) + rng.randrange(1, 63)) % 64
        loss1, grads1 = loss_and_grads(changed)
        assert torch.equal(loss0, loss1)
        assert all(torch.equal(g0, g1) for g0, g1 in zip(grads0, grads1))
    # and directly: no gradient at all reaches the logits of a masked position
    logits = model(x)[0].detach().requires_grad_()
    masked_loss(logits, y).backward()
    assert logits.grad[~answer].abs().max() == 0 and logits.grad[answer].abs().max() > 0


def test_all_masked_micro_batch_gives_zero_not_nan():
    model = tiny_gpt()
    x = torch.randint(6, 64, (2, 9))
    y = torch.full((2, 9), -100)
    logits, _, _ = model(x)
    loss = masked_loss(logits, y)
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().max() == 0 for p in model.parameters())


def test_step_loss_is_the_mean_over_the_steps_answer_tokens():
    """Micro-batches of 1 and 9 answer tokens plus an all-masked one: the step's loss is the plain
    mean over its 10 answer tokens, and the all-masked one changes no gradient."""
    model = tiny_gpt()
    x1, y1 = build_batch([qa_ids([10, 11, 12], [13])], PAD, 32)
    x2, y2 = build_batch([qa_ids([10, 11], [20, 21, 22, 23, 1]), qa_ids([30], [31, 32, 33, 1])], PAD, 32)
    x3, y3 = torch.randint(6, 64, (2, 5)), torch.full((2, 5), -100)
    n = int((y1 != -100).sum() + (y2 != -100).sum())
    assert n == 10

    def grads(batches):
        model.zero_grad()
        total = 0.0
        for x, y in batches:
            loss = masked_loss(model(x)[0], y, n)
            loss.backward()
            total += loss.item()
        return total, [p.grad.clone() for p in model.parameters()]

    total, g = grads([(x1, y1), (x3, y3), (x2, y2)])
    total_no_empty, g_no_empty = grads([(x1, y1), (x2, y2)])
    token_losses = torch.cat([F.cross_entropy(model(x)[0][y != -100], y[y != -100], reduction="none")
                              for x, y in [(x1, y1), (x2, y2)]])
    assert len(token_losses) == 10
    assert total == pytest.approx(token_losses.mean().item(), rel=1e-6)
    assert total == pytest.approx(total_no_empty, rel=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(g, g_no_empty))


# -----------------------------------------------------------------------------
# per-domain validation and the forgetting warning

def test_domain_val_losses_match_hand_computation():
    model = tiny_gpt()
    val_sets = {"calculus": random_examples(5, seed=3), "gsm8k": random_examples(3, seed=4)}
    got = domain_val_losses(model, val_sets, PAD, 32, batch_size=2)
    for name, examples in val_sets.items():
        total, count = 0.0, 0
        for ids, mask in examples:  # one unpadded sequence at a time
            logp = model(torch.tensor([ids[:-1]]))[0][0].double().log_softmax(-1)
            for t in range(len(ids) - 1):
                if mask[t + 1]:
                    total -= logp[t, ids[t + 1]].item()
                    count += 1
        assert got[name] == pytest.approx(total / count, rel=1e-5)
    assert model.training  # left as it was found


def test_forgetting_warning_fires_on_a_planted_rise_only():
    start = {"gsm8k": 1.23, "calculus": 2.0, "math": 1.5}
    assert forgetting_warnings(start, {"gsm8k": 1.64, "calculus": 2.1, "math": 1.2}, 0.3) == [
        "WARNING catastrophic forgetting: gsm8k val loss rose 0.41 (1.23 → 1.64)"]
    assert forgetting_warnings(start, dict(start), 0.3) == []
    assert forgetting_warnings(start, {"gsm8k": 1.5, "calculus": 1.0, "math": 1.79}, 0.3) == []
    assert forgetting_warnings(start, {"gsm8k": 1.5}, 0.25) == [
        "WARNING catastrophic forgetting: gsm8k val loss rose 0.27 (1.23 → 1.50)"]


def test_val_table_rows():
    table = val_table({"gsm8k": 1.0, "math": 2.0}, {"gsm8k": 0.75, "math": 2.5}, "title")
    lines = table.splitlines()
    assert lines[0] == "title"
    assert lines[1].split() == ["domain", "|", "start", "|", "now", "|", "Δ"]
    assert lines[2].split() == ["gsm8k", "|", "1.0000", "|", "0.7500", "|", "-0.2500"]
    assert lines[3].split() == ["math", "|", "2.0000", "|", "2.5000", "|", "+0.5000"]
    assert lines[4].split() == ["mean", "|", "1.5000", "|", "1.6250", "|", "+0.1250"]


# -----------------------------------------------------------------------------
# end to end: tokenizer, two Q/A datasets, a "pretrained" checkpoint, then sft.main

def arithmetic_pairs(op, n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        c = a + b if op == "+" else a * b
        out.append({"question": f"What is {a} {op} {b}?", "answer": f"{a} {op} {b} = {c}. #### {c}"})
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from mathlm.data.qa_io import write_qa_bin
    from mathlm.format import qa_text
    from mathlm.tokenizer import MathTokenizer
    d = tmp_path_factory.mktemp("sft")
    data = {"add": arithmetic_pairs("+", 300, 0), "mul": arithmetic_pairs("*", 300, 1)}
    texts = [qa_text(p["question"], p["answer"]) for pairs in data.values() for p in pairs]
    tok = MathTokenizer.train(texts, vocab_size=200, min_frequency=1, show_progress=False)
    tok.save(str(d / "math_tokenizer"))
    for name, pairs in data.items():
        write_qa_bin(name, pairs, tok, str(d))
    mc = GPTConfig(vocab_size=(tok.vocab_size + 63) // 64 * 64, block_size=64, n_layer=2, n_embd=64,
                   n_head=4, n_kv_head=2, ffn_hidden=128)
    torch.manual_seed(0)
    model = GPT(mc)
    save_checkpoint(str(d / "checkpoint.pt"), {
        "model": model.state_dict(), "model_config": dataclasses.asdict(mc), "config": {}, "step": 0,
        "tokenizer_hash": tok.hash, "stage": "pretrain", "history": []})
    return d, tok, data


def test_chat_rendering_is_format_encode_chat(workdir):
    _, tok, data = workdir
    (q1, a1), (q2, a2) = [(p["question"], p["answer"]) for p in data["add"][:2]]
    spans = [encode_qa(tok, q1, a1), encode_qa(tok, q2, a2)]
    assert chat_ids(spans, tok.user_id, tok.assistant_id) == tuple(encode_chat(tok, [(q1, a1), (q2, a2)]))
    ids, mask = qa_ids(*spans[0])
    assert tok.decode(ids) == f"Q: {q1}\nA: {a1}\n\n<|eos|>"
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == f" {a1}\n\n<|eos|>"


def test_draw_examples_forms_and_determinism(workdir):
    d, tok, _ = workdir
    domains, probs = sft.load_domains({"add": 1.0, "mul": 1.0}, str(d), tok.hash, 64, 16, verbose=False)
    assert {n: (len(x.train), len(x.val)) for n, x in domains.items()} == {"add": (284, 16), "mul": (284, 16)}

    # a short block: prompts leaving no room for an answer token (with both role tokens) are dropped
    index = np.load(d / "add.idx.npy")
    short, _ = sft.load_domains({"add": 1.0}, str(d), tok.hash, 24, 16, verbose=False)
    assert short["add"].dropped == int((index[:, 1] + 2 >= 24).sum()) > 0
    assert len(short["add"].train) + len(short["add"].val) + short["add"].dropped == 300
    assert (short["add"].val == index[284:][index[284:, 1] + 2 < 24]).all()  # held out from the end

    def draw(chat_frac, seed=0):
        g = torch.Generator().manual_seed(seed)
        return draw_examples(domains, probs, 64, g, chat_frac, tok.user_id, tok.assistant_id, 128)

    assert draw(0.3) == draw(0.3)
    assert all(ids[0] != tok.user_id for ids, _ in draw(0.0))
    chats = draw(1.0)
    assert all(ids[0] == tok.user_id for ids, _ in chats)
    turns = [ids.count(tok.user_id) for ids, _ in chats]
    assert set(turns) == {1, 2}
    for ids, mask in chats:  # role tokens and questions never learned; every answer ends in a learned eos
        assert not any(m for i, m in zip(ids, mask) if i in (tok.user_id, tok.assistant_id))
        assert sum(1 for i, m in zip(ids, mask) if m and i == tok.eos_id) == ids.count(tok.user_id)


def run_sft(d, out, *extra):
    return sft.main(["--preset", "smoke", "--data_dir", str(d), "--init_from", str(d / "checkpoint.pt"),
                     "--out", str(d / out), "--mixture", "add:1,mul:1,numina:0.5", "--no-progress",
                     "--device", "cpu", *extra])


def test_sft_end_to_end(workdir, capsys):
    d, _, _ = workdir
    history = run_sft(d, "checkpoint_mathlm.pt")
    printed = capsys.readouterr().out
    assert "skipping missing numina.bin" in printed
    assert "domain" in printed and "Δ" in printed
    ckpt = torch.load(d / "checkpoint_mathlm.pt", weights_only=True)
    assert ckpt["stage"] == "sft" and ckpt["step"] == 30
    evals = [h for h in ckpt["history"] if "val" in h]
    assert [h["step"] for h in evals] == [0, 15, 30]
    assert evals[0]["val"] == ckpt["val_start"]
    for name in ("add", "mul"):
        assert evals[-1]["val"][name] < evals[0]["val"][name] - 0.5, evals
    assert any("loss" in h for h in ckpt["history"]) and history == ckpt["history"]
    assert os.path.exists(d / "checkpoint_mathlm.json")
    # tokens: the non-padding inputs of every example drawn, replayed from the seeded sampler
    _, tok, _ = workdir
    domains, probs = sft.load_domains({"add": 1.0, "mul": 1.0}, str(d), tok.hash, 64, 16, verbose=False)
    g = torch.Generator().manual_seed(1337)
    want = sum(min(len(ids) - 1, 64) for _ in range(30)
               for ids, _ in draw_examples(domains, probs, 8, g, 0.25, tok.user_id, tok.assistant_id, 64))
    summary = json.load(open(d / "checkpoint_mathlm.json"))
    assert summary["tokens"] == ckpt["tokens"] == want and summary["train_seconds"] > 0
    assert summary["tokens_per_s"] == pytest.approx(want / summary["train_seconds"])
    assert f"sft: 30 steps, {want:,} tokens in " in printed


def test_sft_resume_is_exact(workdir, monkeypatch):
    d, _, _ = workdir
    saved = sft.save_checkpoint

    def save_and_keep_step_6(path, ckpt):
        saved(path, ckpt)
        if ckpt["step"] == 6:
            shutil.copy(path, str(d / "at_step_6.pt"))

    monkeypatch.setattr(sft, "save_checkpoint", save_and_keep_step_6)
    run_sft(d, "straight.pt", "--max_steps", "12", "--eval_every", "6")
    monkeypatch.setattr(sft, "save_checkpoint", saved)
    shutil.copy(str(d / "at_step_6.pt"), str(d / "resumed.pt"))
    run_sft(d, "resumed.pt", "--max_steps", "12", "--eval_every", "6", "--resume")
    a = torch.load(d / "straight.pt", weights_only=True)
    b = torch.load(d / "resumed.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    assert a["tokens"] == b["tokens"] > 0  # the resumed run counts on from the checkpoint


def test_missing_everything_dies_naming_what_was_looked_for(workdir):
    d, _, _ = workdir
    with pytest.raises(SystemExit) as e:
        run_sft(d, "never.pt", "--mixture", "gsm8k:1,math:1")
    assert "gsm8k.bin" in str(e.value) and "math.bin" in str(e.value)
