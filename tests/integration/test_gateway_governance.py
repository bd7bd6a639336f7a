"""Governance from the gateway and the first administrator, end to end.

Real validator processes (:class:`harness.consortium.Consortium`, four institutions) finalize
the tx log on the real broker; the real chain projection of ``inst-1`` and its IAM
projection fill PostgreSQL; the gateways are the real ASGI apps signing with the governance
keys of the consortium's keystore files and waiting for the validators' receipts.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from psycopg_pool import ConnectionPool
from starlette.testclient import TestClient

from gateway.app import GatewayConfig, create_app
from gateway.auth.crypto import MasterKey
from gateway.auth.passwords import FAST
from gateway.context import Services
from gateway.governance import Governance, KeystoreRefused, load_governance_key
from gateway.iam.bootstrap import ensure_setup_credential
from gateway.iam.service import IamService
from harness.consortium import Consortium, new_key
from harness.gateway_support import ALL, Tokens
from infra.postgres_server import Postgres
from ledger.key_proofs import propose_member_args
from projections import read
from projections.iam import IamProjection
from projections.projector import ProjectorConfig, prepare
from projections.runner import ProjectionRunner
from runtime.kafka_config import admin_config
from runtime.topics import ensure_topics
from tests.iam_keys import pinned_signer, pinned_signers

pytestmark = pytest.mark.integration

INST = "inst-1"
PROPOSE = """mutation($id: String!, $gov: String!, $ops: [String!]!, $gp: String!,
  $opp: [String!]!) {
  proposeMember(institutionId: $id, governancePublicKey: $gov, operatorPublicKeys: $ops,
    governanceKeyProof: $gp, operatorKeyProofs: $opp) {
    txId height result error { code message } } }"""
REMOVE = """mutation($id: String!) { proposeRemoval(institutionId: $id, reason: "test") {
  txId height result error { code message } } }"""
VOTE = """mutation($p: String!, $yes: Boolean!) { castVote(proposalId: $p, approve: $yes) {
  txId height result error { code message } } }"""
PROPOSALS = "{ proposals { id kind institutionId status votes { institutionId approve } } }"
BOOTSTRAP = """mutation($c: String!, $l: String!, $p: String!) {
  bootstrapAdmin(setupCredential: $c, login: $l, password: $p) { userId error { code } } }"""

MASTER = MasterKey(os.urandom(32))


@dataclass
class Net:
    consortium: Consortium
    pool: ConnectionPool[Any]
    dsn: str
    tokens: Tokens
    iam: IamService
    governance: dict[str, Governance]

    def app(self, inst: str = INST, *, governance: bool = True, accounts: bool = False) -> Any:
        services = Services(
            institution=inst, pool=self.pool, accounts=self.iam if accounts else None
        )
        return create_app(
            GatewayConfig(institution=inst, cache_responses=False, poll_interval_s=0.05),
            services,
            self.tokens.verifier,
            governance=self.governance[inst] if governance else None,
        )


def _runner_thread(runner: Any, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(
        target=runner.run, args=(stop,), kwargs={"idle_timeout": 0.05}, daemon=True
    )
    thread.start()
    return thread


@pytest.fixture(scope="module")
def net(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Net]:
    workdir = tmp_path_factory.mktemp("gov")
    consortium = Consortium(bootstrap, workdir / "c", 4, block_interval_ms=100)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    runners: list[Any] = []
    governance: dict[str, Governance] = {}
    try:
        consortium.start_all()
        ensure_topics(
            AdminClient(admin_config(bootstrap)), prefix=consortium.prefix, institutions=[INST]
        )
        cfg = ProjectorConfig(
            institution=INST,
            genesis=consortium.genesis_path,
            bootstrap=bootstrap,
            prefix=consortium.prefix,
            dsn=postgres.dsn("postgres"),
            dbname=f"gov_{uuid.uuid4().hex[:10]}",
        )
        _projection, runner = prepare(cfg)
        iam_runner = ProjectionRunner(
            runner.dsn,
            bootstrap,
            IamProjection(INST, prefix=consortium.prefix, signers=pinned_signers(INST)),
        )
        runners += [runner, iam_runner]
        threads += [_runner_thread(runner, stop), _runner_thread(iam_runner, stop)]
        pool: ConnectionPool[Any] = ConnectionPool(
            runner.dsn, min_size=1, max_size=8, open=True, kwargs={"autocommit": True}
        )
        iam = IamService(
            bootstrap=bootstrap,
            dsn=runner.dsn,
            institution=INST,
            master_key=MASTER,
            prefix=consortium.prefix,
            password_params=FAST,
            signer=pinned_signer(INST),
            signers=pinned_signers(INST),
        )
        for inst in ("inst-1", "inst-2"):
            governance[inst] = Governance.from_keystore(
                consortium.keystore_path(inst),
                institution=inst,
                bootstrap=bootstrap,
                prefix=consortium.prefix,
                receipt_timeout_s=20.0,
                genesis=consortium.genesis,
                validator_sets=read.validator_set_source(runner.dsn),
            )
        consortium.wait_ready(consortium.institutions)
        yield Net(consortium, pool, runner.dsn, Tokens(), iam, governance)
        for gov in governance.values():
            gov.close()
        iam.close()
        pool.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for r in runners:
            r.close()
        consortium.close()


def gql(client: TestClient, token: str | None, query: str, **variables: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    return r.status_code, r.json()


def wait_for(check: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_admins_vote_a_fifth_member_in(net: Net) -> None:
    admin1 = net.tokens.token(ALL, inst="inst-1")
    admin2 = net.tokens.token(ALL, inst="inst-2")
    newcomer, newop = new_key(), new_key()
    args = propose_member_args(
        newcomer, [newop], chain_id=net.consortium.chain_id, institution_id="newco"
    )
    variables = {
        "id": "newco",
        "gov": newcomer.public_key.hex(),
        "ops": [newop.public_key.hex()],
        "gp": args["governance_key_proof"].hex(),
        "opp": [p.hex() for p in args["operator_key_proofs"]],
    }
    with TestClient(net.app("inst-1")) as gw1, TestClient(net.app("inst-2")) as gw2:
        # Not an admin: refused before anything is signed.
        status, body = gql(
            gw1, net.tokens.token(("chain:read", "chain:write")), PROPOSE, **variables
        )
        assert status == 403 and body["errors"][0]["extensions"]["code"] == "FORBIDDEN"

        # The candidate's keys must have signed the proposal (D63): proofs swapped, refused.
        swapped = {**variables, "gp": variables["opp"][0], "opp": [variables["gp"]]}
        status, body = gql(gw1, admin1, PROPOSE, **swapped)
        assert status == 200, body
        assert body["data"]["proposeMember"]["result"] == "BAD_KEY_PROOF", body

        status, body = gql(gw1, admin1, PROPOSE, **variables)
        assert status == 200, body
        proposed = body["data"]["proposeMember"]
        assert proposed["error"] is None and proposed["result"] == "OK", proposed
        assert proposed["height"] >= 1 and len(proposed["txId"]) == 64
        proposal_id = proposed["txId"]

        # inst-2 votes through its own gateway, inst-3 with a directly signed transaction.
        _, body = gql(gw2, admin2, VOTE, p=proposal_id, yes=True)
        assert body["data"]["castVote"]["result"] == "OK", body
        gov3 = net.consortium.gov_key("inst-3")
        vote3 = net.consortium.tx(
            gov3, "CastVote", {"proposal_id": bytes.fromhex(proposal_id), "approve": True}
        )
        net.consortium.send([vote3], key=gov3.key_id)

        def passed() -> dict[str, Any] | None:
            _, page = gql(gw1, admin1, PROPOSALS)
            found = [p for p in page["data"]["proposals"] if p["id"] == proposal_id]
            return found[0] if found and found[0]["status"] == "PASSED" else None

        proposal = wait_for(passed, "the proposal to pass")
        assert proposal["kind"] == "ADD_MEMBER" and proposal["institutionId"] == "newco"
        voters = {v["institutionId"] for v in proposal["votes"] if v["approve"]}
        assert {"inst-2", "inst-3"} <= voters
        _, body = gql(gw1, admin1, "{ institutions { id status } }")
        assert "newco" in {i["id"] for i in body["data"]["institutions"]}

        # A vote on a closed proposal is rejected by the chain: a typed error, nonce unused.
        _, body = gql(gw1, admin1, VOTE, p=proposal_id, yes=True)
        closed = body["data"]["castVote"]
        assert closed["error"]["code"] == closed["result"] == "CLOSED", closed

        # Someone else signs with inst-1's governance key: the gateway's nonce is stale, the
        # BAD_NONCE receipt makes it read the nonce from the chain and try once more.
        gov1 = net.consortium.gov_key("inst-1")
        direct = net.consortium.tx(
            gov1,
            "AnchorData",
            {"data_id": "by-hand", "sha256": bytes(32), "metadata": ""},
            nonce=1,
        )
        net.consortium.send([direct], key=gov1.key_id)
        wait_for(
            lambda: gql(gw1, admin1, '{ anchor(dataId: "by-hand") { height } }')[1]["data"][
                "anchor"
            ],
            "the direct transaction",
        )
        _, body = gql(gw1, admin1, REMOVE, id="inst-4")
        removal = body["data"]["proposeRemoval"]
        assert removal["result"] == "OK" and removal["error"] is None, removal
        q = """query($s: String) {
                 transactions(sender: $s, first: 20) { edges { node { result } } } }"""
        _, body = gql(gw1, admin1, q, s=gov1.key_id.hex())
        results = [e["node"]["result"] for e in body["data"]["transactions"]["edges"]]
        assert "BAD_NONCE" in results, results

        # Bad input is a typed error, not an exception.
        _, body = gql(gw1, admin1, VOTE, p="zz", yes=True)
        assert body["data"]["castVote"]["error"]["code"] == "BAD_USER_INPUT"


def test_without_keystore_governance_is_refused(net: Net) -> None:
    with TestClient(net.app("inst-1", governance=False)) as gw:
        status, body = gql(gw, net.tokens.token(ALL), REMOVE, id="inst-4")
        assert status == 200
        payload = body["data"]["proposeRemoval"]
        assert payload["error"]["code"] == "GOVERNANCE_KEY_MISSING" and payload["txId"] is None


def test_keystore_readable_by_others_is_refused(net: Net, tmp_path: Path) -> None:
    source = net.consortium.keystore_path("inst-1")
    copy = tmp_path / "inst-1.json"
    copy.write_text(source.read_text())
    copy.chmod(0o644)
    with pytest.raises(KeystoreRefused, match="readable by others"):
        load_governance_key(copy)
    copy.chmod(0o600)
    assert load_governance_key(copy).key == net.consortium.gov_key("inst-1")
    with pytest.raises(KeystoreRefused, match="belongs to inst-1"):
        Governance.from_keystore(copy, institution="inst-2", bootstrap="unused:1")


def test_bootstrap_admin_once(net: Net) -> None:
    credential = ensure_setup_credential(net.dsn, INST, MASTER)
    assert credential is not None
    with TestClient(net.app("inst-1", accounts=True)) as gw:
        status, body = gql(
            gw, None, BOOTSTRAP, c="pantheon-setup-guess", l="root", p="root-password"
        )
        assert status == 200
        assert body["data"]["bootstrapAdmin"]["error"]["code"] == "BAD_SETUP_CREDENTIAL"

        _, body = gql(gw, None, BOOTSTRAP, c=credential, l="root", p="root-password")
        payload = body["data"]["bootstrapAdmin"]
        assert payload["error"] is None and payload["userId"], payload

        _, body = gql(gw, None, BOOTSTRAP, c=credential, l="root2", p="root-password")
        assert body["data"]["bootstrapAdmin"]["error"]["code"] == "ALREADY_BOOTSTRAPPED"

        login = """mutation { login(username: "root", password: "root-password") {
                     token me { permissions } error { code } } }"""
        _, body = gql(gw, None, login)
        assert body["data"]["login"]["error"] is None, body
        assert "admin" in body["data"]["login"]["me"]["permissions"]
