"""IAM signing for tests run without a ledger: one pinned IAM key per institution (D21).

Production processes believe only keys the certified chain names
(:class:`projections.iam.ChainSigners`); a test that has no chain pins its institution's IAM
key instead, on both sides: the service signs with it at height 0, the projection trusts it
from height 0.
"""

from __future__ import annotations

import hashlib

from gateway.iam.signing import IamSigner
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
