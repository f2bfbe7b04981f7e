"""`--help` is the documentation: for every stage, each flag says what it does (its field's
comment) and its default once, and the description is the module docstring, not a dataclass repr."""
import argparse
import dataclasses
import glob
import importlib
import os

import pytest

import mathlm.common as common
from mathlm.common import build_parser, field_comments

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stage_modules():
    """Every module under mathlm/ and scripts/ whose main(argv) parses its flags with parse_config."""
    out = []
    for path in sorted(glob.glob(os.path.join(REPO, "mathlm", "**", "*.py"), recursive=True)
                       + glob.glob(os.path.join(REPO, "scripts", "*.py"))):
        src = open(path, encoding="utf-8").read()
        if "def main(" in src and "parse_config(" in src and not path.endswith("common.py"):
            out.append(os.path.relpath(path, REPO)[:-3].replace(os.sep, "."))
    return out


def test_every_stage_is_found():
    names = stage_modules()
    for want in ["mathlm.train.pretrain", "mathlm.train.sft", "mathlm.train.grpo", "mathlm.pipeline",
                 "mathlm.report", "mathlm.data.build_pretrain", "mathlm.eval.math", "mathlm.infer.inference",
                 "scripts.train_tokenizer", "scripts.upload_hf"]:
        assert want in names


@pytest.mark.parametrize("name", stage_modules())
def test_help_documents_every_flag(name, monkeypatch, capsys):
    mod = importlib.import_module(name)
    parsers = []

    def recording_build_parser(*a, **kw):  # the parser main() really builds
        parsers.append(build_parser(*a, **kw))
        return parsers[-1]
    monkeypatch.setattr(common, "build_parser", recording_build_parser)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "Config(" not in text, "a dataclass repr in --help"
    assert mod.__doc__.strip().splitlines()[0] in text  # the docstring's summary is the description
    (parser,) = parsers
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0]
        h = (action.help or "").strip()
        assert h, f"{name} {flag}: no help"
        assert not h.startswith("(default"), f"{name} {flag}: help is only a default: {h!r}"
        assert h.count("default:") <= 1 and "(default: None)" not in h, f"{name} {flag}: {h!r}"


# -----------------------------------------------------------------------------
# the comment parser itself, on a dataclass written here

@dataclasses.dataclass
class _Demo:
    lr: float = 3e-4            # peak LR; cosine to lr/10
    out: str = "a#b"            # a '#' inside the default is not a comment
    mixture: str = "x:1"        # name:weight pairs;
                                # missing files are skipped
    # a section header, not a field's comment
    bare: int = 3
    pct: float = 0.5            # share of rows (50%)


def test_field_comments():
    assert field_comments(_Demo) == {"lr": "peak LR; cosine to lr/10",
                                     "out": "a '#' inside the default is not a comment",
                                     "mixture": "name:weight pairs; missing files are skipped",
                                     "pct": "share of rows (50%)"}


def test_help_shows_comment_and_default_once(capsys):
    with pytest.raises(SystemExit):
        build_parser(_Demo, {"tiny": dict(lr=1e-3)}).parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "peak LR; cosine to lr/10 (default: 0.0003)" in text
    assert "share of rows (50%) (default: 0.5)" in text  # '%' survives argparse's %-formatting
    assert "--bare BARE (default: 3)" in text
    assert "tiny --lr 0.001" in text  # what the preset sets
