"""The one name for a PostgreSQL connection in type hints (psycopg 3, rows as tuples)."""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[Any]
