"""A minimal faust-streaming worker, run as a subprocess by test_faust_agent.py.

It consumes ``<in>``, counts messages per key in a table (changelog-backed), and sends
``VALUE|count`` to ``<out>``: enough to prove that faust's aiokafka speaks to our broker
(consumer groups, produce, the table's changelog topic).

usage: python faust_probe.py BOOTSTRAP IN_TOPIC OUT_TOPIC APP_ID DATADIR
"""

from __future__ import annotations

import sys
from typing import Any

import faust

bootstrap, topic_in, topic_out, app_id, datadir = sys.argv[1:6]

app = faust.App(
    app_id,
    broker=f"kafka://{bootstrap}",
    store="memory://",
    datadir=datadir,
    web_enabled=False,
    topic_replication_factor=1,
    topic_partitions=1,
    producer_acks=-1,
)
source = app.topic(
    topic_in,
    key_type=bytes,
    value_type=bytes,
    value_serializer="raw",
    key_serializer="raw",
    partitions=1,
)
sink = app.topic(
    topic_out,
    key_type=bytes,
    value_type=bytes,
    value_serializer="raw",
    key_serializer="raw",
    partitions=1,
)
counts = app.Table("counts", default=int, partitions=1)


@app.agent(source)
async def count_and_forward(stream: Any) -> None:
    async for key, value in stream.items():
        counts[key] += 1  # a table value is assigned, never mutated in place
        await sink.send(key=key, value=value.upper() + b"|" + str(counts[key]).encode())


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
