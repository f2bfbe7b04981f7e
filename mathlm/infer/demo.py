"""A local web demo: ask mathlm questions in the browser, answers streamed token by token.

    python -m mathlm.infer.demo                                  # http://127.0.0.1:7860
    python -m mathlm.infer.demo --checkpoint out/mathlm-40m --port 7861 --share
Reads: a checkpoint .pt (+ --tokenizer) or an exported folder; without --checkpoint the last
pipeline stage's here (checkpoint_mathlm_grpo.pt > checkpoint_mathlm.pt > checkpoint.pt); the eval_*.json beside the
checkpoint, for the accuracy line. Writes nothing.

The page says which model it serves (file, stage, parameters, context, measured accuracy). Two tabs
share the sampling sliders: Q/A (one question, the training format "Q: ...\\nA:") and Chat
(multi-turn, the role-token format of mathlm/format.py). Both show the model's text literally, as
a terminal would. While an answer streams its button is busy and Stop ends it; an answer cut by
max new tokens or by the context gets a note saying so. With no usable checkpoint the page still
starts and says what is wrong and how to make one; so does bad input (empty, too long, not valid
text): the message lands in the page and the server keeps serving. One model, one CPU/GPU:
requests are queued and answered one at a time (default_concurrency_limit=1), never run together.

API (gradio_client): /answer(question, temperature, top_k, top_p, max_tokens) -> str
                     /chat(message, history, temperature, top_k, top_p, max_tokens) -> (history, message box)
/chat's history holds HTML-escaped text (html.unescape it): that is how the Chatbot shows it literally.
"""
import glob
import html
import json
import os
import re
from dataclasses import dataclass

from mathlm.common import MathlmError, check_range, cli, die, parse_config
from mathlm.infer.inference import (HOW_TO_GET_ONE, default_checkpoint, load_model, make_decoder, stream_chat,
                                    stream_text)


@dataclass
class Config:
    """Local Gradio demo: Q/A and Chat tabs, answers streamed."""
    checkpoint: str = ""               # .pt or exported folder; "" = the last pipeline stage's here (GRPO > SFT > base)
    tokenizer: str = "math_tokenizer"  # for a .pt checkpoint
    device: str = "auto"               # auto|cuda|mps|cpu
    dtype: str = "fp32"                # fp32 (as the evals score)|bf16|auto (bf16 where native: faster, answers differ sometimes)
    speculate: str = "lookup"          # off|lookup|draft: exact speculative decoding (mathlm/infer/speculative.py)
    spec_k: int = 0                    # tokens drafted per round; 0 = auto (4 lookup, 8 draft: speculative.AUTO_K)
    draft_checkpoint: str = ""         # a smaller model on the same tokenizer, for --speculate draft
    port: int = 7860                   # the page is served on host:port
    host: str = "127.0.0.1"            # 0.0.0.0 to serve your network (HF Spaces sets it itself)
    share: bool = False                # a public *.gradio.live link (needs internet)


EXAMPLES = [
    "What is the derivative of x^5 + 3x^2 - 7x?",
    "Compute the integral of 2x cos(x^2) dx.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "A store sells pencils at 3 for $0.75. How much do 12 pencils cost?",
    "What is the gradient of L(w) = (w*x - y)^2 with respect to w?",
    "The softmax of the logits [0, ln 3] is what?",
]
STAGES = {"pretrain": "base (pretrained only)", "sft": "SFT (fine-tuned on Q/A)",
          "grpo": "GRPO (SFT, then RL on checked answers)", "export": "exported folder"}
SMALL = 10e6  # parameters; below this the tiny runs score a few percent (docs/BENCHMARKS.md)
# Gradio shows a Chatbot message with render_markdown=False as `white-space: pre-line`, which keeps
# newlines but merges runs of spaces; the model's spacing is part of what it said
CSS = "#chat .message-markdown-disabled { white-space: pre-wrap; }"
# under a refused question the answer slot holds "error: ..." in the answer's own style: this note
# (shown where the cut-off note goes) says at a glance that it is not something the model said
ERROR_NOTE = "⛔ **Not an answer:** the request was refused — the line above says why; nothing was generated."


