"""The command line of ``pantheon simulate`` (:mod:`infra.simulate.cli`)."""

from __future__ import annotations

from infra.simulate.cli import build_parser


def test_parser_defaults_run_until_interrupted() -> None:
    args = build_parser().parse_args([])
    assert args.seconds is None and args.rate > 0 and not args.json
