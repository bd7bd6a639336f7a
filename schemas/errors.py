"""The one error the codec raises.

Every failure to encode or decode (unknown schema, wrong fingerprint, truncated or hostile
bytes, a record that does not match its schema) is a :class:`CodecError`, whatever library
raised underneath. Callers therefore catch exactly one type at the boundary.
"""

from __future__ import annotations


class CodecError(ValueError):
    """Bytes or records that the codec refuses; ``reason`` is a short machine-friendly tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"CodecError(reason={self.reason!r}, detail={self.detail!r})"
