"""``Authorization: Bearer <API_KEY>``: 401 when missing or malformed, 403 when wrong."""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from producers.gateway.errors import GatewayError

# RFC 7235 credentials with a token of visible ASCII: one space, no other blanks.
_BEARER = re.compile(rb"bearer ([\x21-\x7e]+)", re.IGNORECASE)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class BearerAuth:
    def __init__(self, api_key: str) -> None:
        self._key = api_key.encode("ascii")

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Pass exactly one ``Authorization: Bearer <key>`` among the raw ASGI headers.

        Compared as bytes in constant time: the header may carry any byte, and
        ``hmac.compare_digest`` on a non-ASCII ``str`` raises instead of answering.
        """
        values = [value for name, value in headers if name.lower() == b"authorization"]
        if not values:
            raise GatewayError(
                "UNAUTHORIZED",
                "missing Authorization: Bearer <API key>",
                headers=_CHALLENGE,
            )
        found = _BEARER.fullmatch(values[0]) if len(values) == 1 else None
        if found is None:
            raise GatewayError(
                "UNAUTHORIZED",
                "malformed Authorization: send one 'Bearer <API key>'",
                headers=_CHALLENGE,
            )
        if not hmac.compare_digest(found.group(1), self._key):
            raise GatewayError("FORBIDDEN", "wrong API key")
