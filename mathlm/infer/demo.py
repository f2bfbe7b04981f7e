"""A local web demo: ask mathlm questions in the browser, answers streamed token by token.

    python -m mathlm.infer.demo                                  # http://127.0.0.1:7860
    python -m mathlm.infer.demo --checkpoint out/mathlm-40m --port 7861 --share
Reads: a checkpoint .pt (+ --tokenizer) or an exported folder; without --checkpoint the newest of
checkpoint_mathlm_grpo.pt, checkpoint_mathlm.pt, checkpoint.pt here. Writes nothing.

Two tabs share the sampling sliders: Q/A (one question, the training format "Q: ...\\nA:") and
Chat (multi-turn, the role-token format of mathlm/format.py). With no usable checkpoint the page
still starts and says what is wrong and how to make one; so does bad input (an empty or too-long
question) — the message lands in the page and the server keeps serving. One model, one CPU/GPU:
requests are queued and answered one at a time (default_concurrency_limit=1), never run together.

API (gradio_client): /answer(question, temperature, top_k, top_p, max_tokens) -> str
                     /chat(message, history, temperature, top_k, top_p, max_tokens) -> history
"""
from dataclasses import dataclass

from mathlm.common import MathlmError, cli, parse_config
from mathlm.infer.inference import HOW_TO_GET_ONE, load_model, stream_chat, stream_text


@dataclass
class Config:
    """Local Gradio demo: Q/A and Chat tabs, answers streamed."""
    checkpoint: str = ""               # .pt or exported folder; "" = newest default checkpoint here
    tokenizer: str = "math_tokenizer"  # for a .pt checkpoint
    device: str = "auto"               # auto|cuda|mps|cpu
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
        role, text = m.get("role"), _text(m.get("content"))
        if role == "user":
            q = text
        elif role == "assistant" and q is not None:
            if not text.startswith("error:"):  # our own error notes are not conversation
                out.append((q, text))
            q = None
    return out


def build_demo(model=None, tok=None, problem=None, title="mathlm"):
    """The Gradio Blocks app around a loaded (model, tok); with model None every answer is `problem`."""
    import gradio as gr

    def gen_args(temperature, top_k, top_p, max_tokens):
        return dict(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                    max_new_tokens=int(max_tokens))

    def answer(question, temperature, top_k, top_p, max_tokens):
        if model is None:
            yield f"error: {problem}"
            return
        text = ""
        try:
            for piece in stream_text(model, tok, question or "", **gen_args(temperature, top_k, top_p, max_tokens)):
                text += piece
                yield text.strip()
        except ValueError as e:  # empty or too long: the message goes to the page, the server goes on
            yield f"error: {e}"
            return
        if not text.strip():
            yield "(the model gave an empty answer)"

    def chat(message, history, temperature, top_k, top_p, max_tokens):
        history = list(history or [])
        history.append({"role": "user", "content": message or ""})
        if model is None:
            yield history + [{"role": "assistant", "content": f"error: {problem}"}], ""
            return
        text = ""
        try:
            for piece in stream_chat(model, tok, pairs(history[:-1]), message or "",
                                     **gen_args(temperature, top_k, top_p, max_tokens)):
                text += piece
                yield history + [{"role": "assistant", "content": text.strip()}], ""
        except ValueError as e:
            yield history + [{"role": "assistant", "content": f"error: {e}"}], ""
            return
        yield history + [{"role": "assistant", "content": text.strip() or "(empty answer)"}], ""

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nA small math language model trained from scratch "
                    "(mathlm). Answers stream in as they are sampled; "
                    "temperature 0 is greedy, the setting the evaluations use.")
        if model is None:
            gr.Markdown(f"**No model loaded:** {problem}")
        with gr.Row():
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature")
            top_k = gr.Slider(0, 200, value=0, step=1, label="top-k (0 = off)")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p (1 = off)")
            max_tokens = gr.Slider(1, 512, value=256, step=1, label="max new tokens")
        sliders = [temperature, top_k, top_p, max_tokens]
        with gr.Tab("Q/A"):
            question = gr.Textbox(label="Question", lines=3, placeholder="What is the derivative of x^5?")
            ask = gr.Button("Answer", variant="primary")
            output = gr.Textbox(label="Answer", lines=8, interactive=False)
            gr.Examples(EXAMPLES, inputs=question)
            ask.click(answer, [question] + sliders, output, api_name="answer")
            question.submit(answer, [question] + sliders, output, api_visibility="private")
        with gr.Tab("Chat"):
            chatbot = gr.Chatbot(label="Chat", height=420)
            message = gr.Textbox(label="Message", placeholder="Ask, then ask a follow-up")
            with gr.Row():
                send = gr.Button("Send", variant="primary")
                clear = gr.Button("Clear")
            gr.Examples(EXAMPLES, inputs=message)
            send.click(chat, [message, chatbot] + sliders, [chatbot, message], api_name="chat")
            message.submit(chat, [message, chatbot] + sliders, [chatbot, message], api_visibility="private")
            clear.click(lambda: ([], ""), None, [chatbot, message], api_visibility="private")
    # one model: queue requests and serve them one at a time; max_size bounds the waiting line
    demo.queue(default_concurrency_limit=1, max_size=128)
    return demo


def make_demo(checkpoint="", tokenizer="math_tokenizer", device="auto", title="mathlm"):
    """Load the model if it can be loaded, else keep the reason for the page; never raises on bad files."""
    try:
        model, tok = load_model(checkpoint or None, tokenizer, device)
        problem = None
    except MathlmError as e:  # load_model's one-line errors: missing, corrupt, wrong architecture
        model, tok, problem = None, None, str(e)
        if "not found" in problem and HOW_TO_GET_ONE not in problem:
            problem += f" — {HOW_TO_GET_ONE}"
        print(f"starting without a model: {problem}")
    return build_demo(model, tok, problem, title)


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    demo = make_demo(cfg.checkpoint, cfg.tokenizer, cfg.device)
    demo.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share)


if __name__ == "__main__":
    main()
