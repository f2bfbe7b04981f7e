"""Shared fixtures: real GSM8K rows turned into a small working directory — a 1k-token tokenizer,
gsm8k.jsonl / gsm8k_test.jsonl / gsm8k.bin — built once per test session.

GSM8K_SAMPLE (tests/data/gsm8k: the first 200 rows of each split, committed with its licence) is
what hermetic tests read, so a fresh clone passes alone. A test that needs all 7,473 + 1,319
rows calls gsm8k_full(): the ../shared/data/gsm8k folder where it exists, else a skip saying so."""
import contextlib
import io
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GSM8K_SAMPLE = os.path.join(REPO, "tests", "data", "gsm8k")
GSM8K_FULL = os.path.join(REPO, "..", "shared", "data", "gsm8k")


def snapshot(d):
    """{relative path: sha256} of every file under folder d: compare two to show a command changed nothing."""
    import hashlib
    out = {}
    for root, _, files in os.walk(d):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = hashlib.sha256(f.read()).hexdigest()
    return out


def gsm8k_full():
    """The full GSM8K folder (train.jsonl + test.jsonl), or skip the calling test with the reason."""
    if not all(os.path.exists(os.path.join(GSM8K_FULL, f)) for f in ("train.jsonl", "test.jsonl")):
        pytest.skip(f"needs the full GSM8K in {os.path.normpath(GSM8K_FULL)} (a fresh clone has only "
                    f"the tests/data/gsm8k sample)")
    return GSM8K_FULL


@pytest.fixture(scope="session")
def gsm8k_workdir(tmp_path_factory):
    """A folder holding math_tokenizer/ (vocab 1024, trained on the sample's train rows) and the GSM8K data
    stage outputs."""
    from mathlm.data import download_gsm8k
    from scripts import train_tokenizer
    d = tmp_path_factory.mktemp("gsm8k_work")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        download_gsm8k.main(["--source", GSM8K_SAMPLE, "--out_dir", str(d), "--text_only"])
        train_tokenizer.main(["--data_dir", str(d), "--out_dir", str(d / "math_tokenizer"), "--vocab_size", "1024"])
        download_gsm8k.main(["--source", GSM8K_SAMPLE, "--out_dir", str(d), "--tokenizer", str(d / "math_tokenizer")])
    return d


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread; on a shared 2-core machine it only adds sync
    cost. A module uses it with `pytestmark = pytest.mark.usefixtures("one_thread")`; restored after."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
