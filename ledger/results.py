"""Result codes of block entries: stable small integers, written in blocks and receipts.

The numeric values are part of the protocol (they enter ``tx_root`` as one byte); append new
codes, never renumber.
"""

from __future__ import annotations

from enum import IntEnum


class ResultCode(IntEnum):
    """Why an entry was accepted (``OK``) or rejected. Rejected entries change nothing."""

    OK = 0
    MALFORMED = 1
    WRONG_CHAIN = 2
    BAD_SIGNATURE = 3
    UNKNOWN_SENDER = 4
    INACTIVE_SENDER = 5
    BAD_NONCE = 6
    FORBIDDEN = 7
    TOO_LARGE = 8
    ALREADY_EXISTS = 9
    NOT_FOUND = 10
    EXPIRED = 11
    ALREADY_VOTED = 12
    INVALID_ARGUMENT = 13
    CLOSED = 14
    #: a ``RotateKey`` whose ``new_key_proof`` is not the new key's signature (D61)
    BAD_KEY_PROOF = 15

    @property
    def accepted(self) -> bool:
        """True for ``OK``."""
        return self is ResultCode.OK
