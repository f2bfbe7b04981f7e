"""Ask a trained mathlm model questions from the terminal; tokens are printed as they are sampled.

    python -m mathlm.infer.inference --prompt "Q: derivative of x^5? A:"
    python -m mathlm.infer.inference --prompt "What is 15% of 80?" --temperature 0.8 --top_p 0.95 --seed 0
    python -m mathlm.infer.inference --checkpoint out/mathlm-40m --chat      # multi-turn; /reset, /exit
    python -m mathlm.infer.inference --prompt "48 clips, half as many in May?" --tools off   # no calculator
    python -m mathlm.infer.inference --prompt "d/dx x^5?" --speculate draft --draft_checkpoint small.pt
Reads: a checkpoint .pt (+ its tokenizer folder, --tokenizer) or a folder written by
scripts/upload_hf.py. Without --checkpoint it takes the last pipeline stage's checkpoint in the
working directory (default_checkpoint: GRPO > SFT > base) and says which and why. Writes nothing.
The model's text goes to stdout, one answer a line-ended block, everything else to stderr (the chat
labels you> / mathlm> too, unless stdout is a terminal). With the calculator (--tools, on by
default for a model trained with it) a call is shown as `[calc 48/2 = 24]`: what the model asked, and
what mathlm/calculator.py answered (forced into the text, not sampled).

Library (the demo and the evals use these):
    model, tok = load_model("checkpoint_mathlm.pt")           # or an exported folder; device auto
    generate_text(model, tok, "d/dx x^5?")                     # -> "5x^4"
    for piece in stream_text(model, tok, "d/dx x^5?"): ...     # the same text, piece by piece
    chat_response(model, tok, [("2+2?", "4")], "times 3?")     # history of (question, answer) pairs
"""
import contextlib
import io
import os
import re
import sys
from dataclasses import dataclass

from mathlm.common import (SEED_MAX, check_device, check_range, cli, die, eprint, parse_config, pick_device,
                           pick_dtype)
from mathlm.format import STOP_STRINGS, encode_chat, qa_prompt
from mathlm.infer.tools import render_calls, tools_for, unrender_calls

# the pipeline's checkpoints, last stage first: each is trained from the one below it
PIPELINE_CHECKPOINTS = (("grpo", "checkpoint_mathlm_grpo.pt"), ("sft", "checkpoint_mathlm.pt"), ("base", "checkpoint.pt"))
DEFAULT_CHECKPOINTS = tuple(name for _, name in PIPELINE_CHECKPOINTS)
STALE_S = 60  # an earlier stage's file written this much later than the picked one is worth a word
HOW_TO_GET_ONE = ("make one with `python -m mathlm.pipeline --preset tiny` (tokenizer, data, pretrain, sft, grpo; "
                  "minutes on a CPU), or pass --checkpoint PATH (a .pt file or an exported folder)")


@dataclass
class Config:
    """Answer a question (streamed) or chat with a mathlm model in the terminal."""
    checkpoint: str = ""            # .pt or exported folder; "" = the last pipeline stage's here (GRPO > SFT > base)
    tokenizer: str = "math_tokenizer"  # tokenizer folder for a .pt checkpoint (folders carry their own)
    prompt: str = ""                # a question ("d/dx x^5?") or "Q: ... A:"; both become the Q/A prompt
    raw: bool = False               # send --prompt as is (plain text continuation, no Q/A wrapping)
    chat: bool = False              # interactive multi-turn session on stdin
    max_new_tokens: int = 256       # answer length cap; generation also stops at <|eos|> and the context
    temperature: float = 0.0        # 0 = greedy, what the evals score
    top_k: int = 0                  # 0 = off
    top_p: float = 1.0              # 1 = off
    seed: int = -1                  # -1 = fresh randomness every answer
    device: str = "auto"            # auto|cuda|mps|cpu
    tools: str = "auto"             # auto|on|off: the calculator computes calls (auto: on if the tokenizer has its tokens)
    dtype: str = "fp32"             # fp32 (as the evals score)|bf16|auto (bf16 where native: CUDA, avx512_bf16/AMX): faster, answers differ sometimes
    speculate: str = "lookup"       # off|lookup (drafts copied from the text so far)|draft (--draft_checkpoint); exact either way
    spec_k: int = 0                 # tokens drafted per round (one target forward verifies them all); 0 = auto:
                                    # 4 for lookup, 8 for a draft model (speculative.AUTO_K, docs/BENCHMARKS.md)
    draft_checkpoint: str = ""      # a smaller model on the same tokenizer, for --speculate draft
    compile: bool = False           # torch.compile a static-shape step for decoding and verify rounds (CUDA graphs on a GPU)


