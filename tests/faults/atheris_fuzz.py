"""Coverage-guided long-run fuzzing (atheris, i.e. libFuzzer) of the parsers of test_fuzz.py.

Run by hand (not collected by pytest; ``test_atheris_smoke.py`` keeps it working)::

    .venv/bin/python -m tests.faults.atheris_fuzz --target all --runs 250000 --seed 1

Targets, each a function of bytes that calls the real parser on genuine fixtures built in
process (the same as ``test_fuzz.py``) and may refuse only with the documented error type:

* ``decoder``: ``schemas.codec.decode`` -> ``CodecError``; what decodes re-encodes to the same
  bytes. Seeds: a ``TxEnvelope``, a ``CommitBatch`` envelope, a vote, a receipt, a marker, a
  device record, a finalized block and a genesis document.
* ``tx``: ``ledger.tx.parse_tx`` -> ``TxRejected``; only a genuine envelope is accepted.
* ``proof``: ``ledger.proofs.verify_record_proof`` -> ``ProofError``. The first byte modulo 3
  picks the form of the rest: 0, a JSON proof document, read as ``pantheon verify`` reads one
  (``RecordProof.from_json(json.loads(...))``; bytes that are not JSON are refused as there,
  as a ``ValueError``); 1, edits of the genuine proof's fields (a field selector byte, then a
  9-byte signed integer, or a 2-byte length and bytes/text, or a count of 1-byte-length
  prefixed path nodes); 2, edits of the genuine JSON document (a selector byte for a key or a
  section's key, a 2-byte length and a JSON value in Python's dialect, else taken as a
  string). Only a proof of a genuine reading verifies.
* ``jwt``: ``TokenVerifier.verify`` -> ``TokenError``; the bytes are read as UTF-8 with
  ``surrogateescape`` (every byte string is a distinct ``str``, lone surrogates included, as a
  JSON string can carry them). Only the genuine token's claims are accepted, and only with
  its exact signing input.

(The GraphQL endpoint needs the broker and PostgreSQL: it stays with ``test_fuzz.py``.)

Anything else a target raises is a finding: libFuzzer stops, prints the traceback and saves
the input as ``<artifacts>/<target>-crash-<sha1>`` (default ``.pantheon/fuzz/``); this driver
then exits 1. ``--reproduce FILE`` runs one saved input again.

"Zero state changes from rejected input": these four are pure functions of their input; the
only state they touch is module-level caches (the schema registry, one wire checker per
schema fingerprint) and the verifier's immutable key ring. Every ``CHECK_EVERY`` inputs and at
the end each target re-runs its genuine input and compares the answer with the one it gave
before fuzzing, and the decoder checks that its cache holds at most one checker per known
schema. (The state of the running system -- tx log, chain tables -- is checked by the
GraphQL test in ``test_fuzz.py``.)

``--target all`` runs the targets in sequence, one libFuzzer process each (``atheris.Fuzz``
runs once per process), each for ``--runs`` inputs; each worker writes its counts to a JSON
file that this driver sums up and prints: inputs executed, refusals by type and reason,
accepted inputs, findings.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import atheris

# Coverage guidance: instrument the parsers' own Python code (and PyJWT's) as it is imported.
with atheris.instrument_imports(include=["schemas", "ledger", "gateway", "jwt"]):
    import jwt  # noqa: F401 - instrumented for the JWT target

    from gateway.auth.tokens import TokenError, TokenVerifier
    from ledger.blocks import EntryResult, encode_finalized, receipt
    from ledger.cutter import TimeToCut
    from ledger.devices import DeviceRecord
    from ledger.errors import ProofError
    from ledger.finality import QuorumCertificate
    from ledger.genesis import Genesis
    from ledger.keys import KeyPair
    from ledger.l2 import BUNDLE_KIND, RECORD_KIND
    from ledger.merkle import MerkleError
    from ledger.proofs import (
        RecordProof,
        TxInclusion,
        edited,
        flat_field,
        verify_record_proof,
    )
    from ledger.results import ResultCode
    from ledger.tx import TxRejected, parse_tx, sign_tx
    from ledger.votes import sign_vote
    from schemas import codec
    from schemas.codec import decode, decode_canonical, encode
    from schemas.errors import CodecError

TARGETS = ("decoder", "tx", "proof", "jwt")
CHECK_EVERY = 10_000
DUMP_EVERY = 5_000
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ARTIFACTS = ROOT / ".pantheon" / "fuzz"


class Finding(AssertionError):
    """A target broke its contract (accepted what it must refuse, or changed its answers)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One parser under fuzzing: ``run`` returns ``accepted:...`` or ``refused:...``."""

    seeds: list[bytes]
    run: Callable[[bytes], str]
    check: Callable[[], None]
    max_len: int
    dictionary: tuple[str, ...] = ()


# -- the Avro decoder and the transaction validator ------------------------------------------

SIGNER = KeyPair.from_seed(bytes(range(32)))


def _envelope() -> bytes:
    return sign_tx(
        SIGNER,
        chain_id="fuzz",
        nonce=7,
        operation="AnchorData",
        args={"data_id": "d", "sha256": bytes(32), "metadata": "{}"},
    )


def _genuine_proofs() -> tuple[list[RecordProof], Genesis]:
    from tests.unit.test_proofs import _chain_proof  # noqa: PLC0415 - builds a chain: only here

    proof, genesis = _chain_proof(RECORD_KIND)
    proofs = [proof]
    bundle, bundle_genesis = _chain_proof(BUNDLE_KIND)
    if bundle_genesis == genesis:  # the same deterministic consortium: one more genuine proof
        proofs.append(bundle)
    return proofs, genesis


def decoder_target() -> Target:
    envelope = _envelope()
    proofs, genesis = _genuine_proofs()
    proof = proofs[0]
    cert = decode_canonical("QuorumCertificate", proof.inclusion.certificate)
    result = EntryResult(tx_id=bytes(32), offset=proof.inclusion.tx_offset, code=ResultCode.OK)
    seeds = [
        envelope,
        proof.inclusion.envelope,
        sign_vote(SIGNER, height=1, block_hash=proof.inclusion.header.hash()).encode(),
        receipt(result, height=1, block_hash=proof.inclusion.header.hash()),
        TimeToCut(chain_id="fuzz", height=3, producer=SIGNER.key_id).encode(),
        DeviceRecord.from_record(decode_canonical("DeviceRecord", proof.leaf)).encode(),
        encode_finalized(proof.inclusion.header, cert, [result]),
        genesis.encode(),
    ]
    assert QuorumCertificate.from_record(cert).height == 1
    before = decode(envelope)

    def run(data: bytes) -> str:
        try:
            name, record = decode(data)
        except CodecError as exc:
            return f"refused:CodecError:{exc.reason}"
        # what decodes is canonical: encoding it again gives the same bytes
        if encode(name.removeprefix("pantheon."), record) != data:
            raise Finding(f"{name} decodes but does not re-encode to the same bytes")
        return f"accepted:{name}"

    def check() -> None:
        if decode(envelope) != before:
            raise Finding("the genuine envelope decodes differently after fuzzing")
        if len(codec._checkers) > len(list(codec.registry().names())):
            raise Finding(f"the codec caches {len(codec._checkers)} wire checkers")

    return Target(seeds, run, check, max_len=max(4096, *(len(s) + 512 for s in seeds)))


def tx_target() -> Target:
    envelope = _envelope()
    proofs, _ = _genuine_proofs()
    genuine = {raw: parse_tx(raw).tx_id for raw in (envelope, proofs[0].inclusion.envelope)}

    def run(data: bytes) -> str:
        try:
            tx = parse_tx(data)
        except TxRejected as exc:
            return f"refused:TxRejected:{exc.code.name}"
        # only the genuine envelope authenticates: a mutation never passes as signed
        if genuine.get(data) != tx.tx_id:
            raise Finding(f"a mutated envelope was accepted as {tx.operation} of {tx.sender.hex()}")
        return "accepted:genuine"

    def check() -> None:
        for raw, tx_id in genuine.items():
            if parse_tx(raw).tx_id != tx_id:
                raise Finding("a genuine envelope gets another tx id after fuzzing")

    return Target(list(genuine), run, check, max_len=4096)


# -- proof verification ---------------------------------------------------------------------

# (field, kind) of the RecordProof fields an edit can replace, its inclusion part's spliced
# in (the header: in the JSON form)
PROOF_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (f.name, {"int": "int", "str": "str", "bytes": "bytes"}.get(str(f.type), "paths"))
    for f in (*dataclasses.fields(RecordProof), *dataclasses.fields(TxInclusion))
    if f.name not in {"header", "inclusion"}
)


def proof_edits(data: bytes) -> dict[str, Any]:
    """The field changes an edit list encodes (module docstring); never fails."""
    changes: dict[str, Any] = {}
    pos = 0
    while pos < len(data):
        name, kind = PROOF_FIELDS[data[pos] % len(PROOF_FIELDS)]
        pos += 1
        if kind == "int":
            changes[name] = int.from_bytes(data[pos : pos + 9], "big", signed=True)
            pos += 9
        elif kind == "paths":
            count, pos = (data[pos] if pos < len(data) else 0), pos + 1
            nodes = []
            for _ in range(count):
                size, pos = (data[pos] if pos < len(data) else 0), pos + 1
                nodes.append(data[pos : pos + size])
                pos += size
            changes[name] = tuple(nodes)
        else:
            size, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
            value = data[pos : pos + size]
            pos += size
            changes[name] = value.decode("utf-8", "surrogateescape") if kind == "str" else value
    return changes


def proof_edit(name: str, value: Any) -> bytes:
    """The edit that sets field ``name`` to ``value`` (inverse of :func:`proof_edits`)."""
    index, kind = next((i, k) for i, (n, k) in enumerate(PROOF_FIELDS) if n == name)
    if kind == "int":
        return bytes([index]) + int(value).to_bytes(9, "big", signed=True)
    if kind == "paths":
        return bytes([index, len(value)]) + b"".join(bytes([len(p)]) + p for p in value)
    raw: bytes = value.encode() if kind == "str" else value
    return bytes([index]) + len(raw).to_bytes(2, "big") + raw


def _proof_reason(exc: ProofError) -> str:
    """A short tag for a refusal: its message without the values it quotes."""
    cause = exc.__cause__
    if isinstance(cause, TxRejected):
        return f"envelope {cause.code.name}"
    head = str(exc).split(":")[0]
    if isinstance(cause, MerkleError):  # from verify_tx_proof, the message starts with the type
        where = "leaf not in batch" if head == "leaf not in batch" else "tx not in block"
        return f"{where}: {type(cause).__name__}"
    for prefix in ("unknown proof version", "unknown leaf kind"):
        if head.startswith(prefix):
            return prefix
    return re.sub(r"\d+", "N", head)[:60]


def json_edits(doc: dict[str, Any], paths: Sequence[tuple[str, ...]], data: bytes) -> None:
    """Apply the JSON value edits ``data`` encodes to ``doc`` (module docstring); never fails."""
    pos = 0
    while pos < len(data):
        path = paths[data[pos] % len(paths)]
        size = int.from_bytes(data[pos + 1 : pos + 3], "big")
        text = data[pos + 3 : pos + 3 + size].decode("utf-8", "surrogateescape")
        pos += 3 + size
        try:
            value = json.loads(text)  # any JSON value (Python's dialect) ...
        except (ValueError, RecursionError):
            value = text  # ... or else the text as a string
        section = doc[path[0]] if len(path) == 2 else doc
        if isinstance(section, dict):  # unless an earlier edit replaced the section
            section[path[-1]] = value


def json_edit(index: int, value: Any) -> bytes:
    """The edit that sets JSON path number ``index`` to ``value``."""
    text = json.dumps(value).encode()
    return bytes([index]) + len(text).to_bytes(2, "big") + text


def proof_target() -> Target:
    proofs, genesis = _genuine_proofs()
    base = proofs[0]
    verified = {
        (r.device_key_id, r.sequence, r.block_hash): r
        for r in (verify_record_proof(p, genesis) for p in proofs)
    }
    document = json.dumps(base.to_json())
    paths: list[tuple[str, ...]] = [(key,) for key in json.loads(document)]
    paths += [
        (key, name)
        for key, section in json.loads(document).items()
        if isinstance(section, dict)
        for name in section
    ]
    seeds = [b"\x00" + json.dumps(p.to_json()).encode() for p in proofs]
    seeds.append(b"\x01")  # no edit: the genuine proof
    for name, _ in PROOF_FIELDS:  # each field restated: mutations start from a valid proof
        seeds.append(b"\x01" + proof_edit(name, flat_field(base, name)))
    seeds.append(b"\x01" + b"".join(proof_edit(n, flat_field(base, n)) for n, _ in PROOF_FIELDS))
    doc = json.loads(document)
    for i, path in enumerate(paths):  # each JSON value restated
        seeds.append(
            b"\x02" + json_edit(i, doc[path[0]][path[1]] if len(path) == 2 else doc[path[0]])
        )

    def run(data: bytes) -> str:
        try:
            mode = data[0] % 3 if data else 0
            if mode == 1:
                proof = edited(base, **proof_edits(data[1:]))
            else:
                if mode == 2:
                    doc = json.loads(document)
                    json_edits(doc, paths, data[1:])
                else:
                    try:
                        doc = json.loads(data[1:])
                    except ValueError:  # pantheon verify: INVALID (not JSON, or not UTF-8)
                        return "refused:ValueError:not JSON"
                proof = RecordProof.from_json(doc)
            reading = verify_record_proof(proof, genesis)
        except ProofError as exc:
            return f"refused:ProofError:{_proof_reason(exc)}"
        # a proof that still verifies proves a genuine reading (only no-op changes pass)
        if verified.get((reading.device_key_id, reading.sequence, reading.block_hash)) != reading:
            raise Finding(f"a tampered proof verified: {reading}")
        return "accepted:genuine reading"

    def check() -> None:
        for p in proofs:
            r = verify_record_proof(p, genesis)
            if verified.get((r.device_key_id, r.sequence, r.block_hash)) != r:
                raise Finding("a genuine proof verifies differently after fuzzing")

    # Python's JSON dialect: its keywords, so mutations can reach the non-string values
    words = ("true", "false", "null", "NaN", "Infinity", "-Infinity", "e+", "E-", "[]", "{}")
    return Target(seeds, run, check, max_len=16384, dictionary=words)


# -- JWT verification ------------------------------------------------------------------------


def jwt_target() -> Target:
    from harness.gateway_support import Tokens  # noqa: PLC0415 - heavy import

    tokens = Tokens()
    verifier: TokenVerifier = tokens.verifier
    # valid for a day: the genuine token stays acceptable for the whole long run
    good = tokens.token(ttl=86_400)
    signing_input = good.rsplit(".", 1)[0]
    claims = verifier.verify(good)
    other = Tokens()
    head = base64.urlsafe_b64encode(
        json.dumps({"alg": "HS256", "typ": "JWT", "kid": claims.kid}).encode()
    )
    seeds = [
        good,
        tokens.token(ttl=-60),  # expired
        tokens.token(iat=2**40, nbf=2**40),  # not yet valid
        tokens.token(iss="pantheon:iam:inst-2"),  # wrong issuer
        tokens.token(aud="someone-else"),  # wrong audience
        tokens.token(groups="g"),  # malformed claims
        other.token(),  # unknown kid
        f"{head.rstrip(b'=').decode()}.{good.split('.')[1]}.",  # HS256
    ]

    def run(data: bytes) -> str:
        token = data.decode("utf-8", "surrogateescape")
        try:
            accepted = verifier.verify(token)
        except TokenError as exc:
            return f"refused:{type(exc).__name__}"
        # only the genuine token's claims pass, with its exact signing input
        if accepted != claims or token.rsplit(".", 1)[0] != signing_input:
            raise Finding(f"a mutated token was accepted: {token!r}")
        return "accepted:genuine" if token == good else "accepted:signature respelled"

    def check() -> None:
        if verifier.verify(good) != claims:
            raise Finding("the genuine token verifies differently after fuzzing")

    return Target([s.encode() for s in seeds], run, check, max_len=9000)


BUILDERS: dict[str, Callable[[], Target]] = {
    "decoder": decoder_target,
    "tx": tx_target,
    "proof": proof_target,
    "jwt": jwt_target,
}


# -- the worker: one target under libFuzzer ------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Fuzz one target; never returns (libFuzzer exits the process)."""
    target = BUILDERS[args.worker]()
    target.check()
    counts: Counter[str] = Counter()
    findings: list[dict[str, Any]] = []
    counts_path = Path(args.counts)
    started = time.monotonic()

    def dump() -> None:
        doc = {
            "target": args.worker,
            "seconds": round(time.monotonic() - started, 3),
            "counts": dict(counts),
            "findings": findings,
        }
        tmp = counts_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True))
        tmp.replace(counts_path)

    def one_input(data: bytes) -> None:
        counts["inputs"] += 1
        try:
            counts[target.run(data)] += 1
            if counts["inputs"] % CHECK_EVERY == 0 or counts["inputs"] >= args.runs:
                target.check()
                counts["checks"] += 1
        except Exception as exc:
            findings.append(
                {
                    "type": type(exc).__name__,
                    "message": str(exc)[:500],
                    "input_sha1": hashlib.sha1(data).hexdigest(),
                    "input_len": len(data),
                    "input_head": data[:160].hex(),
                }
            )
            dump()
            raise
        if counts["inputs"] % DUMP_EVERY == 0 or counts["inputs"] >= args.runs:
            dump()

    corpus = Path(args.corpus)
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in target.seeds:
        (corpus / f"seed-{hashlib.sha1(seed).hexdigest()}").write_bytes(seed)
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-max_len={target.max_len}",
        f"-artifact_prefix={artifacts}/{args.worker}-",
        "-timeout=30",
        "-print_final_stats=1",
    ]
    if args.reproduce:
        argv.append(str(args.reproduce))
    else:
        argv += [f"-runs={args.runs}", str(corpus)]
    if args.seed is not None:
        argv.append(f"-seed={args.seed}")
    if target.dictionary:
        words = corpus.parent / f"{args.worker}.dict"
        words.write_text("".join(f"{json.dumps(w)}\n" for w in target.dictionary))
        argv.append(f"-dict={words}")
    dump()
    atheris.Setup(argv, one_input)
    started = time.monotonic()
    atheris.Fuzz()


