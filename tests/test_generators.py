"""The synthetic generators (calculus, ML math): every answer re-derived here by a different
route — sympy differentiation and mpmath quadrature for calculus; torch optimisers, torch's
FLOP counter, meta-device shapes and float formulas for ML math — plus determinism, the
held-out split and phrasing variety."""
import json
import math
import re
from collections import defaultdict
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch
from sympy.parsing.sympy_parser import parse_expr
from torch.utils.flop_counter import FlopCounterMode

from mathlm.data import generate_calculus as calc
from mathlm.data import generate_ml_math as ml

N_CHECK = 520  # ≥ 500 pairs each, every one re-verified


@pytest.fixture(scope="module")
def calc_pairs():
    return calc.generate(N_CHECK, seed=7)


@pytest.fixture(scope="module")
def ml_pairs():
    return ml.generate(N_CHECK, seed=7)


def check_format(p):
    lines = p["answer"].split("\n")
    assert 2 <= len(lines) <= 5, p["answer"]
    assert lines[-1] == "#### " + p["final"]
    assert all(not ln.startswith("####") for ln in lines[:-1])
    assert "\nQ:" not in p["answer"] and p["question"].strip() == p["question"]


# -----------------------------------------------------------------------------
# calculus: differentiate, substitute, integrate numerically

def expr(s, v):
    """Our own generated text (trusted) → sympy."""
    assert "**" not in s and re.fullmatch(r"[0-9a-z+\-*/^(). ]+", s), s
    return parse_expr(s.replace("^", "**"), local_dict={v: sp.Symbol(v)})


def equal_at_points(a, b, x):
    """a == b as functions of x, at three points other than the generator's, to 20 digits."""
    fa, fb = sp.lambdify(x, a, "mpmath"), sp.lambdify(x, b, "mpmath")
    with mpmath.workdps(30):
        for pt in (mpmath.mpf("0.37"), mpmath.mpf("1.71"), mpmath.mpf("2.53")):
            if not abs(fa(pt) - fb(pt)) < mpmath.mpf(10) ** -20 * (1 + abs(fb(pt))):
                return False
    return True


def gauss_legendre(f, a, b, n=80):
    """∫_a^b f by n-point Gauss-Legendre: exact for polynomials, ~1e-14 for these smooth integrands."""
    t, w = np.polynomial.legendre.leggauss(n)
    x = (b - a) / 2 * t + (a + b) / 2
    return (b - a) / 2 * float(np.sum(w * np.broadcast_to(f(x), x.shape)))


def test_calculus_answers_reverified(calc_pairs):
    assert len(calc_pairs) == N_CHECK
    for p in calc_pairs:
        check_format(p)
        v = p["var"]
        x = sp.Symbol(v)
        f = expr(p["params"]["f"], v)
        assert p["params"]["f"] in p["question"]
        claim = None if p["kind"] == "number" else expr(p["final"], v)
        if p["kind"] == "expr":              # the claimed derivative
            assert equal_at_points(claim, sp.diff(f, x), x), p
        elif p["kind"] == "antiderivative":  # d/dx of the claimed antiderivative is the integrand
            assert not claim.has(sp.Symbol("C"))
            assert equal_at_points(sp.diff(claim, x), f, x), p
        else:                                # exact value vs numerical quadrature
            assert p["topic"] == "definite_integral"
            a, b = expr(p["params"]["a"], v), expr(p["params"]["b"], v)
            assert f"{p['params']['a']}" in p["question"] and f"{p['params']['b']}" in p["question"]
            assert re.fullmatch(r"-?\d+(/\d+)?", p["final"])
            assert abs(gauss_legendre(sp.lambdify(x, f, "numpy"), float(a), float(b)) - float(Fraction(p["final"]))) \
                < 1e-9 * (1 + abs(float(Fraction(p["final"])))), p