# -----------------------------------------------------------------------------
# loading: one function for checkpoints and exported folders

def default_checkpoint(directory="."):
    """(path, why) of the checkpoint every command uses without --checkpoint (inference, demo, evals,
    export): the last pipeline stage present in `directory`, GRPO > SFT > base, since each stage is
    trained from the one before. Not the newest file: a copied run folder (cp -r, unzip) gets its
    mtimes in whatever order the copy ran. An earlier stage written later (SFT rerun after GRPO) is
    named in `why`, with the flag that picks it. (None, why) when there is none."""
    found = [(stage, os.path.normpath(os.path.join(directory, n))) for stage, n in PIPELINE_CHECKPOINTS
             if os.path.isfile(os.path.join(directory, n))]
    if not found:
        return None, f"none of {', '.join(DEFAULT_CHECKPOINTS)} in {os.path.abspath(directory)}"
    (stage, path), rest = found[0], found[1:]
    why = f"{stage}, the last pipeline stage here: grpo > sft > base; --checkpoint picks another"
    t = os.path.getmtime(path)
    later = [(s, p) for s, p in rest if os.path.getmtime(p) > t + STALE_S]
    if later:
        s, p = later[0]
        why += (f". Note: {p} ({s}) was written {(os.path.getmtime(p) - t) / 60:.0f} min after it, so this "
                f"{stage} checkpoint may come from an older {s}; --checkpoint {p} uses that one")
    return path, why


def pick_default_checkpoint(say=eprint):
    """default_checkpoint's path, said with why; none here is the one-line error saying how to get one."""
    path, why = default_checkpoint()
    if path is None:
        die(f"no checkpoint given and {why} — {HOW_TO_GET_ONE}")
    say(f"using {path} ({why})")
    return path


def load_model(path=None, tokenizer="math_tokenizer", device="auto", dtype="fp32", verbose=True):
    """(model, tok) from a mathlm checkpoint .pt or an exported Qwen3 folder, in eval mode on `device`.
    dtype: fp32 (the weights as trained) | bf16 | auto (bf16 where the device has native bf16, else fp32).
    Bad input (missing, corrupt, another architecture, tokenizer mismatch) exits with a one-line error."""
    from mathlm.model.gpt import GPT, GPTConfig
    from mathlm.tokenizer import MathTokenizer
    from mathlm.train.common import load_checkpoint, model_from_checkpoint
    say = eprint if verbose else (lambda *a: None)
    path = path or pick_default_checkpoint(say)
    if not os.path.exists(path):
        die(f"checkpoint {path} not found — {HOW_TO_GET_ONE}")
    device = pick_device(device)

    if os.path.isdir(path):
        from mathlm.infer.export import read_folder
        try:
            mc, sd, cfg = read_folder(path)
            tok = MathTokenizer.load(path)
        except ValueError as e:
            die(str(e))
        want = cfg.get("mathlm_tokenizer_hash")
        if want and want != tok.hash:
            die(f"{path}: tokenizer.json (hash {tok.hash}) is not the one the model was exported with ({want}) — re-export the folder")
        with contextlib.redirect_stdout(io.StringIO()):  # GPT() prints its parameter count
            model = GPT(GPTConfig(**mc))
        model.load_state_dict(sd)
        stage = "export"
    else:
        ckpt = load_checkpoint(path)
        beside = os.path.join(os.path.dirname(os.path.abspath(path)), "math_tokenizer")
        if tokenizer == "math_tokenizer" and not os.path.isdir(tokenizer) and os.path.isdir(beside):
            tokenizer = beside  # the default name is not here, but the checkpoint's run has one
        if not os.path.exists(os.path.join(tokenizer, "tokenizer.json") if os.path.isdir(tokenizer) else tokenizer):
            # not "train a tokenizer": a new one has another hash and the checkpoint would refuse it
            die(f"no tokenizer at {tokenizer} (nor beside {path}) — pass --tokenizer <its run folder>/math_tokenizer, "
                "the one it was trained with")
        try:
            tok = MathTokenizer.load(tokenizer)
        except ValueError as e:
            die(str(e))
        if ckpt.get("tokenizer_hash") not in (None, tok.hash):
            die(f"{path} was trained with tokenizer {ckpt['tokenizer_hash']}, {tokenizer} is {tok.hash} — "
                "pass the matching --tokenizer DIR")
        try:
            model = model_from_checkpoint(ckpt, "cpu")
        except (RuntimeError, TypeError, ValueError) as e:
            die(f"{path} does not fit the current GPT ({str(e).splitlines()[0][:120]}) — it was made by another "
                "mathlm version; retrain or re-export it")
        stage = ckpt.get("stage", "?")
        if tok.vocab_size > model.config.vocab_size:
            die(f"tokenizer has {tok.vocab_size} tokens, the model only {model.config.vocab_size} — wrong --tokenizer")
    # the weights are cast, not autocast: decoding reads every weight once per token, so bf16 halves the
    # bytes (1.85x tok/s at 40M on a CPU with avx512_bf16, issue 17). RMSNorm normalises in fp32, the tied
    # embedding/lm_head stays fp32 so logits are (GPT.decode_dtype); greedy agreement with fp32: docs/BENCHMARKS.md
    dt = pick_dtype(device, dtype, verbose=False)
    model = model.to(device=device).decode_dtype(dt).eval()
    say(f"loaded {path} | stage {stage} | {model.num_params() / 1e6:.2f}M params | "
        f"context {model.config.block_size} | device {device} | dtype {str(dt).replace('torch.', '')}")
    return model, tok


