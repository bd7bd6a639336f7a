"""Fetch the Apache Kafka broker from Maven Central into the cache, once.

``infra/kafka/pom.xml`` names the broker (``org.apache.kafka:kafka_2.13``) and a logging
backend; Maven's dependency plugin copies them and their runtime dependencies into a
temporary directory which is then renamed into place, so an interrupted fetch never
leaves a half-filled cache that later runs would trust.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from infra.errors import PrerequisiteError, StackError

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
_MARKER = ".complete"


def is_fetched(dist_dir: Path) -> bool:
    """True when ``dist_dir`` holds a complete copy of the broker's jars."""
    return (dist_dir / _MARKER).exists()


def classpath(dist_dir: Path) -> str:
    """The JVM class path of a fetched distribution."""
    return str(dist_dir / "*")


def fetch(dist_dir: Path, version: str) -> Path:
    """Make sure the jars of Kafka ``version`` are in ``dist_dir``; return it."""
    if is_fetched(dist_dir):
        return dist_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PrerequisiteError(
            "Maven (`mvn`) is needed to fetch the Kafka broker from Maven Central; "
            "install it with `apt-get install -y maven` (or run ./dev up, which does)"
        )
    dist_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dist_dir.name}-", dir=dist_dir.parent))
    log.info("fetching Apache Kafka %s from Maven Central into %s", version, dist_dir)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dkafka.version={version}",
        f"-Dcache.dir={staging}",
        "dependency:copy-dependencies",
    ]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1200)
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            raise StackError(
                f"could not fetch Kafka {version} with Maven (exit {result.returncode}):\n"
                + (result.stdout + result.stderr)[-3000:]
            )
        (staging / _MARKER).write_text(version + "\n")
        if dist_dir.exists():  # a concurrent fetch won; keep theirs
            shutil.rmtree(staging)
        else:
            staging.rename(dist_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return dist_dir
