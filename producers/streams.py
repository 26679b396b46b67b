"""Coalescing a page's text deltas into few progress events: by count, by age, at its end.

An engine streams a page's text in small pieces (vLLM: a few tokens an engine step).
One Kafka record a piece would multiply the progress topic's traffic by the tokens of a
page, so ``DeltaCoalescer`` buffers each page's pieces and lets them go as one text
when ``flush_deltas`` pieces wait, when the oldest has waited ``flush_s``, or when the
caller takes the rest (the page ended), whichever comes first. Pieces of two attempts
are never joined. It does no I/O and reads no clock: the caller says what time it is
and sends what comes out (``producers.progress``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

# About 32 vLLM steps, or 50 ms, whichever first: a reader sees text at a steady pace,
# the topic gets at most ~20 records a second for each page being read.
FLUSH_S = 0.05
FLUSH_DELTAS = 32

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class StreamPolicy:
    """When a page's buffered pieces go out as one DELTA."""

    flush_s: float = FLUSH_S
    flush_deltas: int = FLUSH_DELTAS

    def __post_init__(self) -> None:
        if self.flush_s <= 0 or self.flush_deltas < 1:
            raise ValueError("flush_s must be > 0 and flush_deltas >= 1")


@dataclass(frozen=True)
class Coalesced(Generic[K]):
    """Pieces of one page's attempt, joined: the text of one DELTA event."""

    key: K
    attempt: int
    text: str
    deltas: int  # how many pieces it joins


@dataclass
class _Pending:
    attempt: int
    due_s: float
    pieces: list[str] = field(default_factory=list)


class DeltaCoalescer(Generic[K]):
    """Per-page buffers of text pieces, keyed by whatever names a page (``K``).

    A buffer holds at most ``flush_deltas`` pieces and lives at most ``flush_s`` past
    its first piece, so memory is bounded by the pages being read.
    """

    def __init__(self, policy: StreamPolicy | None = None) -> None:
        self.policy = policy or StreamPolicy()
        # Insertion order is due order: a buffer is (re)created at the time it is due
        # from, and times only grow.
        self._pending: dict[K, _Pending] = {}

    def __len__(self) -> int:
        """Pages with text waiting."""
        return len(self._pending)

    def add(self, key: K, text: str, attempt: int, now_s: float) -> list[Coalesced[K]]:
        """A piece of page ``key``'s ``attempt``; what became ready to send by it."""
        ready: list[Coalesced[K]] = []
        pending = self._pending.get(key)
        if pending is not None and pending.attempt != attempt:
            ready.append(self._pop(key))  # another attempt's text is never joined
            pending = None
        if pending is None:
            pending = _Pending(attempt, now_s + self.policy.flush_s)
            self._pending[key] = pending
        pending.pieces.append(text)
        if len(pending.pieces) >= self.policy.flush_deltas:
            ready.append(self._pop(key))
        return ready

    def due(self, now_s: float) -> list[Coalesced[K]]:
        """Every buffer whose first piece has waited ``flush_s`` by ``now_s``."""
        ready: list[Coalesced[K]] = []
        for key, pending in list(self._pending.items()):
            if pending.due_s > now_s:
                break  # the rest are younger
            ready.append(self._pop(key))
        return ready

    def next_due_s(self) -> float | None:
        """When the oldest buffer is due; None when nothing waits."""
        for pending in self._pending.values():
            return pending.due_s
        return None

    def take(self, key: K) -> Coalesced[K] | None:
        """What page ``key`` has waiting, to send now (the page ended)."""
        return self._pop(key) if key in self._pending else None

    def discard(self, key: K) -> int:
        """Drop page ``key``'s waiting pieces (it starts over); how many there were."""
        pending = self._pending.pop(key, None)
        return len(pending.pieces) if pending is not None else 0

    def clear(self) -> int:
        """Drop everything waiting; how many pieces there were."""
        count = sum(len(pending.pieces) for pending in self._pending.values())
        self._pending.clear()
        return count

    def _pop(self, key: K) -> Coalesced[K]:
        pending = self._pending.pop(key)
        return Coalesced(
            key, pending.attempt, "".join(pending.pieces), len(pending.pieces)
        )
