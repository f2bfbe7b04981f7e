"""Temperature, top-k and top-p (nucleus) sampling from scratch, in plain Python, to read top to
bottom: what mathlm.model.gpt.sample_logits does with tensors. tests/test_docs.py checks that
`distribution` equals the probabilities the model's sampler draws from.

    python docs/sampling.py            # one made-up next-token distribution, filtered four ways

The model gives one score (logit) per vocabulary token; sampling turns them into a choice.
- softmax: p_i = exp(z_i) / sum_j exp(z_j). Subtracting max(z) first changes nothing but keeps
  exp from overflowing.
- temperature T: divide the logits by T before the softmax. T < 1 sharpens (T → 0 is greedy:
  always the top token), T > 1 flattens. mathlm treats T = 0 as greedy exactly.
- top-k: keep the k highest logits, drop the rest (probability 0), renormalise. A fixed k keeps
  too many tokens when the model is sure and too few when it is not.
- top-p: sort by probability, keep the smallest prefix whose mass reaches p (the top token
  always stays), renormalise. It adapts: one token when the model is sure, many when not.
Order: temperature, then top-k, then top-p on what top-k kept (as HF transformers and
mathlm do); top-p's mass is measured after temperature.
"""
import math
import random


def softmax(logits):
    m = max(z for z in logits if z != -math.inf)
    e = [math.exp(z - m) if z != -math.inf else 0.0 for z in logits]
    s = sum(e)
    return [x / s for x in e]


def keep_top_k(logits, k):
    """The k largest logits stay, the others become -inf."""
    if k <= 0 or k >= len(logits):
        return list(logits)
    order = sorted(range(len(logits)), key=lambda i: -logits[i])
    keep = set(order[:k])
    return [z if i in keep else -math.inf for i, z in enumerate(logits)]


def keep_top_p(logits, p):
    """The smallest set of most probable tokens whose mass reaches p stays."""
    if p >= 1.0:
        return list(logits)
    probs = softmax(logits)
    order = sorted(range(len(logits)), key=lambda i: -probs[i])
    keep, mass = set(), 0.0
    for i in order:
        if mass >= p and keep:  # the mass above this token already reaches p: it goes
            break
        keep.add(i)
        mass += probs[i]
    return [z if i in keep else -math.inf for i, z in enumerate(logits)]


def distribution(logits, temperature=1.0, top_k=0, top_p=1.0):
    """The probabilities the next token is drawn from."""
    if temperature == 0.0:  # greedy: all the mass on the argmax
        best = max(range(len(logits)), key=lambda i: logits[i])
        return [1.0 if i == best else 0.0 for i in range(len(logits))]
    z = [x / temperature for x in logits]
    z = keep_top_k(z, top_k)
    z = keep_top_p(z, top_p)
    return softmax(z)


def sample(logits, temperature=1.0, top_k=0, top_p=1.0, rng=random):
    """One token id: walk the cumulative distribution to a uniform random point."""
    probs = distribution(logits, temperature, top_k, top_p)
    u, acc = rng.random(), 0.0
    for i, q in enumerate(probs):
        acc += q
        if u < acc:
            return i
    return max(i for i, q in enumerate(probs) if q > 0)  # u within rounding of 1.0


if __name__ == "__main__":
    logits = [3.0, 2.5, 1.0, 0.5, -1.0, -2.0]
    for kw in ({}, {"temperature": 0.5}, {"top_k": 2}, {"top_p": 0.8}):
        print(f"{str(kw):22} {' '.join(f'{q:.3f}' for q in distribution(logits, **kw))}")
