"""The Gradio demo and the Spaces app, launched on free localhost ports and driven through
gradio_client: answers equal the library's, chat carries history, tokens stream, concurrent
requests queue, and bad input or a missing model becomes a message in the page. Plus what the
page says about the model, why an answer ended, and the advice messages. (In a real browser:
tests/test_demo_browser.py.)"""
import html
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from mathlm.infer.export import export_folder
from mathlm.infer.inference import chat_response, generate_text, stream_text
from tests.test_infer import make_tiny, one_thread  # noqa: F401  (one_thread: autouse fixture)

pytestmark = pytest.mark.slow  # importing gradio alone takes ~10 s on 2 cores
ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost"}
GEN = (0.0, 0, 1.0, 24)  # temperature, top_k, top_p, max tokens: greedy, comparable with the library


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def env():
    old = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def launch(demo):
    from gradio_client import Client
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)


@pytest.fixture(scope="module")
def served(env, tmp_path_factory):
    from mathlm.infer.demo import make_demo
    d = str(tmp_path_factory.mktemp("demo"))
    path, tok_dir, model, tok = make_tiny(d)
    demo = make_demo(path, tok_dir, device="cpu")
    yield launch(demo), model, tok, d
    demo.close()


def last_reply(history):
    from mathlm.infer.demo import _text
    assert history[-1]["role"] == "assistant"
    return html.unescape(_text(history[-1]["content"]))  # the Chatbot gets escaped text (demo.shown)


def test_answer_endpoint(served):
    client, model, tok, _ = served
    for q in ["What is 2+3?", "d/dx x^2?"]:
        assert client.predict(q, *GEN, api_name="/answer") == generate_text(model, tok, q, max_new_tokens=24)


def test_answer_streams_into_the_page(served):
    client, model, tok, _ = served
    job = client.submit("What is 2+3?", *GEN, api_name="/answer")
    job.result(timeout=60)
    outs = job.outputs()
    assert len(outs) > 3  # one update per decoded piece, not one at the end
    assert all(b.startswith(a) for a, b in zip(outs, outs[1:]))
    assert outs[-1] == generate_text(model, tok, "What is 2+3?", max_new_tokens=24)


def test_chat_endpoint_keeps_history(served):
    client, model, tok, _ = served
    h1, box = client.predict("What is 2+3?", [], *GEN, api_name="/chat")
    a1 = chat_response(model, tok, [], "What is 2+3?", max_new_tokens=24)
    assert box == "" and last_reply(h1) == a1 and len(h1) == 2
    h2, _ = client.predict("and x^2?", h1, *GEN, api_name="/chat")
    assert len(h2) == 4
    assert last_reply(h2) == chat_response(model, tok, [("What is 2+3?", a1)], "and x^2?", max_new_tokens=24)
    assert last_reply(h2) != chat_response(model, tok, [], "and x^2?", max_new_tokens=24)


def test_concurrent_requests_are_queued(served):
    client, model, tok, _ = served
    qs = [f"What is {i} + {i}?" for i in range(10)]
    with ThreadPoolExecutor(10) as ex:
        got = list(ex.map(lambda q: client.predict(q, *GEN, api_name="/answer"), qs))
    assert got == [generate_text(model, tok, q, max_new_tokens=24) for q in qs]


def test_a_refused_request_is_marked_as_not_an_answer(env, tmp_path):
    """An error sat in the answer slot styled as an answer: the note under it now says it is not one,
    in both tabs, with a model and without; a real answer gets no such note."""
    from mathlm.infer.demo import ERROR_NOTE, build_demo
    _, _, model, tok = make_tiny(str(tmp_path))
    for demo in (build_demo(model, tok), build_demo(None, None, "no checkpoint here")):
        fns = {f.fn.__name__: f.fn for f in demo.fns.values() if f.fn}
        text, note = list(fns["answer"]("   ", *GEN))[-1]
        assert text.startswith("error:") and note == ERROR_NOTE
        *_, note = list(fns["chat"]("", [], *GEN))[-1]
        assert note == ERROR_NOTE
    fns = {f.fn.__name__: f.fn for f in build_demo(model, tok).fns.values() if f.fn}
    assert list(fns["answer"]("What is 2+3?", *GEN))[-1][1] != ERROR_NOTE


def test_bad_input_is_a_message_and_the_server_goes_on(served):
    client, model, tok, _ = served
    assert "empty" in client.predict("   ", *GEN, api_name="/answer")
    long = client.predict("x " * 400, *GEN, api_name="/answer")
    assert long.startswith("error:") and "context is 128" in long
    h, _ = client.predict("", [], *GEN, api_name="/chat")
    assert last_reply(h).startswith("error:") and "empty" in last_reply(h)
    assert client.predict("What is 2+3?", *GEN, api_name="/answer") == \
        generate_text(model, tok, "What is 2+3?", max_new_tokens=24)


