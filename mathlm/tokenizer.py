"""MathTokenizer: a byte-level BPE over HF `tokenizers`, trained on math text.

    tok = MathTokenizer.train(["openwebmath.txt"], vocab_size=32768)   # streamed
    tok.save("math_tokenizer")            # tokenizer.json + vocab.json + merges.txt
    tok = MathTokenizer.load("math_tokenizer")
    ids = tok.encode("d/dx x^2 = 2x"); tok.decode(ids)

Byte-level: every string round-trips exactly (no normaliser, no unknown token).

Pre-tokenisation (the regex below) is the design decision that shapes the vocabulary:
- digits are split one per token. A number is then spelled the same way wherever it appears
  ("1234" is 1,2,3,4 both as an answer and inside "12345"), so column arithmetic has one
  consistent representation; GPT-2/3-style merged digit groups give the model a different
  token for "234" in "1234" and "2345". Cost, measured on the 7,473 real GSM8K train answers
  with a 32k vocab trained on them (docs/BENCHMARKS.md, `python -m bench.bench_tokenizer`):
  GSM8K test answers are 1.20x longer (125.4 vs 104.1 tokens) — the price of consistency.
- a letter followed by ^ and one digit is one chunk, so BPE can learn `x^2`, `n^3` as single
  tokens (the seed's promise); longer exponents (`x^10`) fall back to digits.
- each non-ASCII symbol (∇, ∫, ≤, ∑) is a chunk of its own, so BPE learns it as one token
  wherever it stands ("∇f", " ∇·F"); ASCII punctuation runs (`\\frac{`, `)^{`) group as usual.

Special tokens (ids 0..5, never split, never produced by merges):
    <|bos|> <|eos|> <|pad|> <|system|> <|user|> <|assistant|>
eos separates documents in token streams and ends an assistant turn; the role tokens are
used by the chat format in mathlm/format.py. Newly trained tokenizers add the calculator's
format.TOOL_TOKENS right after them (ids 6..8: <|calc|> <|result|> <|/result|>); a tokenizer
trained before them still loads, with `tok.calc_ids is None` (decoding then runs without the tool).

Files: `tokenizer.json` (the whole tokenizer; loads in transformers.PreTrainedTokenizerFast
with identical ids), `vocab.json` + `merges.txt` (the classic BPE pair), `tokenizer_config.json`.
"""
import json
import os
import re

from mathlm.common import atomic_write, atomic_write_json, sha256_file
from mathlm.format import TOOL_TOKENS

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]
# letter^digit (x^2) | letters before such a chunk | one digit | words | ASCII punctuation runs
# | one non-ASCII symbol (∇, ∫, ≤: each its own chunk, so each can become one token) | whitespace
SPLIT_PATTERN = (r" ?\p{L}\^\p{N}(?!\p{N})| ?\p{L}+(?=\p{L}\^\p{N}(?!\p{N}))|\p{N}"
                 r"| ?\p{L}+| ?[!-/:-@\[-`{-~]+|[^\s\p{L}\p{N}]|\s+(?!\S)|\s+")


def _build(model):
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    tk = Tokenizer(model)
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel()
    return tk


def iter_text_files(paths, chunk_chars=1 << 20):
    """Yield ~1 MB text pieces from each file, split at line ends: memory stays bounded."""
    for path in paths:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            buf = []
            size = 0
            for line in f:
                buf.append(line)
                size += len(line)
                if size >= chunk_chars:
                    yield "".join(buf)
                    buf, size = [], 0
            if buf:
                yield "".join(buf)


def split_specials(texts, specials):
    """Each text cut at the special tokens written in it (`<|calc|>` in answers with calculator calls),
    which are dropped: the BPE trainer, unlike encode, does not match added tokens, so it would learn
    merges like `<|` and `calc` and merges across a call's edges that encoding never uses. The pieces
    are what encode pre-tokenizes, so training and encoding see the same chunks."""
    pat = re.compile("|".join(re.escape(s) for s in specials))
    for text in texts:
        if pat.search(text) is None:
            yield text
        else:
            yield from (piece for piece in pat.split(text) if piece)


