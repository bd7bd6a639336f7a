"""The data access proxy's typed refusals (each an HTTP status and an error code)."""

from __future__ import annotations

from gateway.errors import GatewayError
from ledger.results import ResultCode


class ObjectNotFound(GatewayError):
    code = "NOT_FOUND"
    status = 404


class ObjectExists(GatewayError):
    """The data id is taken: an anchored object, a concurrent upload, or an anchor on chain."""

    code = "ALREADY_EXISTS"
    status = 409


class NotAnchored(GatewayError):
    """The object is stored but its anchor is not final yet (or its submission timed out)."""

    code = "NOT_ANCHORED"
    status = 409


class AnchorRejected(GatewayError):
    """The chain rejected the AnchorData (``code`` is the result code)."""

    status = 502

    def __init__(self, result: ResultCode, message: str) -> None:
        super().__init__(message, result=result.name)
        self.code = result.name


class SignerMissing(GatewayError):
    code = "ANCHOR_KEY_MISSING"
    status = 503


class ObjectTampered(GatewayError):
    """What the database holds for the object is not what the gateway stored (``what``:
    ``metadata``, ``chunks``, ``chunk``, ``content``)."""

    code = "OBJECT_TAMPERED"
    status = 502


class AnchorMismatch(GatewayError):
    """The chain projection's anchor of the object is missing or names another hash."""

    code = "ANCHOR_MISMATCH"
    status = 502


class ObjectShredded(GatewayError):
    """The owner's data key was destroyed (the owner was forgotten): the object is gone."""

    code = "OBJECT_SHREDDED"
    status = 410


class NotRecorded(GatewayError):
    """The anchor is final but the object's events were not projected in time."""

    code = "NOT_RECORDED"
    status = 504


class LegacyObject(GatewayError):
    """An object stored before D23: plaintext chunks and no ObjectStored event."""

    code = "LEGACY_OBJECT"
    status = 409


class StreamAborted(RuntimeError):
    """Raised inside a response body after its headers went out: the server then closes the
    connection without completing the body (the client sees a truncated transfer)."""
