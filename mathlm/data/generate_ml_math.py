"""Synthetic ML-math Q/A pairs with exact answers: matrix-calculus gradients, softmax and
cross-entropy gradients, entropy / KL / perplexity, attention shapes and FLOPs, and one or two
steps of SGD, momentum and Adam with numbers.

    python -m mathlm.data.generate_ml_math                        # 5,000 train + 300 test, then tokenize
    python -m mathlm.data.generate_ml_math --preset tiny --text_only   # 1,000 + 100, text only

Reads:  math_tokenizer/ (unless --text_only)
Writes: ml_math.jsonl, ml_math_test.jsonl (one JSON object per line, keys sorted)
        + ml_math.bin / .meta.json / .idx.npy (unless --text_only), through
        mathlm.data.qa_io.write_qa_dataset like every dataset (decontaminated against *_test.jsonl)

Records have the same fields as mathlm/data/generate_calculus.py (question, answer ending in
"#### <final>", final, kind, topic, params) and no "var". Every number is exact: arithmetic runs
on Fractions, and a final is an integer, a terminating decimal ("0.375") or a fraction ("19/30").
Quantities that are irrational (a log in nats, a square root) are asked "rounded to 4 decimal
places" and the final is that rounded string ("1.6094"). Kinds:
    number  compare as numbers (exact, or to the 4 places the question asked for)
    text    exact string match, used only for shapes such as "(8, 12, 256, 256)"
params holds the inputs (numbers as exact strings) and `ask`, the quantity asked for, so a
checker can recompute every answer without reading the question; each input appears in it.
Entropies in bits use distributions whose entries are powers of 1/2, so logs are whole numbers.

Deterministic: one random.Random(seed) drives everything. Problems are unique by (topic, ask,
inputs), so the held-out split cannot hold the same problem phrased differently.
"""
import json
import random
import re
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

from mathlm.common import SEED_MAX, check_range, cli, parse_config
from mathlm.data.generate_calculus import split, write_outputs  # noqa: F401  (split is part of the API)


@dataclass
class Config:
    n: int = 5000                   # train pairs
    n_test: int = 300               # held-out test pairs (no question shared with train)
    seed: int = 1234                # drives generation and the train/test split
    out_dir: str = "."              # where ml_math.jsonl, ml_math_test.jsonl (and .bin) go
    text_only: bool = False         # write the jsonl only; no tokenizer needed
    tokenizer: str = "math_tokenizer"  # tokenizer folder (not needed with --text_only)


PRESETS = {"tiny": dict(n=1000, n_test=100), "smoke": dict(n=200, n_test=30)}
NAME = "ml_math"

# -----------------------------------------------------------------------------
# exact numbers and their printing


def num(q):
    """Fraction → '3', '-0.375', '19/30': a decimal only when it terminates."""
    q = Fraction(q)
    if q.denominator == 1:
        return str(q.numerator)
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return f"{q.numerator}/{q.denominator}"
    with localcontext() as ctx:
        ctx.prec = 60
        s = format(Decimal(q.numerator) / Decimal(q.denominator), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def vec(xs):
    return "[" + ", ".join(num(x) for x in xs) + "]"


def mat(rows):
    return "[" + ", ".join(vec(r) for r in rows) + "]"


def ln(q):
    """Natural log of a positive Fraction as a 40-digit Decimal."""
    with localcontext() as ctx:
        ctx.prec = 40
        return (Decimal(q.numerator) / Decimal(q.denominator)).ln()


def dexp(q):
    with localcontext() as ctx:
        ctx.prec = 40
        return (Decimal(q.numerator) / Decimal(q.denominator)).exp()


def r4(d):
    """A Decimal rounded to 4 places, as printed in the final."""
    s = str(d.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN))
    return "0.0000" if s == "-0.0000" else s


def dist(rng, k, parts=20):
    """k positive probabilities on a 1/parts grid summing to 1 (terminating decimals)."""
    cuts = sorted(rng.sample(range(1, parts), k - 1))
    edges = [0] + cuts + [parts]
    return [Fraction(b - a, parts) for a, b in zip(edges, edges[1:])]


def dyadic(rng, k):
    """k probabilities, each a power of 1/2, summing to 1: split a random piece in two, k-1 times."""
    ps = [Fraction(1)]
    while len(ps) < k:
        i = rng.randrange(len(ps))
        ps[i:i + 1] = [ps[i] / 2, ps[i] / 2]
    rng.shuffle(ps)
    return ps


def log2_pow(p):
    """log2 of a power of two (a Fraction): exact."""
    n, d = p.numerator, p.denominator
    return Fraction(n.bit_length() - 1) if d == 1 else -Fraction(d.bit_length() - 1)


def dec(rng, lo, hi, scale=10):
    """A random decimal in [lo, hi] on a 1/scale grid, as a Fraction."""
    return Fraction(rng.randint(int(lo * scale), int(hi * scale)), scale)


def nzdec(rng, lo, hi, scale=10):
    while True:
        q = dec(rng, lo, hi, scale)
        if q:
            return q


ORD = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 5: "5th"}

# -----------------------------------------------------------------------------
# topics: each returns (question, solution lines, final string, kind, params)


