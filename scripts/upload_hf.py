"""Export a mathlm checkpoint as a Hugging Face model folder, and upload it if asked.

    python scripts/upload_hf.py --checkpoint checkpoint_mathlm_grpo.pt --out_dir mathlm-40m
    python scripts/upload_hf.py --checkpoint checkpoint_mathlm_grpo.pt --out_dir mathlm-40m --repo_id you/mathlm-40m
Reads: --checkpoint (default: the last pipeline stage's here, checkpoint_mathlm_grpo.pt >
checkpoint_mathlm.pt > checkpoint.pt, as inference takes it), --tokenizer (its hash must match the
checkpoint's), the newest eval summaries
eval_*.json / report.json in --eval_dir for the model card (absent = "not evaluated yet").
Writes --out_dir: model.safetensors, config.json, generation_config.json, tokenizer.json,
tokenizer_config.json (chat template included), special_tokens_map.json, README.md (model card).

The weights are in the Qwen3 layout (Qwen3ForCausalLM; Qwen3MoeForCausalLM for MoE checkpoints,
see mathlm/infer/export.py), so `AutoModelForCausalLM.from_pretrained(out_dir)` loads it with no
custom code and gives mathlm's logits, and vLLM / llama.cpp converters / TGI can serve it.
--repo_id uploads the folder with huggingface_hub, using HF_TOKEN or the token of `hf auth login`;
with no token the folder is written and the script says how to upload it later.
"""
import glob
import json
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mathlm.common import atomic_write, cli, die, hold_lock, human, parse_config, remove_orphans  # noqa: E402
from mathlm.format import qa_prompt  # noqa: E402
from mathlm.infer.export import HF_DENSE, HF_MOE, export_folder  # noqa: E402
from mathlm.infer.inference import pick_default_checkpoint  # noqa: E402


@dataclass
class Config:
    """Export a checkpoint as a Hub-ready Qwen3 folder (+ model card); upload with --repo_id."""
    checkpoint: str = ""               # "" = the last pipeline stage's here (GRPO > SFT > base), said with why
    out_dir: str = "mathlm_hf"         # the Hub-ready folder
    repo_id: str = ""                  # user/name: upload there too ("" = folder only)
    tokenizer: str = "math_tokenizer"  # tokenizer folder; its hash must match the checkpoint's
    eval_dir: str = "."                # where eval_*.json / report.json are looked for
    dtype: str = "fp32"                # fp32 (exact parity) | bf16 (half the size)
    private: bool = False              # create the Hub repo private


# -----------------------------------------------------------------------------
# the model card

def count_params(mc):
    """(total, active per token) parameters of a GPTConfig dict; the tied embedding counts once."""
    C, hd, F, L = mc["n_embd"], mc["n_embd"] // mc["n_head"], mc["ffn_hidden"], mc["n_layer"]
    attn = C * mc["n_head"] * hd * 2 + C * mc["n_kv_head"] * hd * 2 + 2 * hd
    mlp = 3 * C * F
    E, k = mc.get("n_expert", 0), mc.get("expert_top_k", 2)
    per_layer = attn + 2 * C + (E * mlp + E * C if E else mlp)
    total = mc["vocab_size"] * C + L * per_layer + C
    active = total - (L * (E - k) * mlp if E else 0)
    return total, active


def eval_rows(summary, prefix=""):
    """Every dict holding an "accuracy" inside an eval summary -> (name, accuracy, ci95, n) rows."""
    rows = []
    if isinstance(summary, dict):
        if isinstance(summary.get("accuracy"), (int, float)):
            rows.append((prefix or summary.get("task", "?"), summary["accuracy"], summary.get("ci95"), summary.get("n")))
        for k, v in summary.items():
            if isinstance(v, dict):
                name = k if k != "domains" else ""
                rows += eval_rows(v, "/".join(p for p in (prefix or summary.get("task", ""), name) if p))
    return rows


# the pipeline's checkpoints and the stage each holds
PIPELINE_STAGES = {"checkpoint.pt": "pretrain", "checkpoint_mathlm.pt": "sft", "checkpoint_mathlm_grpo.pt": "grpo"}
# report.json's accuracy[domain] keys (base, SFT, GRPO; read lowercased) -> the checkpoint each measured
REPORT_TAGS = {"base": "checkpoint.pt", "sft": "checkpoint_mathlm.pt", "grpo": "checkpoint_mathlm_grpo.pt"}


