"""The errors the stack commands raise: each says what went wrong and what to do."""

from __future__ import annotations


class StackError(RuntimeError):
    """A local service could not be prepared, started, or stopped."""


class PortTakenError(StackError):
    """A port the stack needs is used by a process that is not ours."""

    def __init__(self, service: str, port: int, variable: str) -> None:
        super().__init__(
            f"{service}: port {port} on 127.0.0.1 is taken by another process; stop it "
            f"(`ss -ltnp 'sport = :{port}'` shows which) or choose another port with {variable}"
        )
        self.service = service
        self.port = port


class PrerequisiteError(StackError):
    """A program the stack needs is missing and could not be installed."""
