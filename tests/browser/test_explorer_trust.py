"""The explorer's certificate check from a pinned genesis (decisions D49), in Chromium.

A hostile gateway is played by intercepting the page's requests: it serves forged key sets,
forged certificates signed by keys of its own, or another genesis. The honest chain of the
site hands inst-1's votes to a new operator key (AddOperator, then RemoveOperator), so a
block after the change verifies only if the page replayed the change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ledger.ed25519_zip215 import verify as zip215_verify
from ledger.genesis import plan_consortium
from ledger.key_proofs import (
    REGISTER_KEY_POP_DOMAIN,
    ROTATE_KEY_POP_DOMAIN,
    add_operator_args,
    propose_member_args,
    register_identity_args,
    registration_material,
    registration_message,
    registration_proof_valid,
    rotate_key_message,
    rotate_key_proof,
    rotate_key_proof_valid,
)
from ledger.keys import KeyPair
from ledger.votes import sign_vote
from tests.browser.explorer_site import MARKS, Site, pin, shot

pytestmark = MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright missing")
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ed25519_speccheck.json"


def _verdict(page: Any, height: int, expected: str) -> Any:
    page.goto(f"{page.url.split('#')[0]}#/block/{height}")
    verdict = page.locator("#qc-verdict")
    sync_api.expect(verdict).to_have_attribute("data-verified", expected, timeout=30_000)
    return verdict


def _verified_one_by_one(page: Any, site: Site, heights: tuple[int, ...]) -> None:
    """Each block verifies, from a fresh page (no verdict of the previous block left)."""
    for height in heights:
        page.goto("about:blank")
        page.goto(site.url + "/")
        _verdict(page, height, "yes")
        checks = page.locator("#qc-checks")
        sync_api.expect(checks).to_contain_text("the block names the validator set derived")
        sync_api.expect(checks).not_to_contain_text("✘")


def test_unpinned_then_pinned_by_hand(site: Site, page: Any) -> None:
    page.goto(site.url + "/#/block/5")
    verdict = page.locator("#qc-verdict")
    sync_api.expect(verdict).to_have_attribute("data-verified", "unpinned")
    sync_api.expect(verdict).to_contain_text("Not pinned")
    shot(page, "23-block-not-pinned")
    page.get_by_label("Genesis hash").fill("not a hash")
    page.get_by_role("button", name="Pin").click()
    sync_api.expect(page.locator("#pin-form")).to_contain_text("64 hexadecimal characters")
    page.get_by_label("Genesis hash").fill(site.genesis_hash.upper())
    page.get_by_role("button", name="Pin").click()
    sync_api.expect(verdict).to_have_attribute("data-verified", "yes", timeout=30_000)
    sync_api.expect(page.locator("#anchor")).to_contain_text(site.genesis_hash[:10])
    assert page.evaluate("localStorage.getItem('pantheon.genesis')") == site.genesis_hash


def test_honest_chain_verifies_across_operator_change(site: Site, page: Any) -> None:
    pin(page, site)
    before, after = site.added_at - 1, site.removed_at + 1
    for height in (before, site.added_at, site.removed_at, after):
        _verdict(page, height, "yes")
        checks = page.locator("#qc-checks")
        sync_api.expect(checks).to_contain_text("the block names the validator set derived")
        sync_api.expect(checks).not_to_contain_text("✘")
    # after the hand-over inst-1's vote is by the new key, which only the replay knows
    votes = page.locator("main table").last
    sync_api.expect(votes).to_contain_text("inst-1")
    new_id = site.new_operator.key_id.hex()
    assert page.locator(f"main table a[href='#/address/{new_id}']").count() == 1
    shot(page, "24-block-after-operator-change-verified")
    # the second visit is answered from the per-height cache
    page.reload()
    sync_api.expect(page.locator("#qc-verdict")).to_have_attribute("data-verified", "yes")
    sync_api.expect(page.locator("#qc-checks")).to_contain_text("cached by height")
    cache = page.evaluate(f"localStorage.getItem('pantheon.trust.v2.{site.genesis_hash}')")
    assert str(after) in json.loads(cache)["verified"]


def test_forged_key_set_and_certificate_are_unverified(site: Site, page: Any) -> None:
    """The gateway lists keys of its own as the operators and signs the block with them: the
    signatures are valid Ed25519, but not by the key set derived from the pinned genesis."""
    forgers = {i: KeyPair.from_seed(os.urandom(32)) for i in ("inst-1", "inst-2", "inst-3")}
    target = site.removed_at + 1

    def handle(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        data = body.get("data") if isinstance(body, dict) else None
        for inst in (data or {}).get("institutions") or []:
            if inst["id"] in forgers:  # the forged key set
                key = forgers[inst["id"]]
                inst["operators"] = [
                    {"keyId": key.key_id.hex(), "publicKey": key.public_key.hex(), "label": ""}
                ]
        block = (data or {}).get("block")
        if block and block["height"] == target:  # a certificate by the forged keys
            block_hash = bytes.fromhex(block["hash"])
            block["certificate"]["votes"] = [
                {
                    "institutionId": inst,
                    "operatorKeyId": key.key_id.hex(),
                    "publicKey": key.public_key.hex(),
                    "signature": sign_vote(
                        key, height=target, block_hash=block_hash
                    ).signature.hex(),
                }
                for inst, key in forgers.items()
            ]
        route.fulfill(response=response, json=body)

    pin(page, site)
    page.route("**/graphql", handle)
    verdict = _verdict(page, target, "no")
    sync_api.expect(verdict).to_contain_text("UNVERIFIED")
    checks = page.locator("#qc-checks")
    sync_api.expect(checks).to_contain_text("not an operator of inst-1 at this height")
    sync_api.expect(checks).to_contain_text("0 of 4 institutions signed validly")
    shot(page, "25-block-forged-key-set-unverified")


def test_a_verdict_cached_under_older_rules_is_not_trusted(site: Site, page: Any) -> None:
    """A verdict the page cached before its replay rules changed (the v1 cache, before the
    proofs of possession) is deleted, not believed: with it, the forged certificate below
    would have been "verified earlier in this browser"."""
    target = site.removed_at + 1
    pin(page, site)
    _verdict(page, target, "yes")  # honest: the current cache now holds target's hash
    v1, v2 = (f"pantheon.trust.{v}.{site.genesis_hash}" for v in ("v1", "v2"))
    page.evaluate(
        "([v1, v2]) => { localStorage.setItem(v1, localStorage.getItem(v2)); "
        "localStorage.removeItem(v2); }",
        [v1, v2],
    )
    assert str(target) in json.loads(page.evaluate(f"localStorage.getItem('{v1}')"))["verified"]
    forger = KeyPair.from_seed(os.urandom(32))

    def forge(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        block = (body.get("data") or {}).get("block") if isinstance(body, dict) else None
        if block and block["height"] == target:  # every vote by a key of the gateway's own
            for vote in block["certificate"]["votes"]:
                vote["publicKey"] = forger.public_key.hex()
                vote["signature"] = sign_vote(
                    forger, height=target, block_hash=bytes.fromhex(block["hash"])
                ).signature.hex()
        route.fulfill(response=response, json=body)

    page.route("**/graphql", forge)
    page.goto("about:blank")
    page.goto(site.url + "/")
    verdict = _verdict(page, target, "no")
    sync_api.expect(verdict).to_contain_text("UNVERIFIED")
    sync_api.expect(page.locator("#qc-checks")).not_to_contain_text("cached by height")
    assert page.evaluate(f"localStorage.getItem('{v1}')") is None


def test_another_genesis_is_refused(site: Site, page: Any) -> None:
    seeds = [os.urandom(32) for _ in range(8)]
    other = plan_consortium("chain", ["inst-1", "inst-2", "inst-3", "inst-4"], seeds).genesis
    page.route(
        "**/genesis.avro",
        lambda route: route.fulfill(
            status=200, body=other.encode(), content_type="application/octet-stream"
        ),
    )
    pin(page, site)
    _verdict(page, 4, "no")
    sync_api.expect(page.locator("#qc-checks")).to_contain_text(
        f"hashes to {other.hash().hex()}, not to the pinned {site.genesis_hash}"
    )
    shot(page, "26-block-other-genesis-unverified")


def test_webcrypto_refusals_are_never_called_forged_when_zip215_accepts(
    site: Site, page: Any
) -> None:
    """The 12 'Taming the many EdDSAs' cases through the page's own check: "invalid" exactly
    where the chain's rules (ZIP-215, D34) refuse; a refusal of WebCrypto's where they accept
    is "unknown" (could not check here), never "invalid"."""
    page.goto(site.url + "/")
    cases = json.loads(VECTORS.read_text())["cases"]
    answers = page.evaluate(
        """async (cases) => { const out = [];
        for (const c of cases) out.push(await Trust.verifySignature(c.pub_key, c.signature,
          new Uint8Array(c.message.match(/../g).map((b) => parseInt(b, 16)))));
        return out; }""",
        cases,
    )
    for case, answer in zip(cases, answers, strict=True):
        valid = zip215_verify(
            bytes.fromhex(case["pub_key"]),
            bytes.fromhex(case["signature"]),
            bytes.fromhex(case["message"]),
        )
        assert answer in ("valid", "invalid", "unknown")
        assert (answer == "invalid") is not valid, (case["index"], case["note"], answer)
    assert "unknown" in answers, "WebCrypto accepted every edge case: nothing was left open"
    shot(page, "27-zip215-edge-cases")


def test_an_admission_the_chain_refused_is_not_replayed(site: Site, page: Any) -> None:
    """The vote that passed inst-5's admission found its operator key taken by an identity
    (RegisterIdentity a block earlier): the chain refused it with every entry OK. The page
    asks which entries registered the admission's keys, checks that one is certified, and
    so derives the chain's validator set for the blocks after the vote."""
    pin(page, site)
    _verified_one_by_one(page, site, (site.refused_at, site.refused_at + 1, site.refused_at + 2))
    shot(page, "28-block-after-refused-admission-verified")


