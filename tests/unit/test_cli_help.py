"""`pantheon ... --help` of every command: no reStructuredText double backquotes, the rebuild
says that it drops data, and usage errors are one line with exit code 2 (D36)."""

from __future__ import annotations

import pytest

from infra.cli import main

COMMANDS = [
    [],
    ["up"],
    ["status"],
    ["stop"],
    ["start"],
    ["restart"],
    ["audit"],
    ["proof"],
    ["verify"],
    ["verify-object"],
    ["projections", "rebuild"],
    ["projector"],
    ["gateway"],
    ["batcher"],
    ["validator"],
    ["keys", "generate"],
    ["genesis", "create"],
    ["iam", "create-admin"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pantheon")
def test_help_has_no_double_backquotes(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code: object
    try:
        code = main([*command, "--help"])
    except SystemExit as done:
        code = done.code
    assert code == 0
    text = capsys.readouterr().out
    assert "usage:" in text and "``" not in text, text


def test_rebuild_help_says_it_drops_and_how_to_stop_the_projector(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["projections", "rebuild", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "DROP an institution's chain projection" in text
    assert "pantheon stop projector --institution X" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["stop", "nothing"],
        ["keys", "generate", "--bogus"],
        ["verify"],
        ["audit", "--at-height", "x"],
    ],
)
def test_usage_errors_are_one_line_with_code_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "error:" in err and "--help" in err
