"""Pantheon: modules that read both the chain topics and PostgreSQL."""
