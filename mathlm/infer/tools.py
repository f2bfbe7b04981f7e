"""The calculator outside mathlm's own GPT: decoding with tools on an exported transformers model, and
how a call is shown to a reader.

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from mathlm.infer.tools import generate_with_tools, render_calls
    model = AutoModelForCausalLM.from_pretrained("mathlm-40m")        # the exported Qwen3ForCausalLM folder
    tok = AutoTokenizer.from_pretrained("mathlm-40m")                 # PreTrainedTokenizerFast
    text = generate_with_tools(model, tok, "Q: Natalia sold 48 clips in April and half as many in May. "
                                           "How many clips did she sell in all?\nA:")
    render_calls(text)   # '... 48/2 = [calc 48/2 = 24]24 clips ...'

generate_with_tools runs GPT.generate's loop on the transformers model: the same sampler
(gpt.sample_logits, seeded by its own torch.Generator), the same CallTracker (mathlm/calculator.py)
deciding which tokens the calculator forces, each forced token fed through the model's KV cache like a
sampled one; so greedy decoding gives mathlm's tokens (tests/test_tools_hf.py). transformers'
`model.generate` knows nothing of the tool: there the model would have to do the arithmetic itself.

Display: a call is written `<|calc|>48/2<|result|>24<|/result|>` in tokens; `render_calls` shows it as
`[calc 48/2 = 24]` (the CLI and the demo), `unrender_calls` gives the model's text back (a chat
history shown to the user goes back to the model as it was written), format.strip_calls removes it.
"""
import inspect
import re

import torch

from mathlm.calculator import CallTracker
from mathlm.format import CALC_END, CALC_RESULT, CALC_START, TOOL_TOKENS

_NOT = lambda *tokens: "(?:(?!" + "|".join(re.escape(t) for t in tokens) + ").)*?"  # text free of these tokens
_DONE = re.compile(re.escape(CALC_START) + f"({_NOT(CALC_START, CALC_RESULT)})" + re.escape(CALC_RESULT)
                   + f"({_NOT(*TOOL_TOKENS)})" + re.escape(CALC_END), re.S)
_STRAY = re.compile(re.escape(CALC_RESULT) + f"({_NOT(*TOOL_TOKENS)})" + re.escape(CALC_END), re.S)  # no call open
_SHOWN = re.compile(r"\[calc (?:(.*?) )?= (.*?)\]", re.S)


def render_calls(text, final=True):
    """Model text → display text: each finished call becomes `[calc expr = result]` (a result forced with
    no call open: `[calc = error]`), no special token is left. final=False (streaming): from the first
    unfinished call on, the text is held back, so what is returned is a prefix of every later rendering
    of the growing text; final=True shows the unfinished part too (`[calc 48/2 = 2`)."""
    out = _DONE.sub(lambda m: f"[calc {m[1]} = {m[2]}]", text)
    out = _STRAY.sub(lambda m: f"[calc = {m[1]}]", out)
    cut = min((i for i in (out.find(CALC_START), out.find(CALC_RESULT)) if i != -1), default=len(out))
    head, tail = out[:cut], out[cut:] if final else ""
    tail = tail.replace(CALC_START, "[calc ").replace(CALC_RESULT, " = ")
    return (head + tail).replace(CALC_END, "")


def unrender_calls(text):
    """render_calls' display text → the model's text (each `[calc expr = result]` back to its tokens)."""
    return _SHOWN.sub(lambda m: (CALC_START + m[1] if m[1] is not None else "") + CALC_RESULT + m[2] + CALC_END, text)


def tools_for(mode, tok):
    """--tools auto|on|off → what GPT.generate's tools= takes: the tokenizer (calculator on) or None.
    auto: on when the tokenizer has the tool tokens (a checkpoint trained with tools), off otherwise."""
    from mathlm.common import die
    if mode not in ("auto", "on", "off"):
        die(f"--tools {mode!r}: choose auto, on or off")
    if mode == "on" and tok.calc_ids is None:
        die("--tools on: the tokenizer has no calculator tokens (<|calc|> <|result|> <|/result|>) — the model was "
            "trained without the tool; use --tools off")
    return tok if mode != "off" and tok.calc_ids is not None else None


class _HFTools:
    """A transformers tokenizer seen as CallTracker wants it: calc_ids, encode, decode."""

    def __init__(self, tokenizer):
        ids = [tokenizer.convert_tokens_to_ids(t) for t in TOOL_TOKENS]
        unk = getattr(tokenizer, "unk_token_id", None)
        self.calc_ids = tuple(ids) if all(i is not None and i != unk for i in ids) else None
        self.tokenizer = tokenizer

    def encode(self, text):
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids):
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


@torch.no_grad()
def generate_ids_with_tools(model, tokenizer, ids, max_new_tokens=256, temperature=0.0, top_k=None, top_p=None,
                            seed=None, tools=True):
    """The new token ids after prompt `ids` (a list) and, per token, whether the calculator forced it:
    (new_ids, forced). Stops after <|eos|> (kept), after max_new_tokens, or at the model's context
    (config.max_position_embeddings). tools=False, or a tokenizer without the tool tokens: plain decoding."""
    from mathlm.model.gpt import sample_logits
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    helper = _HFTools(tokenizer)
    calls = CallTracker(helper, [list(ids)]) if tools and helper.calc_ids is not None else None
    n_new = min(max_new_tokens, model.config.max_position_embeddings - len(ids))
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    # transformers 5 renamed the KV cache argument and output from past_key_values to cache
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    new, forced = [], []
    out = model(input_ids=torch.tensor([list(ids)], device=device), use_cache=True)
    for step in range(max(n_new, 0)):
        t = int(sample_logits(out.logits[:, -1, :], temperature, top_k, top_p, generator)[0])
        f = False
        if calls is not None:
            (t,), (f,) = calls.step([t])
        new.append(t)
        forced.append(f)
        if t == eos or step == n_new - 1:
            break
        out = model(input_ids=torch.tensor([[t]], device=device), use_cache=True, **{key: getattr(out, key)})
    return new, forced


def generate_with_tools(model, tokenizer, prompt, max_new_tokens=256, temperature=0.0, top_k=None, top_p=None,
                        seed=None, tools=True):
    """The completion of `prompt` (text, e.g. "Q: ...\\nA:" or tokenizer.apply_chat_template(...,
    tokenize=False, add_generation_prompt=True)) by a transformers model with the calculator: the text
    the model and the calculator wrote, calls included as tokens, cut before <|eos|>. render_calls shows
    the calls, format.strip_calls removes them."""
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    new, _ = generate_ids_with_tools(model, tokenizer, ids, max_new_tokens, temperature, top_k, top_p, seed, tools)
    if new and new[-1] == tokenizer.eos_token_id:
        new = new[:-1]
    return tokenizer.decode(new, skip_special_tokens=False, clean_up_tokenization_spaces=False)


__all__ = ["generate_with_tools", "generate_ids_with_tools", "render_calls", "unrender_calls", "tools_for"]
