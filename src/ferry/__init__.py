"""ferry: a censorship-circumvention network.

Traffic flows app → client (SOCKS5/HTTP CONNECT) → WebRTC data channel → volunteer →
WebSocket → egress → destination, carried end to end by one QUIC session between the
client and the egress. See ``docs/architecture.md`` for the code's shape.
"""

__version__ = "0.1.0"
