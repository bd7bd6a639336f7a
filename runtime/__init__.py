"""Pantheon: process helpers (logging, heap, /metrics, Kafka client config, topics)."""