# -----------------------------------------------------------------------------
# what the page says about the model

def checkpoint_stage(path):
    """The `stage` a trainer wrote into checkpoint `path` ("pretrain" | "sft" | "grpo"), or "export"
    for a folder. load_model returns only (model, tok), so the file is opened again: mmap reads
    the small dict, not the weights."""
    if os.path.isdir(path):
        return "export"
    import torch
    try:
        return str(torch.load(path, map_location="cpu", mmap=True, weights_only=True).get("stage", "?"))
    except Exception:  # load_model already read it, so this cannot fail for a real file; say "?" anyway
        return "?"


def _pct(s):
    return f"{100 * s['accuracy']:.1f}% ({s['correct']}/{s['n']})"


def measured_accuracy(path):
    """Lines like "calculus 2.0% (2/100)" from the eval_*.json beside checkpoint `path` that scored
    this very file (by name), and a warning for each one older than the checkpoint: an eval
    written before the checkpoint scored weights that are no longer there."""
    folder, name = os.path.split(os.path.abspath(path))
    lines = []
    for f in sorted(glob.glob(os.path.join(folder, "eval_*.json"))):
        try:
            with open(f) as fh:
                s = json.load(fh)
        except (OSError, ValueError):  # half-written or not ours: no line rather than a crash
            continue
        scored = [os.path.basename(c) for c in s.get("checkpoints") or [s.get("checkpoint") or ""]]
        if name not in scored:
            continue
        src = os.path.basename(f)
        if os.path.getmtime(f) < os.path.getmtime(path):
            lines.append(f"`{src}` is older than the checkpoint, so its numbers are not shown — rerun the eval")
        elif s.get("task") == "math":
            side = "AB"[scored.index(name)] if len(scored) == 2 else None  # eval.math --compare A B
            doms = [f"{d} {_pct(v[side] if side else v)}" for d, v in (s.get("domains") or {}).items()]
            lines.append(f"{' · '.join(doms)} (held-out test questions; `{src}`)")
        elif s.get("task") == "gsm8k":
            lines.append(f"GSM8K test {_pct(s)} ({s.get('shots', 0)}-shot; `{src}`)")
    return lines


def describe(path, model, tok=None):
    """The page's Markdown lines about the served model. File names go in `code` spans: the
    page's own text is Markdown, and `_` in checkpoint_mathlm_grpo.pt would otherwise italicise."""
    n = model.num_params()
    stage = checkpoint_stage(path)
    lines = [f"**Model:** `{os.path.basename(os.path.abspath(path))}` in `{os.path.dirname(os.path.abspath(path))}` · "
             f"stage {STAGES.get(stage, stage)} · {n / 1e6:.2f}M parameters · context {model.config.block_size} "
             "tokens (question + answer)"]
    acc = measured_accuracy(path) if not os.path.isdir(path) else []
    lines.append("**Measured accuracy** (greedy): " + ("; ".join(acc) if acc else
                 "not measured: no eval_*.json for this checkpoint beside it (`python -m mathlm.eval.math`)"))
    if tok is not None and tok.calc_ids is not None:  # inference.stream_ids runs it (tools auto) and shows calls
        lines.append("**Calculator:** on — the model asks, mathlm's calculator answers; a call is shown as "
                     "`[calc 48/2 = 24]`")
    if n < SMALL:
        lines.append(f"A model of {n / 1e6:.2f}M parameters gets most answers wrong: it has learned the format "
                     "of an answer more than the maths. That is the model, not the demo.")
    return lines


# -----------------------------------------------------------------------------
# the page

