"""CometBFT side by side: a 4-validator CometBFT v0.38 localnet on this machine (D48).

Builds ``bench/comet/`` with ``go build`` (cached under ``~/.cache/pantheon/comet`` by a
hash of the Go sources): ``cometnode``, one validator with the bench's ABCI application in
the same process (it verifies each 200-byte transaction's Ed25519 signature, ZIP-215 rules
batched per block, and keeps per-key nonces), and ``cometload``, the load generator. Then,
for each ``--timeout-commit``, writes a localnet with ``cometnode testnet`` (every port on
127.0.0.1), starts the 4 nodes, sends ``--warmup`` transactions (not measured), a burst of
``--txs`` for throughput and ``--txs / 4`` paced at half that rate for latency (from each
send to the NewBlock event of the block holding it), prints the figures in the shape of
``python -m bench.consensus``, and stops and removes everything, also on Ctrl-C.

    python -m bench.comet [--txs 8000] [--warmup 1000] [--timeout-commit 1s,100ms]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from infra.procs import free_port_block, stop_all

SOURCES = Path(__file__).resolve().parent / "comet"
CACHE = Path.home() / ".cache" / "pantheon" / "comet"
BINARIES = ("cometnode", "cometload")
VALIDATORS = 4
TomlValue = str | int | bool


class CometBenchError(Exception):
    """Something the bench needs is missing or failed; the message says what."""


def source_hash(root: Path = SOURCES) -> str:
    """SHA-256 over the Go module's sources (go.mod, go.sum, every .go file) and names."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and (p.suffix == ".go" or p.name.startswith("go."))
    )
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build(root: Path = SOURCES, cache: Path = CACHE) -> Path:
    """The directory holding the built binaries, building them first if not cached."""
    target = cache / source_hash(root)
    if all((target / name).is_file() for name in BINARIES):
        return target
    go = shutil.which("go")
    if go is None:
        raise CometBenchError(
            "`go` is not on PATH: bench.comet builds a CometBFT v0.38 localnet from "
            f"{root} with Go 1.23 or newer (Go modules come from the Go module proxy); "
            "the rest of Pantheon does not need Go"
        )
    print(f"building {', '.join(BINARIES)} with {go} into {target}", file=sys.stderr)
    partial = cache / f"{target.name}.partial-{os.getpid()}"
    built = subprocess.run(
        [go, "build", "-o", str(partial) + "/", "./cmd/..."],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise CometBenchError(f"go build failed in {root}:\n{built.stderr.strip()}")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def node_id(node_key: Mapping[str, object]) -> str:
    """CometBFT's node ID of a ``node_key.json`` document: the hex of the first 20 bytes
    of SHA-256 of its Ed25519 public key (the last 32 bytes of the 64-byte private key)."""
    priv = node_key.get("priv_key")
    value = priv.get("value") if isinstance(priv, dict) else None
    if not isinstance(value, str):
        raise CometBenchError("node_key.json has no priv_key.value")
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise CometBenchError("node_key.json's priv_key.value is not base64") from exc
    if len(raw) != 64:
        raise CometBenchError(f"node key is {len(raw)} bytes, not 64")
    return hashlib.sha256(raw[32:]).digest()[:20].hex()


def toml_literal(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def patch_toml(text: str, changes: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """``text`` with the ``key = value`` lines of each table replaced (``""`` is the
    top-level table). Every key must already be there, once per table: CometBFT writes
    them all, so a missing one means another version's file."""
    wanted = {
        (table, key): toml_literal(v) for table, kv in changes.items() for key, v in kv.items()
    }
    done: set[tuple[str, str]] = set()
    table = ""
    out = []
    for line in text.splitlines(keepends=True):
        header = re.match(r"\s*\[([^\[\]]+)\]\s*$", line)
        if header:
            table = header.group(1).strip()
        setting = re.match(r"(\s*)([A-Za-z0-9_-]+)(\s*=\s*)", line)
        if setting and (table, setting.group(2)) in wanted:
            where = (table, setting.group(2))
            if where in done:
                raise CometBenchError(f"config: {where[1]} twice in [{where[0]}]")
            done.add(where)
            end = "\n" if line.endswith("\n") else ""
            out.append(setting.group(1) + setting.group(2) + setting.group(3) + wanted[where] + end)
        else:
            out.append(line)
    missing = sorted(set(wanted) - done)
    if missing:
        raise CometBenchError("config: not found: " + ", ".join(f"[{t}] {k}" for t, k in missing))
    return "".join(out)


@dataclass(frozen=True)
class Ports:
    p2p: int
    rpc: int


def localnet_changes(
    index: int,
    ports: list[Ports],
    ids: list[str],
    *,
    timeout_commit: str,
    mempool_size: int,
) -> dict[str, dict[str, TomlValue]]:
    """Node ``index``'s config: loopback ports, the others as persistent peers, quiet logs,
    no transaction indexer (nothing reads it), the mempool and commit timeout given."""
    peers = ",".join(f"{ids[i]}@127.0.0.1:{p.p2p}" for i, p in enumerate(ports) if i != index)
    return {
        "": {"moniker": f"bench-{index}", "log_level": "error"},
        "rpc": {"laddr": f"tcp://127.0.0.1:{ports[index].rpc}"},
        "p2p": {
            "laddr": f"tcp://127.0.0.1:{ports[index].p2p}",
            "persistent_peers": peers,
            "pex": False,
            "addr_book_strict": False,
            "allow_duplicate_ip": True,
        },
        "mempool": {"size": mempool_size, "cache_size": 2 * mempool_size},
        "consensus": {"timeout_commit": timeout_commit},
        "tx_index": {"indexer": "null"},
    }


@dataclass(frozen=True)
class CometResult:
    """What ``cometload`` printed (seconds, tx/s, CPU seconds)."""

    verify_rate: float
    throughput: float
    wall: float
    send_wall: float
    paced_rate: float
    p50: float
    p99: float
    finalized: int
    rejected: int
    blocks: int
    block_txs: int
    paced_interval: float
    cpu_validators: float
    cpu_loadgen: float


def parse_result(output: str) -> CometResult:
    """The figures of ``cometload``'s output: its last non-empty line, one JSON object."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        raise CometBenchError("cometload printed nothing")
    try:
        doc = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise CometBenchError(f"cometload's last line is not JSON: {lines[-1][:200]}") from exc
    if not isinstance(doc, dict):
        raise CometBenchError("cometload's result is not a JSON object")
    values: dict[str, float | int] = {}
    for name, kind in CometResult.__annotations__.items():
        value = doc.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CometBenchError(f"cometload's result has no number {name!r}")
        if kind == "int" and value != int(value):
            raise CometBenchError(f"cometload's {name!r} is not a whole number")
        values[name] = int(value) if kind == "int" else float(value)
    return CometResult(**values)  # type: ignore[arg-type]


def report(
    r: CometResult,
    *,
    label: str,
    txs: int,
    cores: int,
    load: tuple[str, str],
    verifies_per_tx: int = 1,
) -> list[str]:
    """The lines printed for one run, in the shape of ``bench.consensus``'s;
    ``verifies_per_tx``: how often each validator verifies each transaction (the ceiling
    is ``verify rate x cores / validators / verifies_per_tx``)."""
    ceiling = r.verify_rate * cores / VALIDATORS / verifies_per_tx
    finalized = VALIDATORS * txs
    return [
        f"{VALIDATORS} validators, {label}: finalized {r.throughput:9,.0f} tx/s "
        f"({100 * r.throughput / ceiling:.0f}% of ceiling {ceiling:,.0f} = "
        f"{r.verify_rate:,.0f} verifies/s x {cores} cores / {VALIDATORS} validators"
        f"{f' / {verifies_per_tx} verifies per tx' if verifies_per_tx > 1 else ''}; "
        f"{r.blocks} blocks, {r.block_txs / max(r.blocks, 1):,.0f} tx per block; "
        f"{r.rejected} rejected)",
        f"  latency at {r.paced_rate:,.0f} tx/s p50 {r.p50 * 1000:.0f} ms, "
        f"p99 {r.p99 * 1000:.0f} ms (a block every {r.paced_interval * 1000:.0f} ms)",
        f"  CPU during the burst ({r.wall:.1f} s wall, {cores * r.wall:.1f} core-s): "
        f"all sent after {r.send_wall:.1f} s; validators {r.cpu_validators:.1f} s (of which "
        f"Ed25519 verify ~{verifies_per_tx * finalized / r.verify_rate:.1f} s), load generator "
        f"{r.cpu_loadgen:.1f} s",
        f"  validator CPU per finalized tx per validator "
        f"{1e6 * r.cpu_validators / finalized:.0f} us = "
        f"{r.verify_rate * r.cpu_validators / finalized:.2f} x one verify "
        f"({1e6 / r.verify_rate:.0f} us)",
        f"  load average (1/5/15 min) before {load[0]}, after {load[1]}",
    ]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def localnet(
    bins: Path, *, timeout_commit: str, mempool_size: int, checktx_verify: bool
) -> Iterator[tuple[list[str], list[int], Path]]:
    """A running 4-node localnet: yields its RPC addresses, node pids and directory; stops
    the nodes and removes their files on the way out, whatever happened."""
    work = Path(tempfile.mkdtemp(prefix="pantheon-comet-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        made = subprocess.run(
            [
                str(bins / "cometnode"),
                "testnet",
                "--v",
                str(VALIDATORS),
                "--o",
                str(work),
                "--populate-persistent-peers=false",
                "--starting-ip-address",
                "127.0.0.1",
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            raise CometBenchError(f"cometnode testnet failed: {made.stderr.strip()[-2000:]}")
        homes = [work / f"node{i}" for i in range(VALIDATORS)]
        ids = [node_id(json.loads((h / "config" / "node_key.json").read_text())) for h in homes]
        base = free_port_block(2 * VALIDATORS)
        ports = [Ports(base + 2 * i, base + 2 * i + 1) for i in range(VALIDATORS)]
        for i, home in enumerate(homes):
            config = home / "config" / "config.toml"
            changes = localnet_changes(
                i, ports, ids, timeout_commit=timeout_commit, mempool_size=mempool_size
            )
            config.write_text(patch_toml(config.read_text(), changes))
        for home in homes:
            command = [str(bins / "cometnode"), "node", "--home", str(home)]
            with (home / "node.log").open("wb") as log:  # the node keeps its own copy
                procs.append(
                    subprocess.Popen(
                        [*command, *(["--checktx-verify"] if checktx_verify else [])],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        rpcs = [f"http://127.0.0.1:{p.rpc}" for p in ports]
        wait_ready(rpcs, procs, homes)
        yield rpcs, [p.pid for p in procs], work
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


def wait_ready(
    rpcs: list[str], procs: list[subprocess.Popen[bytes]], homes: list[Path], timeout: float = 60
) -> None:
    """Wait until every node has committed height 2 (the net is connected and making
    blocks); a node that exits or a timeout raises with the end of its log."""
    deadline = time.monotonic() + timeout
    for rpc, proc, home in zip(rpcs, procs, homes, strict=True):
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (home / "node.log").read_text(errors="replace")[-2000:]
                raise CometBenchError(f"node {home.name} did not start:\n{tail}")
            try:
                with urllib.request.urlopen(f"{rpc}/status", timeout=2) as resp:
                    status = json.load(resp)
                if int(status["result"]["sync_info"]["latest_block_height"]) >= 2:
                    break
            except OSError:
                pass
            time.sleep(0.2)


def run_once(bins: Path, args: argparse.Namespace, timeout_commit: str) -> CometResult:
    mempool = max(5000, 2 * (args.txs + args.warmup))
    with localnet(
        bins,
        timeout_commit=timeout_commit,
        mempool_size=mempool,
        checktx_verify=args.checktx_verify,
    ) as (rpcs, pids, work):
        load = subprocess.run(
            [
                str(bins / "cometload"),
                "--rpc",
                ",".join(rpcs),
                "--pids",
                ",".join(map(str, pids)),
                "--txs",
                str(args.txs),
                "--warmup",
                str(args.warmup),
                "--keys",
                str(args.keys),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if load.returncode != 0:
            logs = "".join(
                f"\n{log.parent.name}: " + log.read_text(errors="replace")[-600:]
                for log in sorted(work.glob("node*/node.log"))
            )
            raise CometBenchError(f"cometload failed: {load.stderr.strip()[-2000:]}{logs}")
        return parse_result(load.stdout)


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the localnet's cleanup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--txs", type=int, default=8000, help="burst size")
    parser.add_argument("--warmup", type=int, default=1000, help="transactions first, not measured")
    parser.add_argument(
        "--timeout-commit",
        default="1s,100ms",
        help="comma-separated CometBFT timeout_commit values, one run each (default: "
        "CometBFT's 1s, then 100ms, Pantheon's block interval in bench.consensus)",
    )
    parser.add_argument(
        "--checktx-verify",
        action="store_true",
        help="verify signatures in CheckTx too (each validator then verifies every "
        "transaction twice)",
    )
    parser.add_argument(
        "--keys",
        type=int,
        default=16,
        help="signing keys, each sent in nonce order by its own connection to one node "
        "(default 16: four senders per node; bench.consensus signs with 4 keys)",
    )
    args = parser.parse_args()
    if args.txs < 4 or args.warmup < 0 or args.keys < 1:
        parser.error("--txs must be at least 4, --warmup at least 0, --keys at least 1")
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        bins = build()
        for timeout_commit in args.timeout_commit.split(","):
            before = load_average()
            r = run_once(bins, args, timeout_commit)
            label = (
                f"CometBFT v0.38, timeout_commit {timeout_commit}"
                f"{', CheckTx verifies too' if args.checktx_verify else ''}"
            )
            cores = os.cpu_count() or 1
            for line in report(
                r,
                label=label,
                txs=args.txs,
                cores=cores,
                load=(before, load_average()),
                verifies_per_tx=2 if args.checktx_verify else 1,
            ):
                print(line, flush=True)
    except CometBenchError as exc:
        sys.exit(f"bench.comet: {exc}")


if __name__ == "__main__":
    main()