# -----------------------------------------------------------------------------
# prompts

_QA = re.compile(r"^\s*Q:\s*(.*?)\s*A:\s*$", re.DOTALL)


def as_prompt(text):
    """What a user types -> the Q/A prompt the model was trained on.
    "Q: d/dx x^5? A:" (any spacing) and a bare "d/dx x^5?" both become "Q: d/dx x^5?\nA:"."""
    m = _QA.match(text)
    return qa_prompt(m.group(1) if m else text)


def check_prompt(model, ids, what="prompt"):
    if not ids:
        raise ValueError(f"the {what} is empty — type a question")
    if len(ids) >= model.config.block_size:
        raise ValueError(f"the {what} is {len(ids)} tokens, the model's context is {model.config.block_size} "
                         "— shorten it")


def chat_ids(tok, history, message, block_size, reserve=64):
    """Token ids of a chat ending at <|assistant|>, ready for generation, and how many old turns were
    dropped so that `reserve` tokens of answer still fit in the context."""
    if not message.strip():
        raise ValueError("the message is empty — type a question")
    history = [(q, unrender_calls(a)) for q, a in history]  # answers as shown ([calc ..]) → as the model wrote them
    for dropped in range(len(history) + 1):
        ids, _ = encode_chat(tok, history[dropped:] + [(message, None)])
        if len(ids) + reserve <= block_size:
            return ids, dropped
    if len(ids) < block_size:  # the message alone fits, with less room to answer
        return ids, len(history)
    raise ValueError(f"the message is {len(ids)} tokens, the model's context is {block_size} — shorten it")


# -----------------------------------------------------------------------------
# generation: text pieces as they are sampled

def _held_back(text):
    """Length of the longest suffix of text that could start a stop string ("\\n", "\\nQ")."""
    for n in range(max(map(len, STOP_STRINGS)) - 1, 0, -1):
        if len(text) >= n and any(s.startswith(text[-n:]) for s in STOP_STRINGS):
            return n
    return 0


