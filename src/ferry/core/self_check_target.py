"""The stream target an egress answers itself, so a client can test the whole chain.

``ferry client --check`` ends with a fetch through client, volunteer and egress. Without a
``--check-url`` it asks for :data:`SELF_CHECK_TARGET`, a name under ``.invalid`` (reserved by
RFC 2606, so it can never be a real destination); the egress answers such a stream itself
with a success reply followed by :data:`SELF_CHECK_ANSWER` and the end of the stream, and
connects nowhere (``docs/protocol.md`` §5).
"""

from __future__ import annotations

from ferry.core.addresses import Target

SELF_CHECK_TARGET = Target("self-check.ferry.invalid", 1)
"""The reserved target: host ``self-check.ferry.invalid``, port 1."""

SELF_CHECK_ANSWER = b"ferry egress self-check ok\n"
"""What the egress sends on a stream to :data:`SELF_CHECK_TARGET` after its reply."""
