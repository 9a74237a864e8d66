"""What a test needs of the host, checked so that a missing piece fails the test by name.

CI installs every tool these tests use (``.ci/run``), so a missing one is an error to report,
never a reason to skip: a skipped test would hide the feature it checks.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_host(*commands: str, root: bool = False) -> None:
    """Fail the calling test unless every command is on PATH (and, with ``root``, the test
    runs as root), naming what is missing and how CI gets it."""
    missing = [command for command in commands if shutil.which(command) is None]
    if root and os.geteuid() != 0:
        missing.append("root (network namespaces and iptables)")
    if missing:
        pytest.fail(
            f"this test needs {', '.join(missing)}; .ci/run installs them on Debian "
            "(apt-get install iproute2 iptables nginx coturn) and runs as root",
            pytrace=False,
        )
