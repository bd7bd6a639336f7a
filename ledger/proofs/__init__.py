"""Offline-verifiable proofs (pure): each kind is its leaf part plus one shared
transaction-inclusion part (D44, D45).

- :mod:`ledger.proofs.inclusion`: :class:`TxInclusion`, the envelope, its path in the block's
  ``tx_root``, the header and its certificate, with its JSON sections and verifier;
- :mod:`ledger.proofs.record`: Layer-2 record proofs (a device reading in a committed batch);
- :mod:`ledger.proofs.objects`: proofs of anchored off-chain objects (the data access proxy).
"""

from ledger.proofs.inclusion import (
    INCLUSION_FIELDS,
    TxInclusion,
    edited,
    flat_field,
    flat_field_names,
    genesis_validators,
    header_json,
)
from ledger.proofs.objects import (
    OBJECT_PROOF_KIND,
    OBJECT_PROOF_VERSION,
    ObjectProof,
    ObjectProofError,
    ProofLink,
    VerifiedObject,
    verify_object_proof,
)
from ledger.proofs.record import (
    PROOF_VERSION,
    RecordProof,
    VerifiedReading,
    verify_record_proof,
)

__all__ = [
    "INCLUSION_FIELDS",
    "OBJECT_PROOF_KIND",
    "OBJECT_PROOF_VERSION",
    "PROOF_VERSION",
    "ObjectProof",
    "ObjectProofError",
    "ProofLink",
    "RecordProof",
    "TxInclusion",
    "VerifiedObject",
    "VerifiedReading",
    "edited",
    "flat_field",
    "flat_field_names",
    "genesis_validators",
    "header_json",
    "verify_object_proof",
    "verify_record_proof",
]
