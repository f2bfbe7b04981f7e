"""The one prompt format every stage speaks: data writers, SFT, GRPO, the evals, the CLI, the demo.

Single Q/A (the canonical text every dataset is turned into):
    "Q: {question}\nA: {answer}\n\n"        then <|eos|> in token streams
    prompt = "Q: {question}\nA:"            answer = " {answer}\n\n"
Prompt and answer are tokenized separately and concatenated, so the answer span in
tokens is exact (SFT masks by it) and decoding the two spans gives the text back.

Multi-turn chat wraps the same Q/A turns in role tokens, so one model learns one format:
    <|user|>Q: q1\nA:<|assistant|> a1\n\n<|eos|><|user|>Q: q2\nA:<|assistant|>
The model answers after <|assistant|> and ends its turn with <|eos|>.

Completions are cut at the first <|eos|> or at the next "Q:" (the model starting a new
question on its own), see `cut_completion`.

Calculator calls (the tool; mathlm/calculator.py computes them) are written inside an answer as
    "48/2 = <|calc|>48/2<|result|>24<|/result|>24 clips"
The model writes `<|calc|>` expression `<|result|>`; the decoder then computes the expression and
forces the result text and `<|/result|>` into the row. Those forced tokens are the calculator's, not
the model's: SFT and GRPO leave them out of the loss. `strip_calls` gives the text a reader (and the
answer checker) sees: the call removed, the sentence as GSM8K writes it ("48/2 = 24 clips").
"""
import re

STOP_STRINGS = ("\nQ:", "\n\nQ:")

CALC_START, CALC_RESULT, CALC_END = "<|calc|>", "<|result|>", "<|/result|>"
TOOL_TOKENS = (CALC_START, CALC_RESULT, CALC_END)  # special tokens; after SPECIAL_TOKENS in the vocab
CALL = re.compile(re.escape(CALC_START) + r"(.*?)" + re.escape(CALC_RESULT) + r"(.*?)(?:" + re.escape(CALC_END) + r"|$)",
                  re.S)
STRAY_RESULT = re.compile(re.escape(CALC_RESULT) + r".*?(?:" + re.escape(CALC_END) + r"|$)", re.S)


def calc_call(expr, result):
    """The text of one finished call: what the model writes, then what the calculator forces."""
    return f"{CALC_START}{expr}{CALC_RESULT}{result}{CALC_END}"


def strip_calls(text):
    """Text with every call (finished or cut off) removed, as a reader or the answer checker sees it; so is
    a result the decoder forced after a <|result|> with no call open (`<|result|>error<|/result|>`)."""
    text = STRAY_RESULT.sub("", CALL.sub("", text))
    return text.replace(CALC_START, "").replace(CALC_END, "")


def qa_prompt(question):
    return f"Q: {question.strip()}\nA:"


def qa_answer(answer):
    return f" {answer.strip()}\n\n"


def qa_text(question, answer):
    return qa_prompt(question) + qa_answer(answer)


def encode_qa(tok, question, answer, eos=True):
    """(prompt_ids, answer_ids); answer_ids end with eos so the model learns to stop."""
    p = tok.encode(qa_prompt(question))
    a = tok.encode(qa_answer(answer))
    if eos:
        a = a + [tok.eos_id]
    return p, a


def encode_chat(tok, turns):
    """turns: [(question, answer), ..., (question, None)].
    Returns (ids, answer_mask): answer_mask[i] is True where ids[i] is an answer token the
    model should learn (assistant text and its closing eos); role tokens and questions are False.
    A last turn with answer None ends the ids at <|assistant|>, ready for generation."""
    ids, mask = [], []
    for q, a in turns:
        p = [tok.user_id] + tok.encode(qa_prompt(q)) + [tok.assistant_id]
        ids += p
        mask += [False] * len(p)
        if a is None:
            break
        ans = tok.encode(qa_answer(a)) + [tok.eos_id]
        ids += ans
        mask += [True] * len(ans)
    return ids, mask


def cut_completion(text):
    """Model text after the prompt → the answer alone: cut at the next 'Q:' turn and strip."""
    cut = len(text)
    for s in STOP_STRINGS:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut].strip()