class MathTokenizer:
    def __init__(self, tk):
        self.tk = tk
        ids = [tk.token_to_id(t) for t in SPECIAL_TOKENS]
        if any(i is None for i in ids):
            raise ValueError("tokenizer lacks the mathlm special tokens " + ", ".join(SPECIAL_TOKENS))
        self.bos_id, self.eos_id, self.pad_id, self.system_id, self.user_id, self.assistant_id = ids
        self.special_ids = set(ids)  # control tokens: generation stops at any of them
        # (<|calc|>, <|result|>, <|/result|>) ids, or None for a tokenizer trained without the tool
        tool = [tk.token_to_id(t) for t in TOOL_TOKENS]
        self.calc_ids = tuple(tool) if all(i is not None for i in tool) else None
        self.hash = self._hash()

    # --- training / io ------------------------------------------------------

    @classmethod
    def train(cls, texts, vocab_size=32768, min_frequency=2, show_progress=True, tools=True):
        """texts: file paths (streamed in 1 MB pieces) or any iterator of strings.
        tools: add the calculator tokens (format.TOOL_TOKENS) after the special tokens."""
        from tokenizers import models, pre_tokenizers, trainers
        tk = _build(models.BPE())
        specials = SPECIAL_TOKENS + (list(TOOL_TOKENS) if tools else [])
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
        texts = list(texts) if isinstance(texts, (list, tuple)) else texts
        if isinstance(texts, list) and texts and all(isinstance(t, str) and os.path.isfile(t) for t in texts):
            texts = iter_text_files(texts)
        tk.train_from_iterator(split_specials(texts, SPECIAL_TOKENS + list(TOOL_TOKENS)), trainer=trainer)
        return cls(tk)

    @classmethod
    def load(cls, path="math_tokenizer"):
        """Load from a folder holding tokenizer.json (or the file itself).
        Raises ValueError with the fix when it is missing or unreadable."""
        from tokenizers import Tokenizer
        f = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        if not os.path.isfile(f):
            raise ValueError(f"no tokenizer at {f} — run python scripts/train_tokenizer.py first "
                             "(or pass --tokenizer DIR)")
        try:
            tk = Tokenizer.from_file(f)
        except Exception as e:  # corrupt json, wrong format: name it, no traceback in CLIs
            raise ValueError(f"tokenizer file {f} is corrupt ({str(e).splitlines()[0][:80]}) — "
                             "retrain it with python scripts/train_tokenizer.py") from None
        return cls(tk)

    def save(self, out_dir="math_tokenizer"):
        """Write tokenizer.json, vocab.json, merges.txt, tokenizer_config.json atomically;
        tokenizer.json is written last, so its presence means the folder is complete."""
        os.makedirs(out_dir, exist_ok=True)
        model = json.loads(self.tk.to_str())["model"]
        atomic_write_json(os.path.join(out_dir, "vocab.json"), model["vocab"])
        merges = ["#version: 0.2"] + [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        atomic_write(os.path.join(out_dir, "merges.txt"), "\n".join(merges) + "\n")
        atomic_write_json(os.path.join(out_dir, "tokenizer_config.json"), self.hf_config())
        atomic_write(os.path.join(out_dir, "tokenizer.json"), self.tk.to_str(pretty=True))
        return out_dir

    def hf_config(self):
        """tokenizer_config.json for transformers (chat template included)."""
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>",
            "additional_special_tokens": SPECIAL_TOKENS[3:] + (list(TOOL_TOKENS) if self.calc_ids else []),
            "model_max_length": 512, "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        }

    def _hash(self):
        """Identity of the vocabulary + merges + specials: short sha256 of the canonical json."""
        import hashlib
        d = json.loads(self.tk.to_str())
        key = json.dumps({"model": d["model"], "added": d["added_tokens"], "pre": d["pre_tokenizer"]},
                         sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

    # --- encode / decode ----------------------------------------------------

    @property
    def vocab_size(self):
        return self.tk.get_vocab_size()

    def encode(self, text):
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts):
        return [e.ids for e in self.tk.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids, skip_special_tokens=False):
        return self.tk.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i):
        return self.tk.id_to_token(i)


# The chat format of mathlm/format.py as a Jinja template, for transformers' apply_chat_template.
# <|assistant|> opens the answer: it belongs to the assistant turn, or ends the text when
# add_generation_prompt asks for a reply. mathlm was never trained with a system turn, so one is
# refused with a message rather than silently dropped or rendered in a format it never saw.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>Q: {{ m['content'] | trim }}\nA:"
    "{% elif m['role'] == 'assistant' %}<|assistant|> {{ m['content'] | trim }}\n\n<|eos|>"
    "{% else %}{{ raise_exception('mathlm has no ' ~ m['role'] ~ ' role: put instructions in the user "
    "message') }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tokenizer_hash(path):
    """Hash of a saved tokenizer folder without building it (for data metas)."""
    return MathTokenizer.load(path).hash


__all__ = ["MathTokenizer", "SPECIAL_TOKENS", "SPLIT_PATTERN", "CHAT_TEMPLATE", "iter_text_files",
           "sha256_file"]
