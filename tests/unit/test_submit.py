"""The gateway's submitter tells "not confirmed, may still land" apart from "failed"."""

from __future__ import annotations

import pytest

from gateway.errors import Unavailable
from gateway.submit import KafkaSubmitter
from infra.procs import free_port


def test_unconfirmed_submission_says_it_may_still_be_recorded() -> None:
    # Nothing listens on this port: the envelope stays queued in the producer (it would be
    # sent if a broker came up), so the answer must not claim it was not delivered.
    submitter = KafkaSubmitter(f"127.0.0.1:{free_port()}", "t.", timeout_s=0.3)
    try:
        with pytest.raises(Unavailable) as caught:
            submitter.submit(b"envelope", b"key")
        assert "may still be recorded" in str(caught.value)
        assert "could not be delivered" not in str(caught.value)
    finally:
        submitter._producer.purge()
        submitter._producer.flush(0)
