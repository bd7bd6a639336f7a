"""Hypothesis over every parser that takes hostile input: the Avro decoder, the transaction
validator, Layer-2 proof verification, JWT verification and the GraphQL endpoint.

Each target may only refuse input with its documented error type (``CodecError``,
``TxRejected``, ``ProofError``, ``TokenError``, a 4xx JSON answer); anything else is a bug.
Inputs are random bytes and, more usefully, single and multiple mutations of valid inputs
(bit flips, truncation, extension, splices), so the checks go past the first length prefix.

``PANTHEON_FUZZ_EXAMPLES`` is the number of examples *per target* (default 300 in CI; the
long run uses e.g. 200000 for 1,000,000 inputs over the five targets). A run prints how many
inputs each target saw and how it answered them.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.auth.tokens import TokenError
from harness.gateway_support import ALL, ChainFixture, Tokens
from ledger.errors import ProofError
from ledger.keys import KeyPair
from ledger.l2 import RECORD_KIND
from ledger.proofs import RecordProof, edited, flat_field, flat_field_names, verify_record_proof
from ledger.tx import TxRejected, parse_tx, sign_tx
from runtime.kafka_config import consumer_config
from schemas.codec import decode, encode
from schemas.errors import CodecError
from tests.unit.test_proofs import _chain_proof

pytestmark = pytest.mark.faults

EXAMPLES = int(os.environ.get("PANTHEON_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
SEEN: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    started = time.monotonic()
    yield
    total = sum(v for k, v in SEEN.items() if k.endswith(":inputs"))
    print(
        f"\nfuzz: {total} inputs in {time.monotonic() - started:.1f}s, "
        f"{EXAMPLES} per target: {dict(sorted(SEEN.items()))}"
    )


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """Bytes near ``seed``: flips, truncations, extensions, splices, or unrelated bytes."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "set", "cut", "grow", "splice", "insert"]))
            if kind in ("flip", "set") and data:
                i = draw(st.integers(0, len(data) - 1))
                data[i] = (
                    data[i] ^ (1 << draw(st.integers(0, 7)))
                    if kind == "flip"
                    else draw(st.integers(0, 255))
                )
            elif kind == "cut" and data:
                data = data[: draw(st.integers(0, len(data) - 1))]
            elif kind == "grow":
                data += draw(st.binary(min_size=1, max_size=64))
            elif kind == "splice" and data:
                i = draw(st.integers(0, len(data)))
                j = draw(st.integers(i, min(len(data), i + 16)))
                data[i:j] = draw(st.binary(max_size=16))
            elif kind == "insert":
                i = draw(st.integers(0, len(data)))
                varint = draw(st.sampled_from([b"\xff\xff\xff\xff\x0f", b"\x01", b"\x80\x00"]))
                data[i:i] = varint
        return bytes(data)

    return st.one_of(mutate(), st.binary(max_size=len(seed) + 32))


# -- the Avro decoder -----------------------------------------------------------------------

SIGNER = KeyPair.from_seed(bytes(range(32)))
ENVELOPE = sign_tx(
    SIGNER,
    chain_id="fuzz",
    nonce=7,
    operation="AnchorData",
    args={"data_id": "d", "sha256": bytes(32), "metadata": "{}"},
)


@FUZZ
@given(mutations(ENVELOPE))
def test_decoder_refuses_only_with_codec_error(data: bytes) -> None:
    SEEN["decoder:inputs"] += 1
    try:
        name, record = decode(data)
    except CodecError as exc:
        SEEN[f"decoder:{exc.reason}"] += 1
        return
    SEEN["decoder:decoded"] += 1
    # what decodes is canonical: encoding it again gives the same bytes
    assert encode(name.removeprefix("pantheon."), record) == data


# -- the transaction validator ----------------------------------------------------------------


@FUZZ
@given(mutations(ENVELOPE))
def test_transaction_validator_refuses_only_with_a_result_code(data: bytes) -> None:
    SEEN["tx:inputs"] += 1
    try:
        tx = parse_tx(data)
    except TxRejected as exc:
        SEEN[f"tx:{exc.code.name}"] += 1
        return
    # only the genuine envelope authenticates: a mutation never passes as signed
    SEEN["tx:accepted"] += 1
    assert data == ENVELOPE and tx.sender == SIGNER.key_id


