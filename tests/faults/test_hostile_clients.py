"""Hostile clients against real gateway processes: slow clients, other institutions, bursts.

Two gateway processes (``python -m tests.faults.pinned_gateway``: ``gateway.server`` whose
IAM key is pinned instead of registered on chain, D21; uvicorn on loopback ports), one for
``inst-1`` (A) and one for ``inst-2`` (B), each over its own database filled by the real chain
projection of one :class:`ChainFixture` chain, each with its own IAM master key, running
its IAM projection in process (``--iam-projection``). Every user and token is made through
the processes' own GraphQL API (``bootstrapAdmin``, ``createUser``, ``grantPermission``,
``login``). The slow-client deadlines are shortened (``--head-timeout 2 --body-timeout 3``)
so the test is quick; the mechanism is the one the defaults (10 s, 20 s) use.

Timing is only ever a generous deadline (an honest answer within 5 s, a slow connection
closed within 30 s), never a measured figure.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from psycopg.conninfo import conninfo_to_dict

from gateway.auth.crypto import create_master_key_file, load_master_key
from gateway.iam.bootstrap import ensure_setup_credential
from harness.gateway_support import ChainFixture
from infra.postgres_server import Postgres
from infra.procs import free_port, tail
from projections import read
from projections.projector import ProjectorConfig, prepare
from runtime.kafka_config import admin_config
from runtime.topics import ensure_topics
from tests.faults.pinned_gateway import write_iam_key_file

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
A, B = "inst-1", "inst-2"  # ChainFixture projects inst-1; inst-2 gets a second projection
HEAD_TIMEOUT_S, BODY_TIMEOUT_S = 2, 3
HONEST_DEADLINE_S = 5.0  # every honest request must be answered within this
SLOW_GIVE_UP_S = 30.0  # a slow connection still open then was not closed by the server
PASSWORD = "correct horse battery staple"
SUMMARY = "{ summary { height } }"


# -- a gateway process and its HTTP API ---------------------------------------------------------


def answer_of(raw: bytes) -> tuple[int, dict[str, Any] | None]:
    """Status and JSON body of the first HTTP/1.1 answer in ``raw`` (0 if there is none)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 "):
        return 0, None
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    try:
        return status, json.loads(body[:length])
    except ValueError:
        return status, None


def code_of(body: dict[str, Any] | None) -> str | None:
    if not body or not body.get("errors"):
        return None
    return str(body["errors"][0]["extensions"]["code"])


def reason_of(body: dict[str, Any]) -> str | None:
    reason = body["errors"][0]["extensions"].get("reason")
    return None if reason is None else str(reason)


