"""Which GraphQL fields PostgreSQL can answer as JSON, and with what SQL (decision D59).

Each entry maps ``(GraphQL type, field)`` to how :mod:`gateway.sql_json` renders it:

* :class:`Leaf`: a SQL expression over the row alias ``{a}`` whose JSON value is exactly what
  the field's resolver and ``serialize`` give (hex of bytes, result-code names, ISO times,
  ``Int`` fields cast to ``int4`` so a value out of GraphQL's range fails the statement and
  the operation falls back, as the Python path does).
* :class:`Same`: an object built from the same row (a transaction's receipt, a block's
  certificate).
* :class:`One` / :class:`Many` / :class:`Page`: a row, a list or a Relay connection page
  read by a correlated subquery; ``{a}`` is the parent row, ``{x}`` the row read, ``{p}``
  the prefix of this node's parameters. ``params`` turns the field's coerced GraphQL
  arguments into (variant, SQL parameters) with the same checks and defaults as the
  resolver (a bad argument raises, so the operation falls back and graphene reports it).

A field that is not listed (a block's ``leaves``, institutions, proposals, anchors, assets,
Layer 2, the fields of ``me``) keeps its root field on the Python plan. A ``Leaf`` with
``finish`` (D65) is read as what the resolver computes from and finished by the resolver's
own Python after the statement: ``recentTps`` (a rounded float, which SQL does not reproduce
exactly) from the aggregates the resolver reads, ``arguments`` from the envelope's bytes
(Avro, decoded as the resolver decodes it), ``timestampMs`` by ``Float.serialize``.
The gateway checks no certificate on this path: it serves rows as stored, and the explorer
verifies them (D39, D49), so a row built by PostgreSQL is what the Python path would have
served.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.context import decode_cursor, hex_bytes
from gateway.envelopes import decoded_arguments
from gateway.errors import GatewayError
from gateway.state_types import recent_tps
from ledger.results import ResultCode
from projections.read.model import BIG
from projections.read.queries import RECENT_BLOCKS, throughput_of

Params = Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Leaf:
    """``expr`` is the field's JSON value; with ``finish``, it is the input of that function,
    whose result the field's own ``serialize`` turns into the value (for what only Python
    computes exactly, such as a rounded float). ``memo``: ``finish`` depends on nothing but
    the raw value, which is the row's own bytes, so its result may be kept by that value
    (:mod:`gateway.sql_finish`, D68)."""

    expr: str
    finish: Callable[[Any], Any] | None = None
    memo: bool = False


@dataclass(frozen=True, slots=True)
class Same:
    type_name: str


@dataclass(frozen=True, slots=True)
class One:
    type_name: str
    table: str
    where: Mapping[str, str]  # by variant
    order: str = ""
    params: Params | None = None


@dataclass(frozen=True, slots=True)
class Many:
    """A list of objects of ``type_name`` (or of ``element``, a scalar expression over x)."""

    type_name: str | None
    table: str
    where: Mapping[str, str]
    order: str
    params: Params
    element: str = ""


@dataclass(frozen=True, slots=True)
class Page:
    """A Relay connection: ``limit`` rows are read (one more than the page) and
    ``first`` become edges; ``cursor`` is the SQL of an edge's cursor."""

    type_name: str
    table: str
    where: Mapping[str, str]
    order: str
    cursor: str
    params: Params = field(repr=False, default=lambda _a: ("", {}))


Spec = Leaf | Same | One | Many | Page

_ONE = {"": "TRUE"}


def hexed(column: str) -> Leaf:
    return Leaf(f"encode({{a}}.{column}, 'hex')")


def int4(column: str) -> Leaf:
    return Leaf(f"{{a}}.{column}::int4")


def plain(column: str) -> Leaf:
    return Leaf(f"{{a}}.{column}")


def _code_case() -> str:
    arms = " ".join(f"WHEN {c.value} THEN '{c.name}'" for c in ResultCode)
    return f"CASE {{a}}.result_code {arms} ELSE {{a}}.result_code::text END"


def cursor_sql(kind: str, *columns: str) -> str:
    """SQL of :func:`gateway.context.encode_cursor` (base64url without padding)."""
    text = " || ':' || ".join([f"'{kind}'", *(f"{{x}}.{c}::text" for c in columns)])
    return f"rtrim(translate(encode(convert_to({text}, 'UTF8'), 'base64'), '+/', '-_'), '=')"


def _as_read(raw: Any) -> Any:
    """The value as PostgreSQL gave it (the field's ``serialize`` still runs after)."""
    return raw


