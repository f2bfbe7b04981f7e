"""mathlm.infer.inference: loading, prompt handling, incremental decoding, the streaming CLI, bad input."""
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from mathlm.format import cut_completion, encode_chat, qa_prompt
from mathlm.infer.inference import (as_prompt, chat_ids, chat_response, generate_text, load_model, main,
                                    default_checkpoint, stream_ids, stream_text)

ROOT = os.path.join(os.path.dirname(__file__), "..")
TEXT = ("Q: What is 2+3?\nA: 5\n\n The derivative of x^2 is 2x. ∫ x dx = x^2/2. Natalia sold 48 clips "
        "in April and half as many in May. The gradient ∇f of f = w^2 is 2w.\n")


def make_tiny(tmp, n_expert=0, block_size=128, n_embd=64, n_layer=2, seed=0, name="checkpoint.pt"):
    """A tiny tokenizer + random GPT checkpoint in `tmp`. The special tokens' embedding rows are zero
    (tied head: their logit is 0 while the max of the rest is > 0), so greedy text never stops early
    and every comparison below runs the full length."""
    from mathlm.model.gpt import GPT, GPTConfig
    from mathlm.tokenizer import MathTokenizer
    tok_dir = os.path.join(tmp, "math_tokenizer")
    if os.path.isdir(tok_dir):
        tok = MathTokenizer.load(tok_dir)
    else:
        tok = MathTokenizer.train([TEXT] * 40, vocab_size=300, show_progress=False)
        tok.save(tok_dir)
    torch.manual_seed(seed)
    mc = GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_embd=n_embd,
                   n_head=4, n_kv_head=2, ffn_hidden=2 * n_embd, n_expert=n_expert, rope_theta=5000.0)
    model = GPT(mc).eval()
    with torch.no_grad():
        model.transformer.wte.weight[:len(tok.special_ids)] = 0
    ckpt = {"model": model.state_dict(), "model_config": dataclasses.asdict(mc), "tokenizer_hash": tok.hash,
            "stage": "sft", "step": 7, "config": {"data": "gsm8k,calculus"}}
    path = os.path.join(tmp, name)
    torch.save(ckpt, path)
    return path, tok_dir, model, tok


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on shared CI cores: intra-op thread sync costs more than the math (10x measured
    on 2 busy cores), so these tests run single-threaded and restore the setting after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return make_tiny(str(d))


def reference_answer(model, tok, ids, n):
    """The completion by hand: greedy ids from GPT.generate_ids, decoded, cut at the next Q:."""
    new = model.generate_ids([ids], n, eos_id=tok.eos_id)[0]
    return cut_completion(tok.decode(new))


@pytest.mark.parametrize("text,want", [
    ("Q: derivative of x^5? A:", "Q: derivative of x^5?\nA:"),
    ("Q: derivative of x^5?\nA:", "Q: derivative of x^5?\nA:"),
    ("  what is 2+2?  ", "Q: what is 2+2?\nA:"),
    ("Q:2+2=?A:", "Q: 2+2=?\nA:"),
])
def test_as_prompt_gives_the_training_format(text, want):
    assert as_prompt(text) == want


def test_generate_text_matches_greedy_reference(tiny):
    path, tok_dir, _, _ = tiny
    model, tok = load_model(path, tok_dir, device="cpu", verbose=False)
    for q in ["What is 2+3?", "d/dx x^2 ∇"]:
        ids = tok.encode(qa_prompt(q))
        want = reference_answer(model, tok, ids, 40)
        assert len(want) > 10
        assert generate_text(model, tok, q, max_new_tokens=40) == want
        pieces = list(stream_text(model, tok, q, max_new_tokens=40))
        assert len(pieces) > 3 and "".join(pieces).strip() == want


def test_sampling_is_seeded(tiny):
    _, _, model, tok = tiny
    a = generate_text(model, tok, "2+3?", max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.9, seed=3)
    b = generate_text(model, tok, "2+3?", max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.9, seed=3)
    c = generate_text(model, tok, "2+3?", max_new_tokens=30, temperature=1.0, top_k=50, top_p=0.9, seed=4)
    assert a == b and a != c


# --- incremental decoding, with a scripted model -------------------------------------------------

