"""From an admitted request to its answer: the result within the deadline, or its
text streamed as it is generated. Both route families (``ocr.py``, ``chat.py``) use it.

The deadline (``GATEWAY_TIMEOUT_S``) runs from the request's arrival. A stream's
headers wait for the first news of the document (text, or the result): a document
that fails before any text gets a plain error status, not a stream that says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from producers.gateway.errors import GatewayError
from producers.gateway.sse import DONE, ChunkWriter, error_event
from producers.gateway.streaming import LiveText
from producers.gateway.waits import Ticket, WaitTable
from schemas import DocumentStatus, OcrRequest, OcrResult, PageStatus


@dataclass(frozen=True)
class StreamOptions:
    writer: ChunkWriter
    include_usage: bool = False


class Answers:
    def __init__(
        self, waits: WaitTable, *, timeout_s: float, result_topic: str
    ) -> None:
        self._waits = waits
        self._timeout_s = timeout_s
        self._result_topic = result_topic

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._timeout_s

    def admit(self, request: OcrRequest, fingerprint: str) -> Ticket:
        try:
            return self._waits.admit(request, fingerprint)
        except GatewayError as exc:
            raise exc.for_request(request.document_id) from None

    async def result(self, ticket: Ticket, deadline: float) -> OcrResult:
        """The document's result (FAILED ones too); 504 past the deadline."""
        try:
            async with asyncio.timeout_at(deadline):
                return await ticket.flight.result()
        except TimeoutError:
            raise self._timed_out(ticket) from None
        except Exception as exc:
            raise unavailable(exc).for_request(ticket.flight.document_id) from exc

    async def first_news(self, ticket: Ticket, deadline: float) -> None:
        """Until the document's first text or its result; 504 past the deadline, the
        failure's status when it failed before any text."""
        try:
            async with asyncio.timeout_at(deadline):
                await ticket.flight.first_news()
        except TimeoutError:
            raise self._timed_out(ticket) from None
        outcome = ticket.flight.outcome
        if outcome is not None and not ticket.flight.history:
            result = await self.result(ticket, deadline)
            failure = failure_of(result)
            if failure is not None:
                raise failure

    async def stream(
        self, ticket: Ticket, deadline: float, options: StreamOptions
    ) -> AsyncIterator[bytes]:
        """The SSE body; releases the ticket when it ends, however it ends."""
        writer = options.writer
        try:
            yield writer.role()
            live = LiveText()
            updates = ticket.flight.updates()
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        update = await anext(updates, None)
                except TimeoutError:
                    yield error_event(self._timed_out(ticket))
                    yield DONE
                    return
                if update is None:
                    break
                for emission in live.apply(update):
                    yield writer.emission(emission)
            try:
                result = await self.result(ticket, deadline)
            except GatewayError as exc:
                yield error_event(exc)
                yield DONE
                return
            failure = failure_of(result)
            if failure is not None:
                yield error_event(failure)
                yield DONE
                return
            for emission in live.finish(result.text):
                yield writer.emission(emission)
            yield writer.finish(finish_reason(result), result.model)
            if options.include_usage:
                yield writer.usage(usage(result), result.model)
            yield DONE
        finally:
            ticket.release()

    def _timed_out(self, ticket: Ticket) -> GatewayError:
        return GatewayError(
            "RESULT_TIMEOUT",
            f"no result within {self._timeout_s:g} s; it will still be published"
            f" on {self._result_topic}",
            request_id=ticket.flight.document_id,
        )


def unavailable(exc: BaseException) -> GatewayError:
    """What a wait that ended without a result answers."""
    if isinstance(exc, GatewayError):
        return exc
    return GatewayError(
        "UNAVAILABLE", f"the pipeline cannot answer now ({type(exc).__name__})"
    )


def failure_of(result: OcrResult) -> GatewayError | None:
    if result.status is DocumentStatus.OK:
        return None
    return GatewayError(
        result.error_code or "INTERNAL_ERROR",
        result.error_message or "the document failed",
        request_id=result.document_id,
    )


def finish_reason(result: OcrResult) -> str:
    """The document's, from its pages' engine finish reasons: ``length`` when a page
    stopped at max_tokens, else the last page's that has one, else ``stop``."""
    reasons = [page.finish_reason for page in result.pages if page.finish_reason]
    # TRUNCATED too: results of workers from before pages carried their reason
    truncated = any(page.status is PageStatus.TRUNCATED for page in result.pages)
    if truncated or "length" in reasons:
        return "length"
    return reasons[-1] if reasons else "stop"


def usage(result: OcrResult) -> Mapping[str, int]:
    """OpenAI's usage: the engine's prompt (image included) and generated tokens."""
    return {
        "prompt_tokens": result.prompt_token_count,
        "completion_tokens": result.token_count,
        "total_tokens": result.prompt_token_count + result.token_count,
    }


def now_s() -> int:
    return int(time.time())
