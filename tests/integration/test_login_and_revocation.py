"""A revoked permission stops working for tokens already issued, within 2 s, end to end.

The data access proxy of ``inst-1`` (real validators, broker, chain projection: the ``net``
fixture of ``test_data_proxy``) is served by the real ASGI app whose authenticator is the IAM
service's verifier (behind the gateway's 1 s token cache); the IAM projection runs on the
same database. ``PUT /objects`` needs ``data:write``: a token issued while the user had it
stores an object; after the permission is revoked directly, by removing the user from the
group that carried it, or by revoking it from the group, the *same token* is refused.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.app import GatewayConfig, create_app
from gateway.auth.passwords import FAST
from gateway.auth.throttle import LoginThrottle, ThrottlePolicy
from gateway.context import Services
from gateway.iam.bootstrap import ensure_setup_credential
from gateway.iam.service import IamService
from tests.iam_keys import pinned_signer
from tests.integration.test_data_proxy import INST, MASTER, Net, _dsn, net, put

__all__ = ["net"]  # the module-scoped fixture, reused


pytestmark = pytest.mark.integration

ME = "{ me { groups permissions } }"
WITHIN_S = 2.0


@pytest.fixture(scope="module")
def iam(net: Net) -> IamService:
    """The IAM service of the data proxy's network (its IAM projection runs there too)."""
    return net.iam


def _root(net: Net, iam: IamService) -> str:
    """The institution administrator (created by the first test that needs it)."""
    credential = ensure_setup_credential(_dsn(net), INST, MASTER)
    if credential is not None:
        return iam.bootstrap_admin(credential, "root", "root-password")
    return iam.login("root", "root-password", "10.1.0.1").claims.sub


def _app(net: Net, iam: IamService) -> Any:
    services = Services(institution=INST, pool=net.pool, accounts=iam)
    return create_app(
        GatewayConfig(institution=INST, cache_responses=False, poll_interval_s=0.05),
        services,
        iam.verifier(),  # wrapped by the app in its 1 s token cache, as in production
        governance=net.governance,
        objects=net.proxy,
    )


def _perms(gw: TestClient, token: str) -> list[str]:
    r = gw.post("/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return list(r.json()["data"]["me"]["permissions"])


def _refused_within(gw: TestClient, token: str, revoke: Callable[[], None]) -> float:
    """Seconds from the start of ``revoke`` until ``PUT /objects`` with ``token`` is 403."""
    started = time.monotonic()
    revoke()
    while "data:write" in _perms(gw, token) and time.monotonic() - started < WITHIN_S:
        time.sleep(0.05)
    r = put(gw, token, f"late-{uuid.uuid4().hex[:8]}", b"after the revoke")
    elapsed = time.monotonic() - started
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["extensions"]["required"] == "data:write"
    return elapsed


def test_revoked_data_write_is_refused_for_issued_tokens(net: Net, iam: IamService) -> None:
    root = _root(net, iam)
    iam.create_group(root, "writers")
    iam.grant(root, "group:writers", "data:write")
    alice = iam.create_user(root, "alice", "alice-password")
    iam.grant(root, alice, "data:write")
    bob = iam.create_user(root, "bob", "bob-password")
    iam.add_member(root, bob, "writers")
    carol = iam.create_user(root, "carol", "carol-password")
    iam.add_member(root, carol, "writers")
    tokens = {
        name: iam.login(name, f"{name}-password", "10.1.0.1").value
        for name in ("alice", "bob", "carol")
    }
    with TestClient(_app(net, iam)) as gw:
        for name, token in tokens.items():  # before: each token stores an object
            r = put(gw, token, f"{name}-{uuid.uuid4().hex[:8]}", name.encode())
            assert r.status_code == 201, r.text

        took = {
            "direct grant revoked": _refused_within(
                gw, tokens["alice"], lambda: iam.revoke(root, alice, "data:write")
            ),
            "removed from the group": _refused_within(
                gw, tokens["bob"], lambda: iam.remove_member(root, bob, "writers")
            ),
            "group's grant revoked": _refused_within(
                gw, tokens["carol"], lambda: iam.revoke(root, "group:writers", "data:write")
            ),
        }
        assert all(seconds < WITHIN_S for seconds in took.values()), took
        # the tokens themselves still work for what their users still have
        assert _perms(gw, tokens["alice"]) == []
        me = gw.post(
            "/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {tokens['carol']}"}
        ).json()["data"]["me"]
        assert me["groups"] == ["writers"]  # still a member, the group lost the permission


LOGIN = """mutation($u: String!, $p: String!, $d: String) {
  login(username: $u, password: $p, deviceToken: $d) { token deviceToken error { code } } }"""