def gen_matrix_grad(rng):
    ask = rng.choice(["quad", "quad", "sq_lin", "lsq", "linear", "trace", "shape"])
    if ask == "quad":
        n = rng.choice([2, 2, 3])
        A = [[rng.randint(-3, 3) for _ in range(n)] for _ in range(n)]
        x = [rng.randint(-3, 3) for _ in range(n)]
        i = rng.randint(1, n)
        S = [[A[r][c] + A[c][r] for c in range(n)] for r in range(n)]
        val = sum(S[i - 1][c] * x[c] for c in range(n))
        q = rng.choice([
            "Let f(x) = x^T A x with A = {A} and x = {x}. What is ∂f/∂x_{i}?",
            "For f(x) = x^T A x, where A = {A}, compute the {o} component of the gradient ∇f at x = {x}.",
            "The quadratic form f(x) = x^T A x has A = {A}. Evaluate ∂f/∂x_{i} at the point x = {x}.",
        ]).format(A=mat(A), x=vec(x), i=i, o=ORD[i])
        terms = " + ".join(f"{paren_n(S[i - 1][c])}*{paren_n(x[c])}" for c in range(n))
        lines = [f"∇f = (A + A^T) x, and A + A^T = {mat(S)}.",
                 f"∂f/∂x_{i} = row {i} of A + A^T times x = {terms} = {num(val)}."]
        params = dict(A=[[num(a) for a in r] for r in A], x=[num(a) for a in x], i=i)
    elif ask == "sq_lin":
        n = rng.choice([2, 3])
        a = [rng.randint(-4, 4) for _ in range(n)]
        x = [rng.randint(-3, 3) for _ in range(n)]
        i = rng.randint(1, n)
        s = sum(p * r for p, r in zip(a, x))
        val = 2 * s * a[i - 1]
        q = rng.choice([
            "Let f(x) = (a^T x)^2 with a = {a}. What is ∂f/∂x_{i} at x = {x}?",
            "Compute the {o} component of the gradient of f(x) = (a · x)^2 at x = {x}, where a = {a}.",
            "For a = {a} and f(x) = (a^T x)^2, find ∂f/∂x_{i} when x = {x}.",
        ]).format(a=vec(a), x=vec(x), i=i, o=ORD[i])
        lines = [f"a^T x = {' + '.join(f'{paren_n(p)}*{paren_n(r)}' for p, r in zip(a, x))} = {s}.",
                 f"∂f/∂x_{i} = 2*(a^T x)*a_{i} = 2*{paren_n(s)}*{paren_n(a[i - 1])} = {num(val)}."]
        params = dict(a=[num(t) for t in a], x=[num(t) for t in x], i=i)
    elif ask == "lsq":
        A = [[rng.randint(-3, 3) for _ in range(2)] for _ in range(2)]
        x = [rng.randint(-3, 3) for _ in range(2)]
        b = [rng.randint(-4, 4) for _ in range(2)]
        i = rng.randint(1, 2)
        r = [A[k][0] * x[0] + A[k][1] * x[1] - b[k] for k in range(2)]
        val = 2 * (A[0][i - 1] * r[0] + A[1][i - 1] * r[1])
        q = rng.choice([
            "Let f(x) = ||A x - b||^2 with A = {A} and b = {b}. What is ∂f/∂x_{i} at x = {x}?",
            "For the least-squares loss f(x) = ||A x - b||^2, A = {A}, b = {b}, compute the {o} component of ∇f at x = {x}.",
            "Given A = {A}, b = {b} and x = {x}, find ∂/∂x_{i} of ||A x - b||^2.",
        ]).format(A=mat(A), b=vec(b), x=vec(x), i=i, o=ORD[i])
        lines = [f"∇f = 2 A^T (A x - b), and A x - b = {vec(r)}.",
                 f"∂f/∂x_{i} = 2*({paren_n(A[0][i - 1])}*{paren_n(r[0])} + {paren_n(A[1][i - 1])}*{paren_n(r[1])}) = {num(val)}."]
        params = dict(A=[[num(a) for a in row] for row in A], b=[num(t) for t in b], x=[num(t) for t in x], i=i)
    elif ask == "linear":
        n = rng.choice([2, 3])
        w = [nzdec(rng, -2, 2) for _ in range(n)]
        x = [rng.randint(-3, 3) for _ in range(n)]
        b, t = dec(rng, -1, 1), dec(rng, -2, 2)
        y = sum(p * r for p, r in zip(w, x)) + b
        which = rng.choice(list(range(1, n + 1)) + [0])  # 0 asks for ∂L/∂b
        val = (y - t) * (x[which - 1] if which else 1)
        target = f"∂L/∂w_{which}" if which else "∂L/∂b"
        q = rng.choice([
            "A linear model predicts y = w^T x + b with w = {w}, b = {b}. For input x = {x} and target {t}, the loss is L = (y - {t})^2/2. What is {T}?",
            "With w = {w}, b = {b}, x = {x} and the squared loss L = (w^T x + b - {t})^2 / 2, compute {T}.",
            "For y = w · x + b, w = {w}, b = {b}, x = {x}, and L = (y - {t})^2/2, find the gradient {T}.",
        ]).format(w=vec(w), b=num(b), x=vec(x), t=num(t), T=target)
        lines = [f"y = w^T x + b = {num(y)}, so ∂L/∂y = y - {paren_n(t)} = {num(y - t)}.",
                 f"{target} = (y - t)*{'x_' + str(which) if which else '1'} = {num(y - t)}*{paren_n(x[which - 1]) if which else 1} = {num(val)}."]
        params = dict(w=[num(a) for a in w], b=num(b), x=[num(a) for a in x], t=num(t), which=which)
    elif ask == "trace":
        n = rng.choice([2, 3])
        A = [[rng.randint(-5, 5) for _ in range(n)] for _ in range(n)]
        i, j = rng.randint(1, n), rng.randint(1, n)
        val = A[j - 1][i - 1]
        q = rng.choice([
            "Let f(X) = tr(A X) with A = {A}. What is ∂f/∂X_{i}{j} (row {i}, column {j})?",
            "For A = {A}, the gradient of f(X) = trace(A X) with respect to X is a matrix. What is its entry in row {i}, column {j}?",
            "Compute ∂ tr(A X) / ∂X_{i}{j} for A = {A} (indices start at 1).",
        ]).format(A=mat(A), i=i, j=j)
        lines = [f"tr(A X) = Σ_(i,j) A_ji X_ij, so ∂f/∂X = A^T and ∂f/∂X_{i}{j} = A_{j}{i}.",
                 f"A_{j}{i} = {num(val)}."]
        params = dict(A=[[num(a) for a in r] for r in A], i=i, j=j)
    else:  # shape
        B, n, m = rng.choice([8, 16, 32, 64]), rng.choice([16, 32, 64, 128, 256]), rng.choice([10, 32, 64, 128, 512])
        wrt = rng.choice(["W", "X"])
        shape = f"({n}, {m})" if wrt == "W" else f"({B}, {n})"
        q = rng.choice([
            "Y = X W with X of shape ({B}, {n}) and W of shape ({n}, {m}), and L is a scalar loss of Y. What is the shape of ∂L/∂{g}?",
            "In a linear layer Y = XW, X is ({B}, {n}) and W is ({n}, {m}). Give the shape of the gradient ∂L/∂{g} of a scalar loss L.",
            "A batch X of shape ({B}, {n}) is multiplied by weights W of shape ({n}, {m}). What shape does ∂L/∂{g} have?",
        ]).format(B=B, n=n, m=m, g=wrt)
        why = (f"∂L/∂W = X^T (∂L/∂Y): ({n}, {B}) times ({B}, {m})" if wrt == "W"
               else f"∂L/∂X = (∂L/∂Y) W^T: ({B}, {m}) times ({m}, {n})")
        lines = [f"{why}; a gradient has the shape of what it is taken with respect to: {shape}."]
        return q, lines, shape, "text", dict(ask=ask, B=B, n=n, m=m, wrt=wrt)
    return q, lines, num(val), "number", dict(ask=ask, **params)


def paren_n(x):
    """A number as a factor in a product: negatives in parentheses."""
    s = num(x)
    return f"({s})" if s.startswith("-") else s


def gen_softmax_grad(rng):
    ask = rng.choice(["softmax_log", "jac", "jac", "jac_log"])
    k = rng.randint(2, 4)
    i = rng.randint(1, k)
    j = rng.randint(1, k)
    if ask in ("softmax_log", "jac_log"):
        a = [rng.randint(1, 9) for _ in range(k)]
        z = "[" + ", ".join(f"log({t})" for t in a) + "]"
        S = sum(a)
        p = [Fraction(t, S) for t in a]
        pre = f"exp(log(a)) = a, so softmax(z) = a / {S} = {vec(p)}."
        params = dict(a=[str(t) for t in a])
    else:
        p = dist(rng, k)
        pre = None
        params = dict(p=[num(t) for t in p])
    if ask == "softmax_log":
        val = p[i - 1]
        q = rng.choice([
            "Let z = {z}. What is softmax(z)_{i}?",
            "Compute the {o} entry of softmax(z) for logits z = {z}.",
            "The logits are z = {z}. What probability does softmax assign to class {i}?",
        ]).format(z=z, i=i, o=ORD[i])
        lines = [f"exp(log(a)) = a, so softmax(z)_{i} = {a[i - 1]} / ({' + '.join(map(str, a))}) = {num(val)}."]
        return q, lines, num(val), "number", dict(ask=ask, i=i, **params)
    delta = 1 if i == j else 0
    val = p[i - 1] * (delta - p[j - 1])
    if ask == "jac":
        q = rng.choice([
            "Let p = softmax(z) = {p}. What is ∂p_{i}/∂z_{j}?",
            "For softmax probabilities p = {p}, compute the Jacobian entry ∂p_{i}/∂z_{j} (indices start at 1).",
            "A softmax layer outputs p = {p}. Find the derivative of p_{i} with respect to the logit z_{j}.",
        ]).format(p=vec(p), i=i, j=j)
        lines = []
    else:
        q = rng.choice([
            "Let p = softmax(z) with z = {z}. What is ∂p_{i}/∂z_{j}?",
            "For logits z = {z}, compute the softmax Jacobian entry ∂p_{i}/∂z_{j}.",
            "Given z = {z} and p = softmax(z), find ∂p_{i}/∂z_{j} (indices start at 1).",
        ]).format(z=z, i=i, j=j)
        lines = [pre]
    lines.append(f"∂p_i/∂z_j = p_i*(δ_ij - p_j) = {num(p[i - 1])}*({delta} - {num(p[j - 1])}) = {num(val)}.")
    return q, lines, num(val), "number", dict(ask=ask, i=i, j=j, **params)


