"""download_openwebmath: local sources in the hub schema → openwebmath.txt whose documents are
exactly the rows (as build_pretrain reads them back), the limits, and the one-line errors."""
import hashlib
import json

import pytest

from mathlm.data import download_openwebmath as dl
from mathlm.data.build_pretrain import read_text_docs

PAGES = [
    "Let $f(x) = x^2$.\nThen $f'(x) = 2x$.",
    "Theorem. Every bounded monotone sequence converges.\n\nProof. Completeness.",  # a paragraph break
    "Integrals\n\n\n\n  \nare areas.",  # blank runs inside one page: must not split it
    "∇·F = ∂F/∂x + ∂F/∂y",
]


def read_back(path):
    return [d.rstrip("\n") for d, _ in read_text_docs(str(path), 1 << 30, hashlib.sha256())]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_source_round_trips_through_build_pretrain(tmp_path, capsys):
    src = write_jsonl(tmp_path / "train.jsonl", [{"text": p, "url": "u"} for p in PAGES])
    out = tmp_path / "owm.txt"
    dl.main(["--source", str(src), "--out", str(out)])
    docs = read_back(out)
    assert len(docs) == 4
    assert docs[0] == PAGES[0] and docs[1] == PAGES[1] and docs[3] == PAGES[3]
    assert docs[2] == "Integrals\n\nare areas."  # one page, its blank run folded to a paragraph break
    assert "wrote" in capsys.readouterr().out


def test_parquet_folder_and_limits(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    (tmp_path / "src").mkdir()
    pq.write_table(pa.table({"text": PAGES * 5, "url": ["u"] * 20}), tmp_path / "src" / "train-0.parquet")
    out = tmp_path / "owm.txt"
    dl.main(["--source", str(tmp_path / "src"), "--out", str(out), "--max_docs", "7"])
    assert len(read_back(out)) == 7
    dl.main(["--source", str(tmp_path / "src"), "--out", str(out), "--max_mb", "0.0001"])  # 100 bytes
    # 36 bytes, then 3 + 73: the page that crosses the limit is kept whole, and nothing after it
    assert read_back(out) == [PAGES[0], PAGES[1]]


def test_bad_rows_skipped_with_a_warning(tmp_path, capsys):
    src = tmp_path / "train.jsonl"
    src.write_bytes(b'{"text": "good page"}\nnot json\n\xff\xfe\n{"text": 5}\n' + b"[" * 100000 + b"]" * 100000
                    + b"\n")
    out = tmp_path / "owm.txt"
    dl.main(["--source", str(src), "--out", str(out)])
    assert read_back(out) == ["good page"]
    assert "skipped 4 line(s)" in capsys.readouterr().out


@pytest.mark.parametrize("args,msg", [
    (["--source", "nowhere.jsonl"], "does not exist"),
    (["--max_docs", "-1"], "must be ≥ 0"),
    (["--out", "/nonexistent/dir/owm.txt"], "not a writable folder"),
])
def test_one_line_errors(tmp_path, monkeypatch, args, msg):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=msg):
        dl.main(args)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_hub_failure_names_the_way_out(tmp_path, monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="could not load open-web-math/open-web-math .* --source PATH"):
        dl.main([])
    assert not (tmp_path / "openwebmath.txt").exists()