def test_calculus_topics_and_kinds(calc_pairs):
    topics = {p["topic"] for p in calc_pairs}
    assert topics == set(calc.TOPICS)
    kinds = {p["topic"]: p["kind"] for p in calc_pairs}
    assert kinds["indefinite_integral"] == "antiderivative" and kinds["definite_integral"] == "number"
    assert {p["var"] for p in calc_pairs} >= {"x", "t", "u"}


@pytest.mark.parametrize("e,want", [("3/x**2", "3/x^2"), ("x**-2", "1/x^2"), ("(3*x+1)**4", "(3*x + 1)^4"),
                                    ("6/cos(3*x)**2", "6/cos(3*x)^2"), ("2**x*log(2)", "2^x*log(2)"),
                                    ("x**(S(3)/2)", "x^(3/2)"), ("E", "exp(1)"), ("exp(x)", "exp(x)")])
def test_calculus_printer(e, want):
    assert calc.fmt(sp.sympify(e)) == want


# -----------------------------------------------------------------------------
# ML math: recompute every number by another route

def F(s):
    return Fraction(s)


def arr(xs):
    return np.array([[F(a) for a in r] for r in xs] if isinstance(xs[0], list) else [F(a) for a in xs], dtype=object)


def flops(fn):
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def meta(*shape):
    return torch.empty(*shape, device="meta")


def torch_opt(P):
    """Run the optimiser the question describes with torch, in float64; returns (w, state)."""
    w = torch.nn.Parameter(torch.tensor([float(F(P["w"])) if "w" in P else 0.0], dtype=torch.float64))
    lr = float(F(P["lr"]))
    ask = P["ask"]
    if ask in ("sgd", "sgd_two"):
        opt = torch.optim.SGD([w], lr=lr)
    elif ask == "sgd_wd":
        opt = torch.optim.SGD([w], lr=lr, weight_decay=float(F(P["lam"])))
    elif ask.startswith("mom"):
        opt = torch.optim.SGD([w], lr=lr, momentum=float(F(P["mu"])))
        if "v0" in P:  # a velocity carried over from earlier steps
            opt.state[w]["momentum_buffer"] = torch.tensor([float(F(P["v0"]))], dtype=torch.float64)
    elif ask == "adamw1":
        opt = torch.optim.AdamW([w], lr=lr, betas=(float(F(P["b1"])), float(F(P["b2"]))), eps=0.0,
                                weight_decay=float(F(P["lam"])))
    else:
        opt = torch.optim.Adam([w], lr=lr, betas=(float(F(P["b1"])), float(F(P["b2"]))), eps=0.0)
    grads = [P["g"]] + ([P["g2"]] if "g2" in P else [])
    for g in grads:
        w.grad = torch.tensor([float(F(g))], dtype=torch.float64)
        opt.step()
    return w.item(), opt.state[w]