def _arguments(raw: str) -> dict[str, Any] | None:
    """``arguments`` from the envelope's hex, decoded as the resolver decodes it."""
    return decoded_arguments(bytes.fromhex(raw))


def _recent_tps(raw: list[Any]) -> float:
    """``recentTps`` from the aggregates the SQL reads, by the resolver's own arithmetic."""
    return recent_tps(throughput_of(*raw))


_RECENT = (
    "(SELECT json_build_array(count(*), coalesce(sum(r.tx_count), 0), min(r.timestamp_ms), "
    "max(r.timestamp_ms)) FROM (SELECT tx_count, timestamp_ms FROM chain.blocks "
    f"ORDER BY height DESC LIMIT {RECENT_BLOCKS}) r)"
)


# The resolver writes ``datetime.fromtimestamp(ms / 1000, UTC)``: exact while the float
# ms / 1000 is finer than a microsecond, |ms / 1000| < 2^33 s (years 1698 to 2242). Beyond,
# the cast of a non-number fails the statement and graphene answers (as for int4 overflow).
_ISO_TIME = (
    "CASE WHEN abs({a}.timestamp_ms) < 8589934592000 THEN to_char(timestamp '1970-01-01' + "
    "{a}.timestamp_ms * interval '1 millisecond', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"+00:00\"') "
    "ELSE ('beyond exact times: ' || {a}.timestamp_ms)::int4::text END"
)


def _page_size(args: Mapping[str, Any]) -> dict[str, Any]:
    first = int(args["first"])
    return {"limit": first + 1, "first": max(first, 0)}


