"""mathlm GPT <-> Hugging Face Qwen3 layout, both ways, so one folder serves transformers, vLLM and us.

    from mathlm.infer.export import export_folder, read_folder
    export_folder(ckpt, tok, "out/mathlm-40m")      # model.safetensors, config.json, generation_config.json,
                                                    # tokenizer.json, tokenizer_config.json
    model_config, state_dict = read_folder("out/mathlm-40m")   # back to a GPTConfig dict + our state_dict

A dense checkpoint becomes Qwen3ForCausalLM, an MoE one Qwen3MoeForCausalLM. The module names of
mathlm/model/gpt.py map 1:1 (its docstring has the table), so the conversion is a rename:
    transformer.wte          -> model.embed_tokens          transformer.ln_f -> model.norm
    transformer.h.{i}.ln_1   -> model.layers.{i}.input_layernorm
    transformer.h.{i}.ln_2   -> model.layers.{i}.post_attention_layernorm
    transformer.h.{i}.attn.* -> model.layers.{i}.self_attn.*
    transformer.h.{i}.mlp.*  -> model.layers.{i}.mlp.*     (router -> gate)
lm_head is tied to the embedding (tie_word_embeddings=true), so the file holds it once.

MoE experts are written one tensor per expert (mlp.experts.{j}.gate_proj.weight ...), the layout of
Qwen/Qwen3-30B-A3B on the Hub that vLLM and transformers 4.x read; transformers 5 fuses them into
3-D gate_up_proj / down_proj on load (its conversion_mapping "qwen2_moe" rule). read_folder
accepts both layouts, so a folder re-saved by transformers 5 loads too.

Reads/writes only what the caller names; nothing at import time.
"""
import json
import os
import re

import torch

from mathlm.common import atomic_write, atomic_write_json

HF_DENSE, HF_MOE = "Qwen3ForCausalLM", "Qwen3MoeForCausalLM"


# -----------------------------------------------------------------------------
# config

