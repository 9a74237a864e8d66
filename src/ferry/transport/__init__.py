"""Thin asyncio adapters: datagram channels (WebRTC, WebSocket, in memory) and the QUIC driver."""