def measured(summary):
    """An eval summary -> [(checkpoint it measured, name, accuracy, ci95, n)]. eval.math names its
    checkpoints (two with --compare, each domain then holding "A" and "B"), eval.gsm8k its one;
    report.json holds accuracy[domain][base|sft|grpo] for the pipeline's three checkpoints."""
    if not isinstance(summary, dict):
        return []
    if summary.get("task") == "math":
        ckpts = summary.get("checkpoints") or [summary.get("checkpoint") or "?"]
        doms = summary.get("domains") or {}
        if len(ckpts) == 2:
            return [(ck, *row) for side, ck in zip("AB", ckpts) for d, v in doms.items()
                    for row in eval_rows((v or {}).get(side), f"math/{d}")]
        return [(ckpts[0], *row) for row in eval_rows(summary)]
    if summary.get("task") == "gsm8k":
        shots, used = summary.get("shots"), summary.get("shots_used_min")  # shots are dropped to fit the context
        fewer = "" if used in (None, shots) else f", {used} where the context is short"
        name = "gsm8k" if shots is None else f"gsm8k ({shots}-shot{fewer})"
        return [(summary.get("checkpoint") or "?", name, *row[1:]) for row in eval_rows(summary)[:1]]
    if isinstance(summary.get("accuracy"), dict):  # report.json
        return [(REPORT_TAGS.get(tag.lower(), tag), *row) for d, tags in summary["accuracy"].items()
                if isinstance(tags, dict) for tag, v in tags.items() for row in eval_rows(v, f"math/{d}")]
    return [("?", *row) for row in eval_rows(summary)]


def stage_of(ck, eval_dir):
    """The stage the checkpoint file `ck` holds (read from it when it is found as written or in
    eval_dir), else what the pipeline's file name says, else "?"."""
    from mathlm.infer.demo import checkpoint_stage
    for p in (ck, os.path.join(eval_dir, ck), os.path.join(eval_dir, os.path.basename(ck))):
        if os.path.isfile(p):
            return checkpoint_stage(p)
    return PIPELINE_STAGES.get(os.path.basename(ck), "?")


def same_file(ck, path, eval_dir):
    """Whether the eval's checkpoint `ck` (as the eval was given it) is the exported file `path`."""
    for p in (ck, os.path.join(eval_dir, ck)):
        if os.path.isfile(p) and os.path.isfile(path):
            return os.path.samefile(p, path)
    return os.path.basename(ck) == os.path.basename(path)


def eval_table(eval_dir, path=None):
    """The model card's results section: the newest eval's row for each (checkpoint, task), each row
    labelled with the checkpoint and stage it measured — the exported one (`path`) first, with its
    per-topic rows; the pipeline's other stages after it for comparison — or a 'not yet' line."""
    # newest first; report.json (made from the eval_*.json) last, for what they no longer hold
    paths = sorted(glob.glob(os.path.join(eval_dir, "eval_*.json")), key=os.path.getmtime, reverse=True)
    paths += glob.glob(os.path.join(eval_dir, "report.json"))
    rows, used, seen = [], [], set()
    for p in paths:
        try:
            with open(p) as f:
                s = json.load(f)
        except (OSError, ValueError):
            continue
        for ck, name, acc, ci, n in measured(s):
            key = (os.path.basename(ck), name)
            if key in seen:  # the newest file wins for each checkpoint and task/domain
                continue
            seen.add(key)
            mine = path is not None and same_file(ck, path, eval_dir)
            if "/topics/" in name and not mine:  # other checkpoints: one row per domain is enough
                continue
            rows.append((not mine, ck, name, acc, ci, n))
            if p not in used:
                used.append(p)
    if not rows:
        return "Not evaluated yet (no eval_*.json or report.json beside the checkpoint).\n"
    lines = ["| checkpoint | stage | task | accuracy | 95% CI | n |", "|---|---|---|---|---|---|"]
    stages, first = {}, {}
    for r in rows:
        first.setdefault(os.path.basename(r[1]), len(first))
    # this model's rows first, then each other checkpoint's together (in the order the files gave them)
    for other, ck, name, acc, ci, n in sorted(rows, key=lambda r: (r[0], first[os.path.basename(r[1])])):
        stage = stages.setdefault(ck, stage_of(ck, eval_dir))
        label = f"`{os.path.basename(ck)}`" + ("" if other or path is None else " (this model)")
        ci_s = f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%" if isinstance(ci, (list, tuple)) and len(ci) == 2 else "–"
        lines.append(f"| {label} | {stage} | {name} | {100 * acc:.1f}% | {ci_s} | {n if n is not None else '–'} |")
    src = ", ".join(os.path.basename(p) for p in used)
    return "\n".join(lines) + f"\n\nGreedy decoding unless stated; from {src}.\n"


