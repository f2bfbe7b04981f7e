"""The reliability probe's classifier (scripts/reliability_probe.py) on synthetic commands: a traceback,
a one-line error, argparse's usage error, a hang past the timeout, a silent exit 0, a signal, a changed
`keep` file and a failed check. Fast: no pipeline, no torch."""
import os
import sys
import time

import pytest

from scripts.reliability_probe import CASES, CLASSES, classify, run_case, run_command

PY = sys.executable


@pytest.mark.parametrize("code,expect,want", [
    ("raise ValueError('x')", "error", "traceback"),
    ("import sys; print('error: x', file=sys.stderr); sys.exit(1)", "error", "clean"),
    ("import argparse; p = argparse.ArgumentParser(prog='stage'); p.add_argument('--n', type=int); p.parse_args(['--n', 'x'])",
     "error", "clean"),
    ("pass", "error", "silent"),
    ("import sys; print('something went wrong', file=sys.stderr); sys.exit(1)", "error", "other"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGABRT)", "error", "other"),
    ("pass", "ok", "clean"),
    ("import sys; print('error: x', file=sys.stderr); sys.exit(1)", "ok", "other"),
    ("import sys; print('error: x', file=sys.stderr); sys.exit(1)", "any", "clean"),
    ("pass", "any", "clean"),
    ("raise RecursionError", "any", "traceback"),
])
def test_classify_synthetic_commands(tmp_path, code, expect, want):
    rc, out, err, timed_out, _ = run_command(f"{PY} -c \"{code}\"", str(tmp_path), timeout=30)
    assert classify(rc, out, err, timed_out, expect) == want, (rc, out, err)


def test_hang_is_killed_at_the_timeout(tmp_path):
    t0 = time.time()
    # the sleep runs in a child of bash: the whole process group goes, not only bash
    rc, out, err, timed_out, seconds = run_command(f"{PY} -c 'import time; time.sleep(30)'; echo done", str(tmp_path),
                                                   timeout=1)
    assert timed_out and classify(rc, out, err, timed_out) == "hang"
    assert time.time() - t0 < 10 and "done" not in out


def test_run_case_keep_and_check(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "f.txt").write_text("good")
    work = str(tmp_path / "work")
    os.makedirs(work)
    fail = "echo 'error: refused' >&2; exit 1"
    r = run_case(dict(name="clean", setup="", command=fail, expect="error", keep=["f.txt"]), str(run), work, 30)
    assert r["class"] == "clean" and r["cause"] == "error: refused" and r["changed"] == []
    r = run_case(dict(name="overwrote", setup="", command="echo bad > f.txt; " + fail, expect="error", keep=["f.txt"]),
                 str(run), work, 30)
    assert r["class"] == "silent" and r["keep_changed"] == ["f.txt"]
    r = run_case(dict(name="check", setup="touch orphan", command=fail, expect="error", check="[ ! -e orphan ]"),
                 str(run), work, 30)
    assert r["class"] == "silent" and r["check_failed"]
    r = run_case(dict(name="setup-fails", setup="exit 3", command="true", expect="ok"), str(run), work, 30)
    assert r["class"] == "other" and "setup failed" in r["cause"]
    assert (run / "f.txt").read_text() == "good"  # every case ran in a copy
    assert os.listdir(work) == []  # and the copies are gone


def test_cases_are_well_formed():
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    for c in CASES:
        assert set(c) <= {"name", "setup", "command", "expect", "keep", "check"}, c["name"]
        assert c["expect"] in ("error", "ok", "any") and c["name"].split("/")[0] in {f"D{i}" for i in range(5, 15)}
    assert {c["name"].split("/")[0] for c in CASES} == {f"D{i}" for i in range(5, 15)}  # every section D5-D14
    assert CLASSES == ["clean", "traceback", "hang", "silent", "other"]