def _text(content):
    """A Chatbot message's content (str, or Gradio's list of {"type": "text", "text": ...}) -> str."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, (list, tuple)):
        return "".join(_text(c) for c in content)
    return ""


def pairs(messages):
    """Gradio messages [{"role", "content"}, ...] -> [(question, answer), ...] (complete turns only)."""
    out, q = [], None
    for m in messages or []:
        role, text = m.get("role"), html.unescape(_text(m.get("content")))  # undo shown()
        if role == "user":
            q = text
        elif role == "assistant" and q is not None:
            if not text.startswith("error:"):  # our own error notes are not conversation
                out.append((q, text))
            q = None
    return out


def check_text(text, what):
    """The user's text, or ValueError with the page's one-line message. A browser can send a lone
    UTF-16 surrogate (half of an emoji, cut by a paste); it is not text, and the tokenizer would
    raise TypeError on it, which Gradio shows as a bare error."""
    if not isinstance(text, str):
        raise ValueError(f"the {what} is not text — type a question")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"the {what} holds a broken character (U+{ord(text[e.start]):04X} at position {e.start}, "
                         "half of a pair) — retype it") from None
    return text


def sendable(text):
    """Text that can go back to the browser: a lone surrogate becomes U+FFFD. It cannot be
    encoded as JSON, which is how Gradio came to answer {"error": null}."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text) if isinstance(text, str) else ""


def clean(value):
    """A chat history (lists and dicts of text) with sendable() text. The page's own history never
    holds a lone surrogate (shown() replaced it), but one sent through the API can."""
    if isinstance(value, str):
        return sendable(value)
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def shown(text):
    """Text as the Chatbot must get it to show it literally. Even with render_markdown=False it
    parses every message as HTML: "x<y and y>z" would lose "<y and y>" as a tag and `<b>` would
    make bold, so &, < and > are escaped (pairs() unescapes)."""
    return html.escape(sendable(text), quote=False)


def accumulate(pieces, done):
    """The text so far after each piece of a stream_text/stream_chat generator; its return value
    (why it ended) goes to done["finish"], since a for loop drops it."""
    text = ""
    while True:
        try:
            text += next(pieces)
        except StopIteration as s:
            done["finish"] = s.value
            return
        yield text


def cut_note(finish, max_tokens, block_size):
    """Why an answer ended, when the model did not end it itself (inference.stream_ids' return value)."""
    if finish == "length":
        return f"*(cut at max new tokens = {max_tokens}; raise the slider to read on)*"
    if finish == "context":
        return f"*(cut at the end of the model's context: {block_size} tokens, question included)*"
    return ""