def gen_cross_entropy(rng):
    ask = rng.choice(["ce_grad", "ce_grad", "ce_bits", "ce_batch_bits", "ce_nats", "bce_grad", "ce_uniform"])
    if ask == "ce_grad":
        k = rng.randint(2, 5)
        p = dist(rng, k)
        y, j = rng.randint(1, k), rng.randint(1, k)
        val = p[j - 1] - (1 if j == y else 0)
        q = rng.choice([
            "A classifier's softmax output is p = {p} and the true class is {y}. With cross-entropy loss, what is ∂L/∂z_{j} for logit z_{j}?",
            "For softmax + cross-entropy with probabilities p = {p} and label y = {y}, compute the gradient of the loss with respect to z_{j}.",
            "Logits z give softmax(z) = {p}; the target class is {y}. What is ∂L/∂z_{j} of the cross-entropy loss L?",
        ]).format(p=vec(p), y=y, j=j)
        lines = [f"For softmax + cross-entropy, ∂L/∂z_j = p_j - [j = y].",
                 f"∂L/∂z_{j} = {num(p[j - 1])} - {1 if j == y else 0} = {num(val)}."]
        return q, lines, num(val), "number", dict(ask=ask, p=[num(t) for t in p], y=y, j=j)
    if ask == "ce_bits":
        k = rng.randint(2, 6)
        p = dyadic(rng, k)
        y = rng.randint(1, k)
        val = -log2_pow(p[y - 1])
        q = rng.choice([
            "A model predicts p = {p} over {k} classes and the true class is {y}. What is the cross-entropy loss in bits?",
            "Compute -log2 p_y for p = {p} and y = {y}.",
            "The predicted distribution is {p}; the correct label is class {y}. How many bits is the cross-entropy loss?",
        ]).format(p=vec(p), k=k, y=y)
        lines = [f"L = -log2(p_{y}) = -log2({num(p[y - 1])}) = {num(val)} bits."]
        return q, lines, num(val), "number", dict(ask=ask, p=[num(t) for t in p], y=y)
    if ask == "ce_batch_bits":
        n = rng.randint(2, 4)
        ps = [Fraction(1, 2 ** rng.randint(0, 5)) for _ in range(n)]
        val = sum(-log2_pow(t) for t in ps) / n
        q = rng.choice([
            "A batch of {n} examples gets probabilities {p} on the correct class. What is the mean cross-entropy in bits?",
            "The probabilities a model assigns to the true labels of {n} examples are {p}. Compute the average loss -log2 p in bits.",
            "Find the mean cross-entropy (base 2) of a batch whose correct-class probabilities are {p}.",
        ]).format(n=n, p=vec(ps))
        terms = ", ".join(num(-log2_pow(t)) for t in ps)
        lines = [f"-log2 of each: {terms}.", f"Mean = ({' + '.join(num(-log2_pow(t)) for t in ps)})/{n} = {num(val)} bits."]
        return q, lines, num(val), "number", dict(ask=ask, p=[num(t) for t in ps])
    if ask == "ce_nats":
        pt = dec(rng, 0.01, 0.99, 100)
        out = r4(-ln(pt))
        q = rng.choice([
            "The model gives the correct token probability {p}. What is the cross-entropy loss in nats, rounded to 4 decimal places?",
            "Compute -ln({p}) rounded to 4 decimal places: the cross-entropy loss when the true class gets probability {p}.",
            "If p_y = {p}, what is the loss L = -log p_y (natural log), rounded to 4 decimal places?",
        ]).format(p=num(pt))
        lines = [f"L = -ln({num(pt)}) = {out} (rounded to 4 decimal places)."]
        return q, lines, out, "number", dict(ask=ask, p=num(pt), round=4)
    if ask == "bce_grad":
        pt = dec(rng, 0.01, 0.99, 100)
        y = rng.randint(0, 1)
        val = pt - y
        q = rng.choice([
            "A logistic unit outputs σ(z) = {p} and the label is {y}. What is ∂L/∂z for the binary cross-entropy loss?",
            "For binary cross-entropy with prediction p = sigmoid(z) = {p} and target y = {y}, compute the gradient with respect to the logit z.",
            "With sigmoid output {p} and label y = {y}, find d/dz of the BCE loss.",
        ]).format(p=num(pt), y=y)
        lines = [f"For sigmoid + binary cross-entropy, ∂L/∂z = σ(z) - y = {num(pt)} - {y} = {num(val)}."]
        return q, lines, num(val), "number", dict(ask=ask, p=num(pt), y=y)
    # ce_uniform: equal logits over V classes
    bits = rng.random() < 0.5
    V = 2 ** rng.randint(1, 16) if bits else rng.choice([10, 50, 100, 1000, 3, 5, 6, 7, 12, 26, 50257, 32768, 65536])
    if bits:
        val = Fraction(V.bit_length() - 1)
        out, unit = num(val), "bits"
        lines = [f"Equal logits give p = 1/{V} for every class, so L = log2({V}) = {out} bits."]
    else:
        out, unit = r4(ln(Fraction(V))), "nats, rounded to 4 decimal places"
        lines = [f"Equal logits give p = 1/{V} for every class, so L = ln({V}) = {out} (rounded to 4 decimal places)."]
    q = rng.choice([
        "A freshly initialised model outputs equal logits over a vocabulary of {V} tokens. What is its cross-entropy loss in {u}?",
        "All {V} logits are equal. What cross-entropy loss (in {u}) does the model get on any target?",
        "With a uniform prediction over {V} classes, compute the cross-entropy loss in {u}.",
    ]).format(V=V, u=unit)
    return q, lines, out, "number", dict(ask=ask, V=V, unit="bits" if bits else "nats", **({} if bits else {"round": 4}))


