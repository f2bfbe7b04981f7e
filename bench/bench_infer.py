"""Inference speed: mathlm's decoder against transformers' generate() on the exported folder of the
same model, in one process.

    python -m bench.bench_infer                 # default 40M shape, CPU, --dtype auto (a few minutes on 2 cores)
    python -m bench.bench_infer --dtype fp32    # the fp32 rows of docs/BENCHMARKS.md
    python -m bench.bench_infer --quick         # a 4 x 256 model, fewer rounds (about a minute)
    python -m bench.bench_infer --device cuda   # the same on a GPU

A random-init GPT of the shape is exported with mathlm/infer/export.py to a temp folder, and
AutoModelForCausalLM.from_pretrained(folder) loads it (Qwen3ForCausalLM, sdpa attention,
DynamicCache: the out-of-the-box path). Both decode greedily with eos off and must emit the
same tokens. Measured, per engine:
  - decode tokens/s at batch 1 and 16: B * (N - 1) / (T(N new tokens) - T(1 new token)), so the
    prefill and the first token are not counted; prompts of --prompt_len random tokens;
  - time to first token (TTFT) for a --ttft_prompt-token prompt at batch 1: T(1 new token).
Runs are interleaved (ours, transformers, ours, ...) over --rounds; the table gives the median of
each engine and the median of the per-round ratios, which cancels most drift from other load. Reads and writes nothing but the temp folder;
prints a markdown table for docs/BENCHMARKS.md.

With --checkpoint (a TRAINED model: random weights accept no drafts), speculative decoding instead:
    python -m bench.bench_infer --checkpoint run/checkpoint_mathlm.pt --draft_checkpoint run/draft.pt
Real held-out prompts (the *_test.jsonl beside the checkpoint, Q/A format), batch 1, --new_tokens
(128) each with eos off, at --dtype (auto: bf16 where native) for every engine: mathlm plain,
prompt lookup and draft model (k = --spec_k), against transformers generate() on the exported
folder, its prompt_lookup_num_tokens (= k) and its assistant_model (the exported draft, its
defaults); with --compiled also mathlm plain, lookup and draft through the torch.compile'd
static-shape step. A round runs every engine on every prompt, interleaved prompt by prompt; tok/s per
round = tokens / seconds, ratios are medians of per-round ratios. Also reported: acceptance rate
and accepted drafts per target forward, whether each engine's greedy tokens equal mathlm plain's,
and greedy agreement of bf16 weights with fp32 on --agree_n prompts (eos on, as the evals decode).
"""
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from mathlm.common import parse_config, pick_device, pick_dtype
from mathlm.model.gpt import GPT, GPTConfig


@dataclass
class Config:
    """Decode tokens/s and time to first token: mathlm vs transformers generate()."""
    quick: bool = False      # the small shape instead of the default 40M one
    threads: int = 2         # torch.set_num_threads: the 2-core development machine (0 = torch default)
    rounds: int = 5          # interleaved timings; medians reported
    prompt_len: int = 32     # for the decode rate
    new_tokens: int = 64
    ttft_prompt: int = 256
    device: str = "cpu"      # cpu|cuda|auto
    seed: int = 0
    # speculative decoding on a trained model (everything below needs --checkpoint)
    checkpoint: str = ""     # a trained .pt; "" = the random-init decode benchmark above
    tokenizer: str = ""      # "" = math_tokenizer beside the checkpoint
    draft_checkpoint: str = ""  # a smaller trained model on the same tokenizer ("" = no draft engines)
    prompts: str = ""        # a *_test.jsonl; "" = every *_test.jsonl beside the checkpoint
    n_prompts: int = 8       # prompts per round (the same ones every round)
    spec_k: int = 4          # drafted tokens per round, ours and transformers' prompt lookup
    dtype: str = "auto"      # auto (bf16 where native)|bf16|fp32: both engines' weights, either mode
    agree_n: int = 100       # prompts for the bf16 vs fp32 greedy agreement (0 = skip)
    compiled: bool = True    # also time plain decoding through the torch.compile'd static step (compiles first)


PRESETS = {"quick": dict(quick=True, rounds=3)}
SMALL = dict(vocab_size=8192, block_size=512, n_layer=4, n_embd=256, n_head=4, n_kv_head=2, ffn_hidden=704)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ours_fn(model):
    def run(idx, n):
        toks = list(model.generate(idx, n))  # a (B, T) tensor: no padding, every row the same length
        return torch.stack(toks, 1)
    return run


