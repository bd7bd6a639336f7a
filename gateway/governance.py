"""Institution governance from the gateway: proposals and votes signed with the governance key.

Theory of operation
-------------------
* The gateway of an institution may hold that institution's governance key, read once at
  start from its keystore file (``--keystore``, the JSON ``pantheon up`` writes, mode 0600;
  a file readable by group or others is refused). Without it the governance mutations answer
  ``GOVERNANCE_KEY_MISSING``.
* :class:`Governance` signs ``ProposeMember``, ``ProposeRemoval`` and ``CastVote`` with a
  :class:`~streams.sdk.LedgerClient`, one submission at a time (one lock: the chain wants
  strictly sequential nonces), and waits for the transaction's outcome, verified from a
  quorum-certified block against the genesis (decisions D22): a forged receipt on the broker
  changes nothing. Governance is not created without ``genesis`` (it could not know an
  outcome). The receipts topic is not read at all (``pantheon audit`` reports forged ones).
* The key's next nonce comes from the chain: ``chain.keys.next_nonce`` in the institution's
  projection, read before the first submission, kept in memory afterwards (an accepted
  transaction uses its nonce up, a rejected one does not -- decisions D6). A ``BAD_NONCE``
  receipt (someone else signed with the key, or the projection lagged) resynchronizes from the
  projection once it has reached the receipt's height, and the operation is retried once.
  A timeout forgets the nonce, so the next submission reads it again.
* The outcome is ``(tx id, height, result code)``; the schema turns a rejection into a typed
  error named after the result code.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError, Unavailable
from ledger.genesis import Genesis
from ledger.keys import KeyPair
from ledger.outcomes import SetSource
from ledger.results import ResultCode
from projections import read
from projections.read import Conn, queries
from runtime.topics import DEFAULT_PREFIX
from streams.sdk import LedgerClient, Receipt, ReceiptTimeout, SdkError

log = logging.getLogger("pantheon.gateway")


class KeystoreRefused(ValueError):
    """The keystore file is missing, malformed, of another institution or readable by others."""


class GovernanceKeyMissing(GatewayError):
    """This gateway was started without ``--keystore``."""

    code = "GOVERNANCE_KEY_MISSING"
    status = 503


class GovernanceKeyUnknown(GatewayError):
    """The chain does not know the keystore's governance key (or it is not active)."""

    code = "GOVERNANCE_KEY_UNKNOWN"
    status = 503


class WrongChain(GatewayError):
    code = "WRONG_CHAIN"


class GovernanceTimeout(GatewayError):
    """No receipt in time; the transaction may still be applied later."""

    code = "TIMEOUT"
    status = 504


@dataclass(frozen=True, slots=True, kw_only=True)
class GovernanceKey:
    """The governance key of one institution, from its keystore."""

    institution: str
    chain_id: str
    key: KeyPair


def load_governance_key(path: Path) -> GovernanceKey:
    """The governance key in an institution keystore; :class:`KeystoreRefused` otherwise."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeystoreRefused(f"cannot read the keystore {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise KeystoreRefused(f"{path} is readable by others (mode {mode & 0o777:o}); chmod 600 it")
    try:
        record = json.loads(path.read_text())
        governance = record["governance"]
        key = KeyPair.from_seed(bytes.fromhex(governance["seed"]))
        institution, chain_id = str(record["institution_id"]), str(record["chain_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeystoreRefused(f"{path} is not an institution keystore ({exc})") from None
    if governance.get("key_id") not in (None, key.key_id.hex()):
        raise KeystoreRefused(f"{path}: the governance key_id does not match its seed")
    return GovernanceKey(institution=institution, chain_id=chain_id, key=key)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What became of a governance transaction."""

    tx_id: bytes
    nonce: int
    height: int
    code: ResultCode

    @property
    def accepted(self) -> bool:
        return self.code.accepted


ClientFactory = Callable[[KeyPair, str], LedgerClient]


