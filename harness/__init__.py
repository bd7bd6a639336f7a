"""Pantheon: stacks and simulated chains shared by tests/ and bench/."""
