"""The data access proxy end to end: store, anchor, read under a policy, verify offline, audit.

Real validator processes (:class:`harness.consortium.Consortium`, three institutions) finalize the
tx log on the real broker; the real chain projection of ``inst-1`` fills PostgreSQL; the
gateway is the real ASGI app whose proxy streams objects into the institution's database and
signs ``AnchorData`` with ``inst-1``'s governance key from the consortium's keystore file. The
real IAM service produces the objects' events to ``inst-1``'s IAM topic, projected by the real
IAM and objects projections (D23); the trust-boundary tests edit PostgreSQL as an attacker
with write access would.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
import uvicorn
from confluent_kafka.admin import AdminClient
from psycopg_pool import ConnectionPool
from starlette.testclient import TestClient

from gateway.app import GatewayConfig, create_app
from gateway.auth.crypto import MasterKey
from gateway.auth.passwords import FAST
from gateway.context import Services
from gateway.governance import Governance
from gateway.iam.bootstrap import ensure_setup_credential
from gateway.iam.service import IamService
from gateway.objects import DataProxy, ProxyConfig
from harness.consortium import Consortium
from harness.gateway_support import Tokens
from infra.postgres_server import Postgres
from infra.procs import free_port
from ledger.genesis import Genesis
from ledger.hashing import sha256
from ledger.proofs import ObjectProofError, ProofLink
from projections import read
from projections.iam import ChainSigners, IamProjection
from projections.objects import ObjectsProjection
from projections.objects import rebuild as objects_rebuild
from projections.projector import ProjectorConfig, prepare
from projections.rebuild import main as rebuild_main
from projections.runner import ProjectionRunner
from readers import audit
from readers.object_verify import object_verify_main, verify_object
from runtime.kafka_config import admin_config
from runtime.topics import ensure_topics
from tests.iam_keys import register_on_chain

pytestmark = pytest.mark.integration

INST = "inst-1"
LIMIT = 64 * 1024
CHUNK = 4096
MASTER = MasterKey(bytes(range(100, 132)))


class Background:
    """A projection runner in a thread (stopped for a rebuild, then started again)."""

    def __init__(self, make: Callable[[], ProjectionRunner]) -> None:
        self.make = make
        self.start()

    def start(self) -> None:
        self.event = threading.Event()
        self.thread = _run(self.make(), self.event)

    def stop(self) -> None:
        self.event.set()
        self.thread.join(30)


@dataclass
class Net:
    consortium: Consortium
    pool: ConnectionPool[Any]
    server_dsn: str
    dbname: str
    tokens: Tokens
    governance: Governance
    proxy: DataProxy
    iam: IamService
    objects: Background
    iam_runner: Background
    chain: Background
    config: ProjectorConfig

    @property
    def genesis(self) -> Genesis:
        return Genesis.decode(self.consortium.genesis_path.read_bytes())

    def app(self) -> Any:
        services = Services(institution=INST, pool=self.pool)
        return create_app(
            GatewayConfig(institution=INST, cache_responses=False, poll_interval_s=0.05),
            services,
            self.tokens.verifier,
            governance=self.governance,
            objects=self.proxy,
        )

    def token(self, perms: tuple[str, ...], sub: str, groups: tuple[str, ...] = ()) -> str:
        return self.tokens.token(perms, sub=sub, groups=list(groups))


@dataclass
class ObjectServices:
    """What the data proxy needs beside the chain projection, as ``pantheon gateway`` and the
    projector run it: the governance key that signs anchors, the IAM service (its key
    registered on chain) that seals objects and records their events, the IAM and objects
    projections (D21, D23) in background runners, and the proxy."""

    governance: Governance
    iam: IamService
    iam_runner: Background
    objects: Background
    proxy: DataProxy

    @classmethod
    def start(
        cls,
        consortium: Consortium,
        pool: ConnectionPool[Any],
        dsn: str,
        workdir: Path,
        config: ProxyConfig,
    ) -> ObjectServices:
        bootstrap, prefix = consortium.bootstrap, consortium.prefix
        ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix, institutions=[INST])
        governance = Governance.from_keystore(
            consortium.keystore_path(INST),
            institution=INST,
            bootstrap=bootstrap,
            prefix=prefix,
            receipt_timeout_s=20.0,
            genesis=consortium.genesis,
            validator_sets=read.validator_set_source(dsn),
        )
        iam = IamService(
            bootstrap=bootstrap,
            dsn=dsn,
            institution=INST,
            signer=register_on_chain(consortium, dsn, INST),
            master_key=MASTER,
            kek_dir=workdir / "kek",
            prefix=prefix,
            password_params=FAST,
        )
        runners = []
        for projection in (
            IamProjection(INST, prefix=prefix, signers=ChainSigners()),
            ObjectsProjection(INST, prefix=prefix),
        ):
            with psycopg.connect(dsn, autocommit=True) as conn:
                projection.migrate(conn)
            runners.append(
                Background(functools.partial(ProjectionRunner, dsn, bootstrap, projection))
            )
        proxy = DataProxy.create(INST, pool, governance, config, kek=iam.kek_store, events=iam)
        return cls(governance, iam, runners[0], runners[1], proxy)

    def close(self) -> None:
        self.objects.stop()
        self.iam_runner.stop()
        self.governance.close()
        self.iam.close()


@pytest.fixture(scope="module")
def net(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Net]:
    workdir = tmp_path_factory.mktemp("objects")
    consortium = Consortium(bootstrap, workdir / "c", 3, block_interval_ms=100)
    chain: Background | None = None
    try:
        consortium.start_all()
        dbname = f"obj_{uuid.uuid4().hex[:10]}"
        cfg = ProjectorConfig(
            institution=INST,
            genesis=consortium.genesis_path,
            bootstrap=bootstrap,
            prefix=consortium.prefix,
            dsn=postgres.dsn("postgres"),
            dbname=dbname,
        )
        _projection, runner = prepare(cfg)
        chain = Background(lambda: prepare(cfg)[1])
        pool: ConnectionPool[Any] = ConnectionPool(
            runner.dsn, min_size=1, max_size=8, open=True, kwargs={"autocommit": True}
        )
        services = ObjectServices.start(
            consortium,
            pool,
            runner.dsn,
            workdir,
            ProxyConfig(max_object_bytes=LIMIT, chunk_bytes=CHUNK),
        )
        consortium.wait_ready(consortium.institutions)
        yield Net(
            consortium,
            pool,
            postgres.dsn("postgres"),
            dbname,
            Tokens(),
            services.governance,
            services.proxy,
            services.iam,
            services.objects,
            services.iam_runner,
            chain,
            cfg,
        )
        services.close()
        pool.close()
    finally:
        if chain is not None:
            chain.stop()
        consortium.close()


def _run(runner: ProjectionRunner, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        try:
            runner.run(stop, idle_timeout=0.05)
        finally:
            runner.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def put(client: TestClient, token: str, data_id: str, data: Any, **kw: Any) -> Any:
    headers = {**auth(token), **kw.pop("headers", {})}
    return client.put(f"/objects/{data_id}", content=data, headers=headers, **kw)


DATA = bytes(range(256)) * 80  # 20 KiB: five 4 KiB chunks


def test_store_read_policy_and_offline_verify(net: Net, tmp_path: Path) -> None:
    writer = net.token(("data:write", "data:read"), "alice")
    data_id = f"report-{uuid.uuid4().hex[:8]}"
    with TestClient(net.app()) as gw:
        assert put(gw, "", data_id, DATA, headers={"Authorization": ""}).status_code == 401
        forged = put(gw, "not-a-jwt", data_id, DATA)
        assert forged.status_code == 401, forged.text
        assert forged.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        reader_only = net.token(("data:read",), "alice")
        refused = put(gw, reader_only, data_id, DATA)
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["extensions"]["required"] == "data:write"

        r = put(
            gw,
            writer,
            data_id,
            DATA,
            params={"metadata": "Q3 report, draft", "user": "bob"},
            headers={
                "Content-Type": "application/pdf",
                "X-Pantheon-Policy": '{"groups": ["audit"]}',
            },
        )
        assert r.status_code == 201, r.text
        receipt = r.json()
        assert receipt["data_id"] == data_id and receipt["sha256"] == sha256(DATA).hex()
        assert receipt["height"] >= 1 and len(receipt["tx_id"]) == 64
        with psycopg.connect(_dsn(net)) as conn:
            chunks = conn.execute(
                "SELECT count(*) FROM objects.chunks WHERE data_id = %s", (data_id,)
            ).fetchone()
        assert chunks is not None and chunks[0] == 5

        # The same id again: taken.
        assert put(gw, writer, data_id, b"other").status_code == 409

        # Readers: the owner, a granted user, a group member, an admin; not others.
        cases = [
            (net.token(("data:read",), "alice"), 200),
            (net.token(("data:read",), "bob"), 200),
            (net.token(("data:read",), "dave", ("audit",)), 200),
            (net.token(("data:read", "admin"), "root"), 200),
            (net.token(("data:read",), "carol", ("sales",)), 403),
            (net.token(("chain:read",), "bob"), 403),  # granted, but no data:read
        ]
        for token, status in cases:
            got = gw.get(f"/objects/{data_id}", headers=auth(token))
            assert got.status_code == status, (token, got.text)
        got = gw.get(f"/objects/{data_id}", headers=auth(writer))
        assert got.content == DATA and got.headers["content-type"] == "application/pdf"
        assert got.headers["x-pantheon-sha256"] == sha256(DATA).hex()
        assert got.headers["x-pantheon-anchor-tx"] == receipt["tx_id"]
        assert int(got.headers["x-pantheon-anchor-height"]) == receipt["height"]
        assert got.headers["x-pantheon-certificate"] and got.headers["x-pantheon-block-hash"]
        assert "Q3%20report" in got.headers["x-pantheon-metadata"]
        assert gw.get("/objects/nope", headers=auth(writer)).status_code == 404
        carol = net.token(("data:read",), "carol")
        assert gw.get(f"/objects/{data_id}/proof", headers=auth(carol)).status_code == 403

        proof_response = gw.get(f"/objects/{data_id}/proof", headers=auth(writer))
        assert proof_response.status_code == 200
        proof = proof_response.json()

    assert proof["anchor"]["tx_id"] == receipt["tx_id"]
    assert proof["block"]["hash"] == got.headers["x-pantheon-block-hash"]
    verify_object(got.content, proof, net.genesis)

    def link(data: bytes, doc: dict[str, Any]) -> ProofLink:
        with pytest.raises(ObjectProofError) as err:
            verify_object(data, doc, net.genesis)
        return err.value.link

    def edited(section: str | None, key: str, value: Any) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(json.dumps(proof))
        (doc if section is None else doc[section])[key] = value
        return doc

    changed = bytearray(DATA)
    changed[1000] ^= 1
    assert link(bytes(changed), proof) is ProofLink.OBJECT_HASH
    assert link(DATA, edited(None, "sha256", "ab" * 32)) is ProofLink.OBJECT_HASH
    env = bytearray.fromhex(proof["transaction"]["envelope"])
    env[env.find(sha256(DATA))] ^= 1
    assert link(DATA, edited("transaction", "envelope", env.hex())) is ProofLink.ANCHOR_TX
    assert link(DATA, edited("transaction", "offset", 10**9)) is ProofLink.TX_INCLUSION
    count = proof["transaction"]["count"]
    assert link(DATA, edited("transaction", "count", count + 1)) is ProofLink.TX_INCLUSION
    stamp = proof["block"]["timestamp_ms"] + 1
    assert link(DATA, edited("block", "timestamp_ms", stamp)) is ProofLink.HEADER_HASH
    assert link(DATA, edited("block", "certificate", "00")) is ProofLink.CERTIFICATE

    genesis_file = net.consortium.genesis_path
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    (tmp_path / "object").write_bytes(DATA)
    (tmp_path / "changed").write_bytes(bytes(changed))
    argv = ["--genesis", str(genesis_file), "--proof", str(tmp_path / "proof.json")]
    assert object_verify_main([*argv, str(tmp_path / "object")]) == 0
    assert object_verify_main([*argv, str(tmp_path / "changed")]) == 1


def _dsn(net: Net) -> str:
    return str(net.pool.conninfo)


def test_size_limit(net: Net) -> None:
    writer = net.token(("data:write", "data:read"), "alice")
    with TestClient(net.app()) as gw:
        declared = put(gw, writer, "too-big", b"x" * (LIMIT + 1))
        assert declared.status_code == 413, declared.text
        assert declared.json()["errors"][0]["extensions"]["code"] == "BODY_TOO_LARGE"

        def streamed() -> Iterator[bytes]:  # chunked: no Content-Length to refuse early
            for _ in range(LIMIT // 8192 + 1):
                yield b"y" * 8192

        chunked = put(gw, writer, "too-big-2", streamed())
        assert chunked.status_code == 413, chunked.text
        for data_id in ("too-big", "too-big-2"):
            assert gw.get(f"/objects/{data_id}", headers=auth(writer)).status_code == 404
        exact = put(gw, writer, f"fits-{uuid.uuid4().hex[:6]}", b"z" * LIMIT)
        assert exact.status_code == 201, exact.text


def test_audit_checks_the_object_store(net: Net, tmp_path: Path) -> None:
    writer = net.token(("data:write",), "alice")
    data_id = f"audited-{uuid.uuid4().hex[:8]}"
    with TestClient(net.app()) as gw:
        assert put(gw, writer, data_id, b"audited bytes" * 1000).status_code == 201

    def run() -> tuple[int, Any]:
        out = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
        code = audit.main(
            [
                "--genesis",
                str(net.consortium.genesis_path),
                "--bootstrap",
                net.consortium.bootstrap,
                "--prefix",
                net.consortium.prefix,
                "--json",
                str(out),
                "--no-progress",
                "--institution",
                INST,
                "--dsn",
                net.server_dsn,
                "--dbname",
                net.dbname,
            ]
        )
        return code, json.loads(out.read_text())

    code, report = run()
    assert code == 0, report["findings"]
    kinds = {f["kind"] for f in report["findings"]}
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert "anchors.not_checked" not in kinds
    assert not [e for e in errors if e["kind"].startswith("anchor.")], errors
    with psycopg.connect(_dsn(net), autocommit=True) as conn:
        conn.execute(
            "UPDATE objects.chunks SET chunk = set_byte(chunk, 5, get_byte(chunk, 5) # 1) "
            "WHERE data_id = %s AND seq = 1",
            (data_id,),
        )
    code, report = run()
    assert code == 1
    mismatches = [f for f in report["findings"] if f["kind"] == "anchor.object_mismatch"]
    assert len(mismatches) == 1 and repr(data_id) in mismatches[0]["message"]


def test_id_anchored_by_another_institution_is_taken(net: Net) -> None:
    data_id = f"foreign-{uuid.uuid4().hex[:8]}"
    gov2 = net.consortium.gov_key("inst-2")
    net.consortium.send([net.consortium.anchor(gov2, data_id)], key=gov2.key_id)

    def anchored() -> bool:
        with net.pool.connection() as conn:
            return read.anchor(conn, data_id) is not None

    deadline = time.monotonic() + 20
    while not anchored():
        assert time.monotonic() < deadline, "the direct anchor was not projected"
        time.sleep(0.1)
    writer = net.token(("data:write", "data:read"), "alice")
    with TestClient(net.app()) as gw:
        taken = put(gw, writer, data_id, data_id.encode())
        assert taken.status_code == 409, taken.text
        assert taken.json()["errors"][0]["extensions"]["code"] == "ALREADY_EXISTS"
        assert gw.get(f"/objects/{data_id}", headers=auth(writer)).status_code == 404


# -- the trust boundary (issue 17, D23): PostgreSQL edited by an attacker ------------------------
def _sql(net: Net, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(_dsn(net), autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


def _metric(gw: TestClient, what: str) -> float:
    for line in gw.get("/metrics").text.splitlines():
        if line.startswith("pantheon_gateway_object_integrity_failures_total{") and (
            f'what="{what}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextmanager
def _served(app: Any) -> Iterator[str]:
    """``app`` behind a real uvicorn server on loopback; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _code(response: Any) -> str:
    return str(response.json()["errors"][0]["extensions"]["code"])