def calculator_section(tok, name):
    """How to decode with the calculator, for a model whose tokenizer has the tool tokens (else nothing)."""
    if tok.calc_ids is None:
        return ""
    return f"""## Calculator

The model was trained to hand arithmetic to a calculator: it writes `<|calc|>48/2<|result|>` and the
decoder computes the expression and writes `24<|/result|>` for it (mathlm's own calculator: exact
fractions, results printed as GSM8K writes them). transformers' `model.generate` does not know the tool,
so there the model has to guess each result itself; mathlm's loop on the same model runs it:

```python
from mathlm.infer.tools import generate_with_tools, render_calls   # run from a clone of mathlm
text = generate_with_tools(model, tok, "Q: Natalia sold 48 clips in April and half as many in May. "
                                       "How many did she sell?\\nA:", max_new_tokens=256)
print(render_calls(text))   # ... 48/2 = [calc 48/2 = 24]24 clips ...  (format.strip_calls removes the calls)
```

"""


def model_card(ckpt, repo_id, eval_dir, tok, path=None):
    mc = ckpt["model_config"]
    total, active = count_params(mc)
    moe = mc.get("n_expert", 0) > 0
    arch = HF_MOE if moe else HF_DENSE
    name = repo_id or "path/to/this/folder"
    cfg = ckpt.get("config") or {}
    data = {k: v for k, v in cfg.items() if any(w in k for w in ("data", "mixture", "source", "dataset"))}
    history = ckpt.get("history") or []
    last = next((h for h in reversed(history) if isinstance(h, dict) and "val_loss" in h), None)
    mlp = (f"{mc['n_expert']} SwiGLU experts (hidden {mc['ffn_hidden']}), top-{mc.get('expert_top_k', 2)} routing"
           if moe else f"SwiGLU, hidden {mc['ffn_hidden']}")
    example = qa_prompt("What is the derivative of x^5?")
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [mathlm, math, {"qwen3_moe" if moe else "qwen3"}, from-scratch]
---
# {repo_id.split('/')[-1] if repo_id else 'mathlm'}

A small math language model trained from scratch with mathlm (nanoGPT-style:
a math BPE, pretraining, SFT with loss masking, GRPO with verifiable rewards). The weights are
stored in the Qwen3 layout (`{arch}`), so `transformers` loads them with no custom code and
vLLM can serve them.

## Architecture

| | |
|---|---|
| Parameters | {total / 1e6:.2f}M{f" ({active / 1e6:.2f}M active per token)" if moe else ""} |
| Layers / width | {mc['n_layer']} / {mc['n_embd']} |
| Attention | {mc['n_head']} query heads, {mc['n_kv_head']} key/value heads (GQA), head dim {mc['n_embd'] // mc['n_head']}, QK-norm |
| MLP | {mlp} |
| Positions | RoPE, θ = {mc.get('rope_theta', 10000.0):g} |
| Context | {mc['block_size']} tokens |
| Vocabulary | {mc['vocab_size']:,} (byte-level BPE, digits split one per token; tokenizer {ckpt.get('tokenizer_hash') or tok.hash}) |
| Embeddings | tied input/output |

## Training

Stage: `{ckpt.get('stage', '?')}`{f", {ckpt['step']:,} optimizer steps" if isinstance(ckpt.get('step'), int) else ""}{f", last val loss {last['val_loss']:.4f}" if last else ""}.
{("Data settings: " + ", ".join(f"`{k}={v}`" for k, v in data.items())) if data else "Data: see the mathlm pipeline that produced this checkpoint."}

## Evaluation

{eval_table(eval_dir, path)}
## Prompt format

One question: `{example!r}` — the model answers after `A:` and ends with `<|eos|>`.
Multi-turn chat uses role tokens; `tokenizer.apply_chat_template` writes it (pass
`add_generation_prompt=True` to end at `<|assistant|>`, ready for the reply; a `system` message is
refused — the model was never trained with one):
`<|user|>Q: ...\\nA:<|assistant|> answer\\n\\n<|eos|>`. Cut a completion at the next `Q:`.

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}")
ids = tok({example!r}, return_tensors="pt", add_special_tokens=False)
out = model.generate(**ids, max_new_tokens=128, do_sample=False)
print(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))

