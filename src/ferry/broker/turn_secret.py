"""Reading the TURN REST shared secret (``ferry broker --turn-secret-file``).

The secret is what coturn's ``static-auth-secret`` holds; whoever has it can mint TURN
credentials, so it lives in a file of its own (not on the command line, where other local
users can read it, nor in the TOML settings that ``--print-config`` shows) and never appears
in a log, a page or a message.
"""

from __future__ import annotations

import stat
from pathlib import Path

from ferry.errors import ConfigError
from ferry.logs import get_logger

logger = get_logger(__name__)

MAX_SECRET_BYTES = 4096
"""Longest secret file accepted."""


def read_turn_secret(path: Path) -> bytes:
    """The secret in ``path``: its bytes without the surrounding whitespace (a trailing
    newline is usual). :class:`ConfigError` when the file cannot be read, is empty or is
    larger than :data:`MAX_SECRET_BYTES`; a warning when other users may read it."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()[: MAX_SECRET_BYTES + 1]
    except OSError as exc:
        raise ConfigError(
            f"--turn-secret-file {path}: cannot be read ({exc.strerror or exc})"
        ) from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"--turn-secret-file {path}: longer than {MAX_SECRET_BYTES} bytes")
    secret = data.strip()
    if not secret:
        raise ConfigError(f"--turn-secret-file {path}: the file is empty")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning(
            "the TURN secret file %s can be read by other users; make it readable by the "
            "broker's user only (chmod 600)",
            path,
        )
    return secret
