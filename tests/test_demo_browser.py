"""The demo in a real browser (Debian's chromium driven by Playwright): in both tabs the streamed
text on the page is the model's greedy output character for character, `*` and `####` included;
the page names the model; the button is busy while an answer streams and Stop ends it; a cut
answer says so; a lone surrogate gets the one-line message; a new question clears the old answer.
Skips where chromium or playwright is missing (.ci/run installs both: `apt-get install chromium`,
playwright from requirements-dev.txt; never `playwright install`, which downloads a browser build
of its own)."""
import json
import os
import shutil
import tempfile
import time

import pytest
import torch

from mathlm.format import encode_chat, encode_qa
from mathlm.infer.demo import EXAMPLES
from mathlm.infer.inference import chat_response, generate_text, load_model
from tests.test_demo import ENV, env, free_port  # noqa: F401  (env: fixture)
from tests.test_infer import TEXT, make_tiny, one_thread  # noqa: F401  (one_thread: autouse fixture)

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the answer the tiny model is overfit to: Markdown would make *6x* italic, **6x** bold and
# "#### 6*x" a heading; the page must show every character as the model wrote it
QUESTION = "What is d/dx 3*x^2?"
ANSWER = "d/dx(3*x^2) = 3*2*x = *6x*, **6x**\n#### 6*x"
# typed by the user, shown through the same Chatbot path: Markdown, LaTeX, HTML, an entity, two spaces
LITERAL = "*a* **b** _c_ $x$ <b>d</b> x<y and y>z &lt; `e`\n#### f  g"
DELAY = {"s": 0.02}  # seconds per token (see Slow)


def _skip_reason():
    if not os.path.exists(CHROMIUM):
        return f"no {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    return None


if _skip_reason():
    pytest.skip(_skip_reason(), allow_module_level=True)


class Slow:
    """The model, one token every DELAY seconds: a tiny model answers in ~0.1 s, too fast to watch
    the stream grow, see the busy button or press Stop. The tokens are the model's own."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def generate(self, *args, **kwargs):
        for t in self.model.generate(*args, **kwargs):
            time.sleep(DELAY["s"])
            yield t


def overfit(tmp):
    """make_tiny's checkpoint, trained until greedy decoding gives ANSWER to QUESTION in both
    formats (Q/A and chat), so the text under test holds the Markdown characters."""
    from mathlm.tokenizer import MathTokenizer
    tok = MathTokenizer.train([TEXT + " " + QUESTION + " " + ANSWER + " " + LITERAL] * 40, vocab_size=300,
                              show_progress=False)
    tok.save(os.path.join(tmp, "math_tokenizer"))  # make_tiny uses the tokenizer it finds there
    path, tok_dir, model, tok = make_tiny(tmp, seed=1)
    p, a = encode_qa(tok, QUESTION, ANSWER)
    seqs = [torch.tensor([p + a]), torch.tensor([encode_chat(tok, [(QUESTION, ANSWER)])[0]])]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        loss = sum(model(x[:, :-1], targets=x[:, 1:])[1] for x in seqs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = model.eval().state_dict()
    torch.save(ckpt, path)
    return path, tok_dir


@pytest.fixture(scope="module")
def page(env, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    from mathlm.infer.demo import CSS, build_demo, describe
    d = str(tmp_path_factory.mktemp("browser"))
    path, tok_dir = overfit(d)
    # an eval summary beside the checkpoint, written after it: the page quotes its numbers
    with open(os.path.join(d, "eval_sft.json"), "w") as f:
        json.dump({"task": "math", "checkpoints": ["checkpoint.pt"],
                   "domains": {"calculus": {"n": 10, "correct": 3, "accuracy": 0.3}}}, f)
    model, tok = load_model(path, tok_dir, "cpu", verbose=False)
    demo = build_demo(Slow(model), tok, None, "mathlm", describe(path, model))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=CSS)
    profile = tempfile.mkdtemp(prefix="chromium-")  # a fresh profile: nothing cached, nothing synced
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS,
                                                       headless=True, viewport={"width": 1280, "height": 1000})
        pg = browser.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(f"http://127.0.0.1:{port}/")
        pg.wait_for_selector("#ask")
        yield pg, model, tok
        browser.close()
    demo.close()
    shutil.rmtree(profile, ignore_errors=True)


# in-page recorder: every distinct (text, button disabled) state, polled every 5 ms
RECORD = """([box, button]) => {
    window.frames_seen = [];
    const read = () => {
        const all = document.querySelectorAll(box), el = all[all.length - 1];  // the newest message
        return [el ? (el.value !== undefined ? el.value : el.textContent) : null,
                document.querySelector(button).disabled];
    };
    window.recorder = setInterval(() => {
        const s = read(), last = window.frames_seen[window.frames_seen.length - 1];
        if (!last || last[0] !== s[0] || last[1] !== s[1]) window.frames_seen.push(s);
    }, 5);
}"""
BOT = "#chat [data-testid='bot'] .message-content"


def frames(pg):
    pg.evaluate("clearInterval(window.recorder)")
    return pg.evaluate("window.frames_seen")


def set_max_tokens(pg, n):
    box = pg.locator("#max_tokens input[type='number']")
    box.fill(str(n))
    box.press("Enter")
    pg.wait_for_function("n => document.querySelector(\"#max_tokens input[type='number']\").value == n", arg=str(n))


def clear_chat(pg):
    """Chat tab, empty: the Chatbot's trash icon, when there is something to clear."""
    pg.get_by_role("tab", name="Chat").click()
    if pg.locator("#chat .message-content").count():
        pg.click("#chat button[aria-label='Clear']")  # the Chatbot's trash icon
        pg.wait_for_function("() => !document.querySelector('#chat .message-content')")


