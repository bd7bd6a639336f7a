"""Device tokens: proof that a client has logged in to a login successfully before.

Theory of operation
-------------------
* At every successful login the IAM service hands the client a device token bound to the
  institution and the login: ``pdt1.<device id>.<issued at, s>.<MAC>``, the MAC an
  HMAC-SHA256 (truncated to 128 bits) under a key derived from the institution's master key.
  The client keeps it (the explorer in ``localStorage``) and sends it with its next logins.
* A valid device token makes the client *trusted* for :class:`~gateway.auth.throttle.
  LoginThrottle`: failures of other clients (a password guesser) never block it, and its own
  failures are counted per device. It grants nothing else: the password is still required.
* Nothing is stored: a token is verified by its MAC and age (``ttl_s``, 90 days by default),
  so it survives restarts and works on every replica that has the master key. A token of
  another login or institution, an expired one, or a forged one is simply not trusted.
* A client that logs in with a valid token gets a fresh one for the same device id (sliding
  expiry); the device id is what the throttle counts failures against.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable

from gateway.auth.crypto import MasterKey

PREFIX = "pdt1"
DEFAULT_TTL_S = 90 * 86400
_SHAPE = re.compile(r"pdt1\.([A-Za-z0-9_-]{16})\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DeviceTokens:
    """Issues and verifies the device tokens of one institution."""

    def __init__(
        self,
        master: MasterKey,
        institution: str,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        label = f"pantheon:device-token:v1:{institution}".encode()
        self._key = hmac.new(master.key, label, hashlib.sha256).digest()
        self.institution = institution
        self.ttl_s = ttl_s
        self._clock = clock

    def _mac(self, login: str, device: str, issued: int) -> str:
        message = "\n".join((self.institution, login, device, str(issued))).encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest()[:16])

    def issue(self, login: str, device: str | None = None) -> str:
        """A device token of ``login`` (for ``device``, or a new device id)."""
        device = device or secrets.token_urlsafe(12)
        issued = int(self._clock())
        return f"{PREFIX}.{device}.{issued}.{self._mac(login, device, issued)}"

    def verify(self, login: str, token: str | None) -> str | None:
        """The device id of a valid, unexpired token of ``login``; None otherwise."""
        if not token or len(token) > 128:
            return None
        match = _SHAPE.fullmatch(token)
        if match is None:
            return None
        device, issued_text, mac = match.groups()
        issued = int(issued_text)
        if not hmac.compare_digest(mac, self._mac(login, device, issued)):
            return None
        now = self._clock()
        if issued > now + 60 or now - issued > self.ttl_s:
            return None
        return device