def stream_ids(model, tok, ids, max_new_tokens=256, temperature=0.0, top_k=0, top_p=1.0, seed=None, tools="auto",
               decoder=None):
    """Yield the completion of prompt `ids` as text pieces, as the tokens are sampled.

    The whole completion is decoded every step and only the new suffix is yielded: a token can be
    part of a UTF-8 character (byte-level BPE), shown as one trailing U+FFFD until its other bytes
    arrive, so that is held back; so is a trailing "\\n" / "\\nQ" that may become the next "Q:" turn.
    Stops at any special token (<|eos|> ends a turn) or at the next "Q:" (format.STOP_STRINGS).
    tools: auto|on|off (tools.tools_for: auto = on for a tokenizer with the tool tokens) or what
    GPT.generate takes (the tokenizer, or None); calls are shown as `[calc 48/2 = 24]`
    (tools.render_calls), each once it is finished.
    Returns (the generator's return value, for the demo's note) why it ended: "stop" (the model
    ended it), "length" (max_new_tokens) or "context" (prompt + answer filled block_size).
    decoder: a speculative.Decoder (speculation, compiled step), or None for GPT.generate."""
    check_prompt(model, ids)
    tools = tools_for(tools, tok) if isinstance(tools, str) else tools
    finish = "length" if max_new_tokens <= model.config.block_size - len(ids) else "context"
    seed = None if seed is None or seed < 0 else seed
    new, text, sent = [], "", 0
    generate = model.generate if decoder is None else (lambda *a, **kw: decoder.generate(model, *a, **kw))
    for t in generate([ids], max_new_tokens, temperature=temperature, top_k=top_k or None,
                      top_p=top_p if top_p < 1.0 else None, seed=seed, eos_id=tok.eos_id, tools=tools):
        t = int(t[0])
        if t in tok.special_ids:
            finish = "stop"
            break
        new.append(t)
        text = tok.decode(new)
        cut = min((i for i in (text.find(s) for s in STOP_STRINGS) if i != -1), default=-1)
        if cut != -1:
            text = text[:cut]
            finish = "stop"
            break
        # an incomplete UTF-8 sequence at the end decodes to exactly one U+FFFD (earlier ones are
        # invalid bytes for good), so only a single trailing U+FFFD can still turn into a character
        shown = render_calls(text, final=False)  # calls as [calc 48/2 = 24]; an unfinished one waits
        end = len(shown) - shown.endswith("\ufffd")
        end -= _held_back(shown[:end])
        if end > sent:
            yield shown[sent:end]
            sent = end
    text = render_calls(text)
    if text.endswith("\ufffd") and len(text) - 1 >= sent:
        text = text[:-1]  # a character cut off by max_new_tokens is noise, not text
    if len(text) > sent:
        yield text[sent:]
    return finish


def stream_text(model, tok, prompt, raw=False, **gen):
    """Pieces of the answer to `prompt` (a question, or Q/A text; raw=True sends it unchanged)."""
    ids = tok.encode(prompt if raw else as_prompt(prompt)) if prompt.strip() else []
    return (yield from stream_ids(model, tok, ids, **gen))


def generate_text(model, tok, prompt, raw=False, **gen):
    """The answer to `prompt` as one string, cut at the next "Q:" and stripped."""
    return "".join(stream_text(model, tok, prompt, raw=raw, **gen)).strip()


