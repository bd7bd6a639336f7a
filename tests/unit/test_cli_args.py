"""``runtime.cli_args``: the options the long-running processes share are stated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from projections.projector import build_parser as projector_parser
from readers.audit import build_parser as audit_parser
from runtime.cli_args import Parser, add_chain_options, add_process_options
from runtime.topics import DEFAULT_PREFIX

CHAIN = ["--genesis", "g.avro", "--bootstrap", "127.0.0.1:1"]


def test_the_shared_options_parse_alike_in_every_process() -> None:
    projector = projector_parser().parse_args([*CHAIN, "--institution", "a", "--dsn", "d"])
    audit = audit_parser().parse_args(CHAIN)
    for args in (projector, audit):
        assert (args.genesis, args.bootstrap, args.prefix) == (
            Path("g.avro"),
            "127.0.0.1:1",
            DEFAULT_PREFIX,
        )
        assert args.metrics_port is None and args.verbose is False


def test_the_chain_options_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    p = Parser(prog="x")
    add_chain_options(p)
    with pytest.raises(SystemExit) as exit_:
        p.parse_args(["--genesis", "g"])
    assert exit_.value.code == 2 and "--bootstrap" in capsys.readouterr().err


def test_a_parent_parser_can_leave_verbose_to_its_child() -> None:
    p = Parser(prog="x", add_help=False)
    add_process_options(p, verbose=False)
    args = p.parse_args(["--metrics-port", "9"])
    assert args.metrics_port == 9 and not hasattr(args, "verbose")