def build_demo(model=None, tok=None, problem=None, title="mathlm", about=(), decoder=None):
    """The Gradio Blocks app around a loaded (model, tok); with model None every answer is `problem`.
    `about`: Markdown lines describing the model, shown under the title. decoder: a
    speculative.Decoder for every answer (None = GPT.generate)."""
    import gradio as gr

    block_size = model.config.block_size if model is not None else 0
    # a prompt is at least one token, so the context leaves room for block_size - 1 new ones at most
    max_new = block_size - 1 if model is not None else 512

    def gen_args(temperature, top_k, top_p, max_tokens):
        return dict(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                    max_new_tokens=int(max_tokens), decoder=decoder)

    def answer(question, temperature, top_k, top_p, max_tokens):
        """Yields (answer box, note for after): the box streams; the note is shown when it ends."""
        if model is None:
            yield f"error: {problem}", ERROR_NOTE
            return
        try:
            pieces = stream_text(model, tok, check_text(question or "", "question"),
                                 **gen_args(temperature, top_k, top_p, max_tokens))
            text, done = "", {}
            for text in accumulate(pieces, done):
                yield text.strip(), ""
        except (ValueError, MathlmError) as e:  # empty, too long, not text: said in the page, the server goes on
            yield f"error: {e}", ERROR_NOTE
            return
        yield text.strip() or "(the model gave an empty answer)", cut_note(done["finish"], int(max_tokens), block_size)

    def chat(message, history, temperature, top_k, top_p, max_tokens):
        """Yields (chat history, message box, note for after)."""
        raw = list(history or [])
        history = clean(raw)  # what goes back must encode as JSON, or Gradio answers {"error": null}
        message = message or ""
        asked = [{"role": "user", "content": shown(message)}] if message.strip() else []
        if model is None:
            yield (history + asked + [{"role": "assistant", "content": shown(f"error: {problem}")}],
                   sendable(message), ERROR_NOTE)
            return
        try:
            check_text(message, "message")
            if history != raw:
                raise ValueError("the conversation so far holds a broken character (half of a pair) — "
                                 "clear the chat and ask again")
            if not message.strip():
                raise ValueError("the message is empty — type a question")
            turn = history + asked
            pieces = stream_chat(model, tok, pairs(history), message, **gen_args(temperature, top_k, top_p, max_tokens))
            text, done = "", {}
            for text in accumulate(pieces, done):
                yield turn + [{"role": "assistant", "content": shown(text.strip())}], "", ""
        except (ValueError, MathlmError) as e:
            # the typed message stays in its box, so a too-long one can be shortened, not retyped
            yield (history + asked + [{"role": "assistant", "content": shown(f"error: {e}")}], sendable(message),
                   ERROR_NOTE)
            return
        yield (turn + [{"role": "assistant", "content": shown(text.strip()) or "(empty answer)"}], "",
               cut_note(done["finish"], int(max_tokens), block_size))

    def busy():  # (button, Stop, note): the button cannot be pressed again while its answer streams
        return gr.update(interactive=False), gr.update(interactive=True), ""

    def idle(note):  # with no model (an Enter in the box still asks) the button stays off
        return gr.update(interactive=model is not None), gr.update(interactive=False), note

    def stopped():
        return gr.update(interactive=model is not None), gr.update(interactive=False), "*(stopped)*", "*(stopped)*"

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nA small math language model trained from scratch "
                    "(mathlm). Answers stream in as they are sampled; "
                    "temperature 0 is greedy, the setting the evaluations use.")
        if model is None:
            gr.Markdown(f"**No model loaded:** {problem}")
        else:
            gr.Markdown("  \n".join(about))
        with gr.Row():
            # min_width: on a phone the sliders stack, rather than wrap "top-k (0 = off)" a word a line
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature", min_width=240)
            top_k = gr.Slider(0, 200, value=0, step=1, label="top-k (0 = off)", min_width=240)
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p (1 = off)", min_width=240)
            max_tokens = gr.Slider(1, max_new, value=min(256, max_new), step=1, elem_id="max_tokens", min_width=240,
                                   label=f"max new tokens (≤ {max_new})" if model else "max new tokens")
        sliders = [temperature, top_k, top_p, max_tokens]
        # The model's text is shown literally in both tabs, as plain text: its maths is ASCII
        # (x^2, 2*x, d/dx), so Markdown would eat `*` pairs as italics and make `#### 5` a heading,
        # and `$...$` LaTeX would turn GSM8K's money ("3 for $0.75 ... $3") into formulas.
        with gr.Tab("Q/A"):
            question = gr.Textbox(label="Question (Shift+Enter submits)", lines=3,
                                  placeholder="What is the derivative of x^5?", elem_id="question")
            with gr.Row():
                # without a model every press would repeat the message above: the buttons stay off
                ask = gr.Button("Answer", variant="primary", scale=3, elem_id="ask", interactive=model is not None)
                stop_qa = gr.Button("Stop", variant="stop", interactive=False, scale=1, elem_id="stop_qa")
            output = gr.Textbox(label="Answer", lines=8, interactive=False, elem_id="answer")
            note_qa = gr.Markdown(elem_id="note_qa")
            after_qa = gr.State("")  # the note, held until the answer is done
            gr.Examples(EXAMPLES, inputs=question)
        with gr.Tab("Chat"):
            # no copy/share buttons: they would copy the escaped text (shown()); the trash icon clears
            chatbot = gr.Chatbot(label="Chat", height=420, resizable=True, render_markdown=False, latex_delimiters=[],
                                 sanitize_html=True, allow_tags=False, feedback_options=None, buttons=[],
                                 elem_id="chat")
            message = gr.Textbox(label="Message (Enter sends)", placeholder="Ask, then ask a follow-up",
                                 elem_id="message")
            with gr.Row():
                send = gr.Button("Send", variant="primary", scale=3, elem_id="send", interactive=model is not None)
                stop_chat = gr.Button("Stop", variant="stop", interactive=False, scale=1, elem_id="stop_chat")
            note_chat = gr.Markdown(elem_id="note_chat")
            after_chat = gr.State("")
            gr.Examples(EXAMPLES, inputs=message)

        # each trigger: busy the button -> stream the answer -> free the button and show the note;
        # Stop cancels the stream (Gradio stops pulling the generator) and frees the button itself.
        # The button steps skip the queue: they touch no model and must not wait behind an answer
        step = dict(api_visibility="private", queue=False, show_progress="hidden")
        qa_runs, chat_runs = [], []
        for trigger, api in ((ask.click, "answer"), (question.submit, None)):
            api = dict(api_name=api) if api else dict(api_visibility="private")
            r = trigger(busy, None, [ask, stop_qa, note_qa], **step).then(
                answer, [question] + sliders, [output, after_qa], **api)
            r.then(idle, after_qa, [ask, stop_qa, note_qa], **step)
            qa_runs.append(r)
        for trigger, api in ((send.click, "chat"), (message.submit, None)):
            api = dict(api_name=api) if api else dict(api_visibility="private")
            r = trigger(busy, None, [send, stop_chat, note_chat], **step).then(
                chat, [message, chatbot] + sliders, [chatbot, message, after_chat], **api)
            r.then(idle, after_chat, [send, stop_chat, note_chat], **step)
            chat_runs.append(r)
        stop_qa.click(stopped, None, [ask, stop_qa, note_qa, after_qa], cancels=qa_runs, **step)
        stop_chat.click(stopped, None, [send, stop_chat, note_chat, after_chat], cancels=chat_runs, **step)
        # in the browser, no round trip: a reply to it could land after the next message is typed
        chatbot.clear(None, None, [message, note_chat], js="() => ['', '']", api_visibility="private")
        # a new question (typed or an example) makes the old answer stale: it goes, in the browser
        question.change(None, None, [output, note_qa], js="() => ['', '']", api_visibility="private")
    # one model: queue requests and serve them one at a time; max_size bounds the waiting line
    demo.queue(default_concurrency_limit=1, max_size=128)
    return demo


