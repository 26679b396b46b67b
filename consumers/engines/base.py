"""The engine seam: what the worker hands an engine for one page, and what it gets back.

An engine recognises one page per call and may be called concurrently; ``capacity()``
says how many pages it can usefully hold at once (the worker's in-flight limit). Errors
leave an engine only as ``consumers.errors`` types: ``TransientError`` for a hiccup worth
retrying, ``PageFailedError`` for a page it can never read, ``EngineDeadError`` when the
engine itself is gone.

While it works, an engine may tell a listener what it is doing (``on_event``): text as
it is generated (``TextDelta``), and ``StreamRestarted`` when the text so far is thrown
away because the page starts over. The listener is called on the event loop and must
not block; an engine does no streaming work at all when nobody listens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image

from schemas import PageStatus


@dataclass(frozen=True)
class PageRequest:
    document_id: str
    page_number: int  # 1-based
    image: Image.Image  # decoded, EXIF-rotated, 8-bit L or RGB, long side <= the limit
    prompt: str
    max_tokens: int
    temperature: float
    dpi: float | None = None  # the page's resolution as its file states it, if it does


@dataclass(frozen=True)
class PageResult:
    text: str
    status: PageStatus = PageStatus.OK
    token_count: int = 0  # generated for ``text``
    engine_s: float = 0.0
    attempts: int = 1
    # Why generating ``text`` stopped: "stop", "length" or the engine's own reason.
    finish_reason: str | None = None
    prompt_tokens: int = 0  # the prompt ``text`` was generated from, image included


@dataclass(frozen=True)
class TextDelta:
    """Text generated since the previous delta; never empty."""

    text: str
    attempt: int  # 1-based; the text of one attempt is the concatenation of its deltas


@dataclass(frozen=True)
class StreamRestarted:
    """The page starts over: drop the text streamed so far (``retry: stream restarts``)."""

    attempt: int  # the attempt that starts now, 1-based
    reason: str  # the dropped attempt's page status ("REPETITIVE"), or an error code


PageEvent = TextDelta | StreamRestarted
PageListener = Callable[[PageEvent], None]


@dataclass(frozen=True)
class EngineHealth:
    loaded: bool
    gpu_available: bool
    detail: str = ""


@runtime_checkable
class OcrEngine(Protocol):
    name: str  # "tesseract", "vllm", ...
    model: str  # what produced the text, e.g. "tesseract 5.3.0 kor+eng" or a model id

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def capacity(self) -> int: ...

    def health(self) -> EngineHealth: ...

    async def recognize(
        self, page: PageRequest, on_event: PageListener | None = None
    ) -> PageResult: ...
