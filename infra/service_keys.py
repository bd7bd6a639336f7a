"""Registering a local institution's SERVICE keys (batcher, IAM) on chain.

A key is registered once with ``RegisterIdentity``, signed by the institution's governance
key, after the genesis has been projected; the call returns when the key is projected too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from infra import kafka_acl, procs
from infra.errors import StackError
from infra.keystore import load_genesis
from infra.postgres_server import Postgres
from infra.settings import Settings
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from ledger.results import ResultCode
from projections import read
from projections.projector import database_name
from runtime.kafka_config import use_credentials
from streams.sdk import LedgerClient


def register_service_key(
    settings: Settings,
    consortium_home: Path,
    institution: str,
    *,
    service: KeyPair,
    label: str,
    postgres: Postgres,
) -> None:
    """Register ``service`` as a SERVICE key labelled ``label`` of ``institution`` (whose
    keystore and genesis are under ``consortium_home``), unless its projection holds it."""
    doc = json.loads((consortium_home / "keys" / f"{institution}.json").read_text())
    governance = KeyPair.from_seed(bytes.fromhex(doc["governance"]["seed"]))
    dsn = postgres.dsn(database_name(institution))

    def row(key_id: bytes) -> tuple[Any, ...] | None:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return conn.execute(
                "SELECT active, next_nonce FROM chain.keys WHERE key_id = %s", (key_id,)
            ).fetchone()

    if row(service.key_id) is not None:
        return
    procs.wait_until(
        lambda: row(governance.key_id) is not None,
        timeout=60,
        what=f"the genesis of {institution} to be projected",
    )
    gov_row = row(governance.key_id)
    assert gov_row is not None
    with (
        use_credentials(
            kafka_acl.credentials(settings, kafka_acl.institution_principal(institution))
        ),
        LedgerClient(
            settings.bootstrap_servers,
            governance,
            doc["chain_id"],
            prefix=settings.topic_prefix,
            next_nonce=int(gov_row[1]),
            genesis=load_genesis(consortium_home / "genesis.avro"),
            validator_sets=read.validator_set_source(dsn),
        ) as client,
    ):
        receipt = client.submit_and_wait(
            "RegisterIdentity",
            register_identity_args(
                service,
                chain_id=doc["chain_id"],
                institution_id=institution,
                kind="SERVICE",
                label=label,
            ),
            timeout=60,
        )
    if receipt.code not in (ResultCode.OK, ResultCode.ALREADY_EXISTS):
        raise StackError(f"registering the {label} key of {institution}: {receipt.code.name}")
    procs.wait_until(
        lambda: row(service.key_id) is not None,
        timeout=60,
        what=f"the {label} key of {institution} to be projected",
    )
