"""The sans-IO protocol core.

Modules here are pure: bytes, events and ``now`` in; bytes, events and deadlines out. They
never import asyncio, never open a socket and never read the clock themselves, so their tests
are synchronous and deterministic.
"""
