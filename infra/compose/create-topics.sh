#!/usr/bin/env bash
# One-shot topic creation for compose.yaml (service kafka-init, image apache/kafka): the
# topics of runtime/topics.py with replication 3 and the ledger settings of
# runtime.topics.ledger_config(3); the feeds topic is bounded (runtime.topics.FEEDS_CONFIG,
# D57) instead of kept for ever. tests/unit/test_compose.py keeps this file in sync.
# Environment: BOOTSTRAP (brokers), PREFIX (default pantheon.), INSTITUTIONS (space-separated).
set -euo pipefail
: "${BOOTSTRAP:?set BOOTSTRAP}"
: "${INSTITUTIONS:?set INSTITUTIONS}"
PREFIX="${PREFIX:-pantheon.}"
KAFKA_TOPICS=/opt/kafka/bin/kafka-topics.sh

FOREVER=(
    --config retention.ms=-1
    --config retention.bytes=-1
)
FEEDS_CONFIG=(
    --config retention.ms=3600000
    --config retention.bytes=1073741824
    --config segment.bytes=134217728
    --config segment.ms=600000
)
LEDGER_CONFIG=(
    --config message.timestamp.type=LogAppendTime
    --config cleanup.policy=delete
    --config min.insync.replicas=2
    --config unclean.leader.election.enable=false
)

create() {  # create SUFFIX PARTITIONS
    local retention=("${FOREVER[@]}")
    if [ "$1" = feeds ]; then retention=("${FEEDS_CONFIG[@]}"); fi
    "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "${PREFIX}$1" --partitions "$2" --replication-factor 3 \
        "${LEDGER_CONFIG[@]}" "${retention[@]}"
}

create tx 1
create votes 1
create blocks 1
create receipts 1
create feeds 1
create l2.records 6
create l2.rejected 6
for institution in $INSTITUTIONS; do
    create "iam.${institution}" 1
done
"$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --describe --topic "${PREFIX}tx"
