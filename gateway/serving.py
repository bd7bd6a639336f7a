"""How a gateway process serves HTTP: one write per response, a settled heap.

Theory of operation
-------------------
* :class:`GatewayProtocol` is :class:`~gateway.deadlines.HeadDeadlineProtocol` (uvicorn's
  httptools protocol with the request-head deadline) whose responses go out in one
  ``transport.write`` when the application sends the head and then the whole body (what every
  gateway endpoint but a large file does): uvicorn writes the status line and headers as soon
  as the application starts the response and the body separately, so each response cost two
  ``send`` system calls and two TCP segments -- on loopback the kernel's share of a send
  (including the receiver's processing) was about a fifth of the gateway's CPU per request
  (decisions D50). :class:`CoalescingCycle` holds the head until the first body message and
  writes both at once; a streamed body writes its later chunks as uvicorn does. Nothing else
  changes: the same checks on headers and content length, the same ``connection: close``
  handling, and ``100 Continue`` (written by ``receive``) is never held.
* :func:`settle_heap` is called once a worker is ready to serve: it collects and freezes the
  objects made at start-up (schema, plans, modules, pools) so the collector no longer walks
  them, and raises the threshold of the youngest generation so a request's short-lived
  objects are collected every few requests instead of several times per request. Reference
  counting frees almost everything a request makes; only cycles wait for the collector.
"""

from __future__ import annotations

import gc
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.deadlines import HeadDeadlineProtocol

#: allocations (minus deallocations) between collections of the youngest generation; the
#: interpreter's default is 700, a few times per uncached GraphQL request
GEN0_THRESHOLD = 20_000


class _HeldWrites:
    """A transport stand-in that keeps what is written until :meth:`flush`."""

    __slots__ = ("chunks", "inner")

    def __init__(self, inner: Any, chunks: list[bytes]) -> None:
        self.inner = inner
        self.chunks = chunks

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def flush(self) -> None:
        if self.chunks:
            data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            self.chunks = []
            self.inner.write(data)

    def close(self) -> None:
        self.flush()
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CoalescingCycle(RequestResponseCycle):
    """uvicorn's request/response cycle writing the response head with the first body part."""

    _head: list[bytes] | None = None

    async def send(self, message: Any) -> None:
        head = self._head
        if head is None and message["type"] != "http.response.start":
            await super().send(message)
            return
        real = self.transport
        held = _HeldWrites(real, head if head is not None else [])
        self.transport = held  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = real
            if head is None and self.response_started and not self.response_complete:
                self._head = held.chunks  # the head waits for the body
            else:
                self._head = None
                if not self.disconnected:
                    held.flush()


class GatewayProtocol(HeadDeadlineProtocol):
    """The head deadline, and each response written at once (see the module doc)."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and type(cycle) is RequestResponseCycle:
            cycle.__class__ = CoalescingCycle  # before its task first runs: same layout


def settle_heap(gen0_threshold: int = GEN0_THRESHOLD) -> None:
    """Freeze what start-up made and collect the youngest generation less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