def _audit(net: Net, tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
    audit.main(
        [
            "--genesis",
            str(net.consortium.genesis_path),
            "--bootstrap",
            net.consortium.bootstrap,
            "--prefix",
            net.consortium.prefix,
            "--json",
            str(out),
            "--no-progress",
            "--institution",
            INST,
            "--dsn",
            net.server_dsn,
            "--dbname",
            net.dbname,
        ]
    )
    findings: list[dict[str, Any]] = json.loads(out.read_text())["findings"]
    return findings


def _about(findings: list[dict[str, Any]], data_id: str) -> list[dict[str, Any]]:
    return [f for f in findings if data_id in json.dumps(f)]


def _flip(net: Net, data_id: str, seq: int, *, digest: bool = False) -> None:
    """Flip one byte of a stored chunk (and, with ``digest``, recompute its digest column as
    an attacker who knows the scheme would); calling it twice restores the chunk."""
    _sql(
        net,
        "UPDATE objects.chunks SET chunk = set_byte(chunk, 20, get_byte(chunk, 20) # 1) "
        "WHERE data_id = %s AND seq = %s",
        (data_id, seq),
    )
    if digest:
        _sql(
            net,
            "UPDATE objects.chunks SET digest = sha256(chunk) WHERE data_id = %s AND seq = %s",
            (data_id, seq),
        )


def test_chunks_and_metadata_are_sealed_at_rest(net: Net) -> None:
    writer = net.token(("data:write", "data:read"), "alice")
    data_id = f"sealed-{uuid.uuid4().hex[:8]}"
    secret = b"the secret reading is 42; " * 600  # 15.6 KB: four chunks
    with TestClient(net.app()) as gw:
        r = put(gw, writer, data_id, secret, params={"metadata": "patient Ada Lovelace"})
        assert r.status_code == 201, r.text
        got = gw.get(f"/objects/{data_id}", headers=auth(writer))
        assert got.content == secret
        assert "Ada%20Lovelace" in got.headers["x-pantheon-metadata"]
    chunks = [
        bytes(r[0])
        for r in _sql(
            net, "SELECT chunk FROM objects.chunks WHERE data_id = %s ORDER BY seq", (data_id,)
        )
    ]
    assert len(chunks) == 4
    for seq, chunk in enumerate(chunks):
        assert b"secret reading" not in chunk
        assert secret[seq * CHUNK : (seq + 1) * CHUNK] not in chunk
    rows = _sql(
        net,
        "SELECT o.metadata, u.metadata FROM objects.objects o "
        "JOIN objects.uploads u USING (data_id) WHERE data_id = %s",
        (data_id,),
    )
    assert rows and all("Lovelace" not in v for v in rows[0])
    assert rows[0][0].startswith("enc:v1:")


def test_tampered_chunk_is_never_served(net: Net, tmp_path: Path) -> None:
    writer = net.token(("data:write", "data:read"), "alice")
    first, later, rehashed = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("t0", "t3", "tr"))
    with TestClient(net.app(), raise_server_exceptions=False) as gw:
        for data_id in (first, later, rehashed):
            assert put(gw, writer, data_id, DATA).status_code == 201
        _flip(net, first, 0)
        _flip(net, later, 3)
        _flip(net, rehashed, 2, digest=True)
        try:
            # chunk 0 changed: refused before any byte is sent
            r = gw.get(f"/objects/{first}", headers=auth(writer))
            assert r.status_code == 502 and _code(r) == "OBJECT_TAMPERED", r.text
            assert r.json()["errors"][0]["extensions"]["table"] == "objects.chunks"
            assert _metric(gw, "chunk") == 1
            # chunk 2 changed with its digest recomputed: the chunk root refuses it up front
            r = gw.get(f"/objects/{rehashed}", headers=auth(writer))
            assert r.status_code == 502 and _code(r) == "OBJECT_TAMPERED", r.text
            assert _metric(gw, "chunks") == 1
            # chunk 3 changed: the stream stops before it, never a complete wrong body
            r = gw.get(f"/objects/{later}", headers=auth(writer))
            assert r.status_code == 200  # headers had gone out
            assert len(r.content) < len(DATA) and DATA.startswith(r.content), len(r.content)
            assert len(r.content) <= 3 * CHUNK
            assert _metric(gw, "chunk") == 2
            # over a real HTTP connection the client sees the transfer cut short
            with _served(net.app()) as base, httpx.Client(base_url=base) as client:
                got = bytearray()
                with (
                    pytest.raises(httpx.RemoteProtocolError),
                    client.stream("GET", f"/objects/{later}", headers=auth(writer)) as resp,
                ):
                    assert resp.status_code == 200
                    assert resp.headers["content-length"] == str(len(DATA))
                    for piece in resp.iter_raw():
                        got += piece
                assert 0 < len(got) < len(DATA) and DATA.startswith(bytes(got))
            findings = _audit(net, tmp_path)
            for data_id in (first, later, rehashed):
                mine = _about(findings, data_id)
                assert [f["kind"] for f in mine] == ["anchor.object_mismatch"], mine
            assert "changed chunks: [0]" in _about(findings, first)[0]["message"]
        finally:
            _flip(net, first, 0)
            _flip(net, later, 3)
            _flip(net, rehashed, 2, digest=True)
        for data_id in (first, later, rehashed):
            r = gw.get(f"/objects/{data_id}", headers=auth(writer))
            assert r.status_code == 200 and r.content == DATA
        assert not any(_about(_audit(net, tmp_path), d) for d in (first, later, rehashed))


