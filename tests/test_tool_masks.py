"""The calculator's forced tokens stay out of training: SFT's labels and GRPO's loss mask cover exactly
the model's own tokens (compared with a hand-built mask and a manual cross-entropy / surrogate), and the
mask read off the ids equals the forced flags the decoder reports during GRPO rollouts."""
import pytest
import torch
import torch.nn.functional as F

from mathlm.calculator import forced_mask
from mathlm.model.gpt import GPT, GPTConfig
from mathlm.train.grpo import grpo_loss, kl_k3, pack, rollout
from mathlm.train.sft import build_batch, masked_loss
from tests.test_tools_decode import TOK, V, BiasedGPT

R, E = 7, 8  # <|result|>, <|/result|>


@pytest.mark.parametrize("ids,want", [
    ([1, 2, 3], [0, 0, 0]),
    ([6, 9, R, 10, 11, E, 12], [0, 0, 0, 1, 1, 1, 0]),
    ([R, E, R, 10, E], [0, 1, 0, 1, 1]),                 # an empty result (nothing but <|/result|>) is forced too
    ([6, 9, R, 10, 11], [0, 0, 0, 1, 1]),               # cut before <|/result|>: forced to the end
    ([E, 12, R, 6, E, E], [0, 0, 0, 1, 1, 0]),          # a model-written <|/result|> outside a result is its own
])
def test_forced_mask_table(ids, want):
    assert forced_mask(ids, (6, R, E)) == [bool(w) for w in want]
    assert forced_mask(ids, None) == [False] * len(ids)


def call_example():
    """(ids, answer_mask, learned): a Q/A example with one call; learned = the tokens the model must write."""
    prompt = TOK.encode("Q: 48/2?\nA:")
    mine1, forced, mine2 = (TOK.encode(" 48/2 = <|calc|>48/2<|result|>"), TOK.encode("24<|/result|>"),
                            TOK.encode("24") + [TOK.eos_id])
    ids = prompt + mine1 + forced + mine2
    answer = [False] * len(prompt) + [True] * (len(mine1) + len(forced) + len(mine2))
    learned = [False] * len(prompt) + [True] * len(mine1) + [False] * len(forced) + [True] * len(mine2)
    return ids, answer, learned


def test_sft_loss_is_exactly_on_the_models_tokens():
    ids, answer, learned = call_example()
    x, y = build_batch([(ids, answer)], pad_id=2, block_size=64, calc_ids=TOK.calc_ids)
    want = [ids[t + 1] if learned[t + 1] else -100 for t in range(len(ids) - 1)]
    assert y[0].tolist() == want
    x_plain, y_plain = build_batch([(ids, answer)], pad_id=2, block_size=64)  # an old tokenizer: all answer tokens
    assert int((y_plain != -100).sum()) == int((y != -100).sum()) + 3  # 2, 4, <|/result|>
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, block_size=64, n_layer=1, n_embd=16, n_head=2, n_kv_head=1, ffn_hidden=32))
    logits, _, _ = model(x)
    manual = torch.stack([-F.log_softmax(logits[0, t].float(), -1)[ids[t + 1]]
                          for t in range(len(ids) - 1) if learned[t + 1]]).mean()
    torch.testing.assert_close(masked_loss(logits, y), manual)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_grpo_loss_is_exactly_on_the_models_tokens(loss_type):
    ids, _, learned = call_example()
    n_p = TOK.encode("Q: 48/2?\nA:").__len__()
    prompts, comps = [ids[:n_p], ids[:n_p]], [ids[n_p:], ids[n_p:n_p + 5]]  # the second: no call
    idx, mask = pack(prompts, comps, pad_id=2, calc_ids=TOK.calc_ids)
    want = torch.zeros_like(mask)
    want[0, :len(ids) - 1] = torch.tensor(learned[1:], dtype=mask.dtype)
    want[1, n_p - 1:n_p - 1 + 5] = 1
    assert torch.equal(mask, want)
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(mask.shape, generator=g)).requires_grad_()
    old = logp.detach() + 0.3 * torch.randn(mask.shape, generator=g)
    ref = -torch.rand(mask.shape, generator=g)
    adv = torch.tensor([1.0, -0.5])
    loss, _ = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=0.1, loss_type=loss_type)
    # by hand: the clipped surrogate + beta * k3 KL over the model's tokens only
    ratio = torch.exp(logp - old)
    per_token = -torch.min(ratio * adv[:, None], ratio.clamp(0.8, 1.2) * adv[:, None]) + 0.1 * kl_k3(logp, ref)
    rows = [per_token[i][want[i].bool()] for i in range(2)]
    manual = torch.stack([r.mean() for r in rows]).mean() if loss_type == "grpo" else torch.cat(rows).mean()
    torch.testing.assert_close(loss, manual)
    loss.backward()
    forced_cols = (~want[0].bool()) & (torch.arange(mask.size(1)) >= n_p - 1) & (torch.arange(mask.size(1)) < len(ids) - 1)
    assert int(forced_cols.sum()) == 3 and torch.all(logp.grad[0, forced_cols] == 0)  # no gradient to forced tokens


def test_rollout_uses_the_tool_and_the_mask_matches_the_decoders_flags():
    torch.manual_seed(0)
    model = BiasedGPT(GPTConfig(vocab_size=V, block_size=64, n_layer=2, n_embd=32, n_head=4, n_kv_head=2,
                                ffn_hidden=64)).eval()
    questions = [{"question": "48*2?"}, {"question": "a b"}]
    ro = rollout(model, TOK, questions, group_size=2, max_new_tokens=20, temperature=1.0, seed=1)
    assert all(TOK.decode(c).startswith("T<|calc|>48*2<|result|>96<|/result|>") for c in ro["completions"])
    assert all(t.startswith("T") and "<|" not in t for t in ro["texts"])  # the reward sees the call stripped
    steps = list(model.generate(ro["prompts"], 20, temperature=1.0, seed=1, eos_id=TOK.eos_id, num_samples=2,
                                tools=TOK, with_forced=True))
    flags = torch.stack([f for _, f in steps], 1).tolist()
    for c, f in zip(ro["completions"], flags):
        assert forced_mask(c, TOK.calc_ids) == f[:len(c)]
    plain = rollout(model, TOK, questions, group_size=2, max_new_tokens=20, temperature=1.0, seed=1, tools=False)
    assert not any("96<|/result|>" in TOK.decode(c) for c in plain["completions"])
