"""The ledger core's typed errors: one base class, one subclass per kind of fault.

Operations on the world state never raise for a bad transaction: they return a
:class:`~ledger.results.ResultCode`. Exceptions are for programming and input errors at the
core's boundary (an invalid event, a message that is not what it claims, a broken invariant).
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error the ledger core raises."""


class InvalidEvent(LedgerError, ValueError):
    """An event or value object violates its own invariants (wrong length, negative height...)."""


class SignatureError(LedgerError):
    """A signature does not verify, or a key id does not match its public key."""


class DecodeError(LedgerError, ValueError):
    """Bytes that do not decode to the expected event (wraps :class:`schemas.CodecError`)."""


class ProofError(LedgerError):
    """A certificate or other proof does not verify against what it claims."""


class StateError(LedgerError):
    """The world state or a block sequence is used against its rules (wrong height...)."""
