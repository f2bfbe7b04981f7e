"""Export to the Qwen3 layout: transformers loads the folder with no custom code and gives mathlm's
logits, greedy tokens and token ids; the folder loads back into mathlm; scripts/upload_hf.py writes
a complete Hub folder with a model card, and refuses what it cannot export."""
import json
import os

import pytest
import torch

from mathlm.common import MathlmError
from mathlm.format import encode_chat
from mathlm.infer.export import export_folder, read_folder
from mathlm.infer.inference import load_model
from scripts.upload_hf import count_params, eval_table
from scripts.upload_hf import main as upload_main
from tests.test_infer import make_tiny, one_thread  # noqa: F401  (one_thread: autouse fixture)

HF_FILES = ["README.md", "config.json", "generation_config.json", "model.safetensors",
            "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module", params=[0, 4], ids=["dense", "moe"])
def exported(request, tmp_path_factory):
    d = str(tmp_path_factory.mktemp(f"exp{request.param}"))
    path, tok_dir, model, tok = make_tiny(d, n_expert=request.param)
    out = os.path.join(d, "hf")
    upload_main(["--checkpoint", path, "--tokenizer", tok_dir, "--out_dir", out, "--eval_dir", d])
    return out, model, tok


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("dense"))
    path, tok_dir, model, tok = make_tiny(d)
    export_folder(torch.load(path, weights_only=True), tok, os.path.join(d, "hf"))
    return os.path.join(d, "hf")


