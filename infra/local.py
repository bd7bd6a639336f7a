"""What the ``pantheon`` tools take from the local stack, and their errors in one line (D36).

The tools that reach a stack (``audit``, ``proof``, ``verify``, ``verify-object``,
``projections rebuild``) need a genesis, a Kafka bootstrap address and a PostgreSQL server.
Against the local stack none of them has to be typed: :func:`prepare` fills each option left
out with the stack's value (its help then says so; without a local consortium ``--genesis`` stays
required), gives the database password from the
stack's password file when ``PGPASSWORD`` is not set and the server is the stack's, and refuses
an institution the local genesis does not have, naming the ones it has. When something is
missing (no stack yet, no password file) the error says what to pass instead.

:func:`describe` turns any exception a command lets out into one line saying what to do.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from confluent_kafka import KafkaException
from psycopg.conninfo import conninfo_to_dict

from infra.consortium import Consortium
from infra.errors import StackError
from infra.invocation import pantheon
from infra.keystore import KeystoreError
from infra.postgres_server import Postgres
from infra.rollback import UpFailed
from infra.settings import Settings
from runtime.cli_args import Defaults, one_line

NEEDS: dict[str, tuple[str, ...]] = {
    "audit": ("genesis", "bootstrap", "prefix", "dsn"),
    "proof": ("dsn",),
    "verify": ("genesis",),
    "verify-object": ("genesis",),
    "projections rebuild": ("genesis", "bootstrap", "prefix", "dsn"),
}
"""The options each tool takes from the local stack."""


class LocalError(ValueError):
    """The local stack cannot give what a command needs; the message says what to pass."""


def option(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` in ``argv`` (the last one), or None."""
    found = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found


@dataclass(slots=True)
class Local:
    """The local stack as the tools see it."""

    settings: Settings
    consortium: Consortium = field(init=False)
    postgres: Postgres = field(init=False)

    def __post_init__(self) -> None:
        self.consortium = Consortium(self.settings)
        self.postgres = Postgres(self.settings)

    @property
    def server_dsn(self) -> str:
        return f"host={self.settings.host} port={self.settings.pg_port} user=pantheon"

    def defaults(self, command: str) -> Defaults:
        """The options of ``command`` the local stack fills, with where they come from."""
        s = self.settings
        known: Defaults = {
            "genesis": (self.consortium.genesis_file, f"{self.consortium.genesis_file}"),
            "bootstrap": (s.bootstrap_servers, f"{s.bootstrap_servers}, the local stack's"),
            "prefix": (s.topic_prefix, f"{s.topic_prefix}, the local stack's"),
            "dsn": (
                self.server_dsn,
                f"the local stack's, {self.server_dsn}, password from "
                f"{self.postgres.password_file} unless PGPASSWORD is set",
            ),
        }
        return {dest: known[dest] for dest in NEEDS.get(command, ())}

    def is_local_server(self, dsn: str) -> bool:
        """Whether ``dsn`` names the local stack's PostgreSQL server."""
        try:
            parts = conninfo_to_dict(dsn)
        except psycopg.Error:
            return False
        host = str(parts.get("host", "localhost"))
        port = str(parts.get("port", "5432"))
        return host in ("127.0.0.1", "localhost", self.settings.host) and port == str(
            self.settings.pg_port
        )

    def prepare(
        self,
        command: str,
        argv: Sequence[str],
        parser: Callable[[Defaults], argparse.ArgumentParser],
    ) -> Defaults:
        """Give ``command`` its defaults and check ``argv`` against the local stack: first
        with the command's ``parser`` (usage errors come first, in its one line), then the
        institution; sets ``PGPASSWORD`` from the stack's password file when the server is
        the stack's."""
        defaults = dict(self.defaults(command))
        needs = NEEDS.get(command, ())
        if "genesis" in defaults and not self.consortium.genesis_file.exists():
            del defaults["genesis"]  # no local consortium: --genesis stays required
        dsn = option(argv, "--dsn")
        institution = option(argv, "--institution")
        uses_db = "dsn" in needs and (command != "audit" or institution is not None)
        if not uses_db:
            defaults = {k: v for k, v in defaults.items() if k != "dsn"}
        parser(defaults).parse_args(argv)  # exits on a usage error (or after --help)
        if uses_db and (dsn is None or self.is_local_server(dsn)):
            if institution is not None and self.consortium.genesis_file.exists():
                known = self.consortium.institutions()
                if institution not in known:
                    raise LocalError(
                        f"unknown institution {institution!r}: the local consortium has "
                        f"{', '.join(known)}"
                    )
            if "PGPASSWORD" not in os.environ and "password=" not in (dsn or ""):
                os.environ["PGPASSWORD"] = self._password()
        return defaults

    def _password(self) -> str:
        path = self.postgres.password_file
        try:
            return path.read_text().strip()
        except OSError:
            raise LocalError(
                f"no database password: the local stack's file {path} does not exist (start "
                f"the stack with `{pantheon('up')}`); for another server pass --dsn and set "
                "PGPASSWORD"
            ) from None


def describe(exc: BaseException, settings: Settings) -> str:
    """One line saying what went wrong and what to do, for an error a command let out."""
    status = pantheon("status", settings=settings)
    if isinstance(exc, UpFailed):  # the cause's gist (not a log's tail), and what was undone
        return f"{describe(exc.cause, settings).splitlines()[0]}; {exc.undone}"
    if isinstance(exc, StackError):  # its message may carry the tail of a log, kept whole
        return str(exc)
    if isinstance(exc, psycopg.OperationalError):
        text = one_line(exc)
        if "password" in text:
            return (
                f"the database refused the password ({text}); the local stack's is in "
                f"{Postgres(settings).password_file}, another server's goes in PGPASSWORD"
            )
        if "does not exist" in text and "database" in text:
            return f"{text}: no institution of that name has a projection on this server"
        return f"cannot reach PostgreSQL ({text}); is the stack up? `{status}`"
    if isinstance(exc, psycopg.Error):
        return f"database error: {one_line(exc)}"
    if isinstance(exc, KafkaException):
        return f"cannot reach Kafka ({one_line(exc)}); is the stack up? `{status}`"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc.__cause__, KafkaException):  # an SDK error over a Kafka one (D60)
        where = settings.bootstrap_servers
        return f"{one_line(exc)} (Kafka at {where}; `{status}` says whether it runs)"
    ours = type(exc).__module__.split(".")[0] in (
        "infra",
        "streams",
        "projections",
        "gateway",
        "ledger",
    )
    if ours or isinstance(exc, (ValueError, KeystoreError, OSError, TimeoutError)):
        return one_line(exc)
    return f"unexpected {type(exc).__name__}: {one_line(exc)} (please report it)"
