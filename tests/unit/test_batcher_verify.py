"""The batcher's parallel signature verifier (:mod:`readers.batcher.verify`)."""

from __future__ import annotations

import pytest

from ledger.devices import sign_device_record
from ledger.l2 import parse_l2
from readers.batcher.verify import Verifier
from tests.unit.chain_helpers import key

DEVICE = key("device-l2")


@pytest.mark.parametrize("processes", [False, True])
def test_parallel_verifier_matches_serial(processes: bool) -> None:
    other = key("other-device")
    jobs = []
    expected = []
    for i in range(1500):
        p = parse_l2(
            sign_device_record(
                DEVICE, sequence=i, measured_at_ms=i, content_type="", payload=b"%d" % i
            ).encode()
        )
        good = i % 7 != 3
        jobs.append((DEVICE.public_key if good else other.public_key, p.signature, p.signed))
        expected.append(good)
    jobs.append((b"\x00" * 31, jobs[0][1], jobs[0][2]))  # not a public key
    expected.append(False)
    verifier = Verifier(2, processes=processes)
    try:
        assert verifier.verify(jobs) == expected
        assert verifier.verify(jobs[:10]) == expected[:10]
    finally:
        verifier.close()