def test_tampered_anchor_row_is_a_mismatch(net: Net) -> None:
    writer = net.token(("data:write", "data:read"), "alice")
    data_id = f"anchor-{uuid.uuid4().hex[:8]}"
    with TestClient(net.app()) as gw:
        assert put(gw, writer, data_id, DATA).status_code == 201
        _sql(net, "UPDATE chain.anchors SET sha256 = %s WHERE data_id = %s", (bytes(32), data_id))
        try:
            for path in (f"/objects/{data_id}", f"/objects/{data_id}/proof"):
                r = gw.get(path, headers=auth(writer))
                assert r.status_code == 502, r.text
                assert _code(r) == "ANCHOR_MISMATCH"
                ext = r.json()["errors"][0]["extensions"]
                assert ext["table"] == "chain.anchors" and ext["actual"] == "00" * 32
                assert ext["expected"] == sha256(DATA).hex()
            assert _metric(gw, "anchor") == 2
        finally:
            _sql(
                net,
                "UPDATE chain.anchors SET sha256 = %s WHERE data_id = %s",
                (sha256(DATA), data_id),
            )
        assert gw.get(f"/objects/{data_id}", headers=auth(writer)).content == DATA


def test_tampered_rows_are_refused_reported_and_rebuilt(net: Net, tmp_path: Path) -> None:
    alice = net.token(("data:write", "data:read"), "alice")
    carol = net.token(("data:read",), "carol")
    private, shared, dropped = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("pv", "sh", "dr"))
    with TestClient(net.app()) as gw:
        assert put(gw, alice, private, b"private").status_code == 201
        assert put(gw, alice, shared, b"shared", params={"user": "bob"}).status_code == 201
        assert put(gw, alice, dropped, b"dropped").status_code == 201
        assert gw.get(f"/objects/{private}", headers=auth(carol)).status_code == 403
        # an attacker grants carol alice's private object (with a genuine MAC of another grant)
        _sql(
            net,
            "INSERT INTO objects.grants SELECT %s, 'carol', upload_id, mac, granted_by, "
            "granted_at_ms FROM objects.grants WHERE data_id = %s",
            (private, shared),
        )
        r = gw.get(f"/objects/{private}", headers=auth(carol))
        assert r.status_code == 403, r.text
        assert _metric(gw, "grant") == 1
        # ... makes carol the owner of the shared object, deletes the row of another
        _sql(net, "UPDATE objects.objects SET owner = 'carol' WHERE data_id = %s", (shared,))
        r = gw.get(f"/objects/{shared}", headers=auth(carol))
        assert r.status_code == 502 and _code(r) == "OBJECT_TAMPERED", r.text
        _sql(net, "DELETE FROM objects.objects WHERE data_id = %s", (dropped,))
        assert gw.get(f"/objects/{dropped}", headers=auth(alice)).status_code == 409

        findings = _audit(net, tmp_path)
        extra = [f for f in _about(findings, private) if f["kind"] == "objects.row.unexpected"]
        assert len(extra) == 1, _about(findings, private)
        assert extra[0]["details"]["table"] == "objects.grants"
        assert extra[0]["details"]["key"] == {"data_id": private, "subject": "carol"}
        changed = [f for f in _about(findings, shared) if f["kind"] == "objects.row.differs"]
        assert [list(f["details"]["columns"]) for f in changed] == [["owner"]], changed
        assert changed[0]["details"]["columns"]["owner"]["expected"] == "alice"
        assert changed[0]["details"]["columns"]["owner"]["got"] == "carol"
        missing = [f for f in _about(findings, dropped) if f["kind"] == "objects.row.missing"]
        assert len(missing) == 1 and missing[0]["details"]["table"] == "objects.objects"
        assert isinstance(missing[0]["details"]["expected"]["sha256"], str)  # hex, not repr
        assert missing[0]["details"]["expected"]["sha256"] == sha256(b"dropped").hex()

        net.objects.stop()
        try:
            objects_rebuild(_dsn(net), net.consortium.bootstrap, INST, net.consortium.prefix)
        finally:
            net.objects.start()
        findings = _audit(net, tmp_path)
        assert not any(_about(findings, d) for d in (private, shared, dropped)), findings
        assert gw.get(f"/objects/{private}", headers=auth(carol)).status_code == 403
        assert gw.get(f"/objects/{shared}", headers=auth(carol)).status_code == 403
        bob = net.token(("data:read",), "bob")
        assert gw.get(f"/objects/{shared}", headers=auth(bob)).content == b"shared"
        assert gw.get(f"/objects/{dropped}", headers=auth(alice)).content == b"dropped"
        assert gw.get(f"/objects/{private}", headers=auth(alice)).content == b"private"