class Governance:
    """Signs and submits one institution's governance transactions, one at a time."""

    def __init__(
        self,
        key: GovernanceKey,
        *,
        bootstrap: str,
        prefix: str = DEFAULT_PREFIX,
        receipt_timeout_s: float = 30.0,
        projection_timeout_s: float = 15.0,
        client_factory: ClientFactory | None = None,
        genesis: Genesis | None = None,
        validator_sets: SetSource | None = None,
    ) -> None:
        if client_factory is None and genesis is None:
            raise ValueError("governance needs the genesis to verify outcomes (D22)")
        self.key = key
        self.institution = key.institution
        self.receipt_timeout_s = receipt_timeout_s
        self.projection_timeout_s = projection_timeout_s
        self._factory = client_factory or (
            lambda pair, chain_id: LedgerClient(
                bootstrap,
                pair,
                chain_id,
                prefix=prefix,
                genesis=genesis,
                validator_sets=validator_sets,
            )
        )
        self._client: LedgerClient | None = None
        self._nonce: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_keystore(
        cls, path: Path, *, institution: str, bootstrap: str, **options: Any
    ) -> Governance:
        """Load ``path``; refuse a keystore of another institution."""
        key = load_governance_key(path)
        if key.institution != institution:
            raise KeystoreRefused(f"{path} belongs to {key.institution}, not {institution}")
        return cls(key, bootstrap=bootstrap, **options)

    # -- operations -------------------------------------------------------------------
    def propose_member(
        self,
        conn: Conn,
        institution_id: str,
        governance_public_key: bytes,
        operator_public_keys: Sequence[bytes],
        *,
        governance_key_proof: bytes,
        operator_key_proofs: Sequence[bytes],
    ) -> Outcome:
        """Propose admitting ``institution_id`` with these keys, each with the proof of
        possession the candidate made with it (``pantheon keys prove-member``, D63)."""
        args = {
            "institution_id": institution_id,
            "governance_public_key": governance_public_key,
            "operator_public_keys": list(operator_public_keys),
            "governance_key_proof": governance_key_proof,
            "operator_key_proofs": list(operator_key_proofs),
        }
        return self.submit(conn, "ProposeMember", args)

    def propose_removal(self, conn: Conn, institution_id: str, reason: str = "") -> Outcome:
        args = {"institution_id": institution_id, "reason": reason}
        return self.submit(conn, "ProposeRemoval", args)

    def cast_vote(self, conn: Conn, proposal_id: bytes, approve: bool) -> Outcome:
        return self.submit(conn, "CastVote", {"proposal_id": proposal_id, "approve": approve})

    # -- submitting -------------------------------------------------------------------
    def submit(self, conn: Conn, operation: str, args: Mapping[str, Any]) -> Outcome:
        """Sign ``operation(args)`` with the next nonce, submit it, wait for its receipt."""
        with self._lock:
            if self._nonce is None:
                self._nonce = self._chain_nonce(conn, 0)
            outcome = self._attempt(operation, args)
            if outcome.code is ResultCode.BAD_NONCE:
                log.warning(
                    "governance nonce out of sync; reading it from the chain",
                    extra={"nonce": outcome.nonce, "height": outcome.height},
                )
                self._nonce = self._chain_nonce(conn, outcome.height)
                outcome = self._attempt(operation, args)
                if outcome.code is ResultCode.BAD_NONCE:
                    self._nonce = None
            if outcome.accepted:
                self._nonce = outcome.nonce + 1
            return outcome

    def _attempt(self, operation: str, args: Mapping[str, Any]) -> Outcome:
        assert self._nonce is not None
        nonce = self._nonce
        client = self._ledger()
        client.reset_nonce(nonce)
        try:
            tx_id = client.submit(operation, args)
            client.flush(self.receipt_timeout_s)
        except SdkError as exc:
            self._nonce = None
            log.warning("governance submit failed", extra={"error": str(exc)})
            raise Unavailable("the ledger's broker did not take the transaction") from None
        try:
            receipt: Receipt = client.wait_receipt(tx_id, self.receipt_timeout_s)
        except ReceiptTimeout:
            self._nonce = None
            raise GovernanceTimeout(
                f"no receipt within {self.receipt_timeout_s:g}s; it may still be applied",
                txId=tx_id.hex(),
            ) from None
        except SdkError as exc:
            self._nonce = None
            log.warning("receipt watcher failed", extra={"error": str(exc)})
            raise Unavailable("cannot read the ledger's receipts") from None
        return Outcome(tx_id=tx_id, nonce=nonce, height=receipt.height, code=receipt.code)

    def _ledger(self) -> LedgerClient:
        if self._client is None:
            self._client = self._factory(self.key.key, self.key.chain_id)
        return self._client

    def _chain_nonce(self, conn: Conn, min_height: int) -> int:
        """``next_nonce`` of the key once the projection has reached ``min_height``
        (at least the genesis)."""
        deadline = time.monotonic() + self.projection_timeout_s
        while (height := queries.chain_height(conn)) is None or height < min_height:
            if time.monotonic() > deadline:
                raise Unavailable(f"the chain projection has not reached height {min_height}")
            time.sleep(0.05)
        summary = read.summary(conn)
        if summary is not None and summary.chain_id != self.key.chain_id:
            raise WrongChain(
                f"the keystore is for chain {self.key.chain_id}, "
                f"this gateway serves {summary.chain_id}"
            )
        record = queries.key_by_id(conn, self.key.key.key_id)
        if record is None or record.role != "GOVERNANCE" or not record.active:
            raise GovernanceKeyUnknown(
                f"the chain has no active governance key {self.key.key.key_id.hex()}"
            )
        return record.next_nonce

    def close(self) -> None:
        """Flush and release the producer and the receipt watcher."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except SdkError as exc:
                log.warning("closing the governance client", extra={"error": str(exc)})