def ask_qa(pg, question):
    pg.get_by_role("tab", name="Q/A").click()
    pg.locator("#ask").wait_for(state="visible")
    pg.locator("#question textarea").fill(question)
    pg.evaluate(RECORD, ["#answer textarea", "#ask"])
    pg.click("#ask")
    pg.wait_for_function("() => document.querySelector('#ask').disabled")  # busy ...
    pg.wait_for_function("() => !document.querySelector('#ask').disabled")  # ... then done
    return pg.locator("#answer textarea").input_value(), frames(pg)


def test_qa_tab_streams_the_greedy_answer_literally(page):
    pg, model, tok = page
    set_max_tokens(pg, 64)
    want = generate_text(model, tok, QUESTION, max_new_tokens=64)
    assert want == ANSWER  # the overfit worked: the greedy text holds the Markdown characters
    got, seen = ask_qa(pg, QUESTION)
    assert got == want
    texts = [t for t, _ in seen if t]
    assert len(set(texts)) > 3 and all(want.startswith(t.strip()) for t in texts)  # it streamed, in order
    assert any(busy and t and t != want for t, busy in seen)  # the button was busy mid-answer
    note = pg.locator("#note_qa").inner_text()
    assert "cut" not in note and "stopped" not in note  # the model ended the answer itself


def test_chat_tab_streams_the_greedy_answer_literally(page):
    pg, model, tok = page
    clear_chat(pg)
    pg.locator("#message textarea").fill(QUESTION)
    pg.evaluate(RECORD, [BOT, "#send"])
    pg.click("#send")
    pg.wait_for_function("() => document.querySelector('#send').disabled")
    pg.wait_for_function("() => !document.querySelector('#send').disabled")
    seen = frames(pg)
    want = chat_response(model, tok, [], QUESTION, max_new_tokens=64)
    assert want == ANSWER
    bot = pg.locator(BOT).last
    # textContent: the characters the page holds; no <em>/<strong>/<h4> was made of them
    assert bot.text_content() == want
    assert bot.locator("em, strong, h1, h2, h3, h4, code").count() == 0
    assert bot.inner_text().replace("\n", " ").split() == want.split()  # what a reader sees: the same words
    texts = [t for t, _ in seen if t]
    assert len(set(texts)) > 3 and all(want.startswith(t.strip()) for t in texts)


