"""Ed25519 verification cost per signature, by verifier: single and batched (decisions D34).

Prints CPU microseconds per signature (one thread) for OpenSSL through ``cryptography`` (the
fallback's first opinion), the compiled extension ``pantheon_native`` (ZIP-215, single and
batch) when it is installed, and the pure reference. Messages are 200 bytes, every signature
valid; batches use ``--keys`` distinct signers (a block of transactions from many senders is
the worst case for the batch; votes of one operator the best).

    python -m bench.verify [--n 3000] [--batch 500] [--keys 500]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable

from ledger import ed25519_zip215 as reference
from ledger import signatures
from ledger.keys import KeyPair

Item = tuple[bytes, bytes, bytes]


def items(count: int, keys: int) -> list[Item]:
    pairs = [KeyPair.from_seed(hashlib.sha256(b"k%d" % i).digest()) for i in range(keys)]
    out = []
    for i in range(count):
        pair = pairs[i % keys]
        message = hashlib.sha256(b"m%d" % i).digest() * 6 + b"12345678"  # 200 bytes
        out.append((pair.public_key, pair.sign(b"", message), message))
    return out


def per_signature(run: Callable[[], object], signatures_checked: int) -> float:
    """CPU microseconds per signature of ``run`` (best of three)."""
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        run()
        best = min(best, time.process_time() - began)
    return best / signatures_checked * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000, help="signatures for single verifies")
    parser.add_argument("--batch", type=int, default=500, help="signatures per batch")
    parser.add_argument("--keys", type=int, default=500, help="distinct signers in a batch")
    parser.add_argument("--reference-n", type=int, default=30)
    args = parser.parse_args()
    singles = items(args.n, min(args.n, 64))
    batch = items(args.batch, min(args.keys, args.batch))
    rows: list[tuple[str, float]] = []

    def openssl_all() -> None:
        for item in singles:
            assert signatures._openssl_accepts(*item)

    rows.append(("OpenSSL (cryptography), single", per_signature(openssl_all, len(singles))))
    if signatures.native_available():

        def native_all() -> None:
            for item in singles:
                assert signatures.native_verify(*item)

        def native_batch() -> None:
            assert all(signatures.native_verify_batch(batch))

        rows.append(("pantheon_native (ZIP-215), single", per_signature(native_all, len(singles))))
        rows.append(
            (
                f"pantheon_native (ZIP-215), batch of {len(batch)}, {args.keys} keys",
                per_signature(native_batch, len(batch)),
            )
        )
    else:
        print("pantheon_native is not installed (./dev builds it where cargo exists)")
    few = singles[: args.reference_n]

    def reference_all() -> None:
        for item in few:
            assert reference.verify(*item)

    rows.append(("pure Python reference (ZIP-215), single", per_signature(reference_all, len(few))))
    print(f"backend in use: {signatures.BACKEND}")
    for label, micros in rows:
        print(f"{label:<52} {micros:10.1f} us/sig")


if __name__ == "__main__":
    main()