def test_forgotten_owner_is_shredded(net: Net) -> None:
    credential = ensure_setup_credential(_dsn(net), INST, MASTER)
    assert credential is not None
    root = net.iam.bootstrap_admin(credential, "root", "root-password-long")
    erin = net.iam.create_user(root, "erin", "erin-password-long")
    owner = net.token(("data:write", "data:read"), erin)
    admin = net.token(("data:read", "admin"), root)
    data_id = f"erin-{uuid.uuid4().hex[:8]}"
    with TestClient(net.app()) as gw:
        assert put(gw, owner, data_id, DATA).status_code == 201
        assert gw.get(f"/objects/{data_id}", headers=auth(admin)).content == DATA
        net.iam.forget_user(root, erin)
        assert not _sql(net, "SELECT 1 FROM iam_data_keys WHERE user_id = %s", (erin,))
        for token in (owner, admin):
            r = gw.get(f"/objects/{data_id}", headers=auth(token))
            assert r.status_code == 410 and _code(r) == "OBJECT_SHREDDED", r.text
        r = put(gw, owner, f"{data_id}-again", b"more")
        assert r.status_code == 410 and _code(r) == "OBJECT_SHREDDED", r.text
        carol = net.token(("data:read",), "carol")
        assert gw.get(f"/objects/{data_id}", headers=auth(carol)).status_code == 403