def test_starts_without_a_checkpoint(env, tmp_path, monkeypatch):
    from mathlm.infer.demo import make_demo
    monkeypatch.chdir(tmp_path)  # no checkpoint*.pt here
    demo = make_demo("", device="cpu")
    try:
        client = launch(demo)
        msg = client.predict("What is 2+3?", *GEN, api_name="/answer")
        # the whole pipeline: pretrain alone fails in an empty folder (no tokenizer, no data)
        assert msg.startswith("error:") and "python -m mathlm.pipeline --preset tiny" in msg
        assert "restart the demo" in msg
        h, _ = client.predict("hi", [], *GEN, api_name="/chat")
        assert "mathlm.pipeline --preset tiny" in last_reply(h)
    finally:
        demo.close()


def test_without_a_model_the_buttons_are_off(env):
    """The page says why there is no model; an Answer or Send press would only repeat it."""
    from mathlm.infer.demo import build_demo
    props = {c["props"].get("elem_id"): c["props"] for c in build_demo(None, None, "no model").config["components"]}
    assert [props[b]["interactive"] for b in ("ask", "send", "stop_qa", "stop_chat")] == [False] * 4


def test_corrupt_checkpoint_is_shown_in_the_page(env, tmp_path):
    from mathlm.infer.demo import make_demo
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    demo = make_demo(str(bad), device="cpu")
    try:
        msg = launch(demo).predict("What is 2+3?", *GEN, api_name="/answer")
        assert msg.startswith("error:") and "corrupt" in msg
    finally:
        demo.close()


def test_spaces_app_serves_an_exported_folder(env, served, tmp_path):
    from mathlm.infer.app import make_app, resolve
    _, model, tok, d = served
    export_folder(torch.load(os.path.join(d, "checkpoint.pt"), weights_only=True), tok, str(tmp_path / "hf"))
    app = make_app(model_dir=str(tmp_path / "hf"), device="cpu")
    try:
        client = launch(app)
        assert client.predict("What is 2+3?", *GEN, api_name="/answer") == \
            generate_text(model, tok, "What is 2+3?", max_new_tokens=24)
    finally:
        app.close()
    # offline, a Hub repo id cannot be fetched: the reason is kept for the page, nothing raises
    path, problem = resolve(repo_id="someone/not-downloadable")
    assert path is None and "could not download someone/not-downloadable" in problem


def test_chat_history_is_escaped_for_the_page_and_read_back_exactly(served):
    """The Chatbot parses messages as HTML even with Markdown off: "x<y and y>z" would lose a tag's
    worth of text. The page gets escaped text; the model gets back exactly what was said."""
    from mathlm.infer.demo import pairs
    client, model, tok, _ = served
    msg = "is x<y and y>z? <b>&amp;</b> *a*"
    h, _ = client.predict(msg, [], *GEN, api_name="/chat")
    assert h[0]["content"][0]["text"] == html.escape(msg, quote=False)
    assert pairs(h) == [(msg, chat_response(model, tok, [], msg, max_new_tokens=24))]


def test_checkpoint_without_its_tokenizer_says_which_to_pass(env, served, tmp_path):
    """A checkpoint copied without math_tokenizer/: training a new tokenizer would give another
    hash, so the advice is the run folder's tokenizer, not scripts/train_tokenizer.py."""
    from mathlm.infer.demo import make_demo
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(open(os.path.join(served[3], "checkpoint.pt"), "rb").read())
    demo = make_demo(str(ckpt), str(tmp_path / "math_tokenizer"), device="cpu")
    try:
        msg = launch(demo).predict("What is 2+3?", *GEN, api_name="/answer")
        assert msg.startswith("error:") and "--tokenizer <its run folder>/math_tokenizer" in msg, msg
        assert "train_tokenizer" not in msg
    finally:
        demo.close()


def test_a_busy_port_is_one_line_naming_the_flag(env, served):
    from mathlm.infer.demo import main
    _, _, _, d = served
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SystemExit) as e:
            main(["--checkpoint", os.path.join(d, "checkpoint.pt"), "--tokenizer", os.path.join(d, "math_tokenizer"),
                  "--device", "cpu", "--port", str(port)])
    assert e.value.code == f"error: port {port} is busy (another demo?) — pass --port N with a free one, " \
                           f"e.g. --port {port + 1}"


@pytest.mark.parametrize("text,ok", [("d/dx x^2?", True), ("emoji \U0001F600 ok", True), ("half \ud83d", False),
                                     ("\udc00", False)])
def test_check_text_refuses_lone_surrogates(text, ok):
    from mathlm.infer.demo import check_text, sendable
    if ok:
        assert check_text(text, "question") == text
    else:
        with pytest.raises(ValueError, match="broken character"):
            check_text(text, "question")
        assert "\ufffd" in sendable(text) and sendable(text).encode("utf-8")  # JSON-safe now


