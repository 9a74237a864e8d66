"""One HTTP exchange with the broker, shared by the client's rendezvous and the volunteer.

Sends an optional JSON message, reads at most ``max_response_bytes`` of the answer, and turns
every transport failure into a :class:`~ferry.errors.BrokerError` with a plain sentence
(never the broker's address). Interpreting the status and body is the caller's business.
A ``host_header`` different from the URL's host is how a request is domain-fronted.
"""

from __future__ import annotations

import ssl

import aiohttp

from ferry.core.broker_messages import BrokerMessage, encode
from ferry.errors import BrokerError


async def request_broker(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    message: BrokerMessage | None,
    *,
    timeout: float,
    max_response_bytes: int,
    host_header: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """``(status, body)`` of one request; :class:`BrokerError` if it could not be made.

    ``host_header`` replaces the HTTP ``Host`` (the connection still goes to ``url``'s host);
    ``ssl_context`` replaces the default certificate checks (e.g. a private CA).
    """
    headers: dict[str, str] = {}
    if message is not None:
        headers["Content-Type"] = "application/json"
    if host_header is not None:
        headers["Host"] = host_header
    try:
        async with session.request(
            method,
            url,
            data=None if message is None else encode(message),
            headers=headers or None,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
            ssl=ssl_context if ssl_context is not None else True,
        ) as response:
            body = bytearray()
            async for chunk in response.content.iter_chunked(16384):
                body += chunk
                if len(body) > max_response_bytes:
                    raise BrokerError(
                        f"the broker's response is larger than {max_response_bytes} bytes"
                    )
            return response.status, bytes(body)
    except TimeoutError as exc:
        raise BrokerError(f"the broker did not answer within {timeout:g} seconds") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise BrokerError(
            "could not reach the broker; check the broker URL and the network"
        ) from exc