def test_a_gateway_hiding_the_registration_only_makes_blocks_unverified(
    site: Site, page: Any
) -> None:
    """A gateway that omits the registration makes the page admit inst-5: the blocks after
    the vote then name another set than the one derived, so they are UNVERIFIED, never
    verified with a wrong key set."""

    def handle(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        data = body.get("data") if isinstance(body, dict) else None
        if data and "keyRegistrations" in data:
            data["keyRegistrations"] = []
        route.fulfill(response=response, json=body)

    pin(page, site)
    page.route("**/graphql", handle)
    verdict = _verdict(page, site.refused_at + 1, "no")
    sync_api.expect(verdict).to_contain_text("UNVERIFIED")
    sync_api.expect(page.locator("#qc-checks")).to_contain_text(
        "names a validator set OTHER than the one derived"
    )


def test_blocks_after_an_operator_rotation_verify(site: Site, page: Any) -> None:
    """inst-3's operator key was rotated (with its proof of possession, D61): the blocks after
    the rotation verify only if the page decoded the rotation, proof included (the proof is
    part of the body the page hashes to the transaction id), and found the proof valid."""
    pin(page, site)
    _verified_one_by_one(page, site, (site.rotated_at, site.rotated_at + 1))


def test_the_page_refuses_exactly_the_rotation_proofs_the_contract_refuses(
    site: Site, page: Any
) -> None:
    """Vectors for ``Trust.rotationProof``: "invalid" exactly where
    ``ledger.key_proofs.rotate_key_proof_valid`` (the contract's check) says no."""
    chain = "proj-test"
    old, new, other = (KeyPair.from_seed(os.urandom(32)) for _ in range(3))
    good = rotate_key_proof(new, chain_id=chain, key_id=old.key_id, old_public_key=old.public_key)
    message = rotate_key_message(chain, old.key_id, new.public_key, old.public_key)
    forged = {
        "good": good,
        "missing": b"",
        "short": good[:63],
        "by_old_key": old.sign(ROTATE_KEY_POP_DOMAIN, message),
        "other_key_id": rotate_key_proof(
            new, chain_id=chain, key_id=other.key_id, old_public_key=old.public_key
        ),
        "other_chain": rotate_key_proof(
            new, chain_id="other", key_id=old.key_id, old_public_key=old.public_key
        ),
        "other_old_key": rotate_key_proof(
            new, chain_id=chain, key_id=old.key_id, old_public_key=other.public_key
        ),
        "other_new_key": rotate_key_proof(
            other, chain_id=chain, key_id=old.key_id, old_public_key=old.public_key
        ),
        "flipped": good[:10] + bytes([good[10] ^ 1]) + good[11:],
    }
    cases = [
        {
            "name": name,
            "args": [chain, old.key_id.hex(), new.public_key.hex(), old.public_key.hex(), p.hex()],
            "valid": rotate_key_proof_valid(
                p,
                chain_id=chain,
                key_id=old.key_id,
                new_public_key=new.public_key,
                old_public_key=old.public_key,
            ),
        }
        for name, p in forged.items()
    ]
    page.goto(site.url + "/")
    answers = page.evaluate(
        """async (cases) => { const out = [];
        for (const c of cases) out.push(await Trust.rotationProof(...c.args));
        out.push(await Trust.rotationProof(cases[0].args[0], cases[0].args[1],
          cases[0].args[2], cases[0].args[3], null));
        return out; }""",
        cases,
    )
    assert answers[-1] == "invalid"  # a retired-schema rotation: no proof at all
    for case, answer in zip(cases, answers, strict=False):
        assert (answer == "invalid") is not case["valid"], (case["name"], answer)
    assert [c["valid"] for c in cases].count(True) == 1  # only the good proof


def _registration_cases(chain: str) -> list[dict[str, Any]]:
    """(operation, role, institution, key, proof, material) for the honest registrations of
    each kind and their forgeries, with the contract's verdict."""
    new, other, gov, op = (KeyPair.from_seed(os.urandom(32)) for _ in range(4))
    operator = add_operator_args(new, chain_id=chain, institution_id="inst-1")
    identity = register_identity_args(
        new, chain_id=chain, institution_id="inst-1", kind="DEVICE", label="sensor é"
    )
    member = propose_member_args(gov, [op], chain_id=chain, institution_id="inst-5")
    elsewhere = add_operator_args(new, chain_id="other", institution_id="inst-1")
    foreign = add_operator_args(other, chain_id=chain, institution_id="inst-1")
    message = registration_message(
        chain_id=chain,
        operation="AddOperator",
        role="OPERATOR",
        institution_id="inst-1",
        public_key=new.public_key,
        material=b"",
    )
    rows: list[tuple[str, str, str, str, KeyPair, bytes, dict[str, Any]]] = [
        (
            "operator",
            "AddOperator",
            "OPERATOR",
            "inst-1",
            new,
            operator["operator_key_proof"],
            operator,
        ),
        (
            "operator other chain",
            "AddOperator",
            "OPERATOR",
            "inst-1",
            new,
            elsewhere["operator_key_proof"],
            operator,
        ),
        (
            "operator other institution",
            "AddOperator",
            "OPERATOR",
            "inst-2",
            new,
            operator["operator_key_proof"],
            operator,
        ),
        (
            "operator by another key",
            "AddOperator",
            "OPERATOR",
            "inst-1",
            new,
            other.sign(REGISTER_KEY_POP_DOMAIN, message),
            operator,
        ),
        (
            "another key's own proof",
            "AddOperator",
            "OPERATOR",
            "inst-1",
            new,
            foreign["operator_key_proof"],
            operator,
        ),
        ("operator missing", "AddOperator", "OPERATOR", "inst-1", new, b"", operator),
        ("identity", "RegisterIdentity", "DEVICE", "inst-1", new, identity["key_proof"], identity),
        (
            "identity as operator",
            "AddOperator",
            "OPERATOR",
            "inst-1",
            new,
            identity["key_proof"],
            operator,
        ),
        (
            "identity other role",
            "RegisterIdentity",
            "USER",
            "inst-1",
            new,
            identity["key_proof"],
            {**identity, "kind": "USER"},
        ),
        (
            "governance",
            "ProposeMember",
            "GOVERNANCE",
            "inst-5",
            gov,
            member["governance_key_proof"],
            member,
        ),
        (
            "member operator",
            "ProposeMember",
            "OPERATOR",
            "inst-5",
            op,
            member["operator_key_proofs"][0],
            member,
        ),
        (
            "roles swapped",
            "ProposeMember",
            "GOVERNANCE",
            "inst-5",
            gov,
            member["operator_key_proofs"][0],
            member,
        ),
        (
            "keys swapped",
            "ProposeMember",
            "OPERATOR",
            "inst-5",
            gov,
            member["governance_key_proof"],
            member,
        ),
        (
            "role the operation never gives",
            "AddOperator",
            "GOVERNANCE",
            "inst-1",
            new,
            operator["operator_key_proof"],
            operator,
        ),
    ]
    return [
        {
            "name": name,
            "args": [
                chain,
                operation,
                role,
                inst,
                pub.public_key.hex(),
                proof.hex(),
                _material(operation, args),
            ],
            "valid": registration_proof_valid(
                proof,
                chain_id=chain,
                operation=operation,
                role=role,
                institution_id=inst,
                public_key=pub.public_key,
                args=args,
            ),
        }
        for name, operation, role, inst, pub, proof, args in rows
    ]


def _material(operation: str, args: dict[str, Any]) -> str:
    try:
        return registration_material(operation, args).hex()
    except KeyError:
        return ""


def test_the_page_refuses_exactly_the_registration_proofs_the_contract_refuses(
    site: Site, page: Any
) -> None:
    """Vectors for ``Trust.registrationProof`` (D63): "invalid" exactly where
    ``ledger.key_proofs.registration_proof_valid`` (the contracts' check) says no. The site's
    chain itself adds an operator and proposes a member with their proofs, and its blocks
    verify only if the page decodes those proofs and finds them valid."""
    cases = _registration_cases("proj-test")
    page.goto(site.url + "/")
    answers = page.evaluate(
        """async (cases) => { const out = [];
        for (const c of cases) out.push(await Trust.registrationProof(...c.args));
        const [chain, op, role, inst, pub, , material] = cases[0].args;
        out.push(await Trust.registrationProof(chain, op, role, inst, pub, null, material));
        return out; }""",
        cases,
    )
    assert answers[-1] == "invalid"  # a retired-schema registration: no proof at all
    for case, answer in zip(cases, answers, strict=False):
        assert (answer == "invalid") is not case["valid"], (case["name"], answer)
    assert [c["name"] for c in cases if c["valid"]] == [
        "operator",
        "identity",
        "governance",
        "member operator",
    ]