# -- proof verification ----------------------------------------------------------------------

PROOF, GENESIS = _chain_proof(RECORD_KIND)
BYTES_FIELDS = [
    name for name in flat_field_names(RecordProof) if isinstance(flat_field(PROOF, name), bytes)
]


@st.composite
def tampered_proofs(draw: st.DrawFn) -> RecordProof | dict[str, Any]:
    """A proof with mutated bytes fields and integers, or a mutated JSON document."""
    if draw(st.booleans()):
        doc: dict[str, Any] = json.loads(json.dumps(PROOF.to_json()))
        section = draw(st.sampled_from(["", "batch", "transaction", "block"]))
        target = doc if not section else doc[section]
        name = draw(st.sampled_from(sorted(target)))
        target[name] = draw(
            st.one_of(
                st.none(),
                st.integers(-(2**70), 2**70),
                st.text(max_size=20),
                st.lists(st.text(max_size=70), max_size=3),
                st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
            )
        )
        return doc
    changes: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(BYTES_FIELDS), min_size=1, max_size=3)):
        changes[name] = draw(mutations(flat_field(PROOF, name)))
    for name in draw(
        st.lists(
            st.sampled_from(["leaf_index", "leaf_count", "tx_index", "tx_count", "tx_offset"]),
            max_size=2,
        )
    ):
        changes[name] = draw(st.integers(-(2**63), 2**63))
    if draw(st.booleans()):
        changes["audit_path"] = tuple(draw(st.lists(st.binary(max_size=40), max_size=5)))
    return edited(PROOF, **changes)


def test_the_untampered_proof_verifies() -> None:
    assert verify_record_proof(PROOF, GENESIS).sequence == PROOF.sequence


@FUZZ
@given(tampered_proofs())
def test_proof_verification_refuses_only_with_proof_error(
    case: RecordProof | dict[str, Any],
) -> None:
    SEEN["proof:inputs"] += 1
    try:
        proof = RecordProof.from_json(case) if isinstance(case, dict) else case
        verified = verify_record_proof(proof, GENESIS)
    except ProofError:
        SEEN["proof:refused"] += 1
        return
    # a proof that still verifies proves the same reading (only no-op changes pass)
    SEEN["proof:accepted"] += 1
    assert (verified.device_key_id, verified.sequence) == (SIGNER_DEVICE, PROOF.sequence)
    assert verified.block_hash == PROOF.inclusion.header.hash()


SIGNER_DEVICE = verify_record_proof(PROOF, GENESIS).device_key_id


# -- JWT verification --------------------------------------------------------------------------

TOKENS = Tokens()
GOOD_TOKEN = TOKENS.token()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def hostile_tokens(draw: st.DrawFn) -> str:
    """Mutated real tokens, tokens with hostile JSON headers/payloads, or any text."""
    head, payload, sig = GOOD_TOKEN.split(".")
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(mutations(GOOD_TOKEN.encode())).decode("latin-1")
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=8,
    )
    if choice == 1:
        header = {"alg": draw(st.sampled_from(["EdDSA", "none", "HS256", "RS256", ""]))}
        header.update(
            draw(
                st.dictionaries(
                    st.sampled_from(["kid", "typ", "crit", "jku"]), json_values, max_size=3
                )
            )
        )
        return f"{_b64(json.dumps(header).encode())}.{payload}.{sig}"
    if choice == 2:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        for name in draw(st.lists(st.sampled_from(sorted(claims)), min_size=1, max_size=3)):
            claims[name] = draw(json_values)
        return f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"
    return draw(st.text(max_size=200))


@FUZZ
@given(hostile_tokens())
def test_jwt_verification_refuses_only_with_token_error(token: str) -> None:
    SEEN["jwt:inputs"] += 1
    try:
        claims = TOKENS.verifier.verify(token)
    except TokenError as exc:
        SEEN[f"jwt:{type(exc).__name__}"] += 1
        return
    SEEN["jwt:accepted"] += 1
    assert token == GOOD_TOKEN and claims.sub == "u-test"