def _login(gw: TestClient, user: str, password: str, device: str | None = None) -> Any:
    r = gw.post(
        "/graphql", json={"query": LOGIN, "variables": {"u": user, "p": password, "d": device}}
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]["login"]


def test_the_login_mutation_hands_out_and_honours_device_tokens(
    net: Net, iam: IamService, bootstrap: str
) -> None:
    # Every TestClient request comes from the same address: the guesser shares it with the
    # owner, whose device token (from the mutation) keeps them logging in.
    root = _root(net, iam)
    iam.create_user(root, "dora", "dora-password")
    strict = IamService(
        bootstrap=bootstrap,
        dsn=_dsn(net),
        institution=INST,
        master_key=iam._master,
        signer=pinned_signer(INST),
        kek_dir=iam.kek_store.directory,
        prefix=net.consortium.prefix,
        password_params=FAST,
        throttle=LoginThrottle(ThrottlePolicy(free_failures=3, base_delay_s=30.0)),
    )
    try:
        with TestClient(_app(net, strict)) as gw:
            first = _login(gw, "dora", "dora-password")
            assert first["error"] is None and first["token"] and first["deviceToken"]
            codes = [_login(gw, "dora", f"wrong-{i}")["error"]["code"] for i in range(6)]
            assert codes == ["LOGIN_FAILED"] * 4 + ["THROTTLED"] * 2, codes
            assert _login(gw, "dora", "dora-password")["error"]["code"] == "THROTTLED"
            again = _login(gw, "dora", "dora-password", first["deviceToken"])
            assert again["error"] is None and again["token"], again
            forged = first["deviceToken"][:-4] + "AAAA"
            assert _login(gw, "dora", "dora-password", forged)["error"]["code"] == "THROTTLED"
    finally:
        strict.close()


SUBSCRIBE = {
    "id": "1",
    "type": "subscribe",
    "payload": {"query": "subscription { newBlock { height } }"},
}


def _subscribed(ws: Any, token: str) -> None:
    ws.send_json({"type": "connection_init", "payload": {"token": token}})
    assert ws.receive_json() == {"type": "connection_ack"}
    ws.send_json(SUBSCRIBE)


def _next_message(ws: Any, gw: TestClient, writer: str) -> dict[str, Any]:
    """The next message on ``ws``, making blocks (an anchored object) until one comes."""
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(_receive(ws)), daemon=True)
    reader.start()
    deadline = time.monotonic() + 20
    while reader.is_alive() and time.monotonic() < deadline:
        assert put(gw, writer, f"tick-{uuid.uuid4().hex[:8]}", b"tick").status_code == 201
        reader.join(0.3)
    assert got, "no message within 20 s"
    return dict(got[0])


def _receive(ws: Any) -> Any:
    try:
        return ws.receive_json()
    except WebSocketDisconnect as exc:
        return {"type": "closed", "code": exc.code}


def test_subscriptions_end_when_the_permission_or_the_user_goes(net: Net, iam: IamService) -> None:
    root = _root(net, iam)
    iam.create_group(root, "viewers")
    iam.grant(root, "group:viewers", "chain:read")
    erin = iam.create_user(root, "erin", "erin-password")
    iam.add_member(root, erin, "viewers")
    frank = iam.create_user(root, "frank", "frank-password")
    iam.grant(root, frank, "chain:read")
    ticker = iam.create_user(root, "ticker", "ticker-password")
    iam.grant(root, ticker, "data:write")
    writer = iam.login("ticker", "ticker-password", "10.1.0.2").value
    erin_token = iam.login("erin", "erin-password", "10.1.0.3").value
    frank_token = iam.login("frank", "frank-password", "10.1.0.4").value
    with TestClient(_app(net, iam)) as gw:
        with gw.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            _subscribed(ws, erin_token)
            assert _next_message(ws, gw, writer)["type"] == "next"
            started = time.monotonic()
            iam.remove_member(root, erin, "viewers")
            message = _next_message(ws, gw, writer)
            while message["type"] == "next":  # pushed before the revocation was seen
                assert time.monotonic() - started < WITHIN_S, message
                message = _next_message(ws, gw, writer)
            assert message["type"] == "error", message
            assert message["payload"][0]["extensions"]["code"] == "FORBIDDEN"
            assert time.monotonic() - started < WITHIN_S + 1.0
        with gw.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            _subscribed(ws, frank_token)
            assert _next_message(ws, gw, writer)["type"] == "next"
            started = time.monotonic()
            iam.disable_user(root, frank, "left")
            message = _next_message(ws, gw, writer)
            while message["type"] == "next":
                assert time.monotonic() - started < WITHIN_S, message
                message = _next_message(ws, gw, writer)
            assert message == {"type": "closed", "code": 4403}, message