class GatewayProcess:
    """``python -m gateway.server`` of one institution on a free loopback port."""

    def __init__(
        self,
        institution: str,
        *,
        dbname: str,
        bootstrap: str,
        prefix: str,
        postgres: Postgres,
        workdir: Path,
    ) -> None:
        self.institution = institution
        self.log = workdir / f"gateway-{institution}.log"
        master = workdir / "iam" / institution / "master.key"
        create_master_key_file(master)
        self.master_key_file = master
        iam_key_file = write_iam_key_file(
            workdir / "iam" / institution / "iam-key.json", institution
        )
        settings = postgres.settings
        self.argv_base = [
            sys.executable,
            "-m",
            "tests.faults.pinned_gateway",
            "--institution",
            institution,
            "--dsn",
            f"host={settings.host} port={settings.pg_port} user=pantheon",
            "--dbname",
            dbname,
            "--bootstrap",
            bootstrap,
            "--prefix",
            prefix,
            "--host",
            HOST,
            "--master-key-file",
            str(master),
            "--iam-projection",
            "--iam-key-file",
            str(iam_key_file),
            "--head-timeout",
            str(HEAD_TIMEOUT_S),
            "--body-timeout",
            str(BODY_TIMEOUT_S),
        ]
        self.env = {**os.environ, "PGPASSWORD": postgres.password()}  # not in `ps` output
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = free_port(HOST)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.argv_base, "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.env,
                start_new_session=True,
            )

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        retries = 2  # another program may take the free port before the gateway binds it
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                if retries and "address already in use" in tail(self.log, 5).lower():
                    retries -= 1
                    self.start()
                    continue
                raise AssertionError(f"gateway {self.institution} exited:\n{tail(self.log, 40)}")
            try:
                status, _ = self.request("GET", "/healthz", timeout=2.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"gateway {self.institution} not healthy:\n{tail(self.log, 40)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = HONEST_DEADLINE_S,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    #: How long :meth:`graphql` waits, and the time within which the answer must come
    #: (None: not checked).
    graphql_timeout_s = HONEST_DEADLINE_S
    graphql_deadline_s: float | None = HONEST_DEADLINE_S

    def graphql(
        self, query: str, token: str | None = None, **variables: Any
    ) -> tuple[int, dict[str, Any]]:
        """POST /graphql; the answer must come within ``graphql_deadline_s`` and be typed."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        payload = json.dumps({"query": query, "variables": variables}).encode()
        started = time.monotonic()
        status, raw = self.request("POST", "/graphql", payload, headers, self.graphql_timeout_s)
        elapsed = time.monotonic() - started
        deadline = self.graphql_deadline_s
        assert deadline is None or elapsed < deadline, (
            f"{self.institution} answered after {elapsed:.1f}s"
        )
        text = raw.decode()
        assert "Traceback" not in text and "psycopg" not in text, text
        body = json.loads(text)
        assert isinstance(body, dict)
        return status, body

    def mutate(self, query: str, token: str | None = None, **variables: Any) -> dict[str, Any]:
        """A mutation's single payload; its ``error`` must be empty."""
        status, body = self.graphql(query, token, **variables)
        assert status == 200 and "errors" not in body, body
        (payload,) = body["data"].values()
        assert payload.get("error") is None, payload
        assert isinstance(payload, dict)
        return payload

    def login(self, login: str, password: str = PASSWORD) -> dict[str, Any]:
        status, body = self.graphql(
            "mutation($u: String!, $p: String!) { login(username: $u, password: $p)"
            " { token me { sub institution permissions } error { code message } } }",
            u=login,
            p=password,
        )
        assert status == 200, body
        payload = body["data"]["login"]
        assert isinstance(payload, dict)
        return payload


@dataclass
class Institution:
    """A running gateway and the accounts made through it."""

    gateway: GatewayProcess
    dsn: str
    admin_token: str = ""
    user_login: str = ""
    user_id: str = ""
    user_token: str = ""


@dataclass
class Pair:
    a: Institution
    b: Institution
    height: int


CREATE_USER = (
    "mutation($l: String!, $p: String!) { createUser(login: $l, password: $p, name: $l)"
    " { userId error { code message } } }"
)
GRANT = (
    "mutation($s: String!, $perm: String!) { grantPermission(subject: $s, permission: $perm)"
    " { ok error { code message } } }"
)


def set_up_accounts(inst: Institution, user_login: str) -> None:
    """The institution's first administrator (one-time setup credential), a reader user."""
    gw = inst.gateway
    credential = ensure_setup_credential(
        inst.dsn, gw.institution, load_master_key(gw.master_key_file)
    )
    assert credential is not None
    gw.mutate(
        "mutation($c: String!, $l: String!, $p: String!) { bootstrapAdmin("
        "setupCredential: $c, login: $l, password: $p) { userId error { code message } } }",
        c=credential,
        l="root",
        p=PASSWORD,
    )
    inst.admin_token = gw.login("root")["token"]
    inst.user_id = gw.mutate(CREATE_USER, inst.admin_token, l=user_login, p=PASSWORD)["userId"]
    gw.mutate(GRANT, inst.admin_token, s=inst.user_id, perm="chain:read")
    inst.user_login = user_login
    inst.user_token = gw.login(user_login)["token"]


def _committed_height(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = read.summary(conn)
    return found.height if found is not None else -1


@pytest.fixture(scope="module")
def pair(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("hostile")
    chain = ChainFixture(bootstrap, postgres.dsn("postgres"), workdir / "chain")
    prefix = chain.sim.prefix
    stop = threading.Event()
    gateways: list[GatewayProcess] = []
    runner: Any = None
    thread: threading.Thread | None = None
    try:
        ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix, institutions=[A, B])
        _projection, runner = prepare(
            ProjectorConfig(
                institution=B,
                genesis=chain.sim.genesis_path,
                bootstrap=bootstrap,
                prefix=prefix,
                dsn=postgres.dsn("postgres"),
                dbname=f"gw_{uuid.uuid4().hex[:10]}",
            )
        )
        thread = threading.Thread(
            target=runner.run, args=(stop,), kwargs={"idle_timeout": 0.05}, daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 60
        while _committed_height(runner.dsn) < chain.height:
            assert time.monotonic() < deadline, "the projection of inst-2 did not catch up"
            time.sleep(0.1)
        dbs = {A: (chain.dsn, conninfo_to_dict(chain.dsn)["dbname"])}
        dbs[B] = (runner.dsn, conninfo_to_dict(runner.dsn)["dbname"])
        insts = {}
        for name, (dsn, dbname) in dbs.items():
            gw = GatewayProcess(
                name,
                dbname=str(dbname),
                bootstrap=bootstrap,
                prefix=prefix,
                postgres=postgres,
                workdir=workdir,
            )
            gateways.append(gw)
            gw.start()
            insts[name] = Institution(gw, dsn)
        for gw in gateways:
            gw.wait_healthy()
        with ThreadPoolExecutor(2) as pool:
            done = [
                pool.submit(set_up_accounts, insts[A], "ada"),
                pool.submit(set_up_accounts, insts[B], "bob"),
            ]
            for future in done:
                future.result()
        yield Pair(insts[A], insts[B], chain.height)
    finally:
        for gw in gateways:
            gw.stop()
        for gw in gateways:
            print(f"--- {gw.log} ---\n{tail(gw.log, 30)}")
        stop.set()
        if thread is not None:
            thread.join(30)
        if runner is not None:
            runner.close()
        chain.close()


def assert_clean_log(gw: GatewayProcess) -> None:
    """No hostile request made the gateway log an application error."""
    text = gw.log.read_text(errors="replace")
    assert "Exception in ASGI application" not in text, tail(gw.log, 60)
    assert "Traceback" not in text, tail(gw.log, 60)


def assert_answers_honestly(gw: GatewayProcess, token: str, height: int, i: int = 0) -> None:
    """One honest query (a different page size each time, so it is really executed)."""
    first = 1 + i % 5
    status, body = gw.graphql(
        "query($n: Int) { summary { height } blocks(first: $n) { edges { node { height } } } }",
        token,
        n=first,
    )
    assert status == 200 and "errors" not in body, body
    assert body["data"]["summary"]["height"] >= height
    assert len(body["data"]["blocks"]["edges"]) == min(first, height)


# -- slow clients -----------------------------------------------------------------------------


@dataclass
class SlowClient:
    """A raw socket that sends ``head`` at once, then ``drip`` a byte at a time, slowly.

    ``drip`` repeats for ever; with ``stop_at_answer`` the client stops sending once the
    server answers (and then only waits for the close), else it trickles on regardless."""

    name: str
    head: bytes
    drip: bytes
    stop_at_answer: bool = True
    interval_s: float = 0.2
    received: bytes = b""
    closed_by_server: bool = False
    error: str = ""
    thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, port: int) -> None:
        self.thread = threading.Thread(target=self._run, args=(port,), daemon=True)
        self.thread.start()

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(SLOW_GIVE_UP_S + 10)

    def _run(self, port: int) -> None:
        try:
            with socket.create_connection((HOST, port), timeout=5) as sock:
                sock.setblocking(False)
                self._drive(sock)
        except OSError as exc:
            self.error = repr(exc)

    def _recv(self, sock: socket.socket) -> bool:
        """Read what is there; True once the server closed the connection."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True
        self.received += data
        return data == b""

    def _drive(self, sock: socket.socket) -> None:
        if self.head:
            sock.sendall(self.head)
        give_up = time.monotonic() + SLOW_GIVE_UP_S
        i = 0
        while time.monotonic() < give_up:
            readable, _, _ = select.select([sock], [], [], self.interval_s)
            if readable and self._recv(sock):
                self.closed_by_server = True
                return
            if self.drip and not (self.stop_at_answer and self.received):
                try:
                    sock.send(self.drip[i % len(self.drip) : i % len(self.drip) + 1])
                    i += 1
                except (BrokenPipeError, ConnectionResetError):
                    self._recv(sock)  # the answer may still be buffered
                    self.closed_by_server = True
                    return
                except BlockingIOError:
                    pass


def test_slow_clients_are_cut_off_while_honest_clients_are_answered(pair: Pair) -> None:
    gw = pair.a.gateway
    request_line = b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    padding = b"X-Padding: " + b"a" * 40 + b"\r\n"
    # the head a byte at a time (slowloris), never finished
    clients = [SlowClient(f"head-{i}", b"", request_line + padding * 1000) for i in range(6)]
    # connections that never send anything
    clients += [SlowClient(f"idle-{i}", b"", b"") for i in range(3)]
    # a whole head declaring an acceptable body, then the body trickled
    clients += [
        SlowClient(
            f"body-{i}", request_line + b"Content-Length: 30000\r\n\r\n", b'{"query": "' + b" " * 64
        )
        for i in range(2)
    ]
    # a large declared body (refused at once), trickled on after the answer
    clients.append(
        SlowClient(
            "huge-body",
            request_line + b"Content-Length: 1000000000\r\n\r\n",
            b"x",
            stop_at_answer=False,
        )
    )
    # an answered request whose unread body goes on trickling
    clients.append(
        SlowClient(
            "after-answer",
            b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100000\r\n\r\n",
            b"x",
            stop_at_answer=False,
        )
    )
    for client in clients:
        client.start(gw.port)
    time.sleep(0.5)  # every slow connection is open and dripping

    # honest clients are answered while the slow ones hang
    assert_answers_honestly(gw, pair.a.user_token, pair.height)
    hanging = [c.name for c in clients if not c.closed_by_server]
    assert hanging, "every slow client was closed before the first honest answer"
    for i in range(8):
        assert_answers_honestly(gw, pair.a.user_token, pair.height, i)

    for client in clients:
        client.join()
    by_kind: dict[str, list[SlowClient]] = {}
    for client in clients:
        assert not client.error, (client.name, client.error)
        assert client.closed_by_server, f"{client.name} still open after {SLOW_GIVE_UP_S}s"
        by_kind.setdefault(client.name.split("-")[0], []).append(client)
    for client in by_kind["head"]:
        status, body = answer_of(client.received)
        assert (status, code_of(body)) == (408, "REQUEST_TIMEOUT"), client
    for client in by_kind["idle"]:
        assert client.received == b"", client  # closed silently: nothing was asked
    for client in by_kind["body"]:
        status, body = answer_of(client.received)
        assert (status, code_of(body)) == (408, "REQUEST_TIMEOUT"), client
        assert body is not None and body["errors"][0]["extensions"]["limit"] == BODY_TIMEOUT_S
    status, body = answer_of(by_kind["huge"][0].received)
    assert (status, code_of(body)) == (413, "BODY_TOO_LARGE")
    status, body = answer_of(by_kind["after"][0].received)
    assert status == 200 and body is not None and body["status"] == "ok"

    assert gw.alive()
    assert_answers_honestly(gw, pair.a.user_token, pair.height)
    metrics = gw.request("GET", "/metrics")[1].decode()
    assert 'code="REQUEST_TIMEOUT"' in metrics  # the body timeouts are counted as limits
    assert_clean_log(gw)


# -- other institutions -----------------------------------------------------------------------


def test_a_token_of_another_institution_is_refused(pair: Pair) -> None:
    a, b = pair.a, pair.b
    # each token works at its own gateway
    for inst in (a, b):
        status, body = inst.gateway.graphql("{ me { sub institution } }", inst.user_token)
        assert status == 200, body
        assert body["data"]["me"] == {"sub": inst.user_id, "institution": inst.gateway.institution}
    # and is refused by the other one, naming the institution it belongs to
    for holder, other in ((a, b), (b, a)):
        for token in (holder.user_token, holder.admin_token):
            status, body = other.gateway.graphql(SUMMARY, token)
            assert (status, code_of(body), reason_of(body)) == (
                401,
                "UNAUTHENTICATED",
                "wrong_institution",
            ), body
            assert repr(holder.gateway.institution) in body["errors"][0]["message"]
    # an administrator of A cannot administer B's users through B's gateway
    status, body = b.gateway.graphql(CREATE_USER, a.admin_token, l="mallory", p=PASSWORD)
    assert (status, reason_of(body)) == (401, "wrong_institution"), body
    status, body = b.gateway.graphql(GRANT, a.admin_token, s=b.user_id, perm="admin")
    assert (status, reason_of(body)) == (401, "wrong_institution"), body
    assert b.gateway.login("mallory")["error"]["code"] == "LOGIN_FAILED"
    assert b.gateway.login(b.user_login)["me"]["permissions"] == ["chain:read"]
    # nor read B's data objects with a token of A
    status, raw = b.gateway.request(
        "GET", "/objects/some-object", headers={"Authorization": f"Bearer {a.user_token}"}
    )
    body = json.loads(raw)
    assert (status, code_of(body), reason_of(body)) == (401, "UNAUTHENTICATED", "wrong_institution")


def test_private_data_of_another_institution_is_not_reachable(pair: Pair) -> None:
    a, b = pair.a, pair.b
    gw = a.gateway
    # B's credentials do not log in at A, and the answer is the one for any unknown login
    # (no hint that the account exists elsewhere)
    foreign = gw.login(b.user_login)
    unknown = gw.login(f"nobody-{uuid.uuid4().hex[:6]}")
    assert foreign["token"] is None and foreign["error"]["code"] == "LOGIN_FAILED"
    assert foreign["error"] == unknown["error"]
    # A's administrator, through A's gateway, cannot reach B's users: they do not exist here
    mutations = {
        "disableUser": "mutation($u: String!) { disableUser(userId: $u)"
        " { userId error { code message } } }",
        "revokeAllTokens": "mutation($u: String!) { revokeAllTokens(userId: $u)"
        " { ok error { code message } } }",
        "grantPermission": "mutation($u: String!) { grantPermission(subject: $u,"
        ' permission: "admin") { ok error { code message } } }',
    }
    for name, mutation in mutations.items():
        status, body = gw.graphql(mutation, a.admin_token, u=b.user_id)
        assert status == 200, body
        assert body["data"][name]["error"]["code"] == "UNKNOWN_USER", (name, body)
    # B's user is untouched: logs in at B with the same permissions, the token works there
    again = b.gateway.login(b.user_login)
    assert again["error"] is None and again["me"]["permissions"] == ["chain:read"]
    status, body = b.gateway.graphql("{ me { sub } }", again["token"])
    assert (status, body["data"]["me"]["sub"]) == (200, b.user_id)
    # the API has no query over users or their personal fields; `me` is the token's own claims
    status, body = gw.graphql("{ __schema { queryType { fields { name } } } }")
    fields = {f["name"] for f in body["data"]["__schema"]["queryType"]["fields"]}
    assert not fields & {"user", "users", "profile", "profiles", "members", "groups"}, fields
    status, body = gw.graphql("{ me { sub institution } }", a.user_token)
    assert body["data"]["me"] == {"sub": a.user_id, "institution": A}


# -- a burst of hostile requests --------------------------------------------------------------


Send = Callable[[], tuple[int, bytes]]


def hostile_requests(pair: Pair) -> list[tuple[str, Send, int, set[str]]]:
    """(name, send, expected status, expected codes) of each kind of hostile request."""
    gw, token = pair.a.gateway, pair.a.user_token
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{('A' if sig[0] != 'A' else 'B') + sig[1:]}"

    def post(query: str, auth: str | None = token, pad: int = 0) -> Send:
        body = json.dumps({"query": query + " " * pad}).encode()
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = f"Bearer {auth}"
        return lambda: gw.request("POST", "/graphql", body, headers)

    frags = "".join(
        f"fragment F{i} on Block {{ ...F{i + 1} ...F{i + 1} height }} " for i in range(30)
    )
    fragment_bomb = (
        "{ blocks(first: 1) { edges { node { ...F0 } } } } " + frags + "fragment F30 on Block "
        "{ hash }"
    )
    return [
        ("large body", post(SUMMARY, pad=64 * 1024), 413, {"BODY_TOO_LARGE"}),
        (
            "depth bomb",
            post("{ summary " + "{ height " * 3000 + "}" * 3001),
            400,
            {"QUERY_TOO_DEEP", "GRAPHQL_PARSE_FAILED"},
        ),
        ("fragment bomb", post(fragment_bomb), 400, {"QUERY_TOO_COSTLY"}),
        (
            "alias bomb",
            post("{ " + " ".join(f"a{i}: summary {{ height }}" for i in range(200)) + " }"),
            400,
            {"TOO_MANY_ALIASES"},
        ),
        ("garbage token", post(SUMMARY, "not.a.jwt"), 401, {"UNAUTHENTICATED"}),
        ("forged signature", post(SUMMARY, forged), 401, {"UNAUTHENTICATED"}),
        ("other institution", post(SUMMARY, pair.b.user_token), 401, {"UNAUTHENTICATED"}),
        (
            "not json",
            lambda: gw.request("POST", "/graphql", b"{not json", {"Authorization": "Bearer x"}),
            400,
            {"BAD_USER_INPUT"},
        ),
    ]


def test_honest_client_is_answered_during_a_burst_of_hostile_requests(pair: Pair) -> None:
    gw = pair.a.gateway
    kinds = hostile_requests(pair)
    stop = threading.Event()
    sent = [0]
    wrong: list[str] = []
    lock = threading.Lock()

    def attacker(offset: int) -> None:
        for n in range(400):  # bounded in count, and stopped when the honest client is done
            if stop.is_set():
                return
            name, send, status, codes = kinds[(n + offset) % len(kinds)]
            try:
                got, raw = send()
                body = json.loads(raw)
                ok = got == status and code_of(body) in codes and b"Traceback" not in raw
                problem = "" if ok else f"{name}: {got} {raw[:300]!r}"
            except (OSError, ValueError) as exc:
                problem = f"{name}: {exc!r}"
            with lock:
                sent[0] += 1
                if problem:
                    wrong.append(problem)

    attackers = [threading.Thread(target=attacker, args=(i * 3,), daemon=True) for i in range(3)]
    for thread in attackers:
        thread.start()
    try:
        time.sleep(0.3)
        for i in range(12):
            assert_answers_honestly(gw, pair.a.user_token, pair.height, i)
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(30)
    assert not wrong, wrong[:5]
    assert sent[0] >= len(kinds), f"only {sent[0]} hostile requests were sent"
    assert gw.alive()
    metrics = gw.request("GET", "/metrics")[1].decode()
    for needle in (
        'code="BODY_TOO_LARGE"',
        'code="QUERY_TOO_COSTLY"',
        'reason="wrong_institution"',
        'reason="bad_signature"',
    ):
        assert needle in metrics, needle
    assert_clean_log(gw)
