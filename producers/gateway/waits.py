"""Waits in flight: the gateway's one limit, and one wait per document id.

A ``Flight`` is one published document: it reads its reply (progress events, then the
result) once, keeps the events, and any number of HTTP requests watch it from the
start. A request whose id is already in flight joins that flight instead of publishing
again (the same body: a different one is ``REQUEST_ID_CONFLICT``), so a sender's retry
never makes the pipeline do the work twice while the first is in flight.

The limit counts what the gateway holds: each flight one wait for as long as it lasts,
and one more for each request beyond the first that watches it. A request that would
go past ``limit`` is refused with ``TOO_MANY_WAITS`` (429). When its last watcher
leaves (a 504, a closed stream), a flight lingers ``linger_s`` (still counted) so a
retry joins it rather than publishing again; then it stops waiting. Its result, if
it comes, is still published on the result topic for every subscriber.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Self

from producers.gateway.errors import GatewayError
from producers.gateway.source import PendingReply, ReplySource
from schemas import OcrProgress, OcrRequest, OcrResult

log = logging.getLogger(__name__)


class Flight:
    """One published document, watched by the requests that wait for it."""

    def __init__(self, document_id: str, fingerprint: str) -> None:
        self.document_id = document_id
        self.fingerprint = fingerprint
        self.watchers = 0
        self.history: list[OcrProgress] = []
        self.outcome: OcrResult | BaseException | None = None
        self.reply: PendingReply | None = None
        self.task: asyncio.Task[None] | None = None
        self.linger: asyncio.TimerHandle | None = None
        self._pulse = asyncio.Event()

    def add(self, event: OcrProgress) -> None:
        self.history.append(event)
        self._wake()

    def end(self, outcome: OcrResult | BaseException) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self._wake()

    async def updates(self) -> AsyncIterator[OcrProgress]:
        """Every event from the first; ends once the outcome is in."""
        seen = 0
        while True:
            while seen < len(self.history):
                seen += 1
                yield self.history[seen - 1]
            if self.outcome is not None:
                return
            await self._pulse.wait()

    async def first_news(self) -> None:
        """Until the first event or the outcome."""
        while not self.history and self.outcome is None:
            await self._pulse.wait()

    async def result(self) -> OcrResult:
        while self.outcome is None:
            await self._pulse.wait()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def _wake(self) -> None:
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()


class WaitTable:
    def __init__(
        self,
        source: ReplySource,
        *,
        limit: int,
        linger_s: float,
        retry_after_s: int = 1,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self._source = source
        self._limit = limit
        self._linger_s = linger_s
        self._retry_after_s = retry_after_s
        self._on_change = on_change
        self._flights: dict[str, Flight] = {}

    @property
    def limit(self) -> int:
        return self._limit

    def in_use(self) -> int:
        return sum(max(1, flight.watchers) for flight in self._flights.values())

    def admit(self, request: OcrRequest, fingerprint: str) -> Ticket:
        """A place watching ``request``'s flight (published now if none is in flight)."""
        flight = self._flights.get(request.document_id)
        if flight is not None and flight.fingerprint != fingerprint:
            raise GatewayError(
                "REQUEST_ID_CONFLICT",
                "a different document with this request id is in flight",
            )
        if (flight is None or flight.watchers > 0) and self.in_use() >= self._limit:
            raise GatewayError(
                "TOO_MANY_WAITS",
                f"the gateway already waits for {self._limit} results",
                headers={"Retry-After": str(self._retry_after_s)},
            )
        if flight is None:
            flight = Flight(request.document_id, fingerprint)
            self._flights[request.document_id] = flight
            flight.task = asyncio.create_task(self._fly(flight, request))
        if flight.linger is not None:
            flight.linger.cancel()
            flight.linger = None
        flight.watchers += 1
        self._changed()
        return Ticket(self, flight)

    async def close(self) -> None:
        """Stop every flight (at shutdown)."""
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fly(self, flight: Flight, request: OcrRequest) -> None:
        try:
            flight.reply = await self._source.submit(request)
            async for progress in flight.reply.events():
                flight.add(progress)
            flight.end(await flight.reply.result())
        except Exception as exc:  # noqa: BLE001 - every watcher gets it
            flight.end(exc)
        except asyncio.CancelledError:
            flight.end(GatewayError("UNAVAILABLE", "the gateway stopped waiting"))
            raise
        finally:
            if flight.reply is not None:
                flight.reply.cancel()  # nothing when the result is in
            if flight.linger is not None:
                flight.linger.cancel()
            if self._flights.get(flight.document_id) is flight:
                del self._flights[flight.document_id]
            self._changed()

    def _leave(self, flight: Flight) -> None:
        flight.watchers -= 1
        if flight.watchers == 0 and flight.outcome is None:
            loop = asyncio.get_running_loop()
            flight.linger = loop.call_later(self._linger_s, self._abandon, flight)
        self._changed()

    def _abandon(self, flight: Flight) -> None:
        flight.linger = None
        if flight.watchers == 0 and flight.task is not None:
            log.info("no one waits for document %s any more", flight.document_id)
            flight.task.cancel()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.in_use())


class Ticket:
    """One request's place watching a flight; ``release`` it exactly once."""

    def __init__(self, table: WaitTable, flight: Flight) -> None:
        self.flight = flight
        self._table = table
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._table._leave(self.flight)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()