def ml_expected(P):
    """The answer from the inputs alone: a Fraction (exact), a float (rounded answers, or exact
    answers computed in float64), or a shape string."""
    ask = P["ask"]
    if ask == "quad":
        A, x = arr(P["A"]), arr(P["x"])
        return ((A + A.T) @ x)[P["i"] - 1]
    if ask == "sq_lin":
        a, x = arr(P["a"]), arr(P["x"])
        return 2 * (a @ x) * a[P["i"] - 1]
    if ask == "lsq":  # autograd on float64
        A = torch.tensor([[float(F(a)) for a in r] for r in P["A"]], dtype=torch.float64)
        b = torch.tensor([float(F(t)) for t in P["b"]], dtype=torch.float64)
        x = torch.tensor([float(F(t)) for t in P["x"]], dtype=torch.float64, requires_grad=True)
        ((A @ x - b) ** 2).sum().backward()
        return x.grad[P["i"] - 1].item()
    if ask == "linear":
        w = torch.tensor([float(F(t)) for t in P["w"]], dtype=torch.float64, requires_grad=True)
        b = torch.tensor(float(F(P["b"])), dtype=torch.float64, requires_grad=True)
        x = torch.tensor([float(F(t)) for t in P["x"]], dtype=torch.float64)
        ((w @ x + b - float(F(P["t"]))) ** 2 / 2).backward()
        return (w.grad[P["which"] - 1] if P["which"] else b.grad).item()
    if ask == "trace":
        n = len(P["A"])
        X = sp.Matrix(n, n, sp.symbols(f"X0:{n * n}"))
        A = sp.Matrix([[sp.Rational(a) for a in r] for r in P["A"]])
        return Fraction(str(sp.diff((A * X).trace(), X[P["i"] - 1, P["j"] - 1])))
    if ask == "shape":
        X, W = meta(P["B"], P["n"]).requires_grad_(), meta(P["n"], P["m"]).requires_grad_()
        return str(tuple((X if P["wrt"] == "X" else W).shape))
    if ask in ("softmax_log", "jac", "jac_log"):
        if "a" in P:
            p = torch.softmax(torch.log(torch.tensor([float(a) for a in P["a"]], dtype=torch.float64)), 0)
        else:
            p = torch.tensor([float(F(t)) for t in P["p"]], dtype=torch.float64)
        if ask == "softmax_log":
            return p[P["i"] - 1].item()
        z = torch.log(p).requires_grad_()   # softmax(log p) = p, so the Jacobian is taken at p
        J = torch.autograd.functional.jacobian(lambda z: torch.softmax(z, 0), z)
        return J[P["i"] - 1, P["j"] - 1].item()
    if ask == "ce_grad":
        z = torch.log(torch.tensor([float(F(t)) for t in P["p"]], dtype=torch.float64)).requires_grad_()
        torch.nn.functional.cross_entropy(z[None], torch.tensor([P["y"] - 1])).backward()
        return z.grad[P["j"] - 1].item()
    if ask == "ce_bits":
        return -math.log2(float(F(P["p"][P["y"] - 1])))
    if ask == "ce_batch_bits":
        return float(np.mean([-math.log2(float(F(t))) for t in P["p"]]))
    if ask == "ce_nats":
        return -math.log(float(F(P["p"])))
    if ask == "bce_grad":
        p = float(F(P["p"]))
        z = torch.tensor(math.log(p / (1 - p)), dtype=torch.float64, requires_grad=True)
        torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(float(P["y"]), dtype=torch.float64)).backward()
        return z.grad.item()
    if ask == "ce_uniform":
        loss = torch.nn.functional.cross_entropy(torch.zeros(1, P["V"], dtype=torch.float64), torch.tensor([0])).item()
        return loss / math.log(2) if P["unit"] == "bits" else loss
    if ask in ("kl_bits", "kl_nats"):
        p, q = (np.array([float(F(t)) for t in P[k]]) for k in ("p", "q"))
        kl = float(np.sum(p * np.log(p / q)))
        return kl / math.log(2) if ask == "kl_bits" else kl
    if ask in ("kl_gauss", "kl_gauss_eq"):
        s1, s2 = (float(F(P["s"])),) * 2 if ask == "kl_gauss_eq" else (float(F(P["s1"])), float(F(P["s2"])))
        m1, m2 = float(F(P["m1"])), float(F(P["m2"]))
        P1, P2 = (torch.distributions.Normal(torch.tensor(m, dtype=torch.float64), torch.tensor(s, dtype=torch.float64))
                  for m, s in ((m1, s1), (m2, s2)))
        return torch.distributions.kl_divergence(P1, P2).item()
    if ask in ("H_bits", "H_nats"):
        p = np.array([float(F(t)) for t in P["p"]])
        h = float(-np.sum(p * np.log(p)))
        return h / math.log(2) if ask == "H_bits" else h
    if ask == "H_uniform":
        return math.log2(P["n"])
    if ask == "H_binary":
        return torch.distributions.Bernoulli(probs=torch.tensor(float(F(P["p"])), dtype=torch.float64)).entropy().item() / math.log(2)
    if ask == "ppl_bits":
        return F(2) ** int(F(P["L"]))
    if ask == "ppl_nats":
        return math.exp(float(F(P["L"])))
    if ask == "loss_from_ppl":
        return math.log2(P["P"]) if P["unit"] == "bits" else math.log(P["P"])
    if ask == "matmul":
        return flops(lambda: meta(P["m"], P["k"]) @ meta(P["k"], P["n"]))
    if ask == "train_6nd":
        return 6 * P["N"] * P["D"]
    if ask in ("head_dim", "scores_shape", "q_shape", "out_shape", "attn_params", "kv_cache",
               "qk", "av", "qkv_proj", "mlp", "attn_total"):
        B, T, C, h = P["B"], P["T"], P["C"], P["h"]
        x = meta(B, T, C)
        q = meta(B, T, C).view(B, T, h, C // h).transpose(1, 2)  # (B, h, T, hd)
        if ask == "head_dim":
            return q.shape[-1]
        if ask == "q_shape":
            return str(tuple(q.shape))
        if ask == "scores_shape":
            return str(tuple((q @ q.transpose(-2, -1)).shape))
        if ask == "out_shape":
            mha = torch.nn.MultiheadAttention(C, h, batch_first=True, device="meta")
            return str(tuple(mha(x, x, x, need_weights=False)[0].shape))
        if ask == "attn_params":
            return sum(t.numel() for t in torch.nn.MultiheadAttention(C, h, bias=P["bias"], device="meta").parameters())
        if ask == "kv_cache":
            kv = meta(B, P["kv"], T, C // h)
            return P["L"] * 2 * kv.numel() * (P["bytes"] or 1)
        att = meta(B, h, T, T)
        qkv = lambda: torch.nn.functional.linear(x, meta(3 * C, C))  # noqa: E731
        if ask == "qk":
            return flops(lambda: q @ q.transpose(-2, -1))
        if ask == "av":
            return flops(lambda: att @ q)
        if ask == "qkv_proj":
            return flops(qkv)
        if ask == "mlp":
            return flops(lambda: torch.nn.functional.linear(torch.nn.functional.linear(x, meta(4 * C, C)), meta(C, 4 * C)))
        return flops(lambda: (qkv(), q @ q.transpose(-2, -1), att @ q, torch.nn.functional.linear(x, meta(C, C))))
    if ask in ("sgd", "sgd_wd", "sgd_two", "mom_w", "mom_two", "step1", "adamw1", "step2"):
        return torch_opt(P)[0]
    if ask == "sgd_vec":
        i = P["i"] - 1
        return torch_opt(dict(ask="sgd", w=P["w"][i], g=P["g"][i], lr=P["lr"]))[0]
    if ask == "mom_v":
        return torch_opt(P)[1]["momentum_buffer"].item()
    if ask in ("m1", "v1", "mhat2"):
        state = torch_opt(P)[1]
        if ask == "m1":
            return state["exp_avg"].item()
        if ask == "v1":
            return state["exp_avg_sq"].item()
        return state["exp_avg"].item() / (1 - float(F(P["b1"])) ** 2)
    raise AssertionError(f"no reference for ask {ask!r}")


def all_param_strings(P):
    for k, v in P.items():
        if k in ("ask", "round", "unit", "wrt", "bias", "which", "i", "j", "y", "bytes"):
            continue
        if isinstance(v, list):
            yield v if not isinstance(v[0], list) else None
        else:
            yield v


def test_ml_answers_reverified(ml_pairs):
    assert len(ml_pairs) == N_CHECK
    asks = set()
    for p in ml_pairs:
        check_format(p)
        P = p["params"]
        asks.add(P["ask"])
        for v in all_param_strings(P):  # every input the answer depends on is in the question
            if isinstance(v, list):
                assert "[" + ", ".join(v) + "]" in p["question"] or "log(" in p["question"], (v, p["question"])
            elif v is not None:
                assert str(v) in p["question"], (v, p["question"])
        want = ml_expected(P)
        if p["kind"] == "text":
            assert p["final"] == want, p
        elif P.get("round") == 4:
            assert re.fullmatch(r"-?\d+\.\d{4}", p["final"]) and "4 decimal places" in p["question"], p
            assert abs(float(p["final"]) - want) <= 5e-5 + 1e-9, (p, want)
        else:
            got = Fraction(p["final"])  # exact: integer, terminating decimal or a/b
            if isinstance(want, (Fraction, int)):
                assert got == want, (p, want)
            else:
                assert abs(float(got) - want) <= 1e-9 * max(1, abs(want)), (p, want)
    assert len(asks) >= 40  # (nearly) every kind of question came up in 520 pairs


def test_ml_topics(ml_pairs):
    assert {p["topic"] for p in ml_pairs} == set(ml.TOPICS)
    assert {p["kind"] for p in ml_pairs} == {"number", "text"}


@pytest.mark.parametrize("q,want", [(Fraction(3, 8), "0.375"), (Fraction(-5, 2), "-2.5"), (Fraction(19, 30), "19/30"),
                                    (Fraction(12), "12"), (Fraction(1, 1000), "0.001"), (Fraction(-1, 3), "-1/3")])
def test_ml_number_format(q, want):
    assert ml.num(q) == want


# -----------------------------------------------------------------------------
# both: phrasing variety, determinism, the split

def skeleton(p):
    """The question with its maths blanked out, so what is left is the template."""
    q = p["question"]
    for k in ("f", "a", "b"):
        if k in p["params"] and isinstance(p["params"][k], str):
            q = q.replace(p["params"][k], "<E>")
    q = re.sub(r"\[[^\]]*\]", "<V>", q)
    q = re.sub(r"\b[fgh]\(", "F(", q)
    return re.sub(r"-?\d+(\.\d+)?(/\d+)?", "#", q)


@pytest.mark.parametrize("module", [calc, ml])
def test_phrasing_variety(module, calc_pairs, ml_pairs):
    pairs = calc_pairs if module is calc else ml_pairs
    templates = defaultdict(set)
    for p in pairs:
        if p.get("var", "x") == "x":
            templates[p["topic"]].add(skeleton(p))
    for topic, s in templates.items():
        assert len(s) >= 3, (topic, s)


def run_main(module, tmp_path, sub, seed, n=80, n_test=20):
    out = tmp_path / sub
    module.main(["--n", str(n), "--n_test", str(n_test), "--seed", str(seed), "--text_only", "--out_dir", str(out)])
    name = module.NAME
    return (out / f"{name}.jsonl").read_bytes(), (out / f"{name}_test.jsonl").read_bytes()


@pytest.mark.parametrize("module", [calc, ml])
def test_main_deterministic_and_split_disjoint(module, tmp_path):
    a = run_main(module, tmp_path, "a", seed=5)
    b = run_main(module, tmp_path, "b", seed=5)
    c = run_main(module, tmp_path, "c", seed=6)
    assert a == b
    assert a[0] != c[0]
    train = [json.loads(line) for line in a[0].decode().splitlines()]
    test = [json.loads(line) for line in a[1].decode().splitlines()]
    assert len(test) == 20 and 76 <= len(train) <= 80  # decontam may drop a look-alike (signs are not words)
    assert not {calc.norm_question(p["question"]) for p in train} & {calc.norm_question(p["question"]) for p in test}
    for line in a[0].decode().splitlines():  # canonical lines: sorted keys
        assert line == json.dumps(json.loads(line), sort_keys=True, ensure_ascii=False)
    assert {"question", "answer", "final", "kind", "topic"} <= set(train[0])


def test_split_dedupes_and_is_disjoint():
    pairs = [{"question": f"Q {i % 30}", "answer": "#### 1"} for i in range(40)]
    pairs.append({"question": "  q   0 ", "answer": "#### 1"})  # same question after normalising
    train, test = calc.split(pairs, 10, seed=0)
    assert len(train) + len(test) == 30 and len(test) == 10
    assert not {calc.norm_question(p["question"]) for p in train} & {calc.norm_question(p["question"]) for p in test}
    assert calc.split(pairs, 10, seed=0) == (train, test)
    assert len(calc.split(pairs, 0.2, seed=0)[1]) == 6