# -- the driver: one worker process per target, then the figures ---------------------------------


def _run_target(args: argparse.Namespace, name: str, workdir: Path) -> tuple[int, dict[str, Any]]:
    counts_path = workdir / f"{name}.json"
    corpus = Path(args.corpus) / name if args.corpus else workdir / "corpus" / name
    cmd = [sys.executable, "-m", "tests.faults.atheris_fuzz", "--worker", name]
    cmd += ["--runs", str(args.runs), "--counts", str(counts_path), "--corpus", str(corpus)]
    cmd += ["--artifacts", str(args.artifacts)]
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    if args.reproduce:
        cmd += ["--reproduce", str(args.reproduce)]
    started = time.monotonic()
    code = subprocess.run(cmd, cwd=ROOT, check=False).returncode
    try:
        doc: dict[str, Any] = json.loads(counts_path.read_text())
    except (OSError, ValueError):
        doc = {"counts": {}, "findings": [{"type": "no counts", "message": f"exit {code}"}]}
    doc["wall_seconds"] = time.monotonic() - started
    return code, doc


def report(name: str, code: int, doc: dict[str, Any], artifacts: Path) -> tuple[int, int]:
    """Print one target's figures; returns (inputs, findings)."""
    counts: dict[str, int] = doc["counts"]
    inputs = counts.get("inputs", 0)
    accepted = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("accepted:")}
    refused = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("refused:")}
    findings: list[dict[str, Any]] = doc["findings"]
    if code != 0 and not findings:
        findings = [{"type": "worker failed", "message": f"exit {code}"}]
    seconds = doc.get("seconds", 0.0)
    print(
        f"atheris_fuzz {name}: inputs={inputs} accepted={sum(accepted.values())} "
        f"refused={sum(refused.values())} findings={len(findings)} checks={counts.get('checks', 0)}"
        f" fuzzing={seconds:.1f}s rate={inputs / max(seconds, 1e-3):.0f}/s"
        f" wall={doc['wall_seconds']:.1f}s exit={code}"
    )
    for label, group in (("refused", refused), ("accepted", accepted)):
        for key, value in sorted(group.items(), key=lambda kv: -kv[1]):
            print(f"  {label:8} {value:>9}  {key}")
    for finding in findings:
        print(f"  FINDING  {json.dumps(finding)}")
        if "input_sha1" in finding:
            print(f"  input saved as {artifacts}/{name}-crash-{finding['input_sha1']}")
    return inputs, len(findings)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults.atheris_fuzz", description=__doc__)
    p.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    p.add_argument("--runs", type=int, default=100_000, help="inputs per target")
    p.add_argument("--seed", type=int, help="libFuzzer's random seed (default: random)")
    p.add_argument("--corpus", type=Path, help="keep the corpus here (one folder per target)")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS, help="crash inputs")
    p.add_argument("--reproduce", type=Path, help="run one saved input (with one --target)")
    p.add_argument("--worker", choices=TARGETS, help=argparse.SUPPRESS)
    p.add_argument("--counts", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0  # pragma: no cover - libFuzzer exits the process
    if args.reproduce:
        if args.target == "all":
            p.error("--reproduce needs one --target")
        args.runs = 1
    args.artifacts = args.artifacts.resolve()
    names = TARGETS if args.target == "all" else (args.target,)
    total = found = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="atheris-fuzz-") as tmp:
        results = [(name, *_run_target(args, name, Path(tmp))) for name in names]
    print(f"\natheris fuzz, {args.runs} runs per target, seed {args.seed}:")
    for name, code, doc in results:
        inputs, n = report(name, code, doc, args.artifacts)
        total, found = total + inputs, found + n
    print(
        f"atheris_fuzz total: inputs={total} findings={found} targets={len(names)} "
        f"wall={time.monotonic() - started:.1f}s"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
