"""Shared fixtures: the real GSM8K (from ../shared, never copied into the repo) turned into a
small working directory — a 1k-token tokenizer, gsm8k.jsonl / gsm8k_test.jsonl / gsm8k.bin —
built once per test session."""
import contextlib
import io
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GSM8K_DIR = os.path.join(REPO, "..", "shared", "data", "gsm8k")


@pytest.fixture(scope="session")
def gsm8k_workdir(tmp_path_factory):
    """A folder holding math_tokenizer/ (vocab 1024, trained on GSM8K train) and the GSM8K data stage outputs."""
    from mathlm.data import download_gsm8k
    from scripts import train_tokenizer
    d = tmp_path_factory.mktemp("gsm8k_work")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        download_gsm8k.main(["--source", GSM8K_DIR, "--out_dir", str(d), "--text_only"])
        train_tokenizer.main(["--data_dir", str(d), "--out_dir", str(d / "math_tokenizer"), "--vocab_size", "1024"])
        download_gsm8k.main(["--source", GSM8K_DIR, "--out_dir", str(d), "--tokenizer", str(d / "math_tokenizer")])
    return d
