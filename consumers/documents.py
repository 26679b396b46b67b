"""One consumed record in, one outcome out: a result, and a dead letter when it failed.

The path of a record: decode and check the request (``intake``), read its bytes, find
their decoder (``inputs``), open the scan and size every page from its headers, then
decode the pages one at a time, each in its decoder's turn (``decoding``) and after
taking its place in the page budget, and hand each to the page recognizer
(``recognition``: engine, retries, a page that fails alone) as soon as it is decoded.
Kafka offsets, publishing and commits are the worker's business.

Whatever goes wrong while handling the record ends the record, never the worker:
``classify(exc, Scope.RECORD)`` turns even an unexpected exception into a FAILED
outcome (``INTERNAL_ERROR``). Only what ``classify`` calls fatal leaves ``recognize``:
the engine died, transient errors outlasted their retries, or the task was cancelled.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from consumers.budget import PagePlaces
from consumers.decoding import DecodeClock, DecodeTurns
from consumers.errors import (
    Action,
    InvalidRequestError,
    NoTextLayerError,
    Scope,
    classify,
)
from consumers.inputs import (
    INPUTS,
    DecodedDocument,
    ImageLimits,
    InputDecoder,
    InputRegistry,
)
from consumers.intake import RequestLimits, check_request, decode_request, echoable
from consumers.outcomes import DocumentSource, Msg, Outcome, OutcomeBuilder
from consumers.recognition import PageRecognizer, log_failure
from consumers.storage import read_uri_within
from schemas import OcrPage, OcrRequest
from schemas.content_types import sniff_content_type

# A file:// read, and a document's decoding, that take longer are abandoned.
URI_READ_TIMEOUT_S = 10.0
DECODE_TIMEOUT_S = 60.0

# A page's own text layer (a born-digital PDF): auto = use a usable one instead of OCR,
# never = always OCR, only = never OCR (a page without one fails: NO_TEXT_LAYER).
TextLayerMode = Literal["auto", "never", "only"]


@dataclass(frozen=True)
class RecognizerOptions:
    limits: ImageLimits
    uri_roots: tuple[str, ...]
    request_limits: RequestLimits = field(default_factory=RequestLimits)
    uri_read_timeout_s: float = URI_READ_TIMEOUT_S
    decode_timeout_s: float = DECODE_TIMEOUT_S
    text_layer: TextLayerMode = "auto"


@dataclass
class _Known:
    """What is known of the record so far: a failure still reports it."""

    request: OcrRequest | None = None
    digest: str | None = None
    source: DocumentSource | None = None


class DocumentRecognizer:
    def __init__(
        self,
        pages: PageRecognizer,
        options: RecognizerOptions,
        outcomes: OutcomeBuilder,
        *,
        inputs: InputRegistry = INPUTS,
    ) -> None:
        self._pages = pages
        self._options = options
        self._outcomes = outcomes
        self._inputs = inputs
        self._decode_turns = DecodeTurns(options.limits.max_pixels)

    async def recognize(self, msg: Msg, places: PagePlaces) -> Outcome:
        """The outcome of one record, which arrives holding its first budget place.

        Every place the record holds is given back before this returns or raises.
        """
        started = time.monotonic()
        known = _Known()
        try:
            return await self._recognize(msg, places, known, started)
        except Exception as exc:
            if classify(exc, Scope.RECORD) is not Action.DEAD_LETTER:
                raise
            log_failure(msg, exc)
            return self._outcomes.failed(
                msg, known.request, known.digest, exc, started, known.source
            )
        finally:
            places.give_all()

    async def _recognize(
        self, msg: Msg, places: PagePlaces, known: _Known, started: float
    ) -> Outcome:
        # read with the serde the results are written with (the publisher's)
        request = decode_request(msg, self._outcomes.encoder.serde)
        known.request = echoable(request, self._options.request_limits)
        check_request(request, self._options.request_limits)
        raw = await self._read(request)
        limits = self._options.limits
        decoder = self._inputs.decoder_for_bytes(raw, limits)
        clock = DecodeClock(self._options.decode_timeout_s)
        known.digest, document = await self._decode_turns.run(
            decoder, 0, clock, lambda: (sha256_hex(raw), decoder.open(raw, limits))
        )
        try:
            known.source = DocumentSource(document.format, dict(document.metadata))
            texts = await self._recognize_pages(
                msg, request, _Opened(document, decoder, clock), places
            )
        finally:
            # also ends a decode still running in a renderer child (a PDF's)
            document.close()
        return self._outcomes.finished(
            msg, request, known.digest, texts, started, known.source
        )

    async def _read(self, request: OcrRequest) -> bytes:
        if request.image is not None:
            raw = request.image
        else:
            uri = request.image_uri or ""  # check_request made sure one of them is set
            raw = await read_uri_within(
                uri,
                self._options.uri_roots,
                self._options.limits.max_document_bytes,
                self._options.uri_read_timeout_s,
            )
        sniffed = sniff_content_type(raw) if raw else None
        if sniffed is not None and sniffed != request.content_type:
            raise InvalidRequestError(
                f"content_type says {request.content_type} but the bytes are {sniffed}"
            )
        return raw

    async def _recognize_pages(
        self, msg: Msg, request: OcrRequest, opened: _Opened, places: PagePlaces
    ) -> list[OcrPage]:
        """Decode page after page, each in its own budget place, into the engine."""
        document = opened.document
        count = document.page_count
        tasks: list[asyncio.Task[OcrPage]] = []
        try:
            for index in range(count):
                if index:  # the first page takes the place the record came with
                    await places.take()
                if any(task.done() and task.exception() for task in tasks):
                    break  # a page failed fatally: gather raises it below
                if self._options.text_layer != "never":
                    text = self._text_layer(document, index)
                    if text is not None:
                        tasks.append(
                            asyncio.create_task(
                                self._pages.take_text(
                                    msg, request, index + 1, text, count, places
                                )
                            )
                        )
                        continue
                width, height = document.sizes[index]
                page = await self._decode_turns.run(
                    opened.decoder,
                    width * height,
                    opened.clock,
                    partial(document.page, index),
                )
                tasks.append(
                    asyncio.create_task(
                        self._pages.recognize(msg, request, page, count, places)
                    )
                )
                del page
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _text_layer(
        self, document: DecodedDocument, index: int
    ) -> str | NoTextLayerError | None:
        """The page's own text to take instead of OCR: its usable text layer, or (with
        ``only``) the error that it has none; None: recognise its pixels."""
        text = document.text_layer(index)
        if text is None and self._options.text_layer == "only":
            return NoTextLayerError(
                f"page {index + 1} has no usable text layer (OCR_PDF_TEXT_LAYER=only)"
            )
        return text


@dataclass(frozen=True)
class _Opened:
    """A document opened for its pages, the decoder whose turns it takes, its clock."""

    document: DecodedDocument
    decoder: InputDecoder
    clock: DecodeClock


def sha256_hex(raw: bytes) -> str | None:
    return hashlib.sha256(raw).hexdigest() if raw else None
