"""Pantheon: schemas package."""