msgs = [{{"role": "user", "content": "What is 12 * 7?"}}]
ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)  # ends at <|assistant|>
out = model.generate(**ids, max_new_tokens=128, do_sample=False)
```

```bash
vllm serve {name}                                              # OpenAI-compatible server
python -m mathlm.infer.inference --checkpoint LOCAL_FOLDER --chat   # mathlm's own CLI (a local copy)
{f"MATHLM_REPO_ID={name} python -m mathlm.infer.app" if repo_id else f"python -m mathlm.infer.app --model_dir {name}"}   # the Gradio demo
```

{calculator_section(tok, name)}Limitations: a {human(total)}-parameter model; it makes arithmetic and reasoning mistakes and
should not be trusted for anything that matters.
"""


# -----------------------------------------------------------------------------

def upload(out_dir, repo_id, private):
    try:
        from huggingface_hub import HfApi, get_token
    except ImportError:
        die("huggingface_hub is not installed — pip install huggingface_hub, or upload the folder by hand")
    token = get_token()
    if not token:
        print(f"no Hugging Face token (set HF_TOKEN or run `hf auth login`): wrote {out_dir} only — upload it "
              f"later with `hf upload {repo_id} {out_dir}` or rerun this with a token")
        return None
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=out_dir, repo_id=repo_id, repo_type="model",
                                 commit_message="Upload mathlm export")
    except Exception as e:  # auth, network, permissions: one line, the folder stays on disk
        die(f"upload to {repo_id} failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}) — the folder "
            f"{out_dir} is complete; check the token's write access and retry")
    url = getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"
    print(f"uploaded {out_dir} to {url}")
    return url


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    path = cfg.checkpoint or pick_default_checkpoint(print)  # none here: one line saying how to make one
    if os.path.isdir(path):
        die(f"{path} is a folder; --checkpoint takes a mathlm .pt checkpoint (folders are already exported)")
    # one writer of --out_dir (the lock is <out_dir>.lock beside it), and a writable place, checked before
    # the checkpoint is loaded; load_checkpoint refuses weights that disagree with their model_config,
    # so config.json and model.safetensors can never describe two different models
    with hold_lock(os.path.abspath(cfg.out_dir.rstrip("/")), hint="choose another --out_dir"):
        return export(cfg, path)


def export(cfg, path):
    import torch

    from mathlm.tokenizer import MathTokenizer
    from mathlm.train.common import load_checkpoint
    for f in glob.glob(os.path.join(glob.escape(cfg.out_dir), "*.tmp.*")):  # a killed export's temp files
        remove_orphans(f.rsplit(".tmp.", 1)[0])
    ckpt = load_checkpoint(path)
    try:
        tok = MathTokenizer.load(cfg.tokenizer)
    except ValueError as e:
        die(str(e))
    if ckpt.get("tokenizer_hash") not in (None, tok.hash):
        die(f"{path} was trained with tokenizer {ckpt['tokenizer_hash']}, {cfg.tokenizer} is {tok.hash} — "
            "pass the matching --tokenizer DIR")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(cfg.dtype)
    if dtype is None:
        die(f"--dtype {cfg.dtype}: use fp32 or bf16")
    try:
        files = export_folder(ckpt, tok, cfg.out_dir, dtype)
    except ValueError as e:
        die(str(e))
    atomic_write(os.path.join(cfg.out_dir, "README.md"), model_card(ckpt, cfg.repo_id, cfg.eval_dir, tok, path))
    print(f"wrote {cfg.out_dir}/ ({', '.join(files + ['README.md'])}) from {path}")
    if cfg.repo_id:
        upload(cfg.out_dir, cfg.repo_id, cfg.private)
    return cfg.out_dir


if __name__ == "__main__":
    main()
