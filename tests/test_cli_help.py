"""`--help` pages: flags without `<bool>`, arguments in capitals, help texts that wrap."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from workbench.cli import app


def _help(*words: str, width: int = 80) -> str:
    r = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize(
    "words", [(), ("heads",), ("ablate",), ("screen",), ("serve",), ("engine", "stop"), ("tui",)]
)
def test_flags_take_no_bool_and_arguments_are_in_capitals(words):
    out = _help(*words)
    assert "<bool>" not in out
    assert "{" not in out.split("Usage:")[1].splitlines()[0]  # no {ckpt} on the usage line


def test_usage_and_argument_names():
    out = _help("heads")
    assert "Usage: dit-workbench heads [OPTIONS] CKPT" in out
    assert "--correct-only " in out and "CKPT" in out.split("Arguments")[1]


def test_help_paragraphs_wrap_to_the_terminal_not_the_source():
    # serve's docstring breaks its second paragraph after "does not stop"; at 200 columns the
    # paragraph is one line
    out = _help("serve", width=200)
    assert "closing the terminal or losing SSH does not stop it); `--foreground`" in out


def test_an_operations_help_is_its_declaration():
    """A generated command's options say what the operation declares (rich markup escaped:
    the spec forms keep their [brackets]); the output options say theirs."""
    from engine.ops.ablate import Ablate

    out = " ".join(_help("ablate", width=400).split())
    declared = Ablate.spec()["interventions"].help
    assert declared[:100] in out and "mask-head L.H [tokens=CATS] [steps=S]" in declared
    assert "--intervention -i" in out and "Show only this metric (repeatable)" in out
    assert "(jobs only)" not in out and "--null-caption-p" not in _help("train")
