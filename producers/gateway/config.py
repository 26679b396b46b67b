"""What the gateway is told at start: plain values, built by the CLI from the settings."""

from __future__ import annotations

import re
from dataclasses import dataclass

from producers.kafka import MAX_DOCUMENT_BYTES

# Waits in flight at once (one per document waited on, one more per extra request
# joining it); past it requests get 429.
DEFAULT_MAX_WAITS = 64
# How long one HTTP request waits for its result before a 504.
DEFAULT_TIMEOUT_S = 120.0
# The consumer group of the gateway replicas' result readers: each reads only its
# assigned partitions of the result topic, and its requests are answered there.
DEFAULT_GROUP = "medocr-gateways"
# Remote http(s) image URLs (off unless GATEWAY_HTTP_FETCH): the whole fetch.
HTTP_FETCH_TIMEOUT_S = 10.0
# What the chunks of a stream name as their model before the result names the real one.
STREAM_MODEL = "medocr"

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class GatewayConfig:
    api_key: str  # visible ASCII: an Authorization header must be able to carry it
    max_waits: int = DEFAULT_MAX_WAITS
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    max_id_chars: int = 256
    max_prompt_bytes: int = 16384
    file_uri_roots: tuple[str, ...] = ()  # resolved folders file:// URLs may point into
    http_fetch: bool = False
    http_fetch_max_bytes: int = MAX_DOCUMENT_BYTES
    http_fetch_timeout_s: float = HTTP_FETCH_TIMEOUT_S
    retry_after_s: int = 1  # what a 429 tells the sender to wait
    result_topic: str = "ocr.results"  # named when a wait times out

    def __post_init__(self) -> None:
        if not _VISIBLE_ASCII.fullmatch(self.api_key):
            raise ValueError(
                "API_KEY must be set, visible ASCII without blanks: the gateway never"
                " serves documents without a key"
            )
        if self.max_waits < 1 or self.timeout_s <= 0:
            raise ValueError("the waits limit and the timeout must be positive")

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"GatewayConfig(max_waits={self.max_waits}, timeout_s={self.timeout_s})"
