"""Argument parsing shared by the ``pantheon`` commands (D36).

* :class:`Parser` reports a usage error in one line (``prog: error: ... (see prog --help)``,
  exit 2) instead of argparse's usage block followed by the error.
* :func:`apply_defaults` lets the ``pantheon`` front end (``infra/cli.py``) fill options
  such as ``--genesis``, ``--bootstrap`` and ``--dsn`` from the local stack: they become
  optional, take the stack's value, and their help says where it comes from.
* :class:`ConfigError` is what a process (validator, projector, gateway) raises when it
  cannot start with its configuration; its entry point reports it in one line, exit 2.
* :func:`add_chain_options` and :func:`add_process_options` add the options the long-running
  processes share (the chain's genesis, brokers and topic prefix; metrics port, verbosity).
  The validator's parser (``streams/validator.py``) still states them itself (D45).
* :func:`hex_bytes` is the argument type of a hex option (``--device``): a malformed value
  is a usage error that names the option.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from runtime.kafka_config import error_text
from runtime.topics import DEFAULT_PREFIX

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2
"""0: done; 1: the answer is no (discrepancies, an invalid proof); 2: could not run."""

Defaults = Mapping[str, tuple[object, str]]
"""``dest -> (value, where the value comes from)``."""


class ConfigError(ValueError):
    """The process cannot start with this configuration."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, and whose help shows no
    reStructuredText double backquotes (descriptions are taken from docstrings)."""

    def format_help(self) -> str:
        return super().format_help().replace("``", "")

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see: {self.prog} --help)\n")
        sys.exit(EXIT_ERROR)


def apply_defaults(parser: argparse.ArgumentParser, defaults: Defaults | None) -> None:
    """Make the options named in ``defaults`` optional, with those values and a help that
    says where they come from."""
    for action in parser._actions:
        if defaults and action.dest in defaults:
            value, origin = defaults[action.dest]
            action.required = False
            action.default = value
            action.help = f"{action.help or ''} (default: {origin})".strip()


def add_chain_options(parser: argparse.ArgumentParser) -> None:
    """``--genesis``, ``--bootstrap`` and ``--prefix``: the chain a process follows."""
    parser.add_argument("--genesis", required=True, type=Path, help="genesis.avro of the chain")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix")


def add_process_options(
    parser: argparse.ArgumentParser, *, verbose: bool = True, verbose_help: str = "log progress"
) -> None:
    """``--metrics-port`` and (unless ``verbose`` is False: a parent parser that has its own)
    ``-v``/``--verbose`` of a long-running process."""
    parser.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here")
    if verbose:
        parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)


def hex_bytes(text: str) -> bytes:
    """An argument given in hex; argparse reports the ValueError as a usage error."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not hexadecimal") from None


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (libpq's span several, with hints and carets; a
    ``KafkaException`` shows its error's text, not ``KafkaError{code=...}``)."""
    lines = [line.strip() for line in error_text(exc).splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(exc).__name__
