"""Authentication: permissions, password hashing, field encryption, JWTs, login throttling.

Every module here is pure (no sockets, no database): clocks, randomness and keys are passed in
or drawn explicitly, so the unit tests drive exactly the code the gateway runs.
"""
