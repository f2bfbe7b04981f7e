"""Mixture: weighted sources → (x, y) batches, reproducible from the generator alone."""
import numpy as np
import pytest
import torch

from mathlm.common import MathlmError
from mathlm.data.mixture import Mixture, to_device
from mathlm.data.tokens import write_meta

HASH = "feedfacefeedface"
A0, B0, N = 0, 30_000, 5_000  # source a holds ids 0..4999 in order, source b 30000..34999


def _write(path, tokens, tokenizer_hash=HASH):
    arr = np.asarray(tokens, dtype=np.uint16)
    arr.tofile(path)
    write_meta(str(path), np.uint16, len(arr), tokenizer_hash, 65536)


@pytest.fixture
def data_dir(tmp_path):
    _write(tmp_path / "a.bin", np.arange(A0, A0 + N))
    _write(tmp_path / "b.bin", np.arange(B0, B0 + N))
    return str(tmp_path)


def test_weights_respected(data_dir):
    mix = Mixture({"a.bin": 3.0, "b.bin": 1.0}, HASH, block_size=16, data_dir=data_dir)
    assert mix.sources == ["a", "b"] and mix.weights == {"a": 0.75, "b": 0.25}
    g = torch.Generator().manual_seed(0)
    x = torch.cat([mix.get_batch("train", 32, g)[0] for _ in range(100)])  # 3,200 rows
    frac_a = (x[:, 0] < B0).float().mean().item()
    assert abs(frac_a - 0.75) < 0.03  # 4 sigma: sqrt(.75 * .25 / 3200) = 0.0077


def test_x_y_shift_by_one_and_windows_are_contiguous(data_dir):
    mix = Mixture({"a": 1, "b": 1}, HASH, block_size=8, data_dir=data_dir)
    x, y = mix.get_batch("train", 64, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (64, 8) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y, x + 1)  # the files count up by one, so a real window is x, x+1, ...


def test_same_generator_state_same_batch(data_dir):
    mix = Mixture({"a": 3, "b": 1}, HASH, block_size=16, data_dir=data_dir)
    g = torch.Generator().manual_seed(7)
    mix.get_batch("train", 4, g)
    state = g.get_state()  # what a checkpoint saves
    want = [mix.get_batch("train", 4, g) for _ in range(3)]
    g2 = torch.Generator()
    g2.set_state(state)
    got = [mix.get_batch("train", 4, g2) for _ in range(3)]
    for (x1, y1), (x2, y2) in zip(want, got):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x_other, _ = mix.get_batch("train", 4, torch.Generator().manual_seed(8))
    assert not torch.equal(x_other, want[0][0])


def test_val_is_the_held_out_tail(data_dir):
    T = 16
    mix = Mixture({"a": 1}, HASH, block_size=T, data_dir=data_dir)
    n_val = 4 * (T + 1)  # 0.5% of 5,000 is 25 tokens, under the 4-window floor
    assert mix.n_tokens("a", "val") == n_val and mix.n_tokens("a", "train") == N - n_val
    g = torch.Generator().manual_seed(0)
    vx, vy = mix.get_batch_from("a", "val", 256, g)
    tx, ty = mix.get_batch_from("a", "train", 256, g)
    assert vx.min() >= N - n_val and vy.max() <= N - 1
    assert ty.max() < N - n_val  # no train window reaches into val


def test_separate_val_file(tmp_path):
    _write(tmp_path / "train.bin", np.arange(0, 1000))
    _write(tmp_path / "val.bin", np.arange(2000, 2100))
    mix = Mixture({"train.bin": 1.0}, HASH, block_size=8, data_dir=str(tmp_path), val_paths={"train.bin": "val.bin"})
    g = torch.Generator().manual_seed(0)
    assert mix.get_batch("train", 128, g)[0].max() < 1000  # the whole train file is train
    vx, _ = mix.get_batch("val", 128, g)
    assert vx.min() >= 2000 and vx.max() < 2100


def test_get_batch_from_one_source(data_dir):
    mix = Mixture({"a": 1, "b": 100}, HASH, block_size=8, data_dir=data_dir)
    x, _ = mix.get_batch_from("a", "train", 32, torch.Generator().manual_seed(0))
    assert x.max() < B0
    with pytest.raises(MathlmError, match="'c' is not in the mixture"):
        mix.get_batch_from("c", "train", 1, torch.Generator())


def test_missing_sources_are_named_once_with_what_to_run(data_dir, capsys):
    """The default pretrain mix names four sources a CPU run never builds: one line, not one each."""
    mix = Mixture({"a": 1, "numina": 2, "openr1": 0.1, "gsm8k": 0.05, "mine": 1, "b": 0}, HASH, block_size=8,
                  data_dir=data_dir)
    out = capsys.readouterr().out
    left = [line for line in out.splitlines() if "not built here" in line]
    assert len(left) == 1 and "numina.bin (2), openr1.bin (0.1), gsm8k.bin (0.05), mine.bin (1)" in left[0]
    assert ("run python -m mathlm.data.download_gsm8k / python -m mathlm.data.download_numina / "
            "python -m mathlm.data.download_openr1 here first") in left[0]
    assert "b.bin has weight 0 — not in the mix" in out
    assert mix.sources == ["a"] and mix.weights == {"a": 1.0}


def test_no_source_at_all_is_an_error(tmp_path):
    with pytest.raises(MathlmError, match=r"no training data: looked for .*gsm8k\.bin, .*math\.bin"):
        Mixture({"gsm8k": 1, "math": 1}, HASH, block_size=8, data_dir=str(tmp_path))


def test_too_small_source_left_out_with_a_line(data_dir, tmp_path, capsys):
    _write(tmp_path / "tiny.bin", np.arange(10))
    mix = Mixture({"a": 1, "tiny": 1}, HASH, block_size=8, data_dir=data_dir)
    assert mix.sources == ["a"] and "tiny.bin is too small" in capsys.readouterr().out


def test_tokenizer_mismatch_refused(data_dir):
    with pytest.raises(MathlmError, match="rebuild the .bin with the current tokenizer"):
        Mixture({"a": 1}, "0000000000000000", block_size=8, data_dir=data_dir)


def test_to_device_cpu(data_dir):
    mix = Mixture({"a": 1}, HASH, block_size=8, data_dir=data_dir)
    x, y = mix.get_batch("train", 2, torch.Generator().manual_seed(0))
    x2, y2 = to_device(x, y, device="cpu")
    assert x2.device.type == "cpu" and torch.equal(x2, x) and torch.equal(y2, y)
