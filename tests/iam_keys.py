"""IAM signing for tests run without a ledger: one pinned IAM key per institution (D21).

Production processes believe only keys the certified chain names
(:class:`projections.iam_certified.CertifiedSigners`); a test without a chain pins its IAM
key instead, on both sides: the service signs with it at height 0, the projection trusts it
from height 0.
"""

from __future__ import annotations

import hashlib
import time

from gateway.iam.signing import IamSigner, KeyNotActive, chain_key_height
from harness.consortium import Consortium
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from projections.iam import PinnedSigners


def iam_key(institution: str) -> KeyPair:
    """A deterministic IAM key of ``institution`` (tests only)."""
    return KeyPair.from_seed(hashlib.sha256(f"test-iam-key:{institution}".encode()).digest())


def pinned_signer(institution: str) -> IamSigner:
    """The service side: signs with :func:`iam_key` at key height 0."""
    return IamSigner(iam_key(institution), lambda: 0)


def pinned_signers(institution: str) -> PinnedSigners:
    """The projection side: trusts :func:`iam_key` of ``institution`` from height 0."""
    return PinnedSigners(institution, [iam_key(institution).public_key])


def register_on_chain(
    consortium: Consortium, dsn: str, institution: str, timeout: float = 60.0
) -> IamSigner:
    """The production path on a real consortium: ``institution``'s governance key registers
    :func:`iam_key` as a SERVICE identity (its next nonce as the harness tracks it), and the
    signer waits until the chain projection at ``dsn`` holds it; the IAM projection of that
    database then believes it through its signer policy."""
    key = iam_key(institution)
    gov = consortium.gov_key(institution)
    consortium.send(
        [
            consortium.tx(
                gov,
                "RegisterIdentity",
                register_identity_args(
                    key,
                    chain_id=consortium.chain_id,
                    institution_id=institution,
                    kind="SERVICE",
                    label="iam",
                ),
            )
        ],
        key=gov.key_id,
    )
    height = chain_key_height(dsn, institution, key.key_id)
    deadline = time.monotonic() + timeout
    while True:
        try:
            height()
            return IamSigner(key, height)
        except KeyNotActive:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