def make_demo(checkpoint="", tokenizer="math_tokenizer", device="auto", title="mathlm", dtype="fp32",
              speculate="off", spec_k=0, draft_checkpoint=""):
    """Load the model if it can be loaded, else keep the reason for the page; never raises on bad files.
    dtype / speculate / spec_k / draft_checkpoint: as inference.py's flags."""
    path, why = (checkpoint, "") if checkpoint else default_checkpoint()
    try:
        if not checkpoint and path:
            print(f"using {path} ({why})")
        model, tok = load_model(path, tokenizer, device, dtype)
        decoder = make_decoder(model, tok, speculate, spec_k, draft_checkpoint, tokenizer, device, dtype)
        return build_demo(model, tok, None, title, describe(path, model, tok), decoder)
    except MathlmError as e:  # load_model's one-line errors: missing, corrupt, wrong architecture
        problem = str(e)
        if "not found" in problem and HOW_TO_GET_ONE not in problem:
            problem += f" — {HOW_TO_GET_ONE}"
        problem += " (then restart the demo: it loads its model once, at start)"
        print(f"starting without a model: {problem}")
        return build_demo(None, None, problem, title)


def serve(demo, host, port, share):
    """demo.launch, with a busy port said in one line naming --port (Gradio's own message names
    launch()'s `server_port`, which a command-line user cannot pass), then block until Ctrl-C."""
    try:
        demo.launch(server_name=host, server_port=port, share=share, css=CSS, quiet=True, prevent_thread_lock=True)
    except OSError as e:
        port = port or os.environ.get("GRADIO_SERVER_PORT", 7860)
        if "port" in str(e).lower():
            die(f"port {port} is busy (another demo?) — pass --port N with a free one, e.g. --port {int(port) + 1}")
        die(f"cannot serve on {host or '127.0.0.1'}:{port} ({str(e).splitlines()[0][:120]}) — check --host")
    print(f"serving {demo.local_url} — open it in a browser; Ctrl-C stops"
          + (f"; public link {demo.share_url}" if demo.share_url else "; --share gives a public link"))
    demo.block_thread()


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    check_range(cfg, "port", lo=1, hi=65535)
    serve(make_demo(cfg.checkpoint, cfg.tokenizer, cfg.device, dtype=cfg.dtype, speculate=cfg.speculate,
                    spec_k=cfg.spec_k, draft_checkpoint=cfg.draft_checkpoint), cfg.host, cfg.port, cfg.share)


if __name__ == "__main__":
    main()