# -- the GraphQL endpoint, in process ------------------------------------------------------------

FIELDS = [
    "summary { height }",
    "blocks(first: 2) { edges { node { height hash } } }",
    "me { sub }",
    "transaction(id: $s) { txId }",
    "block(height: $i) { hash }",
    "transactions(first: $i, sender: $s) { edges { cursor } }",
    "identity(keyId: $s) { label }",
    "dataObject(id: $s) { id }",
]
INJECTIONS = [
    "' OR 1=1 --",
    "'; DROP TABLE chain.blocks; --",
    '" OR ""="',
    "1; SELECT pg_sleep(5)",
    "%' AND 1=0 UNION SELECT * FROM iam_users --",
    "\x00",
    "00" * 40,
    "../../etc/passwd",
]


SUBMIT = "mutation($e: String!) { submitTransaction(envelope: $e) { txId error { code } } }"


@st.composite
def graphql_requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A query from known fields and mutations with hostile variables, or mangled text."""
    values = st.one_of(
        st.sampled_from(INJECTIONS),
        st.text(max_size=40),
        st.integers(-(2**64), 2**64),
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False),  # JSON has no NaN
        st.lists(st.integers(), max_size=3),
    )
    variables = {"s": draw(values), "i": draw(values)}
    if draw(st.integers(0, 4)) == 0:
        as_text = mutations(ENVELOPE).map(lambda b: base64.b64encode(b).decode())
        envelope = draw(st.one_of(st.sampled_from(INJECTIONS), st.text(max_size=60), as_text))
        return SUBMIT, {"e": envelope}
    body = " ".join(draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)))
    query = f"query($s: String, $i: Int) {{ {body} }}"
    if draw(st.booleans()):
        raw = draw(mutations(query.encode()))
        query = raw.decode("utf-8", errors="replace")
    return query, variables


def _tx_end(bootstrap: str, topic: str) -> int:
    consumer = Consumer(consumer_config(bootstrap, "fuzz-watermarks"))
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def _table_counts(chain: ChainFixture) -> tuple[int, ...]:
    with chain.pool.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM chain.blocks), (SELECT count(*) FROM chain.transactions)"
        ).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)


@pytest.mark.integration
def test_graphql_endpoint_answers_hostile_requests_without_errors_or_writes(
    chain: ChainFixture, bootstrap: str
) -> None:
    token = chain.tokens.token(ALL)
    headers = {"Authorization": f"Bearer {token}"}
    tx_topic = f"{chain.sim.prefix}tx"
    deadline = time.monotonic() + 30  # the projection's height moves before its commit
    while _table_counts(chain)[0] < chain.height and time.monotonic() < deadline:
        time.sleep(0.05)
    before = (_tx_end(bootstrap, tx_topic), _table_counts(chain))
    with TestClient(chain.app(), raise_server_exceptions=False) as client:

        @FUZZ
        @given(graphql_requests())
        def run(request: tuple[str, dict[str, Any]]) -> None:
            query, variables = request
            SEEN["graphql:inputs"] += 1
            r = client.post(
                "/graphql", json={"query": query, "variables": variables}, headers=headers
            )
            SEEN[f"graphql:{r.status_code}"] += 1
            assert r.status_code in (200, 400, 413), (r.status_code, r.text[:500], request)
            body = r.json()
            assert "Traceback" not in r.text and "psycopg" not in r.text, r.text[:500]
            assert "data" in body or "errors" in body
            if query.startswith("mutation"):
                # a fuzzed envelope is refused with a typed error (the genuine one, signed
                # for another chain, too): nothing reaches the log
                payload = (body.get("data") or {}).get("submitTransaction")
                assert body.get("errors") or payload is not None, body
                if payload is not None:
                    assert payload["txId"] is None and payload["error"], body
                    SEEN[f"graphql:submit:{payload['error']['code']}"] += 1

        run()
    time.sleep(0.5)
    assert (_tx_end(bootstrap, tx_topic), _table_counts(chain)) == before
