"""http(s) image URLs, only when ``GATEWAY_HTTP_FETCH`` allows them.

Off by default: a gateway that fetches URLs its senders name can be made to reach
hosts only it can see. When on, a fetch is one GET (at most three redirects) that must
answer 200 within ``GATEWAY_HTTP_FETCH_TIMEOUT_S`` for the whole transfer and carry at
most ``GATEWAY_HTTP_FETCH_MAX_BYTES`` (counted as the bytes arrive, after any content
decoding, so neither a lying Content-Length nor a compressed bomb gets past it).
"""

from __future__ import annotations

import asyncio

import httpx

from producers.gateway.errors import GatewayError
from producers.gateway.images import too_large

MAX_REDIRECTS = 3


class RemoteFetcher:
    def __init__(
        self, client: httpx.AsyncClient, *, max_bytes: int, timeout_s: float
    ) -> None:
        """``client``: its transport is the seam (``httpx.MockTransport`` in tests)."""
        self._client = client
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str) -> bytes:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._get(url)
        except TimeoutError:
            raise GatewayError(
                "IMAGE_URI",
                f"the image URL did not answer within {self._timeout_s:g} s",
            ) from None
        except httpx.HTTPError as exc:
            raise GatewayError(
                "IMAGE_URI",
                f"the image URL could not be fetched ({type(exc).__name__})",
            ) from exc

    async def _get(self, url: str) -> bytes:
        async with self._client.stream("GET", url) as response:
            if response.status_code != 200:
                raise GatewayError(
                    "IMAGE_URI", f"the image URL answered HTTP {response.status_code}"
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise too_large(self._max_bytes)
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) > self._max_bytes:
                    raise too_large(self._max_bytes)
            return bytes(received)


def build_fetcher(*, max_bytes: int, timeout_s: float) -> RemoteFetcher:
    """A fetcher with a client of its own (``aclose`` it)."""
    client = httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        timeout=timeout_s,
        trust_env=False,  # no proxy or netrc from the environment
    )
    return RemoteFetcher(client, max_bytes=max_bytes, timeout_s=timeout_s)