def hf_fn(hf):
    def run(idx, n):
        with torch.no_grad():
            out = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[:, idx.size(1):]
    return run


def timed(fn, idx, n, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn(idx, n)
    sync(device)
    return time.perf_counter() - t0, out


def main(argv=None):
    import transformers
    from transformers import AutoModelForCausalLM

    from mathlm.infer.export import hf_config, to_hf_state_dict
    from safetensors.torch import save_file
    import json
    cfg = parse_config(Config, PRESETS, argv)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.checkpoint:
        return speculative_bench(cfg)
    device = pick_device(cfg.device)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(cfg.seed)
    mc = GPTConfig(**(SMALL if cfg.quick else {}))
    model = GPT(mc).eval().to(device)
    dtype = pick_dtype(device, cfg.dtype, verbose=False)

    with tempfile.TemporaryDirectory() as d:  # the exported folder, as scripts/upload_hf.py writes it
        save_file(to_hf_state_dict(model.state_dict()), os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_config(asdict(mc)), f)
        hf = AutoModelForCausalLM.from_pretrained(d, dtype=dtype).eval().to(device)
    model = model.decode_dtype(dtype)
    engines = {"mathlm": ours_fn(model), "transformers": hf_fn(hf)}

    g = torch.Generator().manual_seed(cfg.seed)
    prompts = {B: torch.randint(0, mc.vocab_size, (B, cfg.prompt_len), generator=g).to(device) for B in (1, 16)}
    long_prompt = torch.randint(0, mc.vocab_size, (1, cfg.ttft_prompt), generator=g).to(device)
    with torch.no_grad():  # same weights, same network: the logits must agree before timing means anything
        diff = (model(long_prompt)[0] - hf(long_prompt).logits).abs().max().item()
    assert diff < (1e-3 if dtype == torch.float32 else 0.5), f"logits differ by {diff}"  # bf16: rounding, not a bug

    # warm up both, and check they decode the same greedy tokens
    outs = {k: fn(prompts[16], cfg.new_tokens) for k, fn in engines.items()}
    for k, fn in engines.items():
        fn(long_prompt, 1)
    same = torch.equal(outs["mathlm"].cpu(), outs["transformers"].cpu())
    assert outs["mathlm"].shape == outs["transformers"].shape == (16, cfg.new_tokens)

    times = {(k, what): [] for k in engines for what in ("b1", "b16", "ttft")}
    for r in range(cfg.rounds):
        for k, fn in engines.items():
            for B in (1, 16):
                t_n, _ = timed(fn, prompts[B], cfg.new_tokens, device)
                t_1, _ = timed(fn, prompts[B], 1, device)
                times[(k, f"b{B}")].append(B * (cfg.new_tokens - 1) / max(t_n - t_1, 1e-9))
            times[(k, "ttft")].append(timed(fn, long_prompt, 1, device)[0])
        print(f"round {r + 1}/{cfg.rounds} | " + " | ".join(
            f"{k} b1 {times[(k, 'b1')][-1]:.0f} b16 {times[(k, 'b16')][-1]:.0f} tok/s ttft {1000 * times[(k, 'ttft')][-1]:.0f}ms"
            for k in engines))

    med = {key: statistics.median(v) for key, v in times.items()}
    # the ratio of each round's interleaved pair, then its median: load drift hits both sides of a pair
    ratio = {what: statistics.median(a / b if what != "ttft" else b / a for a, b in
                                     zip(times[("mathlm", what)], times[("transformers", what)]))
             for what in ("b1", "b16", "ttft")}
    machine = (torch.cuda.get_device_name() if device.startswith("cuda") else
               f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    name = "small 4 x 256" if cfg.quick else "default"
    print(f"\nmodel: {name} ({model.num_params() / 1e6:.2f}M params), {str(dtype).replace('torch.', '')}, {machine}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}; prompt {cfg.prompt_len} tokens, {cfg.new_tokens} new, "
          f"greedy, medians of {cfg.rounds} interleaved rounds; greedy tokens identical: {same}; "
          f"max logit diff {diff:.1e}\n")
    print("| measure | mathlm | transformers generate() | speed-up (> 1: mathlm faster) |")
    print("|---|---|---|---|")
    for what, label in (("b1", "decode tok/s, batch 1"), ("b16", "decode tok/s, batch 16")):
        a, b = med[("mathlm", what)], med[("transformers", what)]
        print(f"| {label} | {a:,.0f} | {b:,.0f} | {ratio[what]:.2f}× |")
    a, b = med[("mathlm", "ttft")], med[("transformers", "ttft")]
    print(f"| time to first token, {cfg.ttft_prompt}-token prompt | {1000 * a:.1f} ms | {1000 * b:.1f} ms | "
          f"{ratio['ttft']:.2f}× |")
    return med, ratio


# -----------------------------------------------------------------------------
# speculative decoding on a trained checkpoint

def export_hf(model, d, dtype):
    """The model as transformers loads an exported folder (mathlm/infer/export.py), at `dtype`."""
    import json
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    from mathlm.infer.export import hf_config, to_hf_state_dict
    os.makedirs(d, exist_ok=True)
    sd = {k: v.float().contiguous() for k, v in model.state_dict().items()}
    save_file(to_hf_state_dict(sd), os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(asdict(model.config)), f)
    return AutoModelForCausalLM.from_pretrained(d, dtype=dtype).eval()


def held_out_prompts(cfg, tok):
    """Q/A prompts of the held-out questions, spread over the test files (round robin), in file order."""
    import glob
    import json
    from mathlm.format import qa_prompt
    files = [cfg.prompts] if cfg.prompts else sorted(glob.glob(os.path.join(os.path.dirname(
        os.path.abspath(cfg.checkpoint)), "*_test.jsonl")))
    if not files:
        raise SystemExit(f"error: no *_test.jsonl beside {cfg.checkpoint} — pass --prompts FILE")
    per_file = []
    for f in files:
        with open(f) as fh:
            per_file.append([qa_prompt(json.loads(line)["question"]) for line in fh if line.strip()])
    out = [p for group in zip(*per_file) for p in group]
    return [tok.encode(p) for p in out], [os.path.basename(f) for f in files]


def speculative_bench(cfg):
    import transformers
    from mathlm.infer.inference import load_model
    from mathlm.infer.speculative import Decoder
    transformers.logging.set_verbosity_error()
    device = pick_device(cfg.device)
    tokenizer = cfg.tokenizer or os.path.join(os.path.dirname(os.path.abspath(cfg.checkpoint)), "math_tokenizer")
    dtype = pick_dtype(device, cfg.dtype, verbose=False)
    model, tok = load_model(cfg.checkpoint, tokenizer, device, "fp32", verbose=False)
    draft = load_model(cfg.draft_checkpoint, tokenizer, device, "fp32", verbose=False)[0] if cfg.draft_checkpoint else None
    prompts, files = held_out_prompts(cfg, tok)
    room = model.config.block_size - cfg.new_tokens
    prompts = held_out = [p for p in prompts if len(p) <= room]  # every engine gets all new_tokens

    # --- bf16 vs fp32 greedy agreement, as the evals decode (eos on) ----------------------------
    agree = {}
    if cfg.agree_n > 0 and dtype != torch.float32:
        import copy
        # ours (GPT.decode_dtype: fp32 head where it decides) and every weight cast, as transformers' bf16
        lows = {"GPT.decode_dtype": load_model(cfg.checkpoint, tokenizer, device, cfg.dtype, verbose=False)[0],
                "every weight cast": copy.deepcopy(model).to(dtype)}
        agree = {name: [0, 0, 0] for name in lows}
        for ids in prompts[:cfg.agree_n]:
            a = model.generate_ids([ids], cfg.new_tokens, eos_id=tok.eos_id)[0]
            for name, low in lows.items():
                b = low.generate_ids([ids], cfg.new_tokens, eos_id=tok.eos_id)[0]
                first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                agree[name] = [agree[name][0] + (a == b), agree[name][1] + first, agree[name][2] + len(a)]
        del lows
    model = model.decode_dtype(dtype)  # fp32 logits (tied embedding fp32); transformers' bf16 is bf16 throughout
    draft = draft.decode_dtype(dtype) if draft is not None else None
    prompts = prompts[:cfg.n_prompts]

    with tempfile.TemporaryDirectory() as d:
        hf = export_hf(model, os.path.join(d, "target"), dtype).to(device)
        hf_draft = export_hf(draft, os.path.join(d, "draft"), dtype).to(device) if draft is not None else None
    n, k = cfg.new_tokens, cfg.spec_k
    decoders = {"mathlm lookup": Decoder("lookup", k=k)}  # engine name -> Decoder
    if draft is not None:
        decoders["mathlm draft"] = Decoder("draft", k=k, draft_model=draft)
    if cfg.compiled:
        decoders["mathlm compiled"] = Decoder(compile=True)
        decoders["mathlm lookup compiled"] = Decoder("lookup", k=k, compile=True)
        if draft is not None:
            decoders["mathlm draft compiled"] = Decoder("draft", k=k, draft_model=draft, compile=True)

    def ours(dec):
        def run(ids):
            gen = model.generate([ids], n) if dec is None else dec.generate(model, [ids], n)
            return [int(t) for t in gen]
        return run

    def theirs(**extra):
        def run(ids):
            idx = torch.tensor([ids], device=device)
            with torch.no_grad():
                out = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, eos_token_id=None, pad_token_id=0, **extra)
            return out[0, len(ids):].tolist()
        return run

    engines = {"mathlm": ours(None)}
    engines.update({name: ours(dec) for name, dec in decoders.items()})
    engines["transformers"] = theirs()
    engines["transformers prompt lookup"] = theirs(prompt_lookup_num_tokens=k)
    if hf_draft is not None:
        engines["transformers assistant"] = theirs(assistant_model=hf_draft)

    # warm up, and check every engine's greedy tokens against mathlm plain's
    want = {i: engines["mathlm"](ids) for i, ids in enumerate(prompts)}
    same = {name: sum(fn(ids) == want[i] for i, ids in enumerate(prompts)) for name, fn in engines.items()}
    for dec in decoders.values():
        dec.stats.__init__()  # count the timed rounds only

    rates = {name: [] for name in engines}
    for r in range(cfg.rounds):
        secs = {name: 0.0 for name in engines}
        for ids in prompts:  # interleaved prompt by prompt: load drift hits every engine alike
            for name, fn in engines.items():
                secs[name] += timed(lambda idx, _: fn(idx), ids, None, device)[0]
        for name in engines:
            rates[name].append(len(prompts) * n / secs[name])
        print(f"round {r + 1}/{cfg.rounds} | " + " | ".join(f"{name} {rates[name][-1]:.0f}" for name in engines) + " tok/s")

    ratio = lambda a, b: statistics.median(x / y for x, y in zip(rates[a], rates[b]))
    machine = (torch.cuda.get_device_name() if device.startswith("cuda") else
               f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    dname = str(dtype).replace("torch.", "")
    print(f"\nmodel: {cfg.checkpoint} ({model.num_params() / 1e6:.2f}M params"
          + (f", draft {draft.num_params() / 1e6:.2f}M" if draft is not None else "")
          + f"), {dname}, {machine}, torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{len(prompts)} held-out prompts from {', '.join(files)}, batch 1, {n} new tokens (eos off), greedy, k={k}; "
          f"medians of {cfg.rounds} interleaved rounds\n")
    print("| engine | tok/s | vs transformers generate() | vs transformers prompt lookup | acceptance | "
          "accepted / forward | greedy = mathlm plain |")
    print("|---|---|---|---|---|---|---|")
    for name in engines:
        st = decoders[name].stats if name in decoders and decoders[name].speculate != "off" else None
        print(f"| {name} | {statistics.median(rates[name]):,.0f} | {ratio(name, 'transformers'):.2f}× | "
              f"{ratio(name, 'transformers prompt lookup'):.2f}× | "
              + (f"{100 * st.acceptance:.0f}% | {st.mean_accepted:.2f} | " if st else "| | ")
              + f"{same[name]}/{len(prompts)} |")
    n_p = min(cfg.agree_n, len(held_out))
    for name, (s_text, s_tok, n_tok) in agree.items():
        print(f"\n{dname} ({name}) vs fp32 greedy, eos on, up to {n} tokens, {n_p} held-out prompts: identical "
              f"completions {s_text}/{n_p} ({100 * s_text / n_p:.0f}%); tokens before the first difference "
              f"{s_tok}/{n_tok} ({100 * s_tok / max(n_tok, 1):.0f}%)")
    return rates, agree


if __name__ == "__main__":
    main()
