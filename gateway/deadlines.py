"""Deadlines for slow clients: a request head and a request body must arrive in time.

Theory of operation
-------------------
uvicorn has no read timeout for a request head (``timeout_keep_alive`` only runs between
requests and stops at the first byte received), and it waits for a request body as long as
the application waits. A client that sends its head a byte at a time, or declares a body and
trickles it (slowloris), would hold its connection -- and, on ``PUT /objects``, a database
connection and a worker thread -- for ever. Two deadlines close such connections:

* **Head** (:class:`HeadDeadlineProtocol`, uvicorn's httptools protocol with a timer): the
  request line and headers must be complete within ``head_timeout_s`` of the connection's
  opening or of the end of the previous response. The timer is armed at those two moments
  and disarmed when the head is complete (so a request being served, a pipelined request or a
  WebSocket upgrade is never cut). When it fires, a client that had begun a request gets a
  ``408`` with the gateway's error body (code ``REQUEST_TIMEOUT``); an idle connection is
  closed silently (a ``408`` could be mistaken for the answer to a request that crossed it).
  This also ends a connection that goes on sending an unread body after its answer.
* **Body** (:class:`BodyDeadline`, ASGI middleware): while the application reads a request
  body, every ``receive()`` must return before ``start + body_timeout_s + received /
  min_rate`` -- the budget grows by one second per ``min_rate`` bytes received (as Apache's
  ``mod_reqtimeout``), so a large upload at a sane rate is never cut while a trickle is.
  Past it ``receive()`` raises :class:`~gateway.errors.RequestTimeout` (408
  ``REQUEST_TIMEOUT``, a typed error the endpoints already translate) and the response gets
  ``Connection: close``. Once the body is complete, ``receive()`` is passed through untouched
  (a streaming response waits on it for the disconnect). A client that hangs up before its
  body is complete ends its request quietly: Starlette's ``ClientDisconnect`` is not logged
  as an application error with a traceback (a hostile client could flood the log with them).

Connection count is deliberately *not* limited with uvicorn's ``limit_concurrency``: it
counts idle and slow connections too, so a few hundred slow sockets would make the server
answer ``503`` to every honest client -- the denial of service it is meant to prevent.
"""

from __future__ import annotations

import asyncio
import json
from asyncio import TimerHandle
from typing import Any, ClassVar

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import RequestTimeout, error_body

DEFAULT_HEAD_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 20.0
DEFAULT_BODY_MIN_RATE = 16 * 1024  # bytes per second that extend the body budget


def _timeout_response(message: str, limit: float) -> bytes:
    body = json.dumps(
        error_body([RequestTimeout(message, limit=limit)]), separators=(",", ":")
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class HeadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request head is too slow.

    Use :meth:`with_timeout` to get a subclass for ``uvicorn.Config(http=...)``."""

    head_timeout_s: ClassVar[float] = DEFAULT_HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: TimerHandle | None = None
        self._head_started = False

    @classmethod
    def with_timeout(cls, head_timeout_s: float) -> type[HeadDeadlineProtocol]:
        """A subclass whose connections have ``head_timeout_s`` to send a request head."""
        if head_timeout_s <= 0:
            raise ValueError("the head timeout must be positive")
        return type(cls.__name__, (cls,), {"head_timeout_s": float(head_timeout_s)})

    # -- the timer --------------------------------------------------------------------------
    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served; its head arrived in time
        if self._head_started:
            limit = self.head_timeout_s
            self.transport.write(
                _timeout_response(f"the request head did not arrive within {limit:g} s", limit)
            )
        self.transport.close()

    # -- protocol hooks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._head_started = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        self._head_started = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm_head_deadline()  # for the next request (or the rest of an unread body)


class BodyDeadline:
    """ASGI middleware: a request body must arrive within its budget (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        min_rate: int = DEFAULT_BODY_MIN_RATE,
    ) -> None:
        if timeout_s <= 0 or min_rate <= 0:
            raise ValueError("the body timeout and minimum rate must be positive")
        self.app = app
        self.timeout_s = timeout_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        received = 0
        complete = False
        timed_out = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, complete, timed_out
            if complete:
                return await receive()
            remaining = start + self.timeout_s + received / self.min_rate - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise RequestTimeout(
                    f"the request body did not arrive in time ({self.timeout_s:g} s, "
                    f"plus 1 s per {self.min_rate} bytes received)",
                    limit=self.timeout_s,
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
            else:
                complete = True  # disconnected
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if timed_out:
                    headers = [*message.get("headers", ()), (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, bounded_receive, closing_send)
        except ClientDisconnect:
            if started:
                raise
            return  # nobody to answer; uvicorn drops the connection
        except RequestTimeout as exc:
            if started:
                raise
            body = json.dumps(error_body([exc]), separators=(",", ":")).encode()
            await closing_send(
                {
                    "type": "http.response.start",
                    "status": exc.status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await closing_send({"type": "http.response.body", "body": body})
