"""``python -m tests.faults.pinned_gateway <pantheon gateway arguments>``: a gateway process
for tests run without a ledger. It is ``gateway.server`` with the chain replaced, as the IAM
key authority, by the institution's pinned test key (:mod:`tests.iam_keys`): the process
signs with it at height 0 and its in-process IAM projection trusts only it (D21).
``--iam-key-file`` must hold that key (:func:`write_iam_key_file`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import server
from tests.iam_keys import iam_key, pinned_signers


def write_iam_key_file(path: Path, institution: str) -> Path:
    """The pinned IAM key of ``institution`` in a 0600 key file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = iam_key(institution)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({**key.describe(), "seed": key.seed.hex()}, fh)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--institution", required=True)
    institution = parser.parse_known_args(args)[0].institution
    trust = server.IamTrust(signers=pinned_signers(institution), key_height=lambda: 0)
    return server.main(args, trust=trust)


if __name__ == "__main__":
    sys.exit(main())
