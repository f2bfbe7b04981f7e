"""Byte-level BPE from scratch, to read top to bottom: what mathlm/tokenizer.py asks HF
`tokenizers` to do, in plain Python. tests/test_docs.py checks that its merges on a small text
equal `tokenizers`' BpeTrainer's, with the same pre-tokenisation, merge for merge.

    python docs/bpe.py some.txt 400          # train 400 merges on some.txt and show a few

Four steps:
1. Bytes → printable characters. Byte-level BPE works on the UTF-8 bytes of the text, so any
   string can be encoded and nothing is ever unknown. GPT-2 maps each of the 256 bytes to a
   printable Unicode character (a space becomes 'Ġ') so that merges can be stored as text.
2. Pre-tokenise: a regex cuts the text into chunks ("words") that merges never cross. mathlm's
   regex (mathlm.tokenizer.SPLIT_PATTERN) splits digits one per chunk and keeps `x^2` whole.
3. Train: start from single bytes; count every adjacent pair of symbols in every word (weighted
   by how often the word occurs); merge the most frequent pair everywhere into a new symbol;
   repeat. Ties go to the pair whose two symbols have the smallest ids (HF's rule), where the
   first ids are the special tokens, then the 256 byte-characters in code-point order, then each
   merge's result in the order it was made.
4. Encode: apply the learned merges to a word, always the earliest-learned merge first.
   Decode: join the symbols and map the characters back to bytes.

This is the slow, obvious algorithm (recount all pairs after every merge: O(merges × text));
HF's trainer gets the same merges by updating counts incrementally with a priority queue.
"""
import collections

import regex  # the `regex` module: \\p{L}, \\p{N} as in HF tokenizers' regex


def bytes_to_unicode():
    """GPT-2's table: byte → a printable character. Printable bytes map to themselves; the rest
    (control bytes, space, 127–160, 173) to 256, 257, ... in order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_CHAR = bytes_to_unicode()
CHAR_BYTE = {c: b for b, c in BYTE_CHAR.items()}


def pretokenize(text, pattern):
    """Text → the byte-level chunks merges never cross ('Ġx^2' for ' x^2')."""
    return ["".join(BYTE_CHAR[b] for b in chunk.encode("utf-8")) for chunk in regex.findall(pattern, text)]


def train(texts, n_merges, pattern, specials=(), min_frequency=0):
    """Learn up to `n_merges` merges, each of a pair seen ≥ min_frequency times; returns
    ([(left, right), ...] in order, vocab {symbol: id})."""
    vocab = {s: i for i, s in enumerate(specials)}
    for c in sorted(BYTE_CHAR.values()):  # the alphabet, in code-point order (HF sorts it so)
        vocab[c] = len(vocab)
    word_counts = collections.Counter(w for t in texts for w in pretokenize(t, pattern))
    words = [(list(w), n) for w, n in word_counts.items()]  # each word as its current symbols
    merges = []
    while len(merges) < n_merges:
        pairs = collections.Counter()
        for symbols, n in words:
            for pair in zip(symbols, symbols[1:]):  # every window, overlapping ones too ("aaa": 2)
                pairs[pair] += n
        if not pairs:
            break  # every word is a single symbol: nothing left to merge
        # the most frequent pair; on a tie, the smallest (left id, right id)
        best = max(pairs, key=lambda p: (pairs[p], -vocab[p[0]], -vocab[p[1]]))
        if pairs[best] < max(1, min_frequency):
            break
        new = best[0] + best[1]
        merges.append(best)
        vocab.setdefault(new, len(vocab))
        for symbols, _ in words:
            merge_in_place(symbols, best, new)
    return merges, vocab


def merge_in_place(symbols, pair, new):
    """Replace every occurrence of `pair` in `symbols`, left to right, non-overlapping."""
    i = 0
    while i < len(symbols) - 1:
        if symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            symbols[i:i + 2] = [new]
        i += 1


def encode(text, merges, vocab, pattern):
    """Text → token ids: each chunk from bytes up, the earliest-learned applicable merge first."""
    rank = {pair: r for r, pair in enumerate(merges)}
    ids = []
    for word in pretokenize(text, pattern):
        symbols = list(word)
        while len(symbols) > 1:
            pair = min(zip(symbols, symbols[1:]), key=lambda p: rank.get(p, len(rank)))
            if pair not in rank:
                break
            merge_in_place(symbols, pair, pair[0] + pair[1])
        ids += [vocab[s] for s in symbols]
    return ids


def decode(ids, vocab):
    inverse = {i: s for s, i in vocab.items()}
    return bytes(CHAR_BYTE[c] for i in ids for c in inverse[i]).decode("utf-8", errors="replace")


if __name__ == "__main__":
    import sys

    from mathlm.tokenizer import SPLIT_PATTERN
    text = open(sys.argv[1], encoding="utf-8").read()
    merges, vocab = train([text], int(sys.argv[2]) if len(sys.argv) > 2 else 200, SPLIT_PATTERN)
    print(f"{len(merges)} merges; the first ten: {merges[:10]}")
    sample = text[:80]
    ids = encode(sample, merges, vocab, SPLIT_PATTERN)
    print(f"{sample!r} → {len(ids)} tokens → {decode(ids, vocab)!r}")
