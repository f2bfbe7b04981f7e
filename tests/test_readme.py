"""The README is true, command by command: its stage table names the commands the pipeline runs,
in the pipeline's order, and every `python -m` module and flag it quotes exists."""
import importlib
import importlib.util
import os
import re

import pytest

from mathlm import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
# a command as the README writes it: `python -m mathlm.x.y ...` or `python scripts/x.py ...`
COMMAND = re.compile(r"`(python (?:-m [a-z_]+(?:\.[a-z_]+)*|scripts/\w+\.py)(?:\s[^`]*)?)`")


def module_of(command):
    """`python -m mathlm.eval.math --checkpoint X` → 'mathlm.eval.math'; a script → 'scripts.x'."""
    words = command.split()
    if words[1] == "-m":
        return words[2]
    return words[1].removesuffix(".py").replace("/", ".")


def table_rows():
    """The stage table: [(row number, [commands])]."""
    rows = []
    for line in README.splitlines():
        m = re.match(r"\| (\d+) \| (.*?) \|", line)
        if m:
            rows.append((int(m.group(1)), COMMAND.findall(m.group(2))))
    return rows


def pipeline_modules(tmp_path, monkeypatch):
    """The module each pipeline stage runs first, in order (the report card is not in the table)."""
    monkeypatch.chdir(tmp_path)
    for f in ("calculus.jsonl", "ml_math.jsonl", "calculus_test.jsonl", "calculus_corpus.txt"):
        (tmp_path / f).write_text("{}\n")
    cfg = pipeline.Config(preset="tiny")
    out = []
    for stage in pipeline.STAGES:
        if stage == "report":
            continue
        argv = pipeline.stage_commands(stage, cfg, {})[0][0]
        out.append(argv[2] if argv[1] == "-m" else "scripts." + os.path.basename(argv[1]).removesuffix(".py"))
    return out


def test_stage_table_is_the_pipeline_in_order(tmp_path, monkeypatch):
    rows = table_rows()
    assert [n for n, _ in rows] == list(range(1, len(rows) + 1))
    want = pipeline_modules(tmp_path, monkeypatch)
    got = [module_of(cmds[0]) for _, cmds in rows[:len(want)]]
    assert got == want


def test_every_quoted_module_exists():
    modules = {module_of(c) for c in COMMAND.findall(README)}
    assert "mathlm.data.download_openwebmath" in modules  # where openwebmath.txt comes from
    for m in sorted(modules):
        path = os.path.join(REPO, *m.split(".")) + ".py"
        assert os.path.exists(path) or importlib.util.find_spec(m) is not None, m


def _flags(command):
    return [w.split("=")[0] for w in command.split() if w.startswith("--")]


@pytest.mark.parametrize("module", sorted({module_of(c) for c in COMMAND.findall(README)
                                           if any(w.startswith("--") for w in c.split())}))
def test_every_quoted_flag_exists(module, capsys):
    flags = {f for c in COMMAND.findall(README) if module_of(c) == module for f in _flags(c)}
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for f in flags:
        # --no-hub style booleans appear in help as --hub, --no-hub
        assert re.search(rf"(^|\s|,){re.escape(f)}(\s|,|$)", help_text, re.M), f"{module} has no {f}"