def hf_config(mc, tok=None, tokenizer_hash=None):
    """GPTConfig dict -> config.json dict for Qwen3 / Qwen3-MoE (transformers >= 4.51, vLLM)."""
    moe = mc.get("n_expert", 0) > 0
    head_dim = mc["n_embd"] // mc["n_head"]
    cfg = {
        "architectures": [HF_MOE if moe else HF_DENSE],
        "model_type": "qwen3_moe" if moe else "qwen3",
        "vocab_size": mc["vocab_size"],
        "hidden_size": mc["n_embd"],
        "intermediate_size": mc["ffn_hidden"],
        "num_hidden_layers": mc["n_layer"],
        "num_attention_heads": mc["n_head"],
        "num_key_value_heads": mc["n_kv_head"],
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": mc["block_size"],
        "rms_norm_eps": mc.get("norm_eps", 1e-6),
        # transformers 5 reads rope_parameters; 4.x and vLLM read rope_theta: write both
        "rope_theta": mc.get("rope_theta", 10000.0),
        "rope_parameters": {"rope_type": "default", "rope_theta": mc.get("rope_theta", 10000.0)},
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "use_cache": True,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
        "dtype": "float32",
    }
    if moe:
        cfg.update({
            "num_experts": mc["n_expert"],
            "num_experts_per_tok": mc.get("expert_top_k", 2),
            "moe_intermediate_size": mc["ffn_hidden"],
            "norm_topk_prob": True,       # mathlm renormalises the top-k weights to sum 1
            "decoder_sparse_step": 1,     # every layer is MoE
            "mlp_only_layers": [],
            "output_router_logits": False,
            "router_aux_loss_coef": 0.001,
        })
    if tok is not None:
        cfg.update(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    if tokenizer_hash:
        cfg["mathlm_tokenizer_hash"] = tokenizer_hash  # ignored by transformers; lets us check the pairing
    return cfg


def generation_config(tok, block_size):
    """Greedy, and never more new tokens than the context holds: half of it at most, so a prompt
    fits beside them (lm-evaluation-harness and pipeline() read max_new_tokens from here)."""
    return {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
            "do_sample": False, "max_new_tokens": min(256, block_size // 2)}


def model_config_from_hf(cfg, where="folder"):
    """config.json dict -> GPTConfig dict; ValueError naming the first thing mathlm cannot represent."""
    mt = cfg.get("model_type")
    if mt not in ("qwen3", "qwen3_moe"):
        raise ValueError(f"{where} holds a {mt or 'unknown'} model (config.json model_type), not a mathlm "
                         "Qwen3 export — pass a mathlm checkpoint .pt or a folder written by scripts/upload_hf.py")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    want = {
        "hidden_act": (cfg.get("hidden_act", "silu"), "silu"),
        "attention_bias": (bool(cfg.get("attention_bias", False)), False),
        "use_sliding_window": (bool(cfg.get("use_sliding_window", False)), False),
        "tie_word_embeddings": (bool(cfg.get("tie_word_embeddings", False)), True),
        "rope type": (rope.get("rope_type", rope.get("type", "default")), "default"),
        "head_dim": (cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"]),
                     cfg["hidden_size"] // cfg["num_attention_heads"]),
    }
    if mt == "qwen3_moe":
        want.update({
            "norm_topk_prob": (bool(cfg.get("norm_topk_prob", False)), True),
            "decoder_sparse_step": (cfg.get("decoder_sparse_step", 1), 1),
            "mlp_only_layers": (list(cfg.get("mlp_only_layers") or []), []),
            "moe_intermediate_size": (cfg.get("moe_intermediate_size"), cfg.get("intermediate_size")),
        })
    for k, (have, need) in want.items():
        if have != need:
            raise ValueError(f"{where}: {k}={have!r}, mathlm models have {k}={need!r} — this Qwen3 folder "
                             "was not exported from mathlm and cannot be loaded by it")
    mc = dict(
        vocab_size=cfg["vocab_size"], block_size=cfg["max_position_embeddings"],
        n_layer=cfg["num_hidden_layers"], n_embd=cfg["hidden_size"], n_head=cfg["num_attention_heads"],
        n_kv_head=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        ffn_hidden=cfg["intermediate_size"],
        rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
        qk_norm=True, norm_eps=cfg.get("rms_norm_eps", 1e-6),
        # transformers 5 re-saves num_experts as num_local_experts (its attribute_map)
        n_expert=cfg.get("num_experts", cfg.get("num_local_experts", 0)) if mt == "qwen3_moe" else 0,
        expert_top_k=cfg.get("num_experts_per_tok", 2) if mt == "qwen3_moe" else 2,
    )
    return mc


# -----------------------------------------------------------------------------
# weights

_RENAME = [  # (ours, HF) name fragments, applied in order
    (r"^transformer\.wte\.", "model.embed_tokens."),
    (r"^transformer\.ln_f\.", "model.norm."),
    (r"^transformer\.h\.(\d+)\.ln_1\.", r"model.layers.\1.input_layernorm."),
    (r"^transformer\.h\.(\d+)\.ln_2\.", r"model.layers.\1.post_attention_layernorm."),
    (r"^transformer\.h\.(\d+)\.attn\.", r"model.layers.\1.self_attn."),
    (r"^transformer\.h\.(\d+)\.mlp\.router\.", r"model.layers.\1.mlp.gate."),
    (r"^transformer\.h\.(\d+)\.mlp\.", r"model.layers.\1.mlp."),
]
_RENAME_BACK = [
    (r"^model\.embed_tokens\.", "transformer.wte."),
    (r"^model\.norm\.", "transformer.ln_f."),
    (r"^model\.layers\.(\d+)\.input_layernorm\.", r"transformer.h.\1.ln_1."),
    (r"^model\.layers\.(\d+)\.post_attention_layernorm\.", r"transformer.h.\1.ln_2."),
    (r"^model\.layers\.(\d+)\.self_attn\.", r"transformer.h.\1.attn."),
    (r"^model\.layers\.(\d+)\.mlp\.gate\.", r"transformer.h.\1.mlp.router."),
    (r"^model\.layers\.(\d+)\.mlp\.", r"transformer.h.\1.mlp."),
]


def _rename(name, rules):
    for pat, rep in rules:
        new, n = re.subn(pat, rep, name)
        if n:
            return new
    return None


def to_hf_state_dict(state_dict):
    """Our state_dict -> HF tensor dict (contiguous, one copy of the tied embedding)."""
    out = {}
    for k, v in state_dict.items():
        if k == "lm_head.weight":
            continue  # tied: the same storage as the embedding, which safetensors refuses to write twice
        new = _rename(k, _RENAME)
        if new is None:
            raise ValueError(f"no Qwen3 name for parameter {k} — mathlm/model/gpt.py changed; update export.py")
        out[new] = v.detach().contiguous()
    return out


def from_hf_state_dict(tensors, mc, where="folder"):
    """HF tensors (per-expert or transformers-5 fused experts) -> our state_dict; ValueError on a mismatch."""
    sd = {}
    for k, v in tensors.items():
        if k == "lm_head.weight":
            continue  # tied; checked against the embedding below
        m = re.match(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$", k)
        if m:  # transformers 5 in-memory layout: (E, 2*ffn, C) and (E, C, ffn)
            i, what = m.groups()
            for j in range(v.size(0)):
                base = f"transformer.h.{i}.mlp.experts.{j}."
                if what == "gate_up_proj":
                    gate, up = v[j].chunk(2, dim=0)
                    sd[base + "gate_proj.weight"], sd[base + "up_proj.weight"] = gate, up
                else:
                    sd[base + "down_proj.weight"] = v[j]
            continue
        new = _rename(k, _RENAME_BACK)
        if new is None:
            raise ValueError(f"{where}: tensor {k} has no mathlm counterpart — not a mathlm Qwen3 export")
        sd[new] = v
    if "lm_head.weight" in tensors and not torch.equal(tensors["lm_head.weight"], sd.get("transformer.wte.weight")):
        raise ValueError(f"{where}: lm_head differs from the embedding — mathlm ties them, cannot load this folder")
    # what a mathlm GPT of this config expects, by name and shape, without building it
    C, hd, F = mc["n_embd"], mc["n_embd"] // mc["n_head"], mc["ffn_hidden"]
    want = {"transformer.wte.weight": (mc["vocab_size"], C), "transformer.ln_f.weight": (C,)}
    for i in range(mc["n_layer"]):
        h = f"transformer.h.{i}."
        want.update({h + "ln_1.weight": (C,), h + "ln_2.weight": (C,),
                     h + "attn.q_proj.weight": (mc["n_head"] * hd, C),
                     h + "attn.k_proj.weight": (mc["n_kv_head"] * hd, C),
                     h + "attn.v_proj.weight": (mc["n_kv_head"] * hd, C),
                     h + "attn.o_proj.weight": (C, mc["n_head"] * hd),
                     h + "attn.q_norm.weight": (hd,), h + "attn.k_norm.weight": (hd,)})
        mlps = [h + "mlp."] if mc["n_expert"] == 0 else [h + f"mlp.experts.{j}." for j in range(mc["n_expert"])]
        if mc["n_expert"]:
            want[h + "mlp.router.weight"] = (mc["n_expert"], C)
        for p in mlps:
            want.update({p + "gate_proj.weight": (F, C), p + "up_proj.weight": (F, C), p + "down_proj.weight": (C, F)})
    missing = sorted(set(want) - set(sd))
    if missing:
        no_qk = any(m.endswith(("attn.q_norm.weight", "attn.k_norm.weight")) for m in missing)
        hint = " (no QK-norm: a Qwen2/Llama-style model)" if no_qk else ""
        raise ValueError(f"{where}: tensor {missing[0]} missing{hint} — not a mathlm Qwen3 export")
    extra = sorted(set(sd) - set(want))
    if extra:
        raise ValueError(f"{where}: unexpected tensor {extra[0]} — not a mathlm Qwen3 export")
    for k, shape in want.items():
        if tuple(sd[k].shape) != shape:
            raise ValueError(f"{where}: {k} has shape {tuple(sd[k].shape)}, config.json implies {shape} — "
                             "the folder is inconsistent or not a mathlm export")
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return sd


# -----------------------------------------------------------------------------
# folders

def export_folder(ckpt, tok, out_dir, dtype=torch.float32):
    """Write the Hub-ready model + tokenizer files for a mathlm checkpoint dict into out_dir.
    Returns the list of files written (the model card is the caller's)."""
    from safetensors.torch import save
    os.makedirs(out_dir, exist_ok=True)
    mc = ckpt["model_config"]
    tensors = {k: v.to(dtype) for k, v in to_hf_state_dict(ckpt["model"]).items()}
    cfg = hf_config(mc, tok, ckpt.get("tokenizer_hash") or tok.hash)
    cfg["torch_dtype"] = cfg["dtype"] = str(dtype).replace("torch.", "")
    atomic_write(os.path.join(out_dir, "model.safetensors"), save(tensors, metadata={"format": "pt"}))
    atomic_write_json(os.path.join(out_dir, "config.json"), cfg)
    atomic_write_json(os.path.join(out_dir, "generation_config.json"), generation_config(tok, mc["block_size"]))
    tc = tok.hf_config()
    tc["model_max_length"] = mc["block_size"]
    atomic_write_json(os.path.join(out_dir, "tokenizer_config.json"), tc)
    atomic_write_json(os.path.join(out_dir, "special_tokens_map.json"),
                      {k: tc[k] for k in ("bos_token", "eos_token", "pad_token", "additional_special_tokens")})
    atomic_write(os.path.join(out_dir, "tokenizer.json"), tok.tk.to_str(pretty=True))
    return ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json"]


def read_folder(path):
    """An exported folder -> (GPTConfig dict, our state_dict, config.json dict). ValueError with the
    reason when it is missing pieces or holds another architecture."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ValueError(f"{path} has no config.json — pass a mathlm checkpoint .pt or a folder written by "
                         "scripts/upload_hf.py")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except ValueError as e:
        raise ValueError(f"{cfg_path} is not valid JSON ({e}) — re-export the folder") from None
    mc = model_config_from_hf(cfg, where=path)
    st = os.path.join(path, "model.safetensors")
    if not os.path.isfile(st):
        raise ValueError(f"{path} has no model.safetensors (sharded or .bin weights are not supported) — "
                         "re-export with scripts/upload_hf.py")
    from safetensors.torch import load_file
    try:
        tensors = load_file(st)
    except Exception as e:
        raise ValueError(f"{st} is unreadable ({str(e).splitlines()[0][:100]}) — it is corrupt; re-export it") from None
    sd = from_hf_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, mc, where=path)
    return mc, sd, cfg
