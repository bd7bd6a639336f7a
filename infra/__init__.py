"""Pantheon: infra package."""