def test_pantheon_projections_rebuild_restores_the_objects_rows(net: Net, tmp_path: Path) -> None:
    """Last: drops and rebuilds the whole projection with the command's entry point."""
    alice = net.token(("data:write", "data:read"), "alice")
    data_id = f"rebuilt-{uuid.uuid4().hex[:8]}"
    with TestClient(net.app()) as gw:
        assert put(gw, alice, data_id, DATA, params={"group": "audit"}).status_code == 201
        _sql(net, "DELETE FROM objects.grants WHERE data_id = %s", (data_id,))
        _sql(net, "UPDATE objects.objects SET size = 1 WHERE data_id = %s", (data_id,))
        net.chain.stop()
        net.iam_runner.stop()
        net.objects.stop()
        try:
            code = rebuild_main(
                [
                    "--institution",
                    INST,
                    "--genesis",
                    str(net.consortium.genesis_path),
                    "--bootstrap",
                    net.consortium.bootstrap,
                    "--prefix",
                    net.consortium.prefix,
                    "--dsn",
                    net.server_dsn,
                    "--dbname",
                    net.dbname,
                ]
            )
        finally:
            net.chain.start()
            net.iam_runner.start()
            net.objects.start()
        assert code == 0
        dave = net.token(("data:read",), "dave", ("audit",))
        got = gw.get(f"/objects/{data_id}", headers=auth(dave))
        assert got.status_code == 200 and got.content == DATA, got.text
    assert not _about(_audit(net, tmp_path), data_id)
