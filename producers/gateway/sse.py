"""Server-Sent Events in OpenAI's ``chat.completion.chunk`` shape, ending ``[DONE]``.

A stream opens with the assistant's role and the first text, then one chunk per piece
of text, then a chunk with the ``finish_reason`` (and the model the result names), a
``usage`` chunk when asked for (``stream_options.include_usage``), and ``data: [DONE]``.
A correction of text already sent (``streaming.Discard``: a page that restarted) is a
chunk whose delta is empty and whose ``medocr.discard`` says how many characters
(code points) to drop from the end; a plain OpenAI client ignores it. An error after
the stream has begun is one ``{"error": ...}`` event, then ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from producers.gateway.errors import GatewayError
from producers.gateway.streaming import Discard, Emission

DONE = b"data: [DONE]\n\n"


def event(data: Mapping[str, object]) -> bytes:
    """One SSE event carrying ``data`` as compact JSON."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def error_event(error: GatewayError) -> bytes:
    return event(error.openai_body())


@dataclass(frozen=True)
class ChunkWriter:
    """The chunks of one completion: its id, creation time and model."""

    completion_id: str
    created: int
    model: str

    def chunk(
        self,
        delta: Mapping[str, object],
        *,
        finish_reason: str | None = None,
        model: str | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> dict[str, object]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model or self.model,
            "choices": [
                {"index": 0, "delta": dict(delta), "finish_reason": finish_reason}
            ],
            **(extra or {}),
        }

    def role(self) -> bytes:
        return event(self.chunk({"role": "assistant", "content": ""}))

    def emission(self, emission: Emission) -> bytes:
        if isinstance(emission, Discard):
            return event(self.chunk({}, extra={"medocr": {"discard": emission.chars}}))
        return event(self.chunk({"content": emission}))

    def finish(self, finish_reason: str, model: str) -> bytes:
        return event(self.chunk({}, finish_reason=finish_reason, model=model))

    def usage(self, usage: Mapping[str, int], model: str) -> bytes:
        return event(
            {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
                "choices": [],
                "usage": dict(usage),
            }
        )