def _after_height(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    before = decode_cursor(args.get("after"), "b", 1)
    return "", {**_page_size(args), "h": BIG if before is None else before[0]}


def _newest_tx(args: Mapping[str, Any]) -> dict[str, Any]:
    before = decode_cursor(args.get("after"), "t", 2)
    h, p = before if before is not None else (BIG, 0)
    return {**_page_size(args), "h": h, "pos": p}


def _root_transactions(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    sender = args.get("sender")
    if sender is None:
        return "all", _newest_tx(args)
    return "sender", {**_newest_tx(args), "sender": hex_bytes(sender, "sender")}


def _block_entries(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    start = decode_cursor(args.get("after"), "p", 2)
    return "", {**_page_size(args), "pos": -1 if start is None else start[1]}


def _block_lookup(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if args.get("height") is not None:
        return "height", {"height": args["height"]}
    if args.get("hash") is not None:
        return "hash", {"hash": hex_bytes(args["hash"], "hash")}
    raise GatewayError("give the block's height or hash")


def _by_key(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    return "", {"key": hex_bytes(args["key_id"], "keyId")}


def _by_tx_id(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    return "", {"id": hex_bytes(args["id"], "id")}


def _identities(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    found = {"inst": args["institution"], "limit": args["first"], "after": b""}
    role = args.get("role")
    return ("all", found) if role is None else ("role", {**found, "role": role})


def _devices(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    return "role", {
        "inst": args["institution"],
        "limit": args["first"],
        "after": b"",
        "role": "DEVICE",
    }


def _limit(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    return "", {"limit": args["first"]}


_NEWEST = "({x}.height, {x}.position) < (%({p}h)s, %({p}pos)s)"
_NEWEST_ORDER = "{x}.height DESC, {x}.position DESC"
_TX_CURSOR = cursor_sql("t", "height", "position")
_KEYS_WHERE = "{x}.institution_id = %({p}inst)s AND {x}.key_id > %({p}after)s"
_KEYS = {
    "all": _KEYS_WHERE,
    "role": _KEYS_WHERE + " AND {x}.role = %({p}role)s",
}

FIELDS: dict[str, dict[str, Spec]] = {
    "Query": {
        "summary": One("ChainSummary", "chain.meta", _ONE),
        "blocks": Page(
            "Block",
            "chain.blocks",
            {"": "{x}.height < %({p}h)s"},
            "{x}.height DESC",
            cursor_sql("b", "height"),
            _after_height,
        ),
        "block": One(
            "Block",
            "chain.blocks",
            {"height": "{x}.height = %({p}height)s", "hash": "{x}.hash = %({p}hash)s"},
            params=_block_lookup,
        ),
        "transactions": Page(
            "Transaction",
            "chain.transactions",
            {"all": _NEWEST, "sender": "{x}.sender = %({p}sender)s AND " + _NEWEST},
            _NEWEST_ORDER,
            _TX_CURSOR,
            _root_transactions,
        ),
        "transaction": One(
            "Transaction",
            "chain.transactions",
            {"": "{x}.tx_id = %({p}id)s"},
            "({x}.result_code <> 0), {x}.height, {x}.position",
            _by_tx_id,
        ),
        "identity": One("Identity", "chain.keys", {"": "{x}.key_id = %({p}key)s"}, params=_by_key),
        "identities": Many("Identity", "chain.keys", _KEYS, "{x}.role, {x}.key_id", _identities),
        "devices": Many("Identity", "chain.keys", _KEYS, "{x}.key_id", _devices),
    },
    "Block": {
        "height": int4("height"),
        "hash": hexed("hash"),
        "prevHash": hexed("prev_hash"),
        "firstOffset": plain("first_offset"),
        "lastOffset": plain("last_offset"),
        "txRoot": hexed("tx_root"),
        "stateRoot": hexed("state_root"),
        "validatorSetHash": hexed("validator_set_hash"),
        "timestamp": Leaf(_ISO_TIME),
        "timestampMs": Leaf("{a}.timestamp_ms", finish=_as_read),  # Float.serialize: float
        "txCount": int4("tx_count"),
        "okCount": int4("ok_count"),
        "certificate": Same("QuorumCertificate"),
        "transactions": Page(
            "Transaction",
            "chain.transactions",
            {"": "{x}.height = {a}.height AND {x}.position > %({p}pos)s"},
            "{x}.position",
            cursor_sql("p", "height", "position"),
            _block_entries,
        ),
    },
    "ChainSummary": {
        "chainId": plain("chain_id"),
        "height": int4("height"),
        "finalHeight": int4("height"),
        "lastHash": hexed("last_hash"),
        "txCount": plain("tx_count"),
        "okCount": plain("ok_count"),
        "institutionCount": Leaf(
            "(SELECT count(*) FROM chain.institutions WHERE status = 'ACTIVE')::int4"
        ),
        "recentTps": Leaf(_RECENT, finish=_recent_tps),
    },
    "QuorumCertificate": {
        "height": int4("height"),
        "blockHash": hexed("hash"),
        "encoded": hexed("certificate"),
        "votes": Many(
            "CertificateVote",
            "chain.block_votes",
            {"": "{x}.height = {a}.height"},
            "{x}.position",
            lambda _args: ("", {"limit": None}),  # every vote: LIMIT NULL
        ),
    },
    "CertificateVote": {
        "position": int4("position"),
        "institutionId": plain("institution_id"),
        "operatorKeyId": hexed("operator_key_id"),
        "publicKey": hexed("public_key"),
        "signature": hexed("signature"),
    },
    "Transaction": {
        "txId": hexed("tx_id"),
        "height": int4("height"),
        "position": int4("position"),
        "offset": plain("tx_offset"),
        "result": Leaf(_code_case()),
        "ok": Leaf("({a}.result_code = 0)"),
        "sender": hexed("sender"),
        "nonce": plain("nonce"),
        "operation": plain("operation"),
        "resultCode": int4("result_code"),
        "envelope": hexed("envelope"),
        "arguments": Leaf("encode({a}.envelope, 'hex')", finish=_arguments, memo=True),
        "receipt": Same("Receipt"),
        "block": One("Block", "chain.blocks", {"": "{x}.height = {a}.height"}),
        "senderIdentity": One("Identity", "chain.keys", {"": "{x}.key_id = {a}.sender"}),
    },
    "Receipt": {
        "code": Leaf(_code_case()),
        "ok": Leaf("({a}.result_code = 0)"),
        "height": int4("height"),
        "position": int4("position"),
        "blockHash": Leaf(
            "(SELECT encode(rb.hash, 'hex') FROM chain.blocks rb WHERE rb.height = {a}.height)"
        ),
    },
    "Identity": {
        "keyId": hexed("key_id"),
        "publicKey": hexed("public_key"),
        "role": plain("role"),
        "institutionId": plain("institution_id"),
        "label": plain("label"),
        "active": plain("active"),
        "nextNonce": plain("next_nonce"),
        "transactions": Page(
            "Transaction",
            "chain.transactions",
            {"": "{x}.sender = {a}.key_id AND " + _NEWEST},
            _NEWEST_ORDER,
            _TX_CURSOR,
            lambda args: ("", _newest_tx(args)),
        ),
        "assets": Many(
            None,
            "chain.assets",
            {"": "{x}.owner_key_id = {a}.key_id AND {x}.asset_id > ''"},
            "{x}.asset_id",
            _limit,
            element="{x}.asset_id",
        ),
    },
}
