"""Parallel Ed25519 verification of the batcher's device signatures."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor

from ledger.keys import verify_batch
from streams.signature_pipeline import worker_pool

_CHUNK = 512

Job = tuple[bytes, bytes, bytes]  # public key, signature, signed message


def _verify_chunk(jobs: Sequence[Job]) -> list[bool]:
    # ledger.keys.verify_batch: one batch equation with the compiled extension, same answers
    return verify_batch(jobs, domain=b"")


class Verifier:
    """Ed25519 verification of many (public key, signature, message) jobs across cores."""

    def __init__(self, workers: int | None = None, *, processes: bool = False) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.processes = processes
        self._pool: Executor | None = None
        if self.workers > 1:
            self._pool = (
                worker_pool(self.workers)
                if processes
                else ThreadPoolExecutor(self.workers, thread_name_prefix="verify")
            )

    def verify(self, jobs: Sequence[Job]) -> list[bool]:
        """One boolean per job, in order."""
        return self.submit(jobs)()

    def submit(self, jobs: Sequence[Job]) -> Callable[[], list[bool]]:
        """Start verifying ``jobs`` in the background; call the result to wait for them."""
        if self._pool is None or len(jobs) < 2 * _CHUNK:
            done = _verify_chunk(jobs)
            return lambda: done
        size = max(_CHUNK, -(-len(jobs) // (self.workers * 4)))
        pool = self._pool
        futures = [
            pool.submit(_verify_chunk, jobs[i : i + size]) for i in range(0, len(jobs), size)
        ]

        def results() -> list[bool]:
            out: list[bool] = []
            for future in futures:
                out.extend(future.result())
            return out

        return results

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
