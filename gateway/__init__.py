"""Pantheon: gateway package."""
