"""A project-local PostgreSQL cluster: its own data directory, port and password.

Never touches a system cluster: ``initdb`` creates ``<state>/postgres/data`` and the
server listens on 127.0.0.1 only, with its socket in ``<state>/postgres/run``. The
superuser ``pantheon`` authenticates with SCRAM and a password generated once into
``<state>/postgres/password`` (mode 0600).

PostgreSQL refuses to run as root. When we are root, the server runs as the system user
``pantheon-pg`` (created if missing) which owns the cluster's directories; everything
else about the stack stays the same.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra import procs
from infra.errors import PortTakenError, PrerequisiteError, StackError
from infra.settings import Settings

SERVICE_USER = "pantheon-pg"
DB_USER = "pantheon"
DB_NAME = "pantheon"


def find_bindir() -> Path:
    """The directory of the newest installed PostgreSQL server binaries."""
    override = os.environ.get("PANTHEON_PG_BINDIR")
    if override:
        return Path(override)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and (Path(pg_ctl).parent / "postgres").exists():
        return Path(pg_ctl).parent
    raise PrerequisiteError(
        "PostgreSQL server binaries not found; install them with "
        "`apt-get install -y postgresql` (or run ./dev up, which does)"
    )


def without_password(dsn: str) -> tuple[str, dict[str, str]]:
    """``(dsn without its password, {"PGPASSWORD": password} or {})``: libpq reads the
    password from the environment, so a child's command line never carries it."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    return make_conninfo("", **params), ({"PGPASSWORD": str(password)} if password else {})


class Postgres:
    """Create, start, stop and inspect the local PostgreSQL cluster."""

    def __init__(self, settings: Settings, *, server_options: Sequence[str] = ()) -> None:
        """``server_options``: extra ``name=value`` settings for a server this starts."""
        self.settings = settings
        self.server_options = tuple(server_options)
        self.home = settings.state_dir / "postgres"
        self.data_dir = self.home / "data"
        self.run_dir = self.home / "run"
        self.password_file = self.home / "password"
        self.log_file = self.home / "server.log"

    # -- running as the right user -------------------------------------------------------
    @staticmethod
    def _as_root() -> bool:
        return os.geteuid() == 0

    def _service_account(self) -> pwd.struct_passwd | None:
        if not self._as_root():
            return None
        try:
            return pwd.getpwnam(SERVICE_USER)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            subprocess.run(
                [
                    useradd,
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    SERVICE_USER,
                ],
                check=True,
                capture_output=True,
            )
            return pwd.getpwnam(SERVICE_USER)

    def _check_traversable(self, account: pwd.struct_passwd) -> None:
        for parent in self.home.resolve().parents:
            mode = parent.stat().st_mode
            if parent.stat().st_uid != account.pw_uid and not mode & 0o001:
                raise StackError(
                    f"PostgreSQL runs as {SERVICE_USER} when started by root, but it cannot "
                    f"enter {parent}; set PANTHEON_STATE_DIR to a directory under a path "
                    "others may traverse (e.g. /var/tmp/pantheon)"
                )

    def _run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        account = self._service_account()
        if account is not None:
            kwargs["user"] = account.pw_uid
            kwargs["group"] = account.pw_gid
            kwargs["extra_groups"] = []
        return subprocess.run(
            list(argv), capture_output=True, text=True, check=False, timeout=120, **kwargs
        )

    # -- lifecycle -----------------------------------------------------------------------
    def password(self) -> str:
        """The superuser's password, generated on first use."""
        if not self.password_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24) + "\n")
        return self.password_file.read_text().strip()

    def dsn(self, dbname: str = DB_NAME) -> str:
        """Connection string for ``dbname`` as the superuser."""
        return (
            f"host={self.settings.host} port={self.settings.pg_port} user={DB_USER} "
            f"password={self.password()} dbname={dbname}"
        )

    def child_dsn(self, dbname: str = DB_NAME) -> tuple[str, dict[str, str]]:
        """``(connection string without the password, environment with PGPASSWORD)`` for a
        child process: its command line is readable by every local user, its environment
        only by its own user."""
        return without_password(self.dsn(dbname))

    def _initdb(self, bindir: Path) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        password = self.password()
        account = self._service_account()
        pwfile = self.home / "initdb.pw"
        pwfile.unlink(missing_ok=True)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:  # read by initdb only, removed right after
            fh.write(password + "\n")
        for path in (self.data_dir, self.run_dir):
            path.mkdir(mode=0o700, exist_ok=True)
        if account is not None:
            self._check_traversable(account)
            self.log_file.touch(exist_ok=True)
            for path in (self.home, self.data_dir, self.run_dir, pwfile, self.log_file):
                os.chown(path, account.pw_uid, account.pw_gid)
        try:
            result = self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    DB_USER,
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise StackError(f"initdb failed:\n{result.stdout}{result.stderr}")

    def pid(self) -> int | None:
        """The postmaster's pid if it runs."""
        return procs.read_pid(self.data_dir / "postmaster.pid")

    def start(self) -> None:
        """Create the cluster if needed, start it, create the ``pantheon`` database."""
        if self.pid() is None:
            if procs.port_open(self.settings.host, self.settings.pg_port):
                raise PortTakenError("postgres", self.settings.pg_port, "PANTHEON_PG_PORT")
            bindir = find_bindir()
            self._initdb(bindir)
            options = (
                f"-p {self.settings.pg_port} -c listen_addresses={self.settings.host} "
                f"-c unix_socket_directories={self.run_dir} -c max_connections=200"
            ) + "".join(f" -c {option}" for option in self.server_options)
            result = self._run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            )
            if result.returncode != 0:
                raise StackError(
                    f"PostgreSQL did not start; see {self.log_file}\n"
                    f"{result.stdout}{result.stderr}\n" + procs.tail(self.log_file)
                )
        self.ensure_database(DB_NAME)

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` unless it exists."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions; committed data is durable)."""
        if self.pid() is None:
            return
        result = self._run(
            [
                str(find_bindir() / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )
        pid = self.pid()
        if result.returncode != 0 and pid is not None:
            procs.stop_pid(pid, timeout=10)

    def healthy(self) -> bool:
        """True when the server accepts a query."""
        if self.pid() is None:
            return False
        with contextlib.suppress(psycopg.Error):
            with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        return False