def gen_kl(rng):
    ask = rng.choice(["kl_bits", "kl_bits", "kl_nats", "kl_gauss_eq", "kl_gauss"])
    if ask == "kl_bits":
        k = rng.randint(2, 4)
        p, q_ = dyadic(rng, k), dyadic(rng, k)
        if p == q_:
            q_ = dyadic(rng, k)
        terms = [a * (log2_pow(a) - log2_pow(b)) for a, b in zip(p, q_)]
        val = sum(terms)
        q = rng.choice([
            "Compute KL(P || Q) in bits for P = {p} and Q = {q}.",
            "What is the Kullback-Leibler divergence D_KL(P || Q), with log base 2, when P = {p} and Q = {q}?",
            "Let P = {p} and Q = {q}. Find Σ_i P_i log2(P_i / Q_i).",
        ]).format(p=vec(p), q=vec(q_))
        lines = ["KL(P || Q) = Σ P_i log2(P_i/Q_i); each ratio is a power of 2.",
                 f"Terms: {', '.join(num(t) for t in terms)}; sum = {num(val)} bits."]
        return q, lines, num(val), "number", dict(ask=ask, p=[num(t) for t in p], q=[num(t) for t in q_])
    if ask == "kl_nats":
        k = rng.choice([2, 2, 3])
        p, q_ = dist(rng, k, 10), dist(rng, k, 10)
        while p == q_:
            q_ = dist(rng, k, 10)
        with localcontext() as ctx:
            ctx.prec = 40
            d = sum((Decimal(a.numerator) / a.denominator) * (ln(a) - ln(b)) for a, b in zip(p, q_))
        out = r4(d)
        q = rng.choice([
            "Compute KL(P || Q) with the natural log for P = {p} and Q = {q}, rounded to 4 decimal places.",
            "What is D_KL(P || Q) in nats for P = {p}, Q = {q}? Round to 4 decimal places.",
            "Let P = {p} and Q = {q}. Find Σ_i P_i ln(P_i / Q_i), rounded to 4 decimal places.",
        ]).format(p=vec(p), q=vec(q_))
        lines = [f"KL(P || Q) = Σ P_i ln(P_i/Q_i) = "
                 + " + ".join(f"{num(a)}*ln({num(a)}/{num(b)})" for a, b in zip(p, q_)) + f" = {out}."]
        return q, lines, out, "number", dict(ask=ask, p=[num(t) for t in p], q=[num(t) for t in q_], round=4)
    m1, m2 = dec(rng, -3, 3, 2), dec(rng, -3, 3, 2)
    if ask == "kl_gauss_eq":
        s = Fraction(rng.choice([1, 2, 4, 5, 10]), rng.choice([1, 2]))
        val = (m1 - m2) ** 2 / (2 * s ** 2)
        q = rng.choice([
            "What is KL(N({m1}, σ^2) || N({m2}, σ^2)) with σ = {s}?",
            "Two Gaussians share the standard deviation σ = {s} and have means {m1} and {m2}. Compute KL(P || Q) in nats, P the first.",
            "Compute the KL divergence from N(μ = {m1}, σ = {s}) to N(μ = {m2}, σ = {s}).",
        ]).format(m1=num(m1), m2=num(m2), s=num(s))
        lines = [f"With equal variances KL = (μ1 - μ2)^2 / (2σ^2) = ({num(m1)} - {paren_n(m2)})^2 / (2*{paren_n(s)}^2) = {num(val)}."]
        return q, lines, num(val), "number", dict(ask=ask, m1=num(m1), m2=num(m2), s=num(s))
    s1, s2 = Fraction(rng.randint(1, 8), 2), Fraction(rng.randint(1, 8), 2)
    while s1 == s2:
        s2 = Fraction(rng.randint(1, 8), 2)
    rest = (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - Fraction(1, 2)
    with localcontext() as ctx:
        ctx.prec = 40
        d = ln(s2 / s1) + Decimal(rest.numerator) / rest.denominator
    out = r4(d)
    q = rng.choice([
        "Compute KL(N({m1}, {s1}^2) || N({m2}, {s2}^2)) in nats, rounded to 4 decimal places.",
        "P = N(μ = {m1}, σ = {s1}) and Q = N(μ = {m2}, σ = {s2}). What is KL(P || Q), rounded to 4 decimal places?",
        "Find the KL divergence of the Gaussian with mean {m1}, std {s1} from the Gaussian with mean {m2}, std {s2}. Round to 4 decimal places.",
    ]).format(m1=num(m1), m2=num(m2), s1=num(s1), s2=num(s2))
    lines = ["KL = ln(σ2/σ1) + (σ1^2 + (μ1 - μ2)^2)/(2σ2^2) - 1/2.",
             f"= ln({num(s2)}/{num(s1)}) + {num(rest + Fraction(1, 2))} - 1/2 = {out}."]
    return q, lines, out, "number", dict(ask=ask, m1=num(m1), m2=num(m2), s1=num(s1), s2=num(s2), round=4)


def gen_entropy(rng):
    ask = rng.choice(["H_bits", "H_bits", "H_uniform", "H_nats", "H_binary"])
    if ask == "H_bits":
        p = dyadic(rng, rng.randint(2, 6))
        terms = [-a * log2_pow(a) for a in p]
        val = sum(terms)
        q = rng.choice([
            "What is the entropy in bits of the distribution {p}?",
            "Compute H(p) = -Σ p_i log2 p_i for p = {p}.",
            "A random variable takes values with probabilities {p}. How many bits of entropy does it have?",
        ]).format(p=vec(p))
        lines = ["H = -Σ p_i log2 p_i; every p_i is a power of 1/2.",
                 f"Terms: {', '.join(num(t) for t in terms)}; H = {num(val)} bits."]
        return q, lines, num(val), "number", dict(ask=ask, p=[num(t) for t in p])
    if ask == "H_uniform":
        n = rng.randint(2, 300)
        if n & (n - 1) == 0:
            out = str(n.bit_length() - 1)
            lines = [f"A uniform distribution over {n} outcomes has H = log2({n}) = {out} bits."]
            unit = "bits"
        else:
            with localcontext() as ctx:
                ctx.prec = 40
                out = r4(ln(Fraction(n)) / ln(Fraction(2)))
            lines = [f"A uniform distribution over {n} outcomes has H = log2({n}) = ln({n})/ln(2) = {out} bits (rounded)."]
            unit = "bits, rounded to 4 decimal places"
        q = rng.choice([
            "What is the entropy, in {u}, of a uniform distribution over {n} outcomes?",
            "A fair die has {n} faces. What is the entropy of one roll in {u}?",
            "Compute log2 of the number of equally likely outcomes, {n}: the entropy in {u}.",
        ]).format(n=n, u=unit)
        return q, lines, out, "number", dict(ask=ask, n=n, **({} if unit == "bits" else {"round": 4}))
    if ask == "H_nats":
        p = dist(rng, rng.choice([2, 3, 3, 4]), 10)
        with localcontext() as ctx:
            ctx.prec = 40
            d = -sum(Decimal(a.numerator) / a.denominator * ln(a) for a in p)
        out = r4(d)
        q = rng.choice([
            "What is the entropy of {p} in nats, rounded to 4 decimal places?",
            "Compute H(p) = -Σ p_i ln p_i for p = {p}. Round to 4 decimal places.",
            "Find the natural-log entropy of the distribution {p}, rounded to 4 decimal places.",
        ]).format(p=vec(p))
        lines = ["H = -Σ p_i ln p_i = -(" + " + ".join(f"{num(a)}*ln({num(a)})" for a in p) + f") = {out}."]
        return q, lines, out, "number", dict(ask=ask, p=[num(t) for t in p], round=4)
    pt = dec(rng, 0.01, 0.99, 100)
    with localcontext() as ctx:
        ctx.prec = 40
        P, Q = Decimal(pt.numerator) / pt.denominator, Decimal((1 - pt).numerator) / (1 - pt).denominator
        d = -(P * ln(pt) + Q * ln(1 - pt)) / ln(Fraction(2))
    out = r4(d)
    q = rng.choice([
        "A coin lands heads with probability {p}. What is the entropy of one flip in bits, rounded to 4 decimal places?",
        "Compute the binary entropy H({p}) = -p log2 p - (1-p) log2 (1-p), rounded to 4 decimal places.",
        "What is the entropy in bits of a Bernoulli({p}) variable? Round to 4 decimal places.",
    ]).format(p=num(pt))
    lines = [f"H = -{num(pt)}*log2({num(pt)}) - {num(1 - pt)}*log2({num(1 - pt)}) = {out} bits."]
    return q, lines, out, "number", dict(ask=ask, p=num(pt), round=4)


def gen_perplexity(rng):
    ask = rng.choice(["ppl_bits", "ppl_nats", "ppl_nats", "loss_from_ppl"])
    if ask == "ppl_bits":
        L = Fraction(rng.randint(1, 20))
        out = str(2 ** int(L))
        q = rng.choice([
            "A language model's loss is {L} bits per token. What is its perplexity?",
            "Cross-entropy = {L} bits/token. Compute the perplexity 2^H.",
            "What perplexity corresponds to an average loss of {L} bits per token?",
        ]).format(L=num(L))
        lines = [f"Perplexity = 2^(loss in bits) = 2^{num(L)} = {out}."]
        return q, lines, out, "number", dict(ask=ask, L=num(L))
    if ask == "ppl_nats":
        L = dec(rng, 0.5, 6, 100)
        out = r4(dexp(L))
        q = rng.choice([
            "A model's validation loss is {L} nats per token. What is its perplexity, rounded to 4 decimal places?",
            "Compute exp({L}), the perplexity of a model with cross-entropy {L} (natural log). Round to 4 decimal places.",
            "The mean token loss is {L} (in nats). Find the perplexity rounded to 4 decimal places.",
        ]).format(L=num(L))
        lines = [f"Perplexity = exp(loss) = exp({num(L)}) = {out}."]
        return q, lines, out, "number", dict(ask=ask, L=num(L), round=4)
    P = rng.choice([2 ** rng.randint(1, 15), rng.randint(2, 500)])
    if P & (P - 1) == 0:
        out, unit = str(P.bit_length() - 1), "bits"
        lines = [f"Loss in bits = log2(perplexity) = log2({P}) = {out}."]
    else:
        out, unit = r4(ln(Fraction(P))), "nats, rounded to 4 decimal places"
        lines = [f"Loss in nats = ln(perplexity) = ln({P}) = {out}."]
    q = rng.choice([
        "A model has perplexity {P}. What is its cross-entropy loss in {u}?",
        "Perplexity {P} corresponds to what loss per token, in {u}?",
        "Convert a perplexity of {P} to a cross-entropy loss in {u}.",
    ]).format(P=P, u=unit)
    return q, lines, out, "number", dict(ask=ask, P=P, unit="bits" if unit == "bits" else "nats",
                                         **({} if unit == "bits" else {"round": 4}))


def attn_dims(rng):
    C = rng.choice([64, 128, 192, 256, 384, 512, 768, 1024, 2048])
    h = rng.choice([hh for hh in (1, 2, 4, 6, 8, 12, 16) if C % hh == 0 and C // hh >= 16])
    return rng.choice([1, 2, 4, 8, 16, 32]), rng.choice([64, 128, 256, 512, 1024, 2048]), C, h


def gen_attention_shapes(rng):
    ask = rng.choice(["head_dim", "scores_shape", "q_shape", "out_shape", "attn_params", "kv_cache", "kv_cache"])
    B, T, C, h = attn_dims(rng)
    hd = C // h
    setup = rng.choice([
        "Multi-head self-attention runs with batch size {B}, sequence length {T}, model width {C} and {h} heads. ",
        "A transformer layer has d_model = {C} and n_head = {h}; the input has shape ({B}, {T}, {C}) (batch, tokens, channels). ",
        "Consider causal self-attention on a (B, T, C) = ({B}, {T}, {C}) input with {h} attention heads. ",
    ]).format(B=B, T=T, C=C, h=h)
    params = dict(ask=ask, B=B, T=T, C=C, h=h)
    if ask == "head_dim":
        q = setup + rng.choice(["What is the head dimension?", "How many channels does each head get?",
                                "What is d_head = C / n_head?"])
        return q, [f"Each head gets C / n_head = {C} / {h} = {hd} channels."], str(hd), "number", params
    if ask in ("scores_shape", "q_shape", "out_shape"):
        shape, what, why = {
            "scores_shape": (f"({B}, {h}, {T}, {T})", "the attention score matrix Q K^T",
                             "one T x T score matrix per batch element and head"),
            "q_shape": (f"({B}, {h}, {T}, {hd})", "the queries after splitting into heads (batch, head, time, head_dim)",
                        f"Q is reshaped to (B, T, n_head, C/n_head) and transposed, with C/n_head = {hd}"),
            "out_shape": (f"({B}, {T}, {C})", "the attention block's output",
                          "heads are concatenated back to C channels and projected to C"),
        }[ask]
        q = setup + rng.choice([f"What is the shape of {what}?", f"Give the shape of {what}.",
                                f"What shape does {what} have?"])
        return q, [f"{why[0].upper() + why[1:]}: {shape}."], shape, "text", params
    if ask == "attn_params":
        bias = rng.random() < 0.5
        val = 4 * C * C + (4 * C if bias else 0)
        b = "with" if bias else "without"
        q = setup + rng.choice([f"How many parameters do the Q, K, V and output projections have together, {b} biases?",
                                f"Count the parameters of the four C x C attention projections ({b} biases).",
                                f"How many weights (projections {b} biases) does the attention block hold?"])
        lines = [f"Four C x C matrices: 4*{C}^2 = {4 * C * C}" + (f", plus 4*{C} biases = {val}." if bias else ".")]
        params.update(bias=bias)
        return q, lines, str(val), "number", params
    # kv_cache: elements or bytes, with grouped-query heads sometimes
    L = rng.choice([2, 4, 6, 8, 12, 16, 24, 32])
    kv = rng.choice([kk for kk in (1, 2, 4, h) if h % kk == 0])
    nbytes = rng.choice([0, 2, 4])  # 0 = count elements
    elems = 2 * L * B * T * kv * hd
    val = elems * (nbytes or 1)
    unit = "bytes, storing values in " + ("bf16 (2 bytes each)" if nbytes == 2 else "fp32 (4 bytes each)") if nbytes else "elements"
    q = setup + f"The model has {L} layers and {kv} key/value heads. " + rng.choice([
        f"How large is the KV cache for all {T} positions, in {unit}?",
        f"What is the size of the key-value cache in {unit}?",
        f"Compute the KV cache size ({unit}).",
    ])
    lines = [f"K and V per layer: 2 * B * T * n_kv_head * head_dim = 2*{B}*{T}*{kv}*{hd}; times {L} layers = {elems} elements"
             + (f"; times {nbytes} bytes = {val}." if nbytes else ".")]
    params.update(L=L, kv=kv, bytes=nbytes)
    return q, lines, str(val), "number", params


def gen_attention_flops(rng):
    ask = rng.choice(["matmul", "qk", "av", "qkv_proj", "attn_total", "mlp", "train_6nd"])
    conv = rng.choice(["Count a multiply-add as 2 FLOPs.", "Use 2 FLOPs per multiply-accumulate.",
                       "(1 multiply-add = 2 FLOPs.)"])
    if ask == "matmul":
        m, k, n = (rng.choice([2, 4, 8, 16, 32, 64, 100, 128, 256, 512, 768, 1000]) for _ in range(3))
        val = 2 * m * k * n
        q = rng.choice([
            "How many FLOPs does multiplying a ({m}, {k}) matrix by a ({k}, {n}) matrix take? {c}",
            "{c} What is the FLOP count of the matrix product A B with A of shape ({m}, {k}) and B of shape ({k}, {n})?",
            "Compute the FLOPs of a ({m} x {k}) times ({k} x {n}) matmul. {c}",
        ]).format(m=m, k=k, n=n, c=conv)
        lines = [f"Each of the {m}*{n} outputs needs {k} multiply-adds: 2*{m}*{k}*{n} = {val}."]
        return q, lines, str(val), "number", dict(ask=ask, m=m, k=k, n=n)
    if ask == "train_6nd":
        N = rng.choice([10, 20, 40, 85, 125, 350, 760]) * 10 ** 6
        D = rng.choice([1, 2, 5, 10, 20, 100]) * 10 ** 9
        val = 6 * N * D
        q = rng.choice([
            "Using the rule of thumb of 6 FLOPs per parameter per token, how many FLOPs does training a {N}-parameter model on {D} tokens take?",
            "Estimate the training compute, 6*N*D, for N = {N} parameters and D = {D} tokens.",
            "A model with {N} parameters is trained on {D} tokens. With about 6 FLOPs per parameter per token (forward + backward), what is the total?",
        ]).format(N=N, D=D)
        lines = [f"C = 6*N*D = 6*{N}*{D} = {val}."]
        return q, lines, str(val), "number", dict(ask=ask, N=N, D=D)
    B, T, C, h = attn_dims(rng)
    hd = C // h
    setup = rng.choice([
        "Self-attention runs on a batch of {B} sequences of {T} tokens with d_model = {C} and {h} heads. ",
        "A transformer layer with width C = {C} and {h} heads processes input of shape ({B}, {T}, {C}). ",
        "Take B = {B}, T = {T}, C = {C}, n_head = {h}. ",
    ]).format(B=B, T=T, C=C, h=h)
    params = dict(ask=ask, B=B, T=T, C=C, h=h)
    qk = 2 * B * h * T * T * hd
    proj = 2 * B * T * C * 3 * C
    out = 2 * B * T * C * C
    if ask in ("qk", "av"):
        what = "computing the scores Q K^T" if ask == "qk" else "multiplying the attention weights by V"
        q = setup + rng.choice([f"How many FLOPs does {what} take, over all heads? {conv}",
                                f"{conv} Count the FLOPs of {what}.",
                                f"What is the FLOP count for {what}? {conv}"])
        lines = [f"Per head a (T, {'hd' if ask == 'qk' else 'T'}) x ({'hd, T' if ask == 'qk' else 'T, hd'}) product: "
                 f"2*T*T*hd; over B*h heads: 2*{B}*{h}*{T}*{T}*{hd} = {qk}."]
        return q, lines, str(qk), "number", params
    if ask == "qkv_proj":
        q = setup + rng.choice([f"How many FLOPs do the Q, K and V projections take together? {conv}",
                                f"{conv} Count the FLOPs of the fused QKV projection (C to 3C).",
                                f"What is the FLOP count of projecting the input to queries, keys and values? {conv}"])
        lines = [f"A ({B}*{T}, {C}) x ({C}, 3*{C}) product: 2*{B}*{T}*{C}*{3 * C} = {proj}."]
        return q, lines, str(proj), "number", params
    if ask == "mlp":
        val = 2 * (2 * B * T * C * 4 * C)
        q = setup + rng.choice([f"The MLP maps C to 4C and back. How many FLOPs does it take? {conv}",
                                f"{conv} Count the FLOPs of an MLP with hidden width 4C (two matmuls).",
                                f"What is the forward FLOP count of the 4x-wide MLP? {conv}"])
        lines = [f"Two matmuls of 2*B*T*C*4C each: 2*(2*{B}*{T}*{C}*{4 * C}) = {val}."]
        return q, lines, str(val), "number", params
    val = proj + 2 * qk + out
    q = setup + rng.choice([f"How many FLOPs does the whole attention block take (QKV projection, scores, weighted sum of V, output projection)? {conv}",
                            f"{conv} Count all the matmul FLOPs of the attention block: QKV, Q K^T, attention times V, output projection.",
                            f"What is the total matmul FLOP count of one attention layer's forward pass? {conv}"])
    lines = [f"QKV: 2*B*T*C*3C = {proj}; Q K^T and A V: 2*B*h*T^2*hd each = {qk}; output: 2*B*T*C^2 = {out}.",
             f"Total = {proj} + 2*{qk} + {out} = {val}."]
    return q, lines, str(val), "number", params


def gen_sgd(rng):
    ask = rng.choice(["sgd", "sgd", "sgd_wd", "sgd_two", "sgd_vec"])
    lr = rng.choice([Fraction(1, 10), Fraction(1, 100), Fraction(5, 100), Fraction(1, 1000), Fraction(2, 10),
                     Fraction(1, 2), Fraction(3, 10)])
    if ask == "sgd_vec":
        n = rng.choice([2, 3])
        w = [dec(rng, -3, 3) for _ in range(n)]
        g = [nzdec(rng, -2, 2) for _ in range(n)]
        i = rng.randint(1, n)
        val = w[i - 1] - lr * g[i - 1]
        q = rng.choice([
            "Weights w = {w} get gradient g = {g}. After one SGD step with learning rate {lr}, what is w_{i}?",
            "Apply w ← w - η g with η = {lr}, w = {w}, g = {g}. What is the new {o} weight?",
            "One step of gradient descent (lr = {lr}) from w = {w} with gradient {g}: give component {i} of the result.",
        ]).format(w=vec(w), g=vec(g), lr=num(lr), i=i, o=ORD[i])
        lines = [f"w_{i} ← w_{i} - lr*g_{i} = {num(w[i - 1])} - {num(lr)}*{paren_n(g[i - 1])} = {num(val)}."]
        return q, lines, num(val), "number", dict(ask=ask, w=[num(t) for t in w], g=[num(t) for t in g], lr=num(lr), i=i)
    w, g = dec(rng, -3, 3), nzdec(rng, -3, 3)
    params = dict(ask=ask, w=num(w), g=num(g), lr=num(lr))
    if ask == "sgd":
        val = w - lr * g
        q = rng.choice([
            "A weight w = {w} has gradient {g}. What is w after one SGD step with learning rate {lr}?",
            "Apply one gradient-descent update w ← w - η·g with w = {w}, g = {g}, η = {lr}.",
            "With learning rate {lr}, parameter {w} and gradient {g}, what is the updated parameter?",
        ]).format(w=num(w), g=num(g), lr=num(lr))
        lines = [f"w ← w - lr*g = {num(w)} - {num(lr)}*{paren_n(g)} = {num(val)}."]
    elif ask == "sgd_wd":
        lam = rng.choice([Fraction(1, 10), Fraction(1, 100), Fraction(5, 10), Fraction(2, 10)])
        val = w - lr * (g + lam * w)
        q = rng.choice([
            "SGD with L2 weight decay uses w ← w - η(g + λw). With w = {w}, g = {g}, η = {lr}, λ = {lam}, what is the new w?",
            "A weight {w} with gradient {g} takes one SGD step (lr {lr}) with weight decay λ = {lam} added to the gradient. What is it now?",
            "Compute w - lr*(g + wd*w) for w = {w}, g = {g}, lr = {lr}, wd = {lam}.",
        ]).format(w=num(w), g=num(g), lr=num(lr), lam=num(lam))
        lines = [f"g + λw = {num(g)} + {num(lam)}*{paren_n(w)} = {num(g + lam * w)}.",
                 f"w ← {num(w)} - {num(lr)}*{paren_n(g + lam * w)} = {num(val)}."]
        params.update(lam=num(lam))
    else:  # sgd_two
        g2 = nzdec(rng, -3, 3)
        w1 = w - lr * g
        val = w1 - lr * g2
        q = rng.choice([
            "Starting from w = {w}, two SGD steps with learning rate {lr} use gradients {g} and then {g2}. What is w after both?",
            "Run w ← w - η·g twice with η = {lr}, starting at {w}: the first gradient is {g}, the second {g2}. Final w?",
            "A parameter starts at {w}. With lr {lr}, it receives gradient {g}, then gradient {g2}. What is its value after the two updates?",
        ]).format(w=num(w), g=num(g), g2=num(g2), lr=num(lr))
        lines = [f"Step 1: {num(w)} - {num(lr)}*{paren_n(g)} = {num(w1)}.",
                 f"Step 2: {num(w1)} - {num(lr)}*{paren_n(g2)} = {num(val)}."]
        params.update(g2=num(g2))
    return q, lines, num(val), "number", params


def gen_momentum(rng):
    ask = rng.choice(["mom_w", "mom_v", "mom_two"])
    mu = rng.choice([Fraction(9, 10), Fraction(1, 2), Fraction(99, 100), Fraction(8, 10)])
    lr = rng.choice([Fraction(1, 10), Fraction(1, 100), Fraction(5, 100), Fraction(2, 10)])
    w, g = dec(rng, -3, 3), nzdec(rng, -3, 3)
    rule = "v ← μv + g, w ← w - lr·v"
    params = dict(ask=ask, mu=num(mu), lr=num(lr), w=num(w), g=num(g))
    if ask in ("mom_w", "mom_v"):
        v0 = dec(rng, -2, 2)
        v1 = mu * v0 + g
        w1 = w - lr * v1
        target = "w" if ask == "mom_w" else "v"
        q = rng.choice([
            "SGD with momentum uses {rule}. With μ = {mu}, lr = {lr}, w = {w}, v = {v0} and gradient g = {g}, what is {t} after one step?",
            "Momentum update ({rule}): momentum {mu}, learning rate {lr}, current velocity {v0}, weight {w}, gradient {g}. Find the new {t}.",
            "Given μ = {mu}, lr = {lr}, v = {v0}, w = {w} and g = {g}, apply one step of {rule}. What is {t}?",
        ]).format(rule=rule, mu=num(mu), lr=num(lr), w=num(w), v0=num(v0), g=num(g), t=target)
        lines = [f"v ← {num(mu)}*{paren_n(v0)} + {paren_n(g)} = {num(v1)}."]
        if ask == "mom_w":
            lines.append(f"w ← {num(w)} - {num(lr)}*{paren_n(v1)} = {num(w1)}.")
        params.update(v0=num(v0))
        return q, lines, num(w1 if ask == "mom_w" else v1), "number", params
    g2 = nzdec(rng, -3, 3)
    v1 = g
    w1 = w - lr * v1
    v2 = mu * v1 + g2
    w2 = w1 - lr * v2
    q = rng.choice([
        "Momentum SGD ({rule}) starts at w = {w} with v = 0, μ = {mu}, lr = {lr}. The gradients of two steps are {g} and {g2}. What is w after two steps?",
        "With {rule}, μ = {mu}, lr = {lr}, v starting at 0 and w at {w}, apply gradients {g} then {g2}. Final w?",
        "Two steps of heavy-ball momentum (μ = {mu}, lr = {lr}, {rule}) from w = {w}, v = 0, with gradients {g}, {g2}. Give w.",
    ]).format(rule=rule, mu=num(mu), lr=num(lr), w=num(w), g=num(g), g2=num(g2))
    lines = [f"Step 1: v = {num(v1)}, w = {num(w)} - {num(lr)}*{paren_n(v1)} = {num(w1)}.",
             f"Step 2: v = {num(mu)}*{paren_n(v1)} + {paren_n(g2)} = {num(v2)}, w = {num(w1)} - {num(lr)}*{paren_n(v2)} = {num(w2)}."]
    params.update(g2=num(g2))
    return q, lines, num(w2), "number", params


def gen_adam(rng):
    ask = rng.choice(["m1", "v1", "step1", "step1", "mhat2", "adamw1", "step2"])
    b1 = rng.choice([Fraction(9, 10), Fraction(8, 10), Fraction(1, 2)])
    b2 = rng.choice([Fraction(999, 1000), Fraction(99, 100), Fraction(95, 100), Fraction(9, 10)])
    lr = rng.choice([Fraction(1, 10), Fraction(1, 100), Fraction(1, 1000), Fraction(3, 1000), Fraction(5, 100)])
    w, g = dec(rng, -3, 3), nzdec(rng, -3, 3)
    hyper = f"β1 = {num(b1)}, β2 = {num(b2)}, lr = {num(lr)}, ε = 0"
    params = dict(ask=ask, b1=num(b1), b2=num(b2), lr=num(lr), w=num(w), g=num(g))
    rules = "m ← β1 m + (1-β1) g, v ← β2 v + (1-β2) g^2, m̂ = m/(1-β1^t), v̂ = v/(1-β2^t), w ← w - lr·m̂/(sqrt(v̂) + ε)"
    lead = rng.choice([
        "Adam ({h}) starts with m = v = 0. ",
        "Consider Adam with {h}, moments initialised to zero. ",
        "Adam's update is {r}. Use {h}, m = v = 0 at the start. ",
    ]).format(h=hyper, r=rules)
    sign = 1 if g > 0 else -1
    if ask in ("m1", "v1", "mhat2"):
        del params["w"]   # not in these questions
    if ask == "m1":
        val = (1 - b1) * g
        q = lead + rng.choice([f"After the first gradient g = {num(g)}, what is m?",
                               f"What is the first moment m after one step with gradient {num(g)}?",
                               f"Compute m_1 for g_1 = {num(g)}."])
        lines = [f"m_1 = β1*0 + (1 - β1)*g = {num(1 - b1)}*{paren_n(g)} = {num(val)}."]
    elif ask == "v1":
        val = (1 - b2) * g * g
        q = lead + rng.choice([f"After the first gradient g = {num(g)}, what is v?",
                               f"What is the second moment v after one step with gradient {num(g)}?",
                               f"Compute v_1 for g_1 = {num(g)}."])
        lines = [f"v_1 = (1 - β2)*g^2 = {num(1 - b2)}*{paren_n(g)}^2 = {num(val)}."]
    elif ask == "step1":
        val = w - lr * sign
        q = lead + rng.choice([f"The weight is {num(w)} and its first gradient is {num(g)}. What is the weight after one Adam step?",
                               f"w = {num(w)}, g = {num(g)}. Find w after the first update.",
                               f"Apply the first Adam step to w = {num(w)} with gradient {num(g)}."])
        lines = [f"Bias correction gives m̂ = g = {num(g)} and v̂ = g^2, so the step is lr*g/|g| = lr*sign(g) = {num(lr * sign)}.",
                 f"w ← {num(w)} - {paren_n(lr * sign)} = {num(val)}."]
    elif ask == "adamw1":
        lam = rng.choice([Fraction(1, 10), Fraction(1, 100), Fraction(5, 100)])
        val = w - lr * (sign + lam * w)
        q = lead + rng.choice([f"AdamW adds decoupled weight decay λ = {num(lam)}: w ← w - lr·(m̂/sqrt(v̂) + λw). With w = {num(w)} and first gradient {num(g)}, what is w after one step?",
                               f"With decoupled weight decay {num(lam)} (AdamW: w ← w - lr·(m̂/sqrt(v̂) + λw)), w = {num(w)}, g = {num(g)}: new w?",
                               f"Take the first AdamW step (weight decay λ = {num(lam)}, update w - lr·(m̂/sqrt(v̂) + λw)) from w = {num(w)} with gradient {num(g)}."])
        lines = [f"On the first step m̂/sqrt(v̂) = g/|g| = {sign}, and λw = {num(lam * w)}.",
                 f"w ← {num(w)} - {num(lr)}*({sign} + {paren_n(lam * w)}) = {num(val)}."]
        params.update(lam=num(lam))
    else:
        g2 = nzdec(rng, -3, 3)
        m2 = b1 * (1 - b1) * g + (1 - b1) * g2
        mhat = m2 / (1 - b1 ** 2)
        params.update(g2=num(g2))
        if ask == "mhat2":
            val = mhat
            q = lead + rng.choice([f"The gradients of the first two steps are {num(g)} and {num(g2)}. What is the bias-corrected first moment m̂ after step 2?",
                                   f"Gradients g_1 = {num(g)}, g_2 = {num(g2)}. Compute m̂_2 = m_2/(1 - β1^2).",
                                   f"After gradients {num(g)} then {num(g2)}, what is m̂ at t = 2?"])
            lines = [f"m_1 = {num((1 - b1) * g)}, m_2 = β1*m_1 + (1-β1)*g_2 = {num(m2)}.",
                     f"m̂_2 = m_2/(1 - β1^2) = {num(m2)}/{num(1 - b1 ** 2)} = {num(val)}."]
        else:  # step2, rounded: sqrt(v̂) is irrational in general
            v2 = b2 * (1 - b2) * g * g + (1 - b2) * g2 * g2
            vhat = v2 / (1 - b2 ** 2)
            w1 = w - lr * sign
            with localcontext() as ctx:
                ctx.prec = 40
                D = lambda f: Decimal(f.numerator) / Decimal(f.denominator)  # noqa: E731
                d = D(w1) - D(lr) * D(mhat) / D(vhat).sqrt()
            out = r4(d)
            q = lead + rng.choice([f"Starting from w = {num(w)}, the gradients of the first two steps are {num(g)} and {num(g2)}. What is w after two steps, rounded to 4 decimal places?",
                                   f"w_0 = {num(w)}, g_1 = {num(g)}, g_2 = {num(g2)}. Find w_2 rounded to 4 decimal places.",
                                   f"Apply two Adam steps to w = {num(w)} with gradients {num(g)}, {num(g2)}; round the final weight to 4 decimal places."])
            lines = [f"Step 1: the update is lr*sign(g_1), so w_1 = {num(w1)}.",
                     f"Step 2: m̂ = {num(mhat)}, v̂ = {num(vhat)}; w_2 = {num(w1)} - {num(lr)}*m̂/sqrt(v̂) = {out}."]
            params.update(round=4)
            return q, lines, out, "number", params
    return q, lines, num(val), "number", params


# topic → (generator, weight); the small spaces (perplexity) get fewer pairs
TOPICS = {"matrix_grad": (gen_matrix_grad, 3), "softmax_grad": (gen_softmax_grad, 2),
          "cross_entropy": (gen_cross_entropy, 3), "kl": (gen_kl, 2), "entropy": (gen_entropy, 2),
          "perplexity": (gen_perplexity, 1), "attention_shapes": (gen_attention_shapes, 2),
          "attention_flops": (gen_attention_flops, 2), "sgd": (gen_sgd, 2), "momentum": (gen_momentum, 2),
          "adam": (gen_adam, 3)}
_ORDER = [t for t, (_, w) in TOPICS.items() for _ in range(w)]  # one round: each topic `weight` times


# -----------------------------------------------------------------------------
# verification: the final string must read back as the exact (or correctly rounded) value

_SHAPE = re.compile(r"\((\d+, )+\d+\)")
_ROUNDED = re.compile(r"-?\d+\.\d{4}")
_EXACT = re.compile(r"-?\d+(\.\d*[1-9])?|-?\d+/\d+")


def check_final(final, kind, q, params):
    """The final is in the documented syntax: a shape, a 4-place rounding the question asks
    for, or an exact integer / terminating decimal / reduced fraction."""
    if kind == "text":
        return bool(_SHAPE.fullmatch(final))
    if params.get("round") == 4:
        return bool(_ROUNDED.fullmatch(final)) and "4 decimal places" in q
    if not _EXACT.fullmatch(final):
        return False
    return num(Fraction(final)) == final   # canonical: reduced, no trailing zeros


def make_pair(rng, topic):
    q, lines, final, kind, params = TOPICS[topic][0](rng)
    if not check_final(final, kind, q, params):
        return None
    answer = "\n".join(lines + [f"#### {final}"])
    return {"question": q, "answer": answer, "final": final, "kind": kind, "topic": topic, "params": params}


def draw_unique(n, make, name, unit, progress=False, stats=None):
    """n records from make(i) (i = 0, 1, ...; a record or None when its checks failed), unique by
    json of their (topic, level, params): the driver ml_math and word_problems share. Gives up with
    an error when failed + duplicate draws pass 20n + 100 (the space of one topic is used up)."""
    from tqdm import tqdm
    out, seen, dropped, dups, i = [], set(), 0, 0, 0
    bar = tqdm(total=n, desc=f"generating {name}", disable=None if progress else True, unit=unit)
    while len(out) < n:
        if dropped + dups > 20 * n + 100:
            raise RuntimeError(f"{name}: cannot find {n} unique checked {unit}s ({dropped} failed, {dups} duplicates)")
        rec = make(i)
        i += 1  # a topic whose space is used up gives way to the next one
        if rec is None:
            dropped += 1
            continue
        key = (rec["topic"], rec.get("level"), json.dumps(rec["params"], sort_keys=True))
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        out.append(rec)
        bar.update(1)
    bar.close()
    if stats is not None:
        stats.update(dropped=dropped, duplicates=dups)
    return out


def generate(n, seed, progress=False, stats=None):
    """n checked pairs, unique by (topic, inputs). Same (n, seed) → same list."""
    rng = random.Random(seed)
    return draw_unique(n, lambda i: make_pair(rng, _ORDER[i % len(_ORDER)]), NAME, "pair", progress, stats)


@cli
def main(argv=None):
    cfg = parse_config(Config, PRESETS, argv)
    check_range(cfg, "n", lo=1)
    check_range(cfg, "n_test", lo=0)
    check_range(cfg, "seed", lo=0, hi=SEED_MAX)
    from mathlm.data.qa_io import dataset_lock
    with dataset_lock(NAME, cfg.out_dir):  # a second run on this dataset stops here, before the generation
        return run(cfg)


def run(cfg):
    t0 = time.time()
    stats = {}
    pairs = generate(cfg.n + cfg.n_test, cfg.seed, progress=True, stats=stats)
    return write_outputs(NAME, cfg, pairs, cfg.n_test, t0, stats)


if __name__ == "__main__":
    main()
