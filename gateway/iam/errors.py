"""The typed errors of user management; the gateway maps each ``code`` to a response."""

from __future__ import annotations


class IamError(Exception):
    """A command was refused; ``code`` names the kind of refusal."""

    code = "iam_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.code}: {detail}" if detail else self.code)
        self.detail = detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class NotAuthorized(IamError):
    code = "not_authorized"


class InvalidCommand(IamError):
    code = "invalid_command"


class UserExists(IamError):
    code = "user_exists"


class UnknownUser(IamError):
    code = "unknown_user"


class GroupExists(IamError):
    code = "group_exists"


class UnknownGroup(IamError):
    code = "unknown_group"


class UnknownPermissionError(IamError):
    code = "unknown_permission"


class AlreadyBootstrapped(IamError):
    code = "already_bootstrapped"


class BadSetupCredential(IamError):
    code = "bad_setup_credential"


class LoginFailed(IamError):
    """Wrong login or password, or a disabled account (deliberately not distinguished)."""

    code = "login_failed"


class LoginThrottled(IamError):
    code = "throttled"

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry in {retry_after:.1f}s")
        self.retry_after = retry_after


class KeysUnavailable(IamError):
    """The key-encryption key named by the database is missing or unreadable (D25)."""

    code = "keys_unavailable"


class NotApplied(IamError):
    """The event was produced but its projection did not apply it in time."""

    code = "not_applied"


class TamperedRow(IamError):
    """A row the gateway reads back does not open under the master key for its identity
    (written, copied or predating D70): refused, never acted on."""

    code = "tampered_row"

    def __init__(self, table: str, key: str, why: str) -> None:
        super().__init__(f"{table} {key}: {why}")
        self.table = table
        self.key = key
        self.why = why