def test_chat_shows_typed_markdown_and_html_as_typed(page):
    pg, model, tok = page
    clear_chat(pg)
    pg.locator("#message textarea").fill(LITERAL)
    pg.click("#send")
    pg.wait_for_function("() => document.querySelector('#send').disabled")
    pg.wait_for_function("() => !document.querySelector('#send').disabled")
    user = pg.locator("#chat [data-testid='user'] .message-content").last
    assert user.text_content() == LITERAL
    assert user.locator("em, strong, b, h4, code, .katex").count() == 0


def test_page_names_the_model(page):
    pg, model, _ = page
    head = pg.locator("body").inner_text()
    assert "checkpoint.pt" in head and "stage SFT" in head
    assert f"{model.num_params() / 1e6:.2f}M parameters" in head and "context 128 tokens" in head
    assert "calculus 30.0% (3/10)" in head and "eval_sft.json" in head
    assert "≤ 127" in head  # max new tokens: what the context leaves after a one-token prompt


def test_stop_ends_the_answer_and_frees_the_button(page):
    pg, model, tok = page
    pg.get_by_role("tab", name="Q/A").click()
    set_max_tokens(pg, 64)
    DELAY["s"] = 0.4  # ~30 tokens: 12 s if not stopped
    try:
        pg.locator("#question textarea").fill(QUESTION)
        before = pg.locator("#answer textarea").input_value()  # the last test's whole answer
        pg.click("#ask")
        pg.wait_for_function("b => { const v = document.querySelector('#answer textarea').value; "
                             "return v.length > 0 && v !== b; }", arg=before)
        t0 = time.time()
        pg.click("#stop_qa")
        pg.wait_for_function("() => !document.querySelector('#ask').disabled")
        assert time.time() - t0 < 5
        cut = pg.locator("#answer textarea").input_value()
        time.sleep(1.5)  # nothing more arrives after Stop
        assert pg.locator("#answer textarea").input_value() == cut
        assert ANSWER.startswith(cut) and cut != ANSWER
        assert "stopped" in pg.locator("#note_qa").inner_text()
        assert pg.locator("#stop_qa").is_disabled()
    finally:
        DELAY["s"] = 0.02
    got, _ = ask_qa(pg, QUESTION)  # the queue is free again: the next answer is whole
    assert got == ANSWER


def test_a_new_question_clears_the_old_answer(page):
    pg, _, _ = page
    got, _ = ask_qa(pg, QUESTION)
    assert got == ANSWER
    pg.get_by_text(EXAMPLES[0][:30]).filter(visible=True).first.click()  # an example, as a newcomer would
    pg.wait_for_function("() => document.querySelector('#answer textarea').value === ''")
    assert pg.locator("#question textarea").input_value() == EXAMPLES[0]


def test_an_answer_cut_at_max_tokens_says_so(page):
    pg, model, tok = page
    set_max_tokens(pg, 5)
    got, _ = ask_qa(pg, QUESTION)
    assert got == generate_text(model, tok, QUESTION, max_new_tokens=5)
    assert "cut at max new tokens = 5" in pg.locator("#note_qa").inner_text()
    set_max_tokens(pg, 64)


def test_a_lone_surrogate_gets_the_one_line_message(page):
    pg, _, _ = page
    # a browser can hold half a UTF-16 pair (a paste cut mid-emoji); set it the way typing would
    put = """([sel, text]) => { const el = document.querySelector(sel); el.value = text;
                                el.dispatchEvent(new Event('input', {bubbles: true})); }"""
    pg.get_by_role("tab", name="Q/A").click()
    pg.evaluate(put, ["#question textarea", "a\ud800b"])
    pg.click("#ask")
    pg.wait_for_function("() => document.querySelector('#answer textarea').value.startsWith('error:')")
    assert "broken character" in pg.locator("#answer textarea").input_value()
    pg.get_by_role("tab", name="Chat").click()
    pg.evaluate(put, ["#message textarea", "b\udc00c"])
    pg.click("#send")
    pg.wait_for_function(f"() => [...document.querySelectorAll(\"{BOT}\")].some(e => e.textContent.includes('broken'))")
    assert pg.locator("#message textarea").input_value() == "b\ufffdc"  # kept to fix, the broken half marked
