"""Pantheon: projections package."""
