"""The Gradio demo and the Spaces app, launched on free localhost ports and driven through
gradio_client: answers equal the library's, chat carries history, tokens stream, concurrent
requests queue, and bad input or a missing model becomes a message in the page."""
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from mathlm.infer.export import export_folder
from mathlm.infer.inference import chat_response, generate_text
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
    return _text(history[-1]["content"])


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
        assert msg.startswith("error:") and "python -m mathlm.train.pretrain" in msg
        h, _ = client.predict("hi", [], *GEN, api_name="/chat")
        assert "mathlm.train.pretrain" in last_reply(h)
    finally:
        demo.close()


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