def stream_chat(model, tok, history, message, **gen):
    """Pieces of the assistant's answer to `message` after `history` [(question, answer), ...]."""
    reserve = min(gen.get("max_new_tokens", 256), model.config.block_size // 4)
    ids, _ = chat_ids(tok, history, message, model.config.block_size, reserve)
    return (yield from stream_ids(model, tok, ids, **gen))


def chat_response(model, tok, history, message, **gen):
    return "".join(stream_chat(model, tok, history, message, **gen)).strip()


def check_speculate(speculate, k, draft_checkpoint):
    """The speculation flags, checked before any model loads (the CLI, the demo and the evals): one line
    and exit 2 for a bad one."""
    from mathlm.infer.speculative import SPECULATE
    if speculate not in SPECULATE:
        die(f"--speculate {speculate}: use one of {'|'.join(SPECULATE)}")
    if not 0 <= k <= 64:  # 64 drafted tokens a round: far past where acceptance pays (docs/BENCHMARKS.md)
        die(f"--spec_k {k}: draft 1 to 64 tokens a round, or 0 for the default of --speculate")
    if speculate == "draft" and not draft_checkpoint:
        die("--speculate draft needs --draft_checkpoint PATH (a smaller model on the same tokenizer)")


def make_decoder(model, tok, speculate="off", k=0, draft_checkpoint="", tokenizer="math_tokenizer",
                 device="auto", dtype="fp32", compile=False, verbose=True):
    """The speculative.Decoder the flags ask for; a draft model is loaded like the model and must
    share its tokenizer. Bad flags exit with a one-line error."""
    from mathlm.infer.speculative import Decoder
    check_speculate(speculate, k, draft_checkpoint)
    draft = None
    if speculate == "draft":
        draft, dtok = load_model(draft_checkpoint, tokenizer, device, dtype, verbose)
        if dtok.hash != tok.hash or draft.config.vocab_size != model.config.vocab_size:
            die(f"{draft_checkpoint} uses another tokenizer than the model — draft with a model trained on the same one")
    return Decoder(speculate, k=k, draft_model=draft, compile=compile)


# -----------------------------------------------------------------------------
# CLI

EMPTY_ANSWER = "(the model gave an empty answer)"  # as the demo says it


def _print_stream(pieces, lstrip=False):
    """Write the answer to stdout piece by piece and return it stripped. Trailing whitespace (the
    "\\n" an answer often ends on) is held back until text follows, so every answer ends in exactly
    one newline; lstrip drops leading whitespace too (chat: the label already ends in a space). An
    answer of whitespace only gets EMPTY_ANSWER on stderr, not a blank line and nothing else."""
    out, pending, started = [], "", not lstrip
    for p in pieces:
        out.append(p)
        if not started:
            p = p.lstrip()
            started = bool(p)
        p = pending + p
        body = p.rstrip()
        pending = p[len(body):]
        if body:
            sys.stdout.write(body)
            sys.stdout.flush()  # one write per piece reaches the terminal (or pipe) now, not at exit
    sys.stdout.write("\n")
    sys.stdout.flush()
    answer = "".join(out).strip()
    if not answer:
        eprint(EMPTY_ANSWER)
    return answer


def _label(text):
    """A chat label ("mathlm> ") on stdout only when it is a terminal: piped stdout is the model's text."""
    f = sys.stdout if sys.stdout.isatty() else sys.stderr
    f.write(text)
    f.flush()


def _ask(prompt):
    """input(prompt) with the prompt placed as _label places it (input() alone writes it to stdout)."""
    if sys.stdout.isatty():
        return input(prompt)  # readline redraws the prompt it was given while the line is edited
    _label(prompt)
    return input()


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    check_range(cfg, "max_new_tokens", lo=1)
    check_range(cfg, "temperature", lo=0, why="0 = greedy")
    check_range(cfg, "top_k", lo=0, why="0 = off")
    check_range(cfg, "top_p", above=0, hi=1, why="1 = off")
    check_range(cfg, "seed", lo=0, hi=SEED_MAX, also=(-1,))
    check_device(cfg)
    if not cfg.chat and not cfg.prompt.strip():
        die("nothing to answer: the prompt is empty — pass --prompt \"Q: d/dx x^5? A:\" or --chat")
    model, tok = load_model(cfg.checkpoint or None, cfg.tokenizer, cfg.device, cfg.dtype)
    decoder = make_decoder(model, tok, cfg.speculate, cfg.spec_k, cfg.draft_checkpoint, cfg.tokenizer,
                           cfg.device, cfg.dtype, cfg.compile)
    gen = dict(tools=tools_for(cfg.tools, tok),
               max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
               top_p=cfg.top_p, seed=cfg.seed, decoder=decoder)
    if not cfg.chat:
        prompt = cfg.prompt if cfg.raw else as_prompt(cfg.prompt)
        ids = tok.encode(prompt)
        try:
            check_prompt(model, ids)
        except ValueError as e:
            die(str(e))
        sys.stdout.write(prompt)
        return _print_stream(stream_ids(model, tok, ids, **gen))

    eprint("chat: type a question; /reset forgets the conversation, /exit or Ctrl-D quits")
    history = []
    while True:
        try:
            msg = _ask("you> ")
        except (EOFError, KeyboardInterrupt):
            _label("\n")  # ends the "you> " line
            return history
        if msg.strip() in ("/exit", "/quit"):
            return history
        if msg.strip() == "/reset":
            history = []
            eprint("(history cleared)")
            continue
        if not msg.strip():
            continue
        try:
            reserve = min(cfg.max_new_tokens, model.config.block_size // 4)
            _, dropped = chat_ids(tok, history, msg, model.config.block_size, reserve)
            if dropped:
                eprint(f"(the oldest {dropped} turn(s) no longer fit the context of "
                       f"{model.config.block_size} tokens and are left out)")
            _label("mathlm> ")
            answer = _print_stream(stream_chat(model, tok, history, msg, **gen), lstrip=True)
        except ValueError as e:  # a too-long message: say so, keep the session
            _label("\n")
            eprint(f"error: {e}")
            continue
        history.append((msg, answer))


if __name__ == "__main__":
    main()
