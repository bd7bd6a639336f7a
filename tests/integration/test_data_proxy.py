"""The data access proxy end to end: store, anchor, read under a policy, verify offline, audit.

Real validator processes (:class:`tests.consortium.Consortium`, three institutions) finalize the
tx log on the real broker; the real chain projection of ``inst-1`` fills PostgreSQL; the
gateway is the real ASGI app whose proxy streams objects into the institution's database and
signs ``AnchorData`` with ``inst-1``'s governance key from the consortium's keystore file.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from starlette.testclient import TestClient

from gateway.app import GatewayConfig, create_app
from gateway.context import Services
from gateway.governance import Governance
from gateway.objects import DataProxy, ProxyConfig
from infra.postgres_server import Postgres
from ledger.genesis import Genesis
from ledger.hashing import sha256
from ledger.proofs import ObjectProofError, ProofLink
from projections import read
from projections.projector import ProjectorConfig, prepare
from streams import audit
from streams.object_verify import object_verify_main, verify_object
from tests.consortium import Consortium
from tests.integration.test_gateway_support import Tokens

pytestmark = pytest.mark.integration

INST = "inst-1"
LIMIT = 64 * 1024
CHUNK = 4096


@dataclass
class Net:
    consortium: Consortium
    pool: ConnectionPool[Any]
    server_dsn: str
    dbname: str
    tokens: Tokens
    governance: Governance
    proxy: DataProxy

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


@pytest.fixture(scope="module")
def net(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Net]:
    workdir = tmp_path_factory.mktemp("objects")
    consortium = Consortium(bootstrap, workdir / "c", 3, block_interval_ms=100)
    stop = threading.Event()
    runner: Any = None
    thread: threading.Thread | None = None
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
        thread = threading.Thread(
            target=runner.run, args=(stop,), kwargs={"idle_timeout": 0.05}, daemon=True
        )
        thread.start()
        pool: ConnectionPool[Any] = ConnectionPool(
            runner.dsn, min_size=1, max_size=8, open=True, kwargs={"autocommit": True}
        )
        governance = Governance.from_keystore(
            consortium.keystore_path(INST),
            institution=INST,
            bootstrap=bootstrap,
            prefix=consortium.prefix,
            receipt_timeout_s=20.0,
            genesis=consortium.genesis,
            validator_sets=read.validator_set_source(runner.dsn),
        )
        proxy = DataProxy.create(
            INST, pool, governance, ProxyConfig(max_object_bytes=LIMIT, chunk_bytes=CHUNK)
        )
        consortium.wait_ready(consortium.institutions)
        yield Net(consortium, pool, postgres.dsn("postgres"), dbname, Tokens(), governance, proxy)
        governance.close()
        pool.close()
    finally:
        stop.set()
        if thread is not None:
            thread.join(30)
        if runner is not None:
            runner.close()
        consortium.close()


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
        code = audit.main([
            "--genesis", str(net.consortium.genesis_path), "--bootstrap",
            net.consortium.bootstrap, "--prefix", net.consortium.prefix, "--json", str(out),
            "--no-progress", "--institution", INST, "--dsn", net.server_dsn,
            "--dbname", net.dbname,
        ])  # fmt: skip
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