def _byte_token(tok, b):
    """The id of the single-byte token for byte value b (GPT-2 bytes_to_unicode mapping)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for x in range(256):
        if x not in bs:
            bs.append(x)
            cs.append(256 + n)
            n += 1
    return tok.tk.token_to_id(chr(dict(zip(bs, cs))[b]))


class Scripted:
    """Stands in for GPT: generate() yields a fixed token list."""

    def __init__(self, ids, block_size=128):
        self.ids = ids
        self.config = type("C", (), {"block_size": block_size})()

    def generate(self, prompts, max_new_tokens, **kw):
        for t in self.ids[:max_new_tokens]:
            yield torch.tensor([t])


def test_partial_utf8_is_held_back(tiny):
    tok = tiny[3]
    ids = [_byte_token(tok, b) for b in "a∫b".encode("utf-8")]  # ∫ is 3 bytes → 3 tokens
    pieces = list(stream_ids(Scripted(ids), tok, [5]))
    assert "".join(pieces) == "a∫b"
    assert not any("\ufffd" in p for p in pieces)


def test_trailing_partial_character_is_dropped(tiny):
    tok = tiny[3]
    ids = [_byte_token(tok, b) for b in "7∫".encode("utf-8")[:-1]]  # cut mid-character by max_new_tokens
    assert "".join(stream_ids(Scripted(ids), tok, [5])) == "7"


def test_invalid_bytes_are_shown_not_swallowed(tiny):
    tok = tiny[3]
    ids = [_byte_token(tok, 0x80), _byte_token(tok, 0x80)] + tok.encode("a")  # lone continuation bytes
    assert "".join(stream_ids(Scripted(ids), tok, [5])) == "\ufffd\ufffda"
    assert "".join(stream_ids(Scripted(ids[:2]), tok, [5])) == "\ufffd"  # the last one may be a cut-off char


@pytest.mark.parametrize("text,want", [
    (" 5\n\nQ: next question", " 5"),
    (" 5\nQ: next", " 5"),
    (" 5\nQuite right", " 5\nQuite right"),   # a newline then Q that is not "Q:" is text
    (" x\n", " x\n"),
])
def test_stops_at_next_question(tiny, text, want):
    tok = tiny[3]
    ids = [_byte_token(tok, b) for b in text.encode("utf-8")]
    pieces = list(stream_ids(Scripted(ids), tok, [5]))
    assert "".join(pieces) == want


def test_stops_at_special_tokens(tiny):
    tok = tiny[3]
    ids = tok.encode(" 42") + [tok.eos_id] + tok.encode(" more")
    assert "".join(stream_ids(Scripted(ids), tok, [5])) == " 42"
    ids = tok.encode(" 42") + [tok.user_id] + tok.encode("Q: more")
    assert "".join(stream_ids(Scripted(ids), tok, [5])) == " 42"


# --- chat --------------------------------------------------------------------------------------

def test_chat_prompt_is_the_chat_format_and_drops_old_turns(tiny):
    tok = tiny[3]
    hist = [("2+2?", "4"), ("times 3?", "12")]
    ids, dropped = chat_ids(tok, hist, "minus 1?", block_size=128, reserve=8)
    assert ids == encode_chat(tok, hist + [("minus 1?", None)])[0] and dropped == 0
    one = len(encode_chat(tok, [("minus 1?", None)])[0])
    ids, dropped = chat_ids(tok, hist, "minus 1?", block_size=one + 8, reserve=8)
    assert dropped == 2 and ids == encode_chat(tok, [("minus 1?", None)])[0]
    with pytest.raises(ValueError, match="empty"):
        chat_ids(tok, hist, "  ", 128)
    with pytest.raises(ValueError, match="context is 16"):
        chat_ids(tok, [], "x " * 40, 16)


def test_chat_response_uses_history(tiny):
    _, _, model, tok = tiny
    hist = [("What is 2+3?", "5")]
    ids = encode_chat(tok, hist + [("and x^2?", None)])[0]
    want = reference_answer(model, tok, ids, 30)
    assert chat_response(model, tok, hist, "and x^2?", max_new_tokens=30) == want
    assert want != chat_response(model, tok, [], "and x^2?", max_new_tokens=30)


# --- loading -----------------------------------------------------------------------------------

def test_default_checkpoint_is_the_last_stage_not_the_newest_file(tmp_path):
    d = str(tmp_path)
    for i, n in enumerate(["checkpoint_mathlm_grpo.pt", "checkpoint_mathlm.pt", "checkpoint.pt"]):
        (tmp_path / n).write_bytes(b"x")
        os.utime(tmp_path / n, (1000, 1000 + i))  # copied in reverse order: base is the newest file
    path, why = default_checkpoint(d)
    assert path == os.path.join(d, "checkpoint_mathlm_grpo.pt") and why.startswith("grpo, the last pipeline stage")
    assert "Note" not in why  # seconds apart: a copy, not a rerun
    os.utime(tmp_path / "checkpoint_mathlm.pt", (1000, 1000 + 600))  # SFT rerun 10 min after GRPO: said
    path, why = default_checkpoint(d)
    assert path.endswith("checkpoint_mathlm_grpo.pt")
    assert "checkpoint_mathlm.pt (sft) was written 10 min after it" in why and "--checkpoint" in why
    os.remove(tmp_path / "checkpoint_mathlm_grpo.pt")
    assert default_checkpoint(d)[0] == os.path.join(d, "checkpoint_mathlm.pt")
    assert default_checkpoint(str(tmp_path / "none"))[0] is None


def test_evals_default_to_the_same_checkpoint_as_inference(tmp_path, monkeypatch, capsys):
    """eval.math once defaulted to checkpoint_mathlm.pt (SFT) while inference took GRPO."""
    from mathlm.eval import gsm8k as eval_gsm8k, math as eval_math
    monkeypatch.chdir(tmp_path)
    for n in ("checkpoint.pt", "checkpoint_mathlm_grpo.pt"):  # no SFT file: the old default was not even here
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "empty.jsonl").write_text("")
    for main_, argv in ((eval_math.main, ["--data_dir", str(tmp_path / "none")]),
                        (eval_gsm8k.main, ["--source", str(tmp_path / "empty.jsonl")])):
        with pytest.raises(SystemExit) as e:  # stops at the missing test data, after picking
            main_(argv)
        assert "not found" not in str(e.value), e.value
        assert "using checkpoint_mathlm_grpo.pt (grpo, the last pipeline stage here" in capsys.readouterr().out


def test_default_checkpoint_is_announced(tiny, tmp_path, monkeypatch, capsys):
    path, tok_dir, model, tok = tiny
    monkeypatch.chdir(tmp_path)
    os.symlink(path, tmp_path / "checkpoint_mathlm.pt")
    os.symlink(tok_dir, tmp_path / "math_tokenizer")
    m, _ = load_model(device="cpu")
    assert "using checkpoint_mathlm.pt (sft, the last pipeline stage here" in capsys.readouterr().err
    assert torch.equal(m.transformer.wte.weight, model.transformer.wte.weight)


# --- bad input: one clear line, non-zero exit ------------------------------------------------------

def _die(argv, match):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert isinstance(e.value.code, str) and e.value.code.startswith("error:"), e.value.code
    assert match in e.value.code, e.value.code
    assert "\n" not in e.value.code


def test_missing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _die(["--checkpoint", "nope.pt", "--prompt", "2+2?"], "not found")
    _die(["--prompt", "2+2?"], "python -m mathlm.pipeline --preset tiny")  # no default checkpoint here: says how


def test_corrupt_checkpoint(tiny, tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(open(tiny[0], "rb").read()[:300])
    _die(["--checkpoint", str(bad), "--tokenizer", tiny[1], "--prompt", "2+2?"], "corrupt")
    torch.save({"weights": torch.zeros(2)}, bad)
    _die(["--checkpoint", str(bad), "--tokenizer", tiny[1], "--prompt", "2+2?"], "not a mathlm checkpoint")


def test_folder_of_another_architecture(tiny, tmp_path):
    d = tmp_path / "llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    _die(["--checkpoint", str(d), "--prompt", "2+2?"], "llama")
    _die(["--checkpoint", str(tmp_path), "--prompt", "2+2?"], "no config.json")


def test_tokenizer_mismatch(tiny, tmp_path):
    from mathlm.tokenizer import MathTokenizer
    other = MathTokenizer.train(["completely different text 123"] * 30, vocab_size=280, show_progress=False)
    other.save(str(tmp_path / "tk"))
    _die(["--checkpoint", tiny[0], "--tokenizer", str(tmp_path / "tk"), "--prompt", "2+2?"], "tokenizer")


def test_empty_and_too_long_prompt(tiny):
    path, tok_dir, model, tok = tiny
    _die(["--checkpoint", path, "--tokenizer", tok_dir, "--prompt", "   "], "empty")
    _die(["--checkpoint", path, "--tokenizer", tok_dir, "--prompt", "x " * 300], "context is 128")
    with pytest.raises(ValueError, match="empty"):
        generate_text(model, tok, "")


# --- the CLI as a process --------------------------------------------------------------------------

def _env():
    return dict(os.environ, PYTHONPATH=os.path.abspath(ROOT), OMP_NUM_THREADS="1")


def test_cli_streams_tokens_as_they_are_sampled(tmp_path):
    # a slower model (4 x 128) and 300 tokens: generation takes long enough to see the pieces arrive
    path, tok_dir, model, tok = make_tiny(str(tmp_path), block_size=512, n_embd=128, n_layer=4)
    want = generate_text(model, tok, "What is 2+3?", max_new_tokens=300)
    assert len(want) > 200
    proc = subprocess.Popen([sys.executable, "-m", "mathlm.infer.inference", "--checkpoint", path,
                             "--tokenizer", tok_dir, "--prompt", "Q: What is 2+3? A:", "--max_new_tokens", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=str(tmp_path))
    chunks = []  # (bytes, was the process still running when they arrived)
    while True:
        b = os.read(proc.stdout.fileno(), 1 << 16)
        if not b:
            break
        chunks.append((b, proc.poll() is None))
    proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read().decode()
    out = b"".join(c for c, _ in chunks).decode()
    assert out.startswith("Q: What is 2+3?\nA:") and out[len("Q: What is 2+3?\nA:"):].strip() == want
    live = [c for c, alive in chunks if alive]
    assert len(live) >= 3, f"output came in {len(chunks)} chunk(s): not streamed"
    assert "using" not in out and "loaded" in proc.stderr.read().decode()  # diagnostics stay off stdout


def test_cli_chat_keeps_history(tiny, tmp_path):
    path, tok_dir, model, tok = tiny
    proc = subprocess.run([sys.executable, "-m", "mathlm.infer.inference", "--checkpoint", path, "--tokenizer",
                           tok_dir, "--chat", "--max_new_tokens", "20"],
                          input="What is 2+3?\nand x^2?\n/reset\nand x^2?\n", capture_output=True, text=True,
                          env=_env(), cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    a1 = chat_response(model, tok, [], "What is 2+3?", max_new_tokens=20)
    a2 = chat_response(model, tok, [("What is 2+3?", a1)], "and x^2?", max_new_tokens=20)
    a3 = chat_response(model, tok, [], "and x^2?", max_new_tokens=20)
    assert a2 != a3  # the second turn sees the first
    # piped stdout is the answers alone, each stripped and ended by one newline; the labels go to stderr
    assert proc.stdout == f"{a1}\n{a2}\n{a3}\n"
    assert proc.stderr.count("you> ") == 5 and proc.stderr.count("mathlm> ") == 3
    assert "history cleared" in proc.stderr


def test_cli_prints_answers_without_stray_whitespace_and_says_when_empty(capsys):
    """The smoke model answers blanks: the terminal showed nothing at all, the demo said why."""
    from mathlm.infer.inference import EMPTY_ANSWER, _print_stream
    assert _print_stream(iter([" ", "\n", " \n"])) == ""
    out, err = capsys.readouterr()
    assert out == "\n" and EMPTY_ANSWER in err
    assert _print_stream(iter([" 5", "x^4", "\n", "\n"])) == "5x^4"  # Q/A: " 5x^4" after "A:", no blank line
    assert _print_stream(iter(["  2", " +", "\n", "3", "\n"]), lstrip=True) == "2 +\n3"  # chat: after "mathlm> "
    out, err = capsys.readouterr()
    assert out == " 5x^4\n2 +\n3\n" and err == ""


def test_cli_bad_input_exits_nonzero(tiny, tmp_path):
    path, tok_dir, _, _ = tiny
    for argv, msg in [(["--checkpoint", "missing.pt", "--prompt", "hi"], "not found"),
                      (["--checkpoint", path, "--tokenizer", tok_dir, "--prompt", ""], "empty")]:
        p = subprocess.run([sys.executable, "-m", "mathlm.infer.inference"] + argv, capture_output=True,
                           text=True, env=_env(), cwd=str(tmp_path), timeout=120)
        assert p.returncode == 1 and msg in p.stderr and "Traceback" not in p.stderr
