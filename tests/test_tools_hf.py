"""mathlm.infer.tools: generate_with_tools on the exported transformers folder gives mathlm's own
tool-decoding tokens, calls included; render_calls shows calls without special tokens, streams stably."""
import os
import re

import pytest
import torch

from mathlm.format import TOOL_TOKENS, calc_call, strip_calls
from mathlm.infer.export import export_folder
from mathlm.infer.tools import generate_ids_with_tools, generate_with_tools, render_calls, unrender_calls
from tests.test_infer import make_tiny, one_thread  # noqa: F401  (one_thread: autouse fixture)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random model whose <|result|> embedding points along its hidden states, so it closes a call
    (or writes a stray <|result|>) every few tokens: plenty for the calculator to do."""
    d = str(tmp_path_factory.mktemp("tools_hf"))
    path, tok_dir, model, tok = make_tiny(d)
    _, result, _ = tok.calc_ids
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        model(torch.tensor([tok.encode("Q: What is 2+3?\nA: 5 The derivative of x^2 is 2x.")]))
        hook.remove()
        h = seen[0].mean((0, 1))  # the head's mean input: a logit of ~2 for <|result|> wherever the text goes
        model.transformer.wte.weight[result] = 2.0 * h / h.norm()
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = model.state_dict()
    out = os.path.join(d, "hf")
    export_folder(ckpt, tok, out)
    return out, model, tok


def hf_pair(out):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(out)


@pytest.mark.parametrize("prompt", ["Q: What is 48/2?\nA: 48/2 = <|calc|>48/2", "Q: What is 2+3?\nA: <|calc|>2+3<|result|>",
                                    "Q: Natalia sold 48 clips\nA:"])
def test_generate_with_tools_equals_mathlms_decoder(exported, prompt):
    out, model, tok = exported
    hf, hf_tok = hf_pair(out)
    ids = tok.encode(prompt)
    assert hf_tok.encode(prompt, add_special_tokens=False) == ids
    steps = list(model.generate([ids], 40, tools=tok, with_forced=True, eos_id=tok.eos_id))
    ours = [int(t[0]) for t, _ in steps]
    ours_forced = [bool(f[0]) for _, f in steps]
    if tok.eos_id in ours:
        n = ours.index(tok.eos_id) + 1
        ours, ours_forced = ours[:n], ours_forced[:n]
    theirs, forced = generate_ids_with_tools(hf, hf_tok, ids, 40)
    assert theirs == ours and forced == ours_forced
    assert sum(forced) >= 2  # the calculator forced a result here, not just the model writing
    text = generate_with_tools(hf, hf_tok, prompt, 40)
    assert text == tok.decode([t for t in ours if t != tok.eos_id])
    if prompt.endswith("48/2"):  # the model writes 2s, then closes the call: 48/222222 computed
        assert text.startswith("22222<|result|>0.000216<|/result|>"), text
    if prompt.endswith("<|result|>"):
        assert text.startswith("5<|/result|>")


def test_without_tools_it_is_plain_greedy(exported):
    out, model, tok = exported
    hf, hf_tok = hf_pair(out)
    ids = tok.encode("Q: What is 48/2?\nA: 48/2 = <|calc|>48/2")
    theirs, forced = generate_ids_with_tools(hf, hf_tok, ids, 20, tools=False)
    assert not any(forced)
    assert theirs == model.generate_ids([ids], 20)[0][:len(theirs)]


def test_render_calls():
    t = "48/2 = " + calc_call("48/2", "24") + "24 clips, " + calc_call("1/0", "error") + " <|result|>error<|/result|>"
    assert render_calls(t) == "48/2 = [calc 48/2 = 24]24 clips, [calc 1/0 = error] [calc = error]"
    assert unrender_calls("48/2 = [calc 48/2 = 24]24 clips") == "48/2 = " + calc_call("48/2", "24") + "24 clips"
    assert unrender_calls(render_calls(t)) == t
    assert strip_calls(t) == "48/2 = 24 clips,  "
    assert render_calls("a <|calc|>3*4<|result|>1", final=True) == "a [calc 3*4 = 1"
    assert render_calls("a <|calc|>3*4<|result|>1", final=False) == "a "


def test_render_calls_streams_as_a_growing_prefix():
    t = ("48/2 = " + calc_call("48/2", "24") + "24 <|result|>error<|/result|> and <|calc|>3<|calc|>3*4<|result|>12"
         "<|/result|>x<|calc|>3*4<|result|>1")
    pieces = re.split("(" + "|".join(re.escape(s) for s in TOOL_TOKENS) + ")", t)
    toks = [p for piece in pieces for p in ([piece] if piece in TOOL_TOKENS else list(piece))]  # specials are atomic
    whole = render_calls(t, final=False)
    for i in range(len(toks) + 1):
        prefix = "".join(toks[:i])
        assert whole.startswith(render_calls(prefix, final=False))
        assert not any(s in render_calls(prefix) for s in TOOL_TOKENS)


def test_model_card_says_how_to_use_the_calculator(exported, tmp_path):
    from scripts.upload_hf import model_card
    out, model, tok = exported
    ckpt = {"model_config": {"vocab_size": tok.vocab_size, "block_size": 128, "n_layer": 2, "n_embd": 64, "n_head": 4,
                             "n_kv_head": 2, "ffn_hidden": 128}, "stage": "sft"}
    card = model_card(ckpt, "", str(tmp_path), tok)
    assert "## Calculator" in card and "generate_with_tools(model, tok," in card
    class Old:  # a tokenizer trained without the tool tokens
        calc_ids, hash = None, "0" * 16
    assert "## Calculator" not in model_card(ckpt, "", str(tmp_path), Old())
