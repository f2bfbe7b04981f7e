"""Smoke test: does the GPT build, run, and decode through its KV cache? Seconds on CPU, no tokenizer.
    python smoke_test.py
Reads and writes nothing. Prints each check; exits 0 when all pass, 1 on the first failure.
"""
import sys

import torch

from mathlm.model.gpt import GPT, GPTConfig, KVCache


def check(ok, what):
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        sys.exit(1)


def main():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, ffn_hidden=128)
    model = GPT(cfg).eval()
    check(model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "lm_head tied to wte")

    # a forward pass with targets: shapes, and a loss near ln(vocab) for a random init
    idx = torch.randint(0, cfg.vocab_size, (2, 13))
    logits, loss, aux = model(idx[:, :-1], idx[:, 1:])
    check(logits.shape == (2, 12, cfg.vocab_size), f"forward logits shape {tuple(logits.shape)}")
    check(abs(loss.item() - torch.log(torch.tensor(256.0)).item()) < 0.5, f"initial loss {loss.item():.3f} ≈ ln(256) = 5.545")
    check(aux.item() == 0.0, "dense model aux loss is 0")

    # 4 greedy tokens through the KV cache; the cached logits must equal a full forward pass
    prompt = [1, 2, 3, 4, 5]
    cache = KVCache(cfg, 1, len(prompt) + 4)
    step_logits, _, _ = model(torch.tensor([prompt]), cache=cache, last_only=True)
    seq, cached = list(prompt), []
    for _ in range(4):
        cached.append(step_logits[0, -1])
        seq.append(int(step_logits[0, -1].argmax()))
        step_logits, _, _ = model(torch.tensor([seq[-1:]]), cache=cache, last_only=True)
    full, _, _ = model(torch.tensor([seq]))
    err = max((cached[i] - full[0, len(prompt) - 1 + i]).abs().max().item() for i in range(4))
    check(err < 1e-5, f"KV-cache logits match full forward over 4 steps (max abs diff {err:.1e})")
    gen = model.generate_ids([prompt], 4)[0]
    check(gen == seq[len(prompt):], f"generate() greedy tokens {gen} match the cached loop")
    print("smoke test passed")


if __name__ == "__main__":
    main()
