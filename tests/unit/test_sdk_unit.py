"""Pure parts of the client SDK: receipt decoding and refused producer settings."""

from __future__ import annotations

import pytest

from ledger.blocks import EntryResult, receipt
from ledger.keys import KeyPair
from ledger.results import ResultCode
from schemas.codec import encode
from streams.sdk import LedgerClient, Receipt, ReceiptTimeout, SdkError, SubmitError

TX = b"\x01" * 32
BLOCK = b"\x02" * 32


def test_receipt_decodes_what_validators_publish() -> None:
    raw = receipt(
        EntryResult(tx_id=TX, offset=4, code=ResultCode.FORBIDDEN), height=9, block_hash=BLOCK
    )
    got = Receipt.decode(raw)
    assert got == Receipt(tx_id=TX, height=9, offset=4, code=ResultCode.FORBIDDEN, block_hash=BLOCK)
    assert not got.accepted
    assert Receipt.decode(
        receipt(EntryResult(tx_id=TX, offset=0, code=ResultCode.OK), height=1, block_hash=BLOCK)
    ).accepted


def _raw_receipt(**fields: object) -> bytes:
    record = {"tx_id": TX, "height": 1, "offset": 0, "result_code": 0, "block_hash": BLOCK}
    return encode("Receipt", {**record, **fields})


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        encode("TimeToCut", {"chain_id": "c", "height": 1, "producer": b""}),
        _raw_receipt(result_code=250),
        _raw_receipt(tx_id=b"short"),
        _raw_receipt(block_hash=b""),
        _raw_receipt(height=-1),
        _raw_receipt()[:-3],
    ],
)
def test_anything_else_is_refused_with_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        Receipt.decode(raw)


@pytest.mark.parametrize("overrides", [{"enable.idempotence": False}, {"acks": 1}, {"acks": "0"}])
def test_client_refuses_to_weaken_the_producer(overrides: dict[str, object]) -> None:
    key = KeyPair.from_seed(b"\x07" * 32)
    with pytest.raises(ValueError, match="idempotent"):
        LedgerClient("127.0.0.1:1", key, "c", producer_overrides=overrides)


def test_error_hierarchy() -> None:
    assert issubclass(SubmitError, SdkError)
    assert issubclass(ReceiptTimeout, SdkError)
    assert issubclass(ReceiptTimeout, TimeoutError)
    assert ReceiptTimeout(TX, 1.5).tx_id == TX
