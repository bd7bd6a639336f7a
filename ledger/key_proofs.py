"""Proof of possession of every key a transaction puts on chain (decisions D61, D63).

Theory of operation
-------------------
* A key registered on chain signs a domain-separated message naming where it is registered,
  so nobody can register a public key whose holder did not agree (key substitution: claiming
  someone else's key, or making it an institution's consensus or governance key).
* ``RotateKey`` (D61) carries ``new_key_proof``: the NEW key's Ed25519 signature over
  :data:`ROTATE_KEY_POP_DOMAIN` followed by :func:`rotate_key_message`, the bytes
  ``u16-BE len(chain_id) || chain_id (UTF-8) || u16-BE len(key_id) || key_id ||
  new public key (32 bytes) || old public key (32 bytes)``.
* ``AddOperator``, ``RegisterIdentity`` and ``ProposeMember`` (D63) carry one proof per key
  they register: its signature over :data:`REGISTER_KEY_POP_DOMAIN` followed by
  :func:`registration_message`, six u16-BE length-prefixed fields: chain id, operation,
  the key's role, the institution the key will belong to, the public key and the rest of
  what the transaction registers (:func:`registration_material`: the label of an identity,
  every key of a proposed member in order, nothing for an operator). A proof therefore
  serves no other chain, operation, role, institution, key or proposal.
* :func:`pop_field` is the one length-prefixed encoding both messages use. Builders
  (``*_args``: the SDK, CLI, gateway, simulator, tests and bench generators share them)
  raise :class:`~ledger.errors.InvalidEvent` on input that does not fit; the checks
  (``*_valid``) never raise: anything malformed is simply not a proof. They verify through
  the one ZIP-215 verifier (:func:`ledger.keys.verify`, D34). ``gateway/static/trust.js``
  builds the same messages in the explorer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.errors import InvalidEvent
from ledger.keys import KEY_ID_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, KeyPair, verify

ROTATE_KEY_POP_DOMAIN = b"pantheon/rotate-key-pop/v1\x00"
REGISTER_KEY_POP_DOMAIN = b"pantheon/register-key-pop/v1\x00"
_U16 = 1 << 16

#: the operations that register keys with a proof per key (D63), and the roles they give
REGISTERING = {
    "AddOperator": frozenset({"OPERATOR"}),
    "RegisterIdentity": frozenset({"SERVICE", "USER", "DEVICE"}),
    "ProposeMember": frozenset({"GOVERNANCE", "OPERATOR"}),
}


def pop_field(value: bytes, what: str = "field") -> bytes:
    """``u16-BE len(value) || value``; :class:`InvalidEvent` if it is 65536 bytes or more."""
    if len(value) >= _U16:
        raise InvalidEvent(f"{what} of {len(value)} bytes does not fit a proof of possession")
    return len(value).to_bytes(2, "big") + bytes(value)


def _public_key(value: bytes) -> bytes:
    if len(value) != PUBLIC_KEY_BYTES:
        raise InvalidEvent(f"public keys must be {PUBLIC_KEY_BYTES} bytes")
    return bytes(value)


# -- RotateKey (D61) --------------------------------------------------------------------


def rotate_key_message(
    chain_id: str, key_id: bytes, new_public_key: bytes, old_public_key: bytes
) -> bytes:
    """The bytes signed (after :data:`ROTATE_KEY_POP_DOMAIN`) by the new key of a rotation.

    Raises :class:`~ledger.errors.InvalidEvent` if a field does not fit its encoding: a chain
    id of more than 65535 bytes of UTF-8, a key id other than 32 bytes, or a public key other
    than 32 bytes.
    """
    chain = pop_field(chain_id.encode("utf-8"), "chain id")
    if len(key_id) != KEY_ID_BYTES:
        raise InvalidEvent(f"key id must be {KEY_ID_BYTES} bytes, got {len(key_id)}")
    return chain + pop_field(key_id) + _public_key(new_public_key) + _public_key(old_public_key)


def rotate_key_proof(
    new_key: KeyPair, *, chain_id: str, key_id: bytes, old_public_key: bytes
) -> bytes:
    """The ``new_key_proof`` of rotating ``key_id`` (now ``old_public_key``) to ``new_key``."""
    message = rotate_key_message(chain_id, key_id, new_key.public_key, old_public_key)
    return new_key.sign(ROTATE_KEY_POP_DOMAIN, message)


def rotate_key_args(
    new_key: KeyPair, *, chain_id: str, key_id: bytes, old_public_key: bytes
) -> dict[str, Any]:
    """The arguments of a ``RotateKey`` of ``key_id`` to ``new_key``, with its proof."""
    return {
        "key_id": bytes(key_id),
        "new_public_key": new_key.public_key,
        "new_key_proof": rotate_key_proof(
            new_key, chain_id=chain_id, key_id=key_id, old_public_key=old_public_key
        ),
    }


def rotate_key_proof_valid(
    proof: bytes,
    *,
    chain_id: str,
    key_id: bytes,
    new_public_key: bytes,
    old_public_key: bytes,
) -> bool:
    """Whether ``proof`` is the new key's signature of this rotation (ZIP-215, D34)."""
    if len(proof) != SIGNATURE_BYTES:
        return False
    try:
        message = rotate_key_message(chain_id, key_id, new_public_key, old_public_key)
    except InvalidEvent:
        return False
    return verify(new_public_key, proof, ROTATE_KEY_POP_DOMAIN, message)


# -- AddOperator, RegisterIdentity, ProposeMember (D63) -----------------------------------


