"""The egress's global budget of bytes read from destinations and not yet acknowledged.

Each session is already bounded on its own (``EgressConfig.session_buffer_bytes``), but a
censor that opens many sessions and never acknowledges anything can make the egress hold
``max_sessions`` times that. :class:`BufferBudget` bounds the sum. It is pure bookkeeping (no
asyncio): sessions report what they hold after each flush (:meth:`BufferBudget.update`), and
a stream asks :meth:`BufferBudget.may_read` before it reads its destination again.

The rule, for a stream of a session holding ``held`` bytes when all hold ``total``:

* ``held`` below ``floor``: read. No session is ever starved by others (its client gets at
  least ``floor`` bytes in flight), so the bound is ``limit`` plus ``floor`` per session.
* ``total`` at ``limit`` or more: wait.
* ``total`` at half the limit or more: read only while ``held`` is below an equal share of
  the limit (the limit divided among the sessions holding anything). The sessions that hold
  the most, typically those whose clients stopped acknowledging, are the ones that wait, and
  the second half of the budget goes to the sessions that hold little.
* otherwise: read (each session's own ``session_buffer_bytes`` still applies).

Reads are paused, never dropped: the destination's TCP pushes back.
"""

from __future__ import annotations

from collections.abc import Hashable

from ferry.errors import ConfigError


class BufferBudget:
    """Bytes all sessions together may hold for their clients (see the module docstring)."""

    def __init__(self, limit: int, floor: int) -> None:
        if limit < 1 or floor < 0:
            raise ConfigError(
                f"the buffer budget must be at least 1 byte and its floor 0 or more, got "
                f"{limit} and {floor}"
            )
        self.limit = limit
        self.floor = floor
        self.total = 0
        """Bytes all sessions hold now, as last reported."""
        self._held: dict[Hashable, int] = {}
        """Bytes each session holding anything reported last."""

    def update(self, holder: Hashable, held: int) -> bool:
        """Record that ``holder`` holds ``held`` bytes now; True when it holds less than
        before (waiting readers may go on)."""
        before = self._held.pop(holder, 0)
        if held > 0:
            self._held[holder] = held
        self.total += held - before
        return held < before

    def remove(self, holder: Hashable) -> None:
        """``holder`` ended: it holds nothing any more."""
        self.update(holder, 0)

    def fair_share(self) -> int:
        """An equal share of the budget among the sessions holding anything."""
        return self.limit // max(1, len(self._held))

    def may_read(self, holder: Hashable) -> bool:
        """Whether a stream of ``holder`` may read its destination now (module docstring)."""
        held = self._held.get(holder, 0)
        if held < self.floor:
            return True
        if self.total >= self.limit:
            return False
        if 2 * self.total >= self.limit:
            return held < self.fair_share()
        return True
