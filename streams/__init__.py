"""Pantheon: streams package."""
