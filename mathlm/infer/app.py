"""The Hugging Face Spaces entry point: the demo of mathlm/infer/demo.py around an exported model.

    MATHLM_REPO_ID=user/mathlm-40m python -m mathlm.infer.app      # a model repo on the Hub
    python -m mathlm.infer.app --model_dir out/mathlm-40m          # a local exported folder
    python -m mathlm.infer.app --repo_id user/mathlm-40m --share   # plus a public gradio.live link
Reads: a folder written by scripts/upload_hf.py (downloaded from the Hub into the usual HF cache
when --repo_id / MATHLM_REPO_ID names one; a private repo needs HF_TOKEN). Writes nothing else.
Without either, a folder holding config.json beside the working directory (a Space that carries
the model files itself) is used. If nothing loads, the page starts anyway and says why.

A Space needs: this repo's mathlm/ package, requirements.txt, and an app.py at its root reading
    from mathlm.infer.app import main; main()
Spaces sets GRADIO_SERVER_NAME=0.0.0.0 and the port; Gradio reads them when --host is left empty.
"""
import os
from dataclasses import dataclass

from mathlm.common import check_range, cli, parse_config
from mathlm.infer.demo import build_demo, make_demo, serve

# the files a model repo needs to be served; README and anything else stay on the Hub
MODEL_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json"]


@dataclass
class Config:
    """Hugging Face Spaces entry point: the demo around an exported model."""
    repo_id: str = ""        # Hub model repo (user/name); "" = $MATHLM_REPO_ID
    model_dir: str = ""      # a local exported folder (wins over repo_id)
    revision: str = ""       # branch, tag or commit of repo_id; "" = main
    device: str = "auto"     # auto|cuda|mps|cpu
    host: str = ""           # "" = $GRADIO_SERVER_NAME or 127.0.0.1
    port: int = 0            # 0 = $GRADIO_SERVER_PORT or 7860
    share: bool = False      # a public *.gradio.live link


def resolve(repo_id="", model_dir="", revision=""):
    """(local folder or None, problem or None): where the model files are, downloading them if needed."""
    if model_dir:
        return model_dir, None
    repo_id = repo_id or os.environ.get("MATHLM_REPO_ID", "")
    if not repo_id:
        if os.path.isfile("config.json"):
            return ".", None
        return None, ("no model given — set MATHLM_REPO_ID=user/name (a repo written by scripts/upload_hf.py), "
                      "or pass --repo_id or --model_dir")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(repo_id, revision=revision or None, allow_patterns=MODEL_FILES), None
    except Exception as e:  # no network, no such repo, private without a token: say so on the page
        return None, (f"could not download {repo_id} ({type(e).__name__}: {str(e).splitlines()[0][:160]}) — "
                      "check the repo id, your network, and HF_TOKEN for a private repo")


def make_app(repo_id="", model_dir="", revision="", device="auto"):
    path, problem = resolve(repo_id, model_dir, revision)
    title = f"mathlm — {repo_id or os.environ.get('MATHLM_REPO_ID') or os.path.basename(os.path.abspath(path or '.'))}"
    if path is None:
        print(f"starting without a model: {problem}")
        return build_demo(None, None, problem, title)
    return make_demo(path, device=device, title=title)


@cli
def main(argv=None):
    cfg = parse_config(Config, None, argv)
    check_range(cfg, "port", lo=0, hi=65535, why="0 = $GRADIO_SERVER_PORT or 7860")
    demo = make_app(cfg.repo_id, cfg.model_dir, cfg.revision, cfg.device)
    serve(demo, cfg.host or None, cfg.port or None, cfg.share)  # None: Gradio reads $GRADIO_SERVER_*


if __name__ == "__main__":
    main()