def registration_material(operation: str, args: Any) -> bytes:
    """What else ``operation(args)`` registers, bound into each of its keys' proofs: the
    label (UTF-8) of an identity, the governance key then every operator key of a proposed
    member, nothing for an operator. :class:`InvalidEvent` for another operation."""
    if operation == "AddOperator":
        return b""
    if operation == "RegisterIdentity":
        return str(args["label"]).encode("utf-8")
    if operation == "ProposeMember":
        keys = [args["governance_public_key"], *args["operator_public_keys"]]
        return b"".join(_public_key(k) for k in keys)
    raise InvalidEvent(f"{operation} registers no key with a proof of possession")


def registration_message(
    *,
    chain_id: str,
    operation: str,
    role: str,
    institution_id: str,
    public_key: bytes,
    material: bytes,
) -> bytes:
    """The bytes signed (after :data:`REGISTER_KEY_POP_DOMAIN`) by a key that ``operation``
    registers with ``role`` for ``institution_id``. :class:`InvalidEvent` if the operation
    does not give that role, the key is not 32 bytes or a field is 65536 bytes or more."""
    if role not in REGISTERING.get(operation, frozenset()):
        raise InvalidEvent(f"{operation} registers no {role} key")
    return b"".join(
        (
            pop_field(chain_id.encode("utf-8"), "chain id"),
            pop_field(operation.encode("ascii")),
            pop_field(role.encode("ascii")),
            pop_field(institution_id.encode("utf-8"), "institution id"),
            pop_field(_public_key(public_key)),
            pop_field(material, "registered material"),
        )
    )


def registration_proof(
    key: KeyPair, *, chain_id: str, operation: str, role: str, institution_id: str, args: Any
) -> bytes:
    """``key``'s proof of possession as the ``role`` key that ``operation(args)`` registers."""
    message = registration_message(
        chain_id=chain_id,
        operation=operation,
        role=role,
        institution_id=institution_id,
        public_key=key.public_key,
        material=registration_material(operation, args),
    )
    return key.sign(REGISTER_KEY_POP_DOMAIN, message)


def registration_proof_valid(
    proof: Any,
    *,
    chain_id: str,
    operation: str,
    role: str,
    institution_id: str,
    public_key: bytes,
    args: Any,
) -> bool:
    """Whether ``proof`` is ``public_key``'s signature of this registration (ZIP-215, D34)."""
    if not isinstance(proof, bytes | bytearray | memoryview) or len(proof) != SIGNATURE_BYTES:
        return False
    try:
        message = registration_message(
            chain_id=chain_id,
            operation=operation,
            role=role,
            institution_id=institution_id,
            public_key=public_key,
            material=registration_material(operation, args),
        )
    except (InvalidEvent, KeyError, TypeError):
        return False
    return verify(public_key, bytes(proof), REGISTER_KEY_POP_DOMAIN, message)


def add_operator_args(key: KeyPair, *, chain_id: str, institution_id: str) -> dict[str, Any]:
    """The arguments of an ``AddOperator`` of ``key`` by ``institution_id``, with its proof."""
    args: dict[str, Any] = {"operator_public_key": key.public_key}
    args["operator_key_proof"] = registration_proof(
        key,
        chain_id=chain_id,
        operation="AddOperator",
        role="OPERATOR",
        institution_id=institution_id,
        args=args,
    )
    return args


def register_identity_args(
    key: KeyPair, *, chain_id: str, institution_id: str, kind: str, label: str
) -> dict[str, Any]:
    """The arguments of a ``RegisterIdentity`` of ``key`` (``kind``: SERVICE, USER or
    DEVICE) by ``institution_id``, with its proof."""
    args: dict[str, Any] = {"public_key": key.public_key, "kind": kind, "label": label}
    args["key_proof"] = registration_proof(
        key,
        chain_id=chain_id,
        operation="RegisterIdentity",
        role=kind,
        institution_id=institution_id,
        args=args,
    )
    return args


def propose_member_args(
    governance: KeyPair, operators: Sequence[KeyPair], *, chain_id: str, institution_id: str
) -> dict[str, Any]:
    """The arguments of a ``ProposeMember`` admitting ``institution_id`` with these keys,
    each with its proof (made by the candidate institution, which holds the keys)."""
    args: dict[str, Any] = {
        "institution_id": institution_id,
        "governance_public_key": governance.public_key,
        "operator_public_keys": [k.public_key for k in operators],
    }

    def proof(key: KeyPair, role: str) -> bytes:
        return registration_proof(
            key,
            chain_id=chain_id,
            operation="ProposeMember",
            role=role,
            institution_id=institution_id,
            args=args,
        )

    args["governance_key_proof"] = proof(governance, "GOVERNANCE")
    args["operator_key_proofs"] = [proof(k, "OPERATOR") for k in operators]
    return args


def proposal_proofs_valid(args: Any, *, chain_id: str) -> bool:
    """Whether a ``ProposeMember``'s governance key and each operator key (in order) proved
    possession; absent proofs (an envelope of a retired schema, D63) are not proofs."""
    operators = list(args["operator_public_keys"])
    proofs = list(args.get("operator_key_proofs", []))
    if len(proofs) != len(operators):
        return False
    pairs = [(args["governance_public_key"], args.get("governance_key_proof", b""), "GOVERNANCE")]
    pairs += [(k, p, "OPERATOR") for k, p in zip(operators, proofs, strict=True)]
    return all(
        registration_proof_valid(
            proof,
            chain_id=chain_id,
            operation="ProposeMember",
            role=role,
            institution_id=str(args["institution_id"]),
            public_key=key,
            args=args,
        )
        for key, proof, role in pairs
    )
