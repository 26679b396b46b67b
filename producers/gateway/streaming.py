"""A document's text as it grows: progress events in, what a stream sends next out.

The events are the progress topic's, read by ``producers.replies.PageTexts`` (DELTA
appends to a page, RESTART empties it, PAGE gives its final text; a lost event makes
the page ``incomplete`` until its PAGE, a document redelivered to another worker
starts over). ``LiveText`` turns them into what a stream may send: the pages in order,
separated by a form feed as in ``OcrResult.text``. A page's text is sent as it grows
only once every page before it is final (later pages wait their turn), and not while
it may have lost text. Trailing blanks of a page still being read are held back (an
engine strips its page's text at the end). When text already sent turns out wrong (a
restart, a redelivery, a final text that differs), the correction is a ``Discard`` of
the last characters sent, then the right text.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.replies import PageTexts
from schemas import OcrProgress
from schemas.records import FORM_FEED, ProgressKind


@dataclass(frozen=True)
class Discard:
    """Drop this many characters (code points) from the end of the text sent so far."""

    chars: int


Emission = str | Discard


class LiveText:
    """What one stream has sent of a document's text, and what to send next."""

    def __init__(self) -> None:
        self.sent = ""
        self._texts = PageTexts()
        self._page_count = 0

    def apply(self, event: OcrProgress) -> list[Emission]:
        self._texts.apply(event)
        if event.kind is ProgressKind.PAGE:
            self._page_count = max(self._page_count, event.page_count)
        return self._move_to(self._target())

    def finish(self, text: str) -> list[Emission]:
        """The result's text: whatever is still missing, corrected where needed."""
        return self._move_to(text)

    def _target(self) -> str:
        """The longest text the events so far say the document starts with."""
        parts: list[str] = []
        number = 1
        while number not in self._texts.incomplete:
            if number not in self._texts.statuses:  # still being read
                parts.append(self._texts.page(number).rstrip())
                break
            parts.append(self._texts.page(number))
            number += 1
            if number > self._page_count:
                break
            parts.append(FORM_FEED)
        return "".join(parts)

    def _move_to(self, target: str) -> list[Emission]:
        if target == self.sent:
            return []
        keep = (
            len(self.sent)
            if target.startswith(self.sent)
            else _common_prefix(self.sent, target)
        )
        emissions: list[Emission] = []
        if keep < len(self.sent):
            emissions.append(Discard(len(self.sent) - keep))
        if keep < len(target):
            emissions.append(target[keep:])
        self.sent = target
        return emissions


def _common_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix (binary search over C comparisons)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low
