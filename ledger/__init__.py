"""Pantheon: ledger package."""
