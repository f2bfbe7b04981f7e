"""--tools on the CLI (mathlm.infer.inference): a call and its result are shown as `[calc 48/2 = 24]`, never
as raw special tokens, streamed and whole alike; --tools off lets the model write the result itself;
--tools on with a tokenizer trained without the tool is one line; a chat history shown with calls goes
back to the model as calls.

The model is a tiny random GPT on a real MathTokenizer whose logits get a bias by the last token: after
the Q/A prompt it writes `<|calc|>48/2<|result|>`; left alone after <|result|> it writes `9<|/result|>`."""
import pytest
import torch

from mathlm.common import MathlmError
from mathlm.infer import inference
from mathlm.infer.inference import chat_ids, generate_text, main, stream_text
from mathlm.infer.tools import tools_for
from mathlm.model.gpt import GPT, GPTConfig
from mathlm.tokenizer import MathTokenizer
from tests.test_infer import TEXT, one_thread  # noqa: F401  (one_thread: autouse fixture)

QUESTION = "What is 48/2?"


class ChainGPT(GPT):
    """GPT + bias[last token]: forced transitions along `chain`, tool tokens never otherwise."""

    def __init__(self, config, tok, chain):
        super().__init__(config)
        V = config.vocab_size
        bias = torch.zeros(V, V)
        bias[:, list(tok.calc_ids)] = -30.0
        for a, b in zip(chain, chain[1:]):
            bias[a] = -30.0
            bias[a, b] = 30.0
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, idx, targets=None, cache=None, attention_mask=None, last_only=False):
        logits, loss, aux = super().forward(idx, targets, cache, attention_mask, last_only)
        return logits + self.bias[idx[:, -1:] if last_only else idx], loss, aux


@pytest.fixture(scope="module")
def tok():
    return MathTokenizer.train([TEXT] * 40, vocab_size=300, show_progress=False)


@pytest.fixture(scope="module")
def model(tok):
    last = tok.encode(inference.as_prompt(QUESTION))[-1]
    call = tok.encode("<|calc|>48/2<|result|>")
    own = tok.encode("9<|/result|>")  # what the model writes after <|result|> when no calculator forces it
    assert len(set(call[1:-1])) == len(call) - 2  # 4, 8, /, 2: each token leads to exactly one next one
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_embd=32, n_head=4, n_kv_head=2, ffn_hidden=64)
    m = ChainGPT(cfg, tok, [last] + call + own + [tok.eos_id]).eval()
    m.bias[tok.calc_ids[2], tok.eos_id] = 30.0  # after the calculator's <|/result|>: stop
    return m


@pytest.fixture
def cli(monkeypatch, model, tok, capsys):
    def run(*flags, tokenizer=None):
        monkeypatch.setattr(inference, "load_model", lambda *a, **k: (model, tokenizer or tok))
        main(["--prompt", QUESTION, "--max_new_tokens", "20", *flags])
        return capsys.readouterr().out.split("A:", 1)[1]
    return run


def test_cli_shows_the_call_and_its_result(cli):
    for flags in ([], ["--tools", "on"], ["--tools", "auto"]):
        assert cli(*flags).strip() == "[calc 48/2 = 24]"


def test_tools_off_the_model_writes_the_result(cli):
    assert cli("--tools", "off").strip() == "[calc 48/2 = 9]"


def test_streamed_pieces_never_show_special_tokens(model, tok):
    pieces = list(stream_text(model, tok, QUESTION, max_new_tokens=20))
    assert all("<|" not in p for p in pieces)
    assert "".join(pieces).strip() == generate_text(model, tok, QUESTION, max_new_tokens=20) == "[calc 48/2 = 24]"
    assert generate_text(model, tok, QUESTION, max_new_tokens=20, tools="off") == "[calc 48/2 = 9]"


def test_tools_on_without_tool_tokens_is_one_line(cli, capsys):
    old = MathTokenizer.train([TEXT] * 40, vocab_size=300, show_progress=False, tools=False)
    with pytest.raises(MathlmError, match="--tools on: the tokenizer has no calculator tokens"):
        tools_for("on", old)
    assert tools_for("auto", old) is None and tools_for("off", old) is None
    with pytest.raises(SystemExit) as e:  # cli turns it into `error: ...` and exit status 1
        cli("--tools", "on", tokenizer=old)
    assert str(e.value).startswith("error: --tools on:") and "\n" not in str(e.value)


def test_chat_history_goes_back_as_calls(tok):
    ids, _ = chat_ids(tok, [(QUESTION, "48/2 = [calc 48/2 = 24]24")], "and 3*4?", block_size=128)
    assert all(ids.count(i) == 1 for i in tok.calc_ids)
    assert tok.decode(ids).count("<|calc|>48/2<|result|>24<|/result|>24") == 1


def test_demo_page_says_the_calculator_is_on(model, tok, tmp_path):
    from mathlm.infer.demo import describe
    ckpt = tmp_path / "checkpoint_mathlm.pt"
    torch.save({"stage": "sft"}, ckpt)
    assert any("**Calculator:** on" in line and "[calc 48/2 = 24]" in line for line in describe(str(ckpt), model, tok))
    old = MathTokenizer.train([TEXT] * 40, vocab_size=300, show_progress=False, tools=False)
    assert not any("Calculator" in line for line in describe(str(ckpt), model, old) + describe(str(ckpt), model))