def test_a_lone_surrogate_anywhere_gets_the_one_line_message(served):
    """gradio_client cannot send a lone surrogate (it encodes UTF-8), but a JSON body can ("\\ud800"), and
    a browser can. In the question, the message or the history sent back, it gets the page's message,
    never Gradio's bare {"error": null}, and the history comes back with U+FFFD in its place."""
    import urllib.request
    client, _, _, _ = served
    base = client.src.rstrip("/") + "/gradio_api/call/"

    def call(api, *data):
        req = urllib.request.Request(base + api, json.dumps({"data": list(data) + list(GEN)}).encode(),
                                     {"Content-Type": "application/json"})
        event = json.load(urllib.request.urlopen(req))["event_id"]
        lines = urllib.request.urlopen(base + api + "/" + event).read().decode().splitlines()
        assert "event: complete" in lines, lines
        return json.loads(lines[lines.index("event: complete") + 1].removeprefix("data: "))

    assert call("answer", "a\ud800b")[0].startswith("error: the question holds a broken character (U+D800")
    h, box, _ = call("chat", "h\udc00i", [])
    assert box == "h\ufffdi" and "message holds a broken character (U+DC00" in last_reply(h)
    said = [{"role": r, "content": [{"type": "text", "text": t}]} for r, t in (("user", "x\ud800"), ("assistant", "y"))]
    h, box, _ = call("chat", "hi", said)
    assert last_reply(h).startswith("error: the conversation so far holds a broken character") and box == "hi"
    assert html.unescape(h[0]["content"][0]["text"]) == "x\ufffd"


def test_stream_text_says_why_the_answer_ended(served):
    """stream_ids' return value, which the page turns into its note: "length" when max_new_tokens
    ran out, "context" when prompt + answer filled block_size. make_tiny's model never emits a
    special token, so every answer here runs to a limit."""
    from mathlm.infer.demo import accumulate, cut_note
    _, model, tok, _ = served
    for n, want in [(5, "length"), (500, "context")]:
        done = {}
        text = list(accumulate(stream_text(model, tok, "What is 2+3?", max_new_tokens=n), done))[-1]
        assert done["finish"] == want and text.strip() == generate_text(model, tok, "What is 2+3?", max_new_tokens=n)
    assert cut_note("length", 5, 128) == "*(cut at max new tokens = 5; raise the slider to read on)*"
    assert "context: 128 tokens" in cut_note("context", 500, 128) and cut_note("stop", 5, 128) == ""


def _eval(folder, name, summary, age=0.0):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        json.dump(summary, f)
    t = time.time() + age
    os.utime(path, (t, t))


def test_the_page_describes_the_model_and_its_measured_accuracy(served, tmp_path):
    """Stage, size and context from the checkpoint; accuracy from the eval JSONs beside it that
    scored this file and are newer than it; an older one is named, not quoted."""
    from mathlm.infer.demo import describe
    _, model, _, d = served
    ckpt = tmp_path / "checkpoint_mathlm.pt"
    ckpt.write_bytes(open(os.path.join(d, "checkpoint.pt"), "rb").read())
    dom = {"n": 50, "correct": 4, "accuracy": 0.08}
    _eval(tmp_path, "eval_sft.json", {"task": "math", "checkpoints": ["checkpoint_mathlm.pt"],
                                      "domains": {"gsm8k": dom, "calculus": {"n": 50, "correct": 10, "accuracy": 0.2}}}, 5)
    _eval(tmp_path, "eval_base.json", {"task": "math", "checkpoints": ["checkpoint.pt"], "domains": {"gsm8k": dom}}, 5)
    _eval(tmp_path, "eval_math.json", {"task": "math", "checkpoints": ["checkpoint.pt", "checkpoint_mathlm.pt"],
                                       "domains": {"ml_math": {"A": dom, "B": {"n": 20, "correct": 1, "accuracy": 0.05}}}}, 5)
    _eval(tmp_path, "eval_gsm8k.json", {"task": "gsm8k", "checkpoint": "checkpoint_mathlm.pt", "n": 20, "correct": 2,
                                        "accuracy": 0.1, "shots": 2}, -3600)
    page = "\n".join(describe(str(ckpt), model))
    assert "`checkpoint_mathlm.pt`" in page and "stage SFT (fine-tuned on Q/A)" in page
    assert f"{model.num_params() / 1e6:.2f}M parameters" in page and "context 128 tokens" in page
    assert "gsm8k 8.0% (4/50) · calculus 20.0% (10/50)" in page and "`eval_sft.json`" in page
    assert "ml_math 5.0% (1/20)" in page  # the B side of --compare A B
    assert "eval_base.json" not in page  # it scored another checkpoint
    assert "`eval_gsm8k.json` is older than the checkpoint" in page and "10.0%" not in page
    assert "gets most answers wrong" in page  # 0.1M parameters
    os.remove(tmp_path / "eval_sft.json"), os.remove(tmp_path / "eval_math.json"), os.remove(tmp_path / "eval_gsm8k.json")
    assert "not measured: no eval_*.json" in "\n".join(describe(str(ckpt), model))
