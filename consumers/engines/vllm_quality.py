"""Quality guards for generated page text: is it complete, and has the model looped?

Vision-language models reading forms full of ``____`` or ``....`` leaders are known to
fall into loops that emit the same characters until ``max_tokens``. A page is judged
from the text and the engine's finish reason alone, so the rules are testable without
an engine:

- a run of one non-space character at least ``RUN_MIN_CHARS`` long, or
- a tail made of one unit (1..``TAIL_MAX_PERIOD`` characters, whitespace collapsed)
  repeated at least ``TAIL_MIN_REPEATS`` times over at least ``TAIL_MIN_CHARS``,

is REPETITIVE; otherwise a page that stopped on ``length`` is TRUNCATED; otherwise OK.
The thresholds sit well above what real forms show (a signature line of 60 underscores,
a table of contents leader, a dozen empty table rows) and far below what a loop
produces before it hits a token limit of a few hundred tokens.
"""

from __future__ import annotations

import re

from schemas import PageStatus

RUN_MIN_CHARS = 160
TAIL_MAX_PERIOD = 120
TAIL_MIN_REPEATS = 6
TAIL_MIN_CHARS = 320

_WHITESPACE = re.compile(r"\s+")
_LONG_RUN = re.compile(r"(\S)\1{%d,}" % (RUN_MIN_CHARS - 1))  # noqa: UP031 - regex braces

# Rank of each status when choosing among attempts: lower is better.
_RANK = {PageStatus.OK: 0, PageStatus.TRUNCATED: 1, PageStatus.REPETITIVE: 2}


def has_long_run(text: str) -> bool:
    """True when one non-space character repeats ``RUN_MIN_CHARS`` times in a row."""
    return _LONG_RUN.search(text) is not None


def repeated_tail(text: str) -> tuple[int, int] | None:
    """The (period, repeats) of a unit that fills the end of the text, if it loops.

    Whitespace is collapsed first, so a loop that varies only in line breaks or
    spacing still counts. The shortest qualifying period wins.
    """
    flat = _WHITESPACE.sub(" ", text).rstrip()
    length = len(flat)
    for period in range(1, min(TAIL_MAX_PERIOD, length // TAIL_MIN_REPEATS) + 1):
        unit = flat[length - period :]
        repeats = 1
        end = length - period
        while end >= period and flat[end - period : end] == unit:
            repeats += 1
            end -= period
        if repeats >= TAIL_MIN_REPEATS and repeats * period >= TAIL_MIN_CHARS:
            return period, repeats
    return None


def is_repetitive(text: str) -> bool:
    """True when the text shows the loops described in the module docstring."""
    return has_long_run(text) or repeated_tail(text) is not None


def judge_page(text: str, finish_reason: str | None) -> PageStatus:
    """OK, TRUNCATED (stopped on the token limit) or REPETITIVE (looped)."""
    if is_repetitive(text):
        return PageStatus.REPETITIVE
    if finish_reason == "length":
        return PageStatus.TRUNCATED
    return PageStatus.OK


def status_rank(status: PageStatus) -> int:
    """Order used to keep the best of several attempts (OK < TRUNCATED < REPETITIVE)."""
    return _RANK.get(status, len(_RANK))