def test_folder_is_complete(exported):
    out, model, tok = exported
    assert sorted(os.listdir(out)) == HF_FILES
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["architectures"] == (["Qwen3MoeForCausalLM"] if model.config.n_expert else ["Qwen3ForCausalLM"])
    assert cfg["tie_word_embeddings"] is True and cfg["head_dim"] == model.config.head_dim
    gen = json.load(open(os.path.join(out, "generation_config.json")))
    assert (gen["eos_token_id"], gen["pad_token_id"], gen["bos_token_id"], gen["do_sample"]) == \
        (tok.eos_id, tok.pad_id, tok.bos_id, False)
    # never more new tokens than the context: lm-evaluation-harness generates this many
    assert gen["max_new_tokens"] == min(256, model.config.block_size // 2)
    assert "chat_template" in json.load(open(os.path.join(out, "tokenizer_config.json")))


def test_transformers_logits_match(exported):
    from transformers import AutoModelForCausalLM
    out, model, tok = exported
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == ("Qwen3MoeForCausalLM" if model.config.n_expert else "Qwen3ForCausalLM")
    assert hf.num_parameters() == model.num_params() == count_params(read_folder(out)[0])[0]
    idx = torch.randint(0, tok.vocab_size, (3, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, _, _ = model(idx)
        theirs = hf(idx).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_transformers_greedy_generation_matches(exported):
    from transformers import AutoModelForCausalLM
    out, model, tok = exported
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    for q in ["What is 2+3?", "The gradient ∇f of f = w^2"]:
        ids = tok.encode(f"Q: {q}\nA:")
        theirs = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=32, do_sample=False)[0, len(ids):].tolist()
        ours = model.generate_ids([ids], 32, eos_id=tok.eos_id)[0]
        assert len(ours) == 32 and theirs == ours


def test_transformers_tokenizer_gives_identical_ids(exported):
    from transformers import AutoTokenizer
    out, _, tok = exported
    hf = AutoTokenizer.from_pretrained(out)
    for text in ["Q: d/dx x^2 + 3x?\nA: 2x + 3\n\n", "∇ ∫ 1,234.5 <|eos|> 😀", ""]:
        assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert (hf.eos_token_id, hf.pad_token_id, hf.bos_token_id) == (tok.eos_id, tok.pad_id, tok.bos_id)
    msgs = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
            {"role": "user", "content": "times 3?"}]
    assert hf.apply_chat_template(msgs, tokenize=True, return_dict=False, add_generation_prompt=True) == \
        encode_chat(tok, [("2+2?", "4"), ("times 3?", None)])[0]


def test_folder_loads_back_into_mathlm(exported):
    out, model, tok = exported
    m2, tok2 = load_model(out, device="cpu", verbose=False)
    assert tok2.hash == tok.hash and m2.config == model.config
    idx = torch.randint(0, tok.vocab_size, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(m2(idx)[0], model(idx)[0])


def test_transformers_resaved_folder_loads_back(exported, tmp_path):
    """A folder re-saved by transformers (5.x may fuse MoE experts into 3-D tensors) still loads."""
    from transformers import AutoModelForCausalLM
    out, model, tok = exported
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    hf.save_pretrained(tmp_path / "resaved")
    mc, sd, _ = read_folder(str(tmp_path / "resaved"))
    from mathlm.model.gpt import GPT, GPTConfig
    m2 = GPT(GPTConfig(**mc)).eval()
    m2.load_state_dict(sd)
    idx = torch.randint(0, tok.vocab_size, (1, 20))
    with torch.no_grad():
        assert torch.equal(m2(idx)[0], model(idx)[0])


# --- refusals --------------------------------------------------------------------------------------

def _rewrite_config(src, dst, **changes):
    import shutil
    shutil.copytree(src, dst)
    cfg = json.load(open(os.path.join(dst, "config.json")))
    cfg.update(changes)
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"))
    return str(dst)


@pytest.mark.parametrize("changes,match", [
    (dict(model_type="llama"), "llama model"),
    (dict(model_type="qwen2"), "qwen2 model"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(tie_word_embeddings=False), "tie_word_embeddings"),
    (dict(intermediate_size=32), "shape"),
    (dict(head_dim=32), "head_dim"),      # real Qwen3 checkpoints: head_dim != hidden / heads
])
def test_other_architectures_are_refused(dense_folder, tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        read_folder(_rewrite_config(dense_folder, tmp_path / "x", **changes))
    with pytest.raises(MathlmError, match=match):
        load_model(str(tmp_path / "x"), device="cpu", verbose=False)


def test_missing_qk_norm_is_refused(dense_folder, tmp_path):
    from safetensors.torch import load_file, save_file
    d = _rewrite_config(dense_folder, tmp_path / "noqk")
    t = {k: v for k, v in load_file(os.path.join(d, "model.safetensors")).items() if "_norm" not in k}
    save_file(t, os.path.join(d, "model.safetensors"))
    with pytest.raises(ValueError, match="no QK-norm"):
        read_folder(d)


def test_corrupt_weights_are_refused(dense_folder, tmp_path):
    d = _rewrite_config(dense_folder, tmp_path / "bad")
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(MathlmError, match="corrupt"):
        load_model(d, device="cpu", verbose=False)


# --- upload_hf: model card, no-token path, refusals --------------------------------------------------

def test_model_card_has_architecture_and_eval_table(tmp_path):
    path, tok_dir, model, tok = make_tiny(str(tmp_path))
    (tmp_path / "eval_gsm8k.json").write_text(json.dumps(
        {"task": "gsm8k", "checkpoint": "checkpoint.pt", "n": 200, "accuracy": 0.125, "ci95": [0.084, 0.178],
         "shots": 2, "shots_used_min": 0}))
    (tmp_path / "eval_math.json").write_text(json.dumps(
        {"task": "math", "checkpoints": ["checkpoint.pt"],
         "domains": {"calculus": {"n": 50, "accuracy": 0.5, "ci95": [0.36, 0.64]},
                     "ml_math": {"n": 50, "accuracy": 0.3}}}))
    upload_main(["--checkpoint", path, "--tokenizer", tok_dir, "--out_dir", str(tmp_path / "hf"),
                 "--eval_dir", str(tmp_path), "--repo_id", "me/mathlm-tiny"])
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "| checkpoint | stage | task | accuracy | 95% CI | n |" in card
    assert ("| `checkpoint.pt` (this model) | sft | gsm8k (2-shot, 0 where the context is short) | 12.5% "
            "| 8.4–17.8% | 200 |") in card
    assert "| `checkpoint.pt` (this model) | sft | math/calculus | 50.0% | 36.0–64.0% | 50 |" in card
    assert "| `checkpoint.pt` (this model) | sft | math/ml_math | 30.0% | – | 50 |" in card
    assert f"{model.num_params() / 1e6:.2f}M" in card and "Qwen3ForCausalLM" in card
    assert 'from_pretrained("me/mathlm-tiny")' in card and "data=gsm8k,calculus" in card


def test_default_checkpoint_is_inferences(tmp_path, monkeypatch, capsys):
    """Without --checkpoint the export takes what inference and the evals take, and says why; with none
    here it says how to make one (it said "train one first")."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="none of checkpoint_mathlm_grpo.pt.*python -m mathlm.pipeline --preset tiny"):
        upload_main(["--out_dir", str(tmp_path / "hf")])
    make_tiny(str(tmp_path), name="checkpoint_mathlm.pt")
    upload_main(["--out_dir", str(tmp_path / "hf")])
    assert "using checkpoint_mathlm.pt (sft, the last pipeline stage here" in capsys.readouterr().out
    assert (tmp_path / "hf" / "model.safetensors").exists()


def test_model_card_labels_each_row_with_the_checkpoint_it_measured(tmp_path, monkeypatch):
    """A pipeline folder: eval_base/sft/grpo.json, a --compare summary (A and B sides), and report.json
    repeating them. Each row names its checkpoint and stage (read from the file when it is there, else
    from the pipeline's name); the exported checkpoint's rows come first, with its per-topic rows; the
    newest file wins for each (checkpoint, task)."""
    path, tok_dir, _, _ = make_tiny(str(tmp_path), name="checkpoint_mathlm_grpo.pt")  # stage "sft" inside
    make_tiny(str(tmp_path), name="checkpoint_mathlm.pt")

    def dom(c, topics=None):  # one domain's summary, out of 10
        return dict({"n": 10, "correct": c, "accuracy": c / 10}, **({"topics": topics} if topics else {}))
    files = {
        "report.json": {"accuracy": {"calculus": {"base": dom(0), "SFT": dom(9), "GRPO": dom(9)}}},  # oldest
        "eval_base.json": {"task": "math", "checkpoints": ["checkpoint.pt"], "domains": {"calculus": dom(1)}},
        "eval_sft.json": {"task": "math", "checkpoints": ["checkpoint_mathlm.pt"], "domains": {"calculus": dom(5)}},
        "eval_grpo.json": {"task": "math", "checkpoints": ["checkpoint_mathlm_grpo.pt"],
                           "domains": {"calculus": dom(7, {"poly_derivative": dom(8)})}},
        "eval_math_compare.json": {"task": "math", "checkpoints": ["checkpoint.pt", "checkpoint_mathlm_grpo.pt"],
                                   "domains": {"ml_math": {"A": dom(2), "B": dom(3), "delta": 0.1}}},
    }
    for i, (name, s) in enumerate(files.items()):
        (tmp_path / name).write_text(json.dumps(s))
        os.utime(tmp_path / name, (1e9 + i, 1e9 + i))
    monkeypatch.chdir(tmp_path)
    rows = [line for line in eval_table(".", path).splitlines() if line.startswith("| `")]
    assert rows == [
        "| `checkpoint_mathlm_grpo.pt` (this model) | sft | math/ml_math | 30.0% | – | 10 |",
        "| `checkpoint_mathlm_grpo.pt` (this model) | sft | math/calculus | 70.0% | – | 10 |",
        "| `checkpoint_mathlm_grpo.pt` (this model) | sft | math/calculus/topics/poly_derivative | 80.0% | – | 10 |",
        "| `checkpoint.pt` | pretrain | math/ml_math | 20.0% | – | 10 |",
        "| `checkpoint.pt` | pretrain | math/calculus | 10.0% | – | 10 |",
        "| `checkpoint_mathlm.pt` | sft | math/calculus | 50.0% | – | 10 |",
    ]
    assert "| math/ml_math/A |" not in eval_table(".", path)  # no side letters: the checkpoint is named
    assert "from eval_math_compare.json, eval_grpo.json, eval_sft.json, eval_base.json." in eval_table(".", path)
    os.remove("eval_base.json"), os.remove("eval_sft.json")  # report.json's rows are the fallback
    table = eval_table(".", path)
    assert "| `checkpoint.pt` | pretrain | math/calculus | 0.0% |" in table
    assert "| `checkpoint_mathlm.pt` | sft | math/calculus | 90.0% |" in table


def test_model_card_without_evals(tmp_path):
    assert eval_table(str(tmp_path)).startswith("Not evaluated yet")


def test_repo_id_without_token_writes_folder_only(tmp_path, monkeypatch, capsys):
    path, tok_dir, _, _ = make_tiny(str(tmp_path))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no cached login either
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    upload_main(["--checkpoint", path, "--tokenizer", tok_dir, "--out_dir", str(tmp_path / "hf"),
                 "--repo_id", "me/mathlm-tiny"])
    outp = capsys.readouterr().out
    assert "no Hugging Face token" in outp and "wrote" in outp
    assert sorted(os.listdir(tmp_path / "hf")) == HF_FILES


def test_upload_refuses_bad_input(tmp_path):
    path, tok_dir, _, _ = make_tiny(str(tmp_path))
    with pytest.raises(SystemExit, match="not found"):
        upload_main(["--checkpoint", str(tmp_path / "nope.pt"), "--tokenizer", tok_dir, "--out_dir", str(tmp_path / "o")])
    from mathlm.tokenizer import MathTokenizer
    MathTokenizer.train(["other words entirely"] * 30, vocab_size=270, show_progress=False).save(str(tmp_path / "tk2"))
    with pytest.raises(SystemExit, match="tokenizer"):
        upload_main(["--checkpoint", path, "--tokenizer", str(tmp_path / "tk2"), "--out_dir", str(tmp_path / "o")])


def test_bf16_export_halves_the_file(tmp_path):
    path, tok_dir, model, tok = make_tiny(str(tmp_path))
    upload_main(["--checkpoint", path, "--tokenizer", tok_dir, "--out_dir", str(tmp_path / "a")])
    upload_main(["--checkpoint", path, "--tokenizer", tok_dir, "--out_dir", str(tmp_path / "b"), "--dtype", "bf16"])
    a, b = (os.path.getsize(tmp_path / d / "model.safetensors") for d in "ab")
    assert b < 0.55 * a
    m2, _ = load_model(str(tmp_path / "b"), device="cpu", verbose=False)
    w = model.transformer.wte.weight
    assert torch.equal(m2.transformer.wte.weight, w.to(torch.bfloat16).float())


def test_repo_id_with_token_uploads_the_folder(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    path, tok_dir, _, _ = make_tiny(str(tmp_path))
    calls = []

    class FakeApi:  # records what would go to the Hub; no network
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw["private"]))

        def upload_folder(self, folder_path, repo_id, **kw):
            calls.append(("upload", sorted(os.listdir(folder_path)), repo_id))
            return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    upload_main(["--checkpoint", path, "--tokenizer", tok_dir, "--out_dir", str(tmp_path / "hf"),
                 "--repo_id", "me/mathlm-tiny", "--private"])
    assert calls == [("token", "hf_test"), ("create", "me/mathlm-tiny", True), ("upload", HF_FILES, "me/mathlm-tiny")]
    assert "uploaded" in capsys.readouterr().out
