"""Object proofs through the local explorer (D60): only with the command's token.

A real gateway with its data access proxy (the ``net`` of ``test_data_proxy``: a consortium,
the chain, IAM and objects projections) serves a stored object; the local explorer in front
of it forwards ``GET /objects/<id>/proof`` with the token given to the command, never with the
page's, refuses it without one (saying how to get it) and for another site's page, and
forwards nothing else of ``/objects``.
"""

from __future__ import annotations

import urllib.parse
import uuid

import httpx2 as httpx
import pytest

from infra.explorer import create_app
from infra.explorer_forward import RemoteGateway
from readers.object_verify import verify_object
from tests.browser.explorer_site import Served
from tests.integration.test_data_proxy import DATA, Net, auth, net

pytestmark = pytest.mark.integration

__all__ = ["net"]  # the module-scoped fixture, shared with test_data_proxy's definition

OWN_PAGE = {"Sec-Fetch-Site": "same-origin"}


def code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["extensions"]["code"])


def test_object_proofs_are_forwarded_with_the_commands_token_only(net: Net) -> None:
    writer = net.token(("data:write", "data:read"), "alice")
    reader = net.token(("data:read",), "alice")
    stranger = net.token(("data:read",), "carol", ("sales",))
    data_id = f"lx report {uuid.uuid4().hex[:8]}"  # a space: quoted on the way
    path = "/objects/" + urllib.parse.quote(data_id, safe="") + "/proof"
    gateway = Served(net.app())
    served: list[Served] = []

    def local(token: str | None) -> str:
        served.append(Served(create_app(RemoteGateway(gateway.url, token=token))))
        return served[-1].url

    try:
        stored = httpx.put(
            gateway.url + path.removesuffix("/proof"), content=DATA, headers=auth(writer)
        )
        assert stored.status_code == 201, stored.text
        direct = httpx.get(gateway.url + path, headers=auth(reader), timeout=30)
        assert direct.status_code == 200, direct.text

        with_token = local(reader)
        got = httpx.get(with_token + path, headers=OWN_PAGE, timeout=30)
        assert got.status_code == 200, got.text
        assert got.json() == direct.json()
        verify_object(DATA, got.json(), net.genesis)  # the object's inclusion, checked here
        typed = httpx.get(with_token + path, timeout=30)  # an address typed: no header
        assert typed.status_code == 200

        # another site's page, through the user's browser: refused before the gateway
        cross = httpx.get(with_token + path, headers={"Sec-Fetch-Site": "cross-site"})
        assert (cross.status_code, code(cross)) == (403, "NOT_FORWARDED")

        # the page's own token is never forwarded: the command's decides
        refused = httpx.get(local(stranger) + path, headers={**OWN_PAGE, **auth(writer)})
        assert refused.status_code == 403 and code(refused) != "NOT_FORWARDED", refused.text
        without = httpx.get(local(None) + path, headers={**OWN_PAGE, **auth(writer)})
        assert (without.status_code, code(without)) == (403, "NOT_FORWARDED")
        assert "--token-file" in without.json()["errors"][0]["message"]

        # nothing else of /objects: not the content, not an upload
        content = path.removesuffix("/proof")
        assert httpx.get(with_token + content, headers=auth(reader)).status_code == 404
        upload = httpx.put(with_token + content + "x", content=b"x", headers=auth(writer))
        assert upload.status_code == 404
        assert httpx.put(with_token + path, content=b"x").status_code == 405
    finally:
        for server in served:
            server.stop()
        gateway.stop()
